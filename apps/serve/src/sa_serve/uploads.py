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
* :func:`check_volume` reads the NIfTI-1 header (gzip or raw; of a gzip stream only the first 352 bytes are
  inflated for it) and refuses volumes with too many voxels, unknown datatypes or a declared size above the
  inflation cap before inflating the rest, which is then counted in bounded steps, not kept (the parsing and
  the bounded inflation are :mod:`shared_attention.io`'s: 415 for a file that is not NIfTI-1 or an unknown
  datatype, 413 for too many voxels, 400 for the rest).
* :func:`parse_json` refuses ``NaN``, ``Infinity`` and numbers that overflow to infinity.
"""

from __future__ import annotations

import json
import math
from collections import deque
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


def check_volume(data: bytes, media_type: str, max_voxels: int, max_inflated_bytes: int) -> tuple[int, ...]:
    """Checks a NIfTI-1 upload (gzip'd or raw) from its header before anything else is inflated.

    Only the first 352 inflated bytes are read to parse the header (shape, datatype, ``vox_offset``); the
    voxel count and the declared size (``vox_offset + voxels * bytes per voxel``) are checked against the
    limits first. A gzip stream is then inflated up to that declared size, in 1 MiB steps that are counted and
    dropped, to refuse a truncated upload; whatever follows the declared voxels is not inflated.

    Returns:
        The shape in the header (``dim[1:dim[0] + 1]``).

    Raises:
        UploadError: 413 for too many voxels or a declared size above ``max_inflated_bytes``; 415 for a file that
            is not NIfTI-1 or an unknown datatype; 400 for a corrupt header, corrupt gzip data or a volume
            shorter than its header declares.
    """
    gz = media_type == "application/gzip"
    with _upload_errors():
        hdr, _ = media_io.read_nifti_header(data, UPLOAD_NAME, max_voxels, gzipped=gz)
    if not hdr.single_file:  # a .hdr of a .hdr/.img pair: no voxels in this file
        return hdr.shape
    if gz and hdr.nbytes > max_inflated_bytes:
        raise UploadError(
            f"the volume inflates to {hdr.nbytes:,} bytes (declared by its NIfTI header), above the limit of "
            f"{max_inflated_bytes:,}",
            413,
        )
    with _upload_errors():  # inflated up to the declared size in bounded steps, counted and dropped
        deque(media_io.iter_nifti_bytes(data, hdr, gz, UPLOAD_NAME), maxlen=0)
    return hdr.shape


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
