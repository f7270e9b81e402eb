"""Image reading and writing with clear errors.

``read_image`` returns an HxWx3 float32 RGB array in ``[0, 1]`` whatever the file holds:

* 8-bit data is divided by 255, 16-bit data by 65535; float data (TIFF / PFM / HDR float) is clipped to
  ``[0, 1]`` (NaN is an error); other sample types are refused.
* Grayscale is replicated to three channels.
* An alpha channel (RGBA, or gray+alpha which OpenCV hands over as BGRA) is *dropped* (not composited),
  with a warning in the ``sa_restoration.imageio`` logger: SR datasets are opaque photos, and compositing
  would invent a background colour. Any other channel count raises :class:`ImageError`.
* EXIF orientation is not applied (``IMREAD_UNCHANGED``): pixels are used as stored, like the benchmarks.

Robustness: the bytes are read here and checked before decoding. PNG files are walked chunk by chunk (CRC
checked, ``IEND`` required: truncated or corrupted files are refused instead of half-decoded); JPEG files
must have an end-of-image marker after the scan. The pixel count is taken from the PNG ``IHDR``, the JPEG
``SOFn`` or the BMP header *before* decoding so a decompression bomb (a tiny file declaring a huge image) is
refused without allocating; other formats are decoded first and then checked. Every error names the file.

``write_png`` rounds to uint8 (``floor(clip(x, 0, 1) * 255 + 0.5)``) and writes atomically (temp file in
the same folder, then ``os.replace``); ``encode_png`` returns the PNG bytes.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from .metrics import quantize_uint8

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
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageError(ValueError):
    """An image file is unreadable, truncated, corrupt, too large or has an unsupported layout."""


# ------------------------------------------------------------------------------------------- headers


def _png_size(data: bytes, name: str) -> tuple[int, int]:
    """Walks the PNG chunks (CRC checked); returns (width, height) from IHDR. Raises on truncation."""
    pos = len(_PNG_SIG)
    size: tuple[int, int] | None = None
    n = len(data)
    while True:
        if pos + 8 > n:
            raise ImageError(f"{name}: truncated PNG (no IEND chunk; file ends at byte {n})")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            raise ImageError(f"{name}: truncated PNG (chunk {ctype!r} needs {end} bytes, file has {n})")
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : end])
        if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
            raise ImageError(f"{name}: corrupt PNG (bad CRC in chunk {ctype!r} at byte {pos})")
        if size is None:
            if ctype != b"IHDR" or length < 8:
                raise ImageError(f"{name}: corrupt PNG (first chunk is {ctype!r}, not IHDR)")
            w, h = struct.unpack(">II", body[:8])
            size = (int(w), int(h))
        if ctype == b"IEND":
            return size
        pos = end


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes, name: str) -> tuple[int, int]:
    """Walks the JPEG markers up to the first scan; returns (width, height) from SOFn; needs an EOI."""
    n = len(data)
    pos = 2
    size: tuple[int, int] | None = None
    while True:
        while pos < n and data[pos] == 0xFF and pos + 1 < n and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 4 > n:
            raise ImageError(f"{name}: truncated JPEG (header ends at byte {n})")
        if data[pos] != 0xFF:
            raise ImageError(f"{name}: corrupt JPEG (expected a marker at byte {pos})")
        marker = data[pos + 1]
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        seg_end = pos + 2 + length
        if length < 2 or seg_end > n:
            raise ImageError(f"{name}: truncated JPEG (segment 0x{marker:02X} at byte {pos})")
        if marker in _SOF and length >= 7:
            h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
            size = (int(w), int(h))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            if size is None:
                raise ImageError(f"{name}: corrupt JPEG (scan before any SOF frame header)")
            if data.find(b"\xff\xd9", seg_end) < 0:
                raise ImageError(f"{name}: truncated JPEG (no end-of-image marker)")
            return size
        pos = seg_end


def _bmp_size(data: bytes, name: str) -> tuple[int, int]:
    if len(data) < 26:
        raise ImageError(f"{name}: truncated BMP header")
    (hsize,) = struct.unpack("<I", data[14:18])
    if hsize == 12:
        w, h = struct.unpack("<HH", data[18:22])
    else:
        w, h = struct.unpack("<ii", data[18:26])
    return abs(int(w)), abs(int(h))


def image_size(data: bytes, name: str = "<bytes>") -> tuple[int, int] | None:
    """(width, height) from a PNG / JPEG / BMP header, checking PNG / JPEG structure; None for others."""
    if data.startswith(_PNG_SIG):
        return _png_size(data, name)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data, name)
    if data.startswith(b"BM"):
        return _bmp_size(data, name)
    return None


def _check_pixels(w: int, h: int, max_pixels: int, name: str) -> None:
    if w <= 0 or h <= 0:
        raise ImageError(f"{name}: invalid image size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(
            f"{name}: image is {w}x{h} = {w * h:,} pixels, above max_pixels={max_pixels:,} "
            "(possible decompression bomb; pass a larger max_pixels to read it)"
        )


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


# -------------------------------------------------------------------------------------------- write


def encode_png(img: np.ndarray, compression: int = 3) -> bytes:
    """PNG bytes of an HxWx3 RGB (or HxW gray) image: float in ``[0, 1]`` (clipped, rounded) or uint8."""
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"encode_png expects HxWx3 RGB or HxW gray, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"encode_png got an empty image of shape {arr.shape}")
    u8 = arr if arr.dtype == np.uint8 else quantize_uint8(arr)
    if u8.ndim == 3:
        u8 = np.ascontiguousarray(u8[:, :, ::-1])
    ok, buf = cv2.imencode(".png", u8, [cv2.IMWRITE_PNG_COMPRESSION, int(compression)])
    if not ok:
        raise ValueError("PNG encoding failed")
    return bytes(buf.tobytes())


def write_png(path: str | os.PathLike[str], img: np.ndarray, compression: int = 3) -> Path:
    """Writes ``img`` (see :func:`encode_png`) as a PNG atomically; creates parent folders."""
    from shared_attention.engine.checkpoint import atomic_write_bytes

    out = atomic_write_bytes(Path(path), encode_png(img, compression))
    os.chmod(out, 0o644)  # the temp file was created 0600
    return out
