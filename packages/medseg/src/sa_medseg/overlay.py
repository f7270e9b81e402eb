"""Segmentation overlays as PNG: label colours blended over the grey image, display orientation, annotated
side-by-side panels.

* :func:`overlay` keeps the slice as it is: an ``(H, W)`` slice gives an ``(H, W, 3)`` overlay, row 0 on top.
* :func:`to_display` turns a slice of a NIfTI volume (voxel axes 0 and 1 as rows and columns) into the
  radiological display its affine gives: axial slices with anterior at the top and the patient's right on the
  image's left; coronal with superior at the top, right on the left; sagittal with superior at the top,
  anterior on the left. Without an affine the slice is returned as stored.
* :func:`side_by_side` puts image | prediction | ground truth next to each other under titles, with a colour
  legend (class id and name -> colour) below, drawn by :func:`shared_attention.io.titled_panels` (light text on
  near-black, :data:`~shared_attention.io.DARK_PANELS`).

``encode_png`` / ``write_png`` are :mod:`shared_attention.io`'s (re-exported): uint8 RGB overlays and uint8
label maps are written as they are, atomically for files.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shared_attention.io import DARK_PANELS, encode_png, titled_panels, write_png

__all__ = [
    "PALETTE",
    "colorize",
    "encode_png",
    "overlay",
    "side_by_side",
    "to_display",
    "write_png",
]

#: RGB colour per class id (cycled beyond its length); background is transparent in overlays.
PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 80, 60],
        [70, 140, 240],
        [250, 200, 40],
        [90, 200, 110],
        [200, 90, 220],
        [60, 210, 210],
        [240, 140, 40],
        [150, 150, 150],
    ],
    dtype=np.uint8,
)

#: panels narrower than this are enlarged (by a whole factor, nearest neighbour) so that titles fit
MIN_PANEL_WIDTH = 128


def colorize(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` uint8 colours."""
    return PALETTE[np.asarray(labels, dtype=np.int64) % len(PALETTE)]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` (H, W) in [0, 1] with ``labels`` (H, W) blended on top -> ``(H, W, 3)`` uint8 (same layout)."""
    grey = np.repeat((np.clip(image, 0, 1) * 255)[..., None], 3, axis=2).astype(np.float32)
    col = colorize(labels).astype(np.float32)
    mask = (np.asarray(labels) > 0)[..., None]
    out = np.where(mask, (1 - alpha) * grey + alpha * col, grey)
    return np.round(out).astype(np.uint8)


def to_display(slice_: np.ndarray, affine: np.ndarray | None) -> np.ndarray:
    """A slice of a NIfTI volume in radiological display.

    Args:
        slice_: ``(A0, A1, ...)``: rows along the volume's voxel axis 0, columns along voxel axis 1 (the layout
            of this package's ``(S, H, W)`` volumes, whose slices are the NIfTI's third axis); extra trailing
            axes (RGB) are kept.
        affine: the NIfTI's voxel -> world (RAS+) affine; ``None`` (or a degenerate one): returned as stored.

    Returns:
        The slice transposed and flipped so that rows run anterior -> posterior (axial) or superior -> inferior
        (coronal, sagittal) and columns run from the patient's right to left (axial, coronal) or anterior ->
        posterior (sagittal). Both display axes run towards decreasing world coordinates.
    """
    if affine is None:
        return slice_
    from nibabel.orientations import io_orientation

    ornt = io_orientation(np.asarray(affine, dtype=np.float64))  # (3, 2): world axis and flip per voxel axis
    if np.isnan(ornt).any():
        return slice_
    world = [int(a) for a in ornt[:, 0]]
    positive = [f > 0 for f in ornt[:, 1]]  # the voxel index grows towards R / A / S
    slice_world = world[2]
    vertical = 1 if slice_world == 2 else 2  # axial: A-P on rows; coronal / sagittal: S-I
    out = slice_ if world[0] == vertical else np.swapaxes(slice_, 0, 1)
    rows_axis, cols_axis = (0, 1) if world[0] == vertical else (1, 0)
    if positive[rows_axis]:
        out = out[::-1]
    if positive[cols_axis]:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def side_by_side(
    image: np.ndarray,
    pred: np.ndarray,
    label: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    titles: Sequence[str] = ("image", "prediction", "ground truth"),
) -> np.ndarray:
    """image | prediction overlay | ground-truth overlay (when given), titled, with a colour legend below.

    Args:
        image: ``(H, W)`` in [0, 1], or ``(N, H, W)``: N slices stacked as rows of each panel.
        pred / label: class ids of the same shape (``label`` optional).
        class_names: names by class id (index 0 = background, not in the legend); default: the ids present.
        titles: the panels' titles.

    Returns:
        ``(T + k*N*H + legend, k*(2|3)*W + gaps, 3)`` uint8 RGB; slices keep their orientation and are
        enlarged by a whole factor ``k`` when narrower than :data:`MIN_PANEL_WIDTH`.
    """
    image, pred = np.asarray(image), np.asarray(pred)
    stack = image.ndim == 3
    images = image if stack else image[None]
    preds = pred if stack else pred[None]
    labels = None if label is None else (np.asarray(label) if stack else np.asarray(label)[None])
    gap_rows = np.empty((4, images.shape[2], 3), np.uint8)
    gap_rows[:] = DARK_PANELS.background

    def column(maps: np.ndarray | None) -> np.ndarray:  # (N*H + gaps, W, 3)
        rows: list[np.ndarray] = []
        for i in range(images.shape[0]):
            ov = overlay(images[i], np.zeros_like(preds[i]) if maps is None else maps[i])
            rows += [gap_rows, ov] if rows else [ov]
        return np.concatenate(rows, axis=0)

    panels = [column(None), column(preds)] + ([column(labels)] if labels is not None else [])
    if class_names is not None:
        ids = list(range(1, len(class_names)))
        names = {i: str(class_names[i]) for i in ids}
    else:
        present = np.unique(np.concatenate([preds.ravel()] + ([labels.ravel()] if labels is not None else [])))
        ids = [int(i) for i in present if i > 0]
        names = {i: f"class {i}" for i in ids}
    entries = [(f"{i} {names[i]}", tuple(int(c) for c in PALETTE[i % len(PALETTE)])) for i in ids]
    return titled_panels(
        panels, list(titles)[: len(panels)], min_width=MIN_PANEL_WIDTH, legend=entries, style=DARK_PANELS
    )
