"""Image files: PNG/JPEG/BMP/TIFF reading to float RGB, heatmap overlays.

PNG writing is :func:`shared_attention.io.encode_png` / :func:`~shared_attention.io.write_png`, re-exported here:
float and bool images mean ``[0, 1]`` and are rounded half up to 8 bit; files are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared_attention.io import encode_png, write_png

__all__ = ["IMAGE_SUFFIXES", "decode_image", "read_image", "read_mask", "encode_png", "write_png", "heatmap_overlay"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes -> ``(H, W, 3)`` float32 RGB in [0, 1] (gray replicated, alpha dropped).

    Raises:
        ValueError: naming ``name`` when the bytes are not a readable image.
    """
    import cv2

    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ValueError(f"{name}: not a readable image (PNG, JPEG, BMP or TIFF expected)")
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    elif img.dtype == np.uint8:
        img = img.astype(np.float32) / 255.0
    else:
        raise ValueError(f"{name}: unsupported pixel type {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    elif img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        raise ValueError(f"{name}: unsupported channel count {img.shape[2]}")
    return np.ascontiguousarray(img, dtype=np.float32)


def read_image(path: str | Path) -> np.ndarray:
    """Reads an image file as ``(H, W, 3)`` float32 RGB in [0, 1]."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"{p}: cannot read: {exc}") from exc
    return decode_image(data, str(p))


def read_mask(path: str | Path) -> np.ndarray:
    """Reads a ground-truth mask as ``(H, W)`` bool (any non-zero pixel is anomalous)."""
    return read_image(path).max(axis=2) > 0


def heatmap_overlay(
    img: np.ndarray, heat: np.ndarray, vmin: float | None = None, vmax: float | None = None, alpha: float = 0.5
) -> np.ndarray:
    """Blends a JET-coloured heatmap over an image: ``(H, W, 3)`` + ``(h, w)`` -> ``(H, W, 3)`` in [0, 1].

    The heatmap is resized to the image and scaled to [0, 1] by ``vmin``/``vmax`` (default: its own range).
    """
    import cv2

    h, w = img.shape[:2]
    heat = cv2.resize(np.asarray(heat, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    lo = float(heat.min()) if vmin is None else vmin
    hi = float(heat.max()) if vmax is None else vmax
    norm = np.clip((heat - lo) / max(hi - lo, 1e-12), 0, 1)
    colour = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1].astype(np.float32) / 255
    return np.clip((1 - alpha) * img + alpha * colour, 0, 1).astype(np.float32)
