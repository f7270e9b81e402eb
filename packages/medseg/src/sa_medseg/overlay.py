"""Segmentation overlays as PNG: label colours blended over the grey image."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["PALETTE", "overlay", "colorize", "encode_png", "side_by_side"]

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


def encode_png(rgb_or_labels: np.ndarray) -> bytes:
    """PNG bytes of an ``(H, W, 3)`` RGB uint8 image or an ``(H, W)`` uint8 label map."""
    import cv2

    arr = np.asarray(rgb_or_labels)
    if arr.ndim == 3:
        arr = arr[..., ::-1]  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def write_png(path: str | Path, rgb_or_labels: np.ndarray) -> Path:
    """Atomically writes :func:`encode_png` to ``path`` (folders created)."""
    from shared_attention.engine.checkpoint import atomic_write_bytes

    return atomic_write_bytes(path, encode_png(rgb_or_labels))
