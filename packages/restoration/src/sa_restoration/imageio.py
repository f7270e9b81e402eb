"""Image reading and writing with clear errors.

``read_image`` returns an HxWx3 float32 RGB array in ``[0, 1]`` whatever the file holds:

* 8-bit data is divided by 255, 16-bit data by 65535; float data (TIFF / PFM / HDR float) is clipped to
  ``[0, 1]`` (NaN is an error); other sample types are refused.
* Grayscale is replicated to three channels.
* An alpha channel (RGBA, or gray+alpha which OpenCV hands over as BGRA) is *dropped* (not composited),
  with a warning in the ``sa_restoration.imageio`` logger: SR datasets are opaque photos, and compositing
  would invent a background colour. Any other channel count raises :class:`ImageError`.
* EXIF orientation is not applied (``IMREAD_UNCHANGED``): pixels are used as stored, like the benchmarks.

Robustness: the bytes are read here and checked before decoding (by :mod:`shared_attention.io`). PNG files
are walked chunk by chunk (CRC checked, ``IEND`` required: truncated or corrupted files are refused instead
of half-decoded); JPEG files must have an end-of-image marker after the scan. The pixel count is taken from
the PNG ``IHDR``, the JPEG ``SOFn``, the BMP, GIF or WebP header *before* decoding so a decompression bomb (a
tiny file declaring a huge image) is refused without allocating; other formats are decoded first and then
checked. Every error names the file.

``write_png`` / ``encode_png`` are :func:`shared_attention.io.write_png` / :func:`~shared_attention.io.encode_png`
(re-exported): float rounds to uint8 as ``floor(clip(x, 0, 1) * 255 + 0.5)``, uint8 is written as is, and the
file is written atomically (temp file in the same folder, then ``os.replace``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from shared_attention.io import MediaError, check_pixels, encode_png, image_dimensions, write_png

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_EXTENSIONS",
    "ImageError",
    "encode_png",
    "find_images",
    "image_size",
    "read_image",
    "write_png",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 64_000_000
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(MediaError):
    """An image file is unreadable, truncated, corrupt, too large or has an unsupported layout (a ``ValueError``)."""


# ------------------------------------------------------------------------------------------- headers


@contextmanager
def _image_errors() -> Iterator[None]:
    """Re-raises the shared header checks' :class:`~shared_attention.io.MediaError` as :class:`ImageError`."""
    try:
        yield
    except MediaError as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(str(exc)) from exc


def image_size(data: bytes, name: str = "<bytes>") -> tuple[int, int] | None:
    """(width, height) from a PNG / JPEG / BMP / GIF / WebP header, checking PNG / JPEG structure; else None.

    Raises:
        ImageError: naming ``name``, for a truncated or corrupt header.
    """
    with _image_errors():
        return image_dimensions(data, name=name)


def _check_pixels(w: int, h: int, max_pixels: int, name: str) -> None:
    with _image_errors():
        check_pixels(w, h, max_pixels, name)


# --------------------------------------------------------------------------------------------- read


def find_images(directory: str | os.PathLike[str]) -> list[Path]:
    """Image files (png/jpg/jpeg/bmp/tif/tiff/webp, any case) directly in ``directory``, sorted by name.

    Hidden files (leading dot, e.g. temp files of atomic writes) are skipped.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"image folder not found: {d}")
    return sorted(
        p
        for p in d.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def read_image(
    path_or_bytes: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Reads an image file (or its bytes) as HxWx3 float32 RGB in ``[0, 1]`` (see the module docstring).

    ``name`` is used in error messages (defaults to the path, or ``<bytes>``). Raises :class:`ImageError`
    for unreadable, empty, truncated, corrupt, oversized or unsupported images.
    """
    if isinstance(path_or_bytes, bytes | bytearray | memoryview):
        data = bytes(path_or_bytes)
        label = name or "<bytes>"
    else:
        label = name or os.fspath(path_or_bytes)
        try:
            data = Path(path_or_bytes).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{label}: no such file") from None
        except IsADirectoryError:
            raise ImageError(f"{label}: is a directory, not an image") from None
        except OSError as e:
            raise ImageError(f"{label}: cannot read ({e.strerror or e})") from e
    if not data:
        raise ImageError(f"{label}: empty file")
    size = image_size(data, label)
    if size is not None:
        _check_pixels(size[0], size[1], max_pixels, label)
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ImageError(f"{label}: cannot decode image ({str(e).strip().splitlines()[-1]})") from e
    if img is None or img.size == 0:
        raise ImageError(f"{label}: not a decodable image (unknown format, truncated or corrupt data)")
    h, w = img.shape[:2]
    if size is None:
        _check_pixels(w, h, max_pixels, label)
    return _to_float_rgb(np.asarray(img), label)


def _to_float_rgb(img: np.ndarray, label: str) -> np.ndarray:
    if img.dtype == np.uint8:
        x = img.astype(np.float32) / np.float32(255.0)
    elif img.dtype == np.uint16:
        x = img.astype(np.float32) / np.float32(65535.0)
    elif img.dtype in (np.float32, np.float64, np.float16):
        if np.isnan(img).any():
            raise ImageError(f"{label}: float image contains NaN")
        with np.errstate(over="ignore", under="ignore"):  # clip first: tiny / huge float64 survive the cast
            x = np.clip(img, 0.0, 1.0).astype(np.float32)
    else:
        raise ImageError(f"{label}: unsupported sample type {img.dtype} (expected 8/16-bit integer or float)")

    if x.ndim == 2:
        return np.ascontiguousarray(np.repeat(x[:, :, None], 3, axis=2))
    if x.ndim != 3:
        raise ImageError(f"{label}: unsupported array shape {img.shape}")
    c = x.shape[2]
    if c == 1:
        return np.ascontiguousarray(np.repeat(x, 3, axis=2))
    if c == 4:
        logger.warning("%s: dropping the alpha channel (RGBA -> RGB, not composited)", label)
        x = x[:, :, :3]
    elif c != 3:
        raise ImageError(f"{label}: unsupported channel count {c} (expected 1 gray, 3 RGB or 4 RGBA)")
    return np.ascontiguousarray(x[:, :, ::-1])  # OpenCV's BGR -> RGB
