"""Segmentation overlays as PNG: label colours blended over the grey image.

``encode_png`` / ``write_png`` are :mod:`shared_attention.io`'s (re-exported): uint8 RGB overlays and uint8
label maps are written as they are, atomically for files.
"""

from __future__ import annotations

import numpy as np

from shared_attention.io import encode_png, write_png

__all__ = ["PALETTE", "overlay", "colorize", "encode_png", "side_by_side", "write_png"]

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


def colorize(labels: np.ndarray) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` uint8 colours."""
    return PALETTE[np.asarray(labels, dtype=np.int64) % len(PALETTE)]


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` (H, W) in [0, 1] with ``labels`` (H, W) blended on top -> ``(H, W, 3)`` uint8."""
    grey = np.repeat((np.clip(image, 0, 1) * 255)[..., None], 3, axis=2).astype(np.float32)
    col = colorize(labels).astype(np.float32)
    mask = (np.asarray(labels) > 0)[..., None]
    out = np.where(mask, (1 - alpha) * grey + alpha * col, grey)
    return np.round(out).astype(np.uint8)


def side_by_side(image: np.ndarray, pred: np.ndarray, label: np.ndarray | None = None) -> np.ndarray:
    """image | prediction overlay | ground-truth overlay (when given), (H, k*W, 3) uint8."""
    grey = overlay(image, np.zeros_like(pred))
    parts = [grey, overlay(image, pred)] + ([overlay(image, label)] if label is not None else [])
    return np.concatenate(parts, axis=1)
