"""Checks on uploaded bytes that run *before* a predictor sees them: content sniffing, header-only size checks.

Nothing here decodes pixels or samples. Every check reads a few header bytes and raises :class:`UploadError`
with the HTTP status to answer and a message that names the field. Sniffing and the image / WAV header parsers
are :mod:`shared_attention.io`'s; their :class:`~shared_attention.io.MediaError` becomes an :class:`UploadError`
(400; 413 for too many pixels, 415 for an unsupported WAV encoding) whose message starts with ``upload:``.

* :func:`sniff` identifies the format from magic bytes (the client's ``Content-Type`` and file name are ignored).
* :func:`image_dimensions` reads width and height from the PNG ``IHDR`` (after walking every chunk with its CRC,
  so a truncated or corrupted PNG is refused), the JPEG ``SOFn`` marker, BMP, GIF or WebP headers. A tiny file
  that declares a 100000x100000 image is refused by :func:`check_image` without allocating anything.
* :func:`wav_format` parses the RIFF ``fmt`` chunk (sample rate, channels, sample format) and
  :func:`check_audio` compares it with the predictor's constraints; float WAV data with NaN/Inf is refused.
* :func:`check_volume` reads the NIfTI-1 header (gzip or raw; gzip is inflated in bounded steps up to a cap)
  and refuses volumes with too many voxels.
* :func:`parse_json` refuses ``NaN``, ``Infinity`` and numbers that overflow to infinity.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np

from shared_attention import io as media_io
from shared_attention.io import WavFormat

__all__ = [
    "UploadError",
    "WavFormat",
    "check_audio",
    "check_image",
    "check_volume",
    "image_dimensions",
    "parse_json",
    "sniff",
    "wav_format",
]

#: What the shared header checks call an upload in their messages.
UPLOAD_NAME = "upload"

#: :func:`shared_attention.io.sniff_media_type` under the name this module's callers use.
sniff = media_io.sniff_media_type


class UploadError(ValueError):
    """An upload the server refuses before inference; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def _upload_errors() -> Iterator[None]:
    """Re-raises :class:`~shared_attention.io.MediaError` as :class:`UploadError` with its HTTP status."""
    try:
        yield
    except media_io.MediaTooLargeError as exc:
        raise UploadError(str(exc), 413) from exc
    except media_io.UnsupportedMediaError as exc:
        raise UploadError(str(exc), 415) from exc
    except media_io.MediaError as exc:
        raise UploadError(str(exc), 400) from exc


# ------------------------------------------------------------------------------------------------ images


def image_dimensions(data: bytes, media_type: str) -> tuple[int, int] | None:
    """(width, height) from the header of a sniffed image, or None for formats without a cheap header (TIFF).

    Raises:
        UploadError: (400) for a truncated or corrupt header.
    """
    with _upload_errors():
        return media_io.image_dimensions(data, media_type, name=UPLOAD_NAME)


def check_image(data: bytes, media_type: str, max_pixels: int) -> tuple[int, int] | None:
    """Refuses an image whose header declares an empty image (400) or more than ``max_pixels`` pixels (413)."""
    dims = image_dimensions(data, media_type)
    if dims is not None:
        with _upload_errors():
            media_io.check_pixels(dims[0], dims[1], max_pixels, UPLOAD_NAME)
    return dims


# ------------------------------------------------------------------------------------------------- audio


def wav_format(data: bytes) -> WavFormat:
    """Parses the RIFF/WAVE chunks; raises :class:`UploadError` for truncated (400) or non-PCM/float (415) files."""
    with _upload_errors():
        return media_io.wav_format(data, UPLOAD_NAME)


def check_audio(data: bytes, constraints: Mapping[str, Any]) -> WavFormat:
    """Checks a WAV upload against ``sample_rate`` / ``channels`` / ``max_seconds`` constraints and finiteness."""
    fmt = wav_format(data)
    want_rate = constraints.get("sample_rate")
    if want_rate is not None and fmt.sample_rate != int(want_rate):
        raise UploadError(
            f"sample rate is {fmt.sample_rate} Hz; this model needs {int(want_rate)} Hz (resample first)", 422
        )
    want_ch = constraints.get("channels")
    if want_ch is not None and fmt.channels != int(want_ch):
        what = "stereo" if fmt.channels == 2 else f"{fmt.channels}-channel"
        raise UploadError(f"audio is {what}; this model needs {int(want_ch)} channel(s) (mix down first)", 422)
    if fmt.channels <= 0 or fmt.bits not in (8, 16, 24, 32, 64):
        raise UploadError(f"unsupported WAV layout: {fmt.channels} channels, {fmt.bits} bits", 415)
    frames = fmt.data_size // (fmt.channels * fmt.bits // 8)
    if frames == 0:
        raise UploadError("WAV has no samples")
    max_seconds = constraints.get("max_seconds")
    if max_seconds is not None and frames / fmt.sample_rate > float(max_seconds):
        raise UploadError(f"audio is {frames / fmt.sample_rate:.1f} s long; the limit is {max_seconds} s", 413)
    if fmt.is_float:
        dtype = "<f4" if fmt.bits == 32 else "<f8"
        count = fmt.data_size // (fmt.bits // 8)
        samples = np.frombuffer(data, dtype=dtype, count=count, offset=fmt.data_offset)
        if not np.isfinite(samples).all():
            raise UploadError("float WAV contains NaN or Inf samples", 422)
    return fmt


# ------------------------------------------------------------------------------------------------ volumes


_NIFTI_BYTES = {2: 1, 4: 2, 8: 4, 16: 4, 64: 8, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8}


def _gunzip_bounded(data: bytes, limit: int) -> bytes:
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = bytearray()
    try:
        out += d.decompress(data, limit + 1)
        while d.unconsumed_tail and len(out) <= limit:
            out += d.decompress(d.unconsumed_tail, limit + 1 - len(out))
    except zlib.error as exc:
        raise UploadError(f"corrupt gzip data: {exc}") from exc
    if len(out) > limit:
        raise UploadError(f"the gzip stream inflates to more than {limit:,} bytes (limit)", 413)
    if not d.eof:
        raise UploadError("truncated gzip data")
    return bytes(out)


def check_volume(data: bytes, media_type: str, max_voxels: int, max_inflated_bytes: int) -> tuple[int, ...]:
    """Reads a NIfTI-1 header (gzip inflated up to ``max_inflated_bytes``) and checks the voxel count."""
    raw = _gunzip_bounded(data, max_inflated_bytes) if media_type == "application/gzip" else data
    if len(raw) < 348:
        raise UploadError("truncated NIfTI: the header needs 348 bytes")
    for endian in ("<", ">"):
        if struct.unpack(endian + "i", raw[:4])[0] == 348:
            break
    else:
        raise UploadError("not a NIfTI-1 file (sizeof_hdr is not 348)", 415)
    if raw[344:348] not in (b"n+1\x00", b"ni1\x00"):
        raise UploadError("not a NIfTI-1 file (bad magic)", 415)
    dim = struct.unpack(endian + "8h", raw[40:56])
    ndim = dim[0]
    if not 1 <= ndim <= 7:
        raise UploadError(f"invalid NIfTI header: dim[0]={ndim}")
    shape = tuple(int(d) for d in dim[1 : 1 + ndim])
    if any(d <= 0 for d in shape):
        raise UploadError(f"invalid NIfTI shape {shape}")
    voxels = math.prod(shape)
    if voxels > max_voxels:
        raise UploadError(f"volume {shape} has {voxels:,} voxels, above the limit of {max_voxels:,}", 413)
    (datatype,) = struct.unpack(endian + "h", raw[70:72])
    (vox_offset,) = struct.unpack(endian + "f", raw[108:112])
    need = int(vox_offset) + voxels * _NIFTI_BYTES.get(int(datatype), 1)
    if raw[344:348] == b"n+1\x00" and len(raw) < need:
        raise UploadError(f"truncated NIfTI: the header declares {need:,} bytes, {len(raw):,} present")
    return shape


# -------------------------------------------------------------------------------------------------- JSON


def _no_constant(name: str) -> Any:
    raise UploadError(f"JSON contains {name}; only finite numbers are accepted", 422)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UploadError(f"JSON number {text[:40]} overflows to infinity; only finite numbers are accepted", 422)
    return value


def parse_json(data: bytes) -> Any:
    """Parses a JSON body, refusing NaN / Infinity / overflowing numbers and invalid UTF-8 with clear messages."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UploadError(f"JSON body is not valid UTF-8 (byte {exc.start})") from exc
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise UploadError(f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except UploadError:
        raise
    except RecursionError as exc:
        raise UploadError("JSON is nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer literal with more digits than Python accepts
        raise UploadError(f"invalid JSON: {exc}") from exc
