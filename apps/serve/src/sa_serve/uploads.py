"""Checks on uploaded bytes that run *before* a predictor sees them: content sniffing, header-only size checks.

Nothing here decodes pixels or samples. Every check reads a few header bytes and raises :class:`UploadError`
with the HTTP status to answer and a message that names the field:

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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

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

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class UploadError(ValueError):
    """An upload the server refuses before inference; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def sniff(data: bytes) -> str | None:
    """The MIME type implied by the first bytes of ``data``, or None when unknown."""
    if data.startswith(PNG_SIGNATURE):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"BM") and len(data) >= 26:
        return "image/bmp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if data[:2] == b"\x1f\x8b":
        return "application/gzip"
    if len(data) >= 348 and data[344:348] in (b"n+1\x00", b"ni1\x00"):
        return "application/x-nifti"
    if data[:4] == b"fLaC":
        return "audio/flac"
    if data[:4] == b"OggS":
        return "audio/ogg"
    stripped = data.lstrip()[:1]
    if stripped in (b"{", b"["):
        return "application/json"
    return None


# ------------------------------------------------------------------------------------------------ images


def _png_dimensions(data: bytes) -> tuple[int, int]:
    n = len(data)
    pos = len(PNG_SIGNATURE)
    dims: tuple[int, int] | None = None
    while True:
        if pos + 8 > n:
            raise UploadError(f"truncated PNG: no IEND chunk (the data ends at byte {n})")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        ctype = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > n:
            raise UploadError(f"truncated PNG: chunk {ctype.decode('latin-1')!r} needs {end} bytes, got {n}")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) & 0xFFFFFFFF != crc:
            raise UploadError(f"corrupt PNG: bad CRC in chunk {ctype.decode('latin-1')!r} at byte {pos}")
        if dims is None:
            if ctype != b"IHDR" or length != 13:
                raise UploadError("corrupt PNG: the first chunk is not a 13-byte IHDR")
            w, h = struct.unpack(">II", data[pos + 8 : pos + 16])
            dims = (int(w), int(h))
        if ctype == b"IEND":
            return dims
        pos = end


_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_dimensions(data: bytes) -> tuple[int, int]:
    n, pos = len(data), 2
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise UploadError(f"corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2 or pos + 2 + length > n:
            raise UploadError(f"truncated JPEG: segment 0x{marker:02X} at byte {pos} runs past the end")
        if marker in _JPEG_SOF and length >= 7:
            h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
            if data.rfind(b"\xff\xd9") < pos:
                raise UploadError("truncated JPEG: no end-of-image marker")
            return int(w), int(h)
        if marker == 0xDA:
            break
        pos += 2 + length
    raise UploadError("corrupt JPEG: no frame header (SOFn) before the image data")


def _webp_dimensions(data: bytes) -> tuple[int, int]:
    if len(data) < 30:
        raise UploadError("truncated WebP header")
    chunk = data[12:16]
    if chunk == b"VP8X":
        w = 1 + int.from_bytes(data[24:27], "little")
        h = 1 + int.from_bytes(data[27:30], "little")
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", data[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    raise UploadError(f"unsupported WebP chunk {chunk!r}")


def image_dimensions(data: bytes, media_type: str) -> tuple[int, int] | None:
    """(width, height) from the header of a sniffed image, or None for formats without a cheap header (TIFF)."""
    if media_type == "image/png":
        return _png_dimensions(data)
    if media_type == "image/jpeg":
        return _jpeg_dimensions(data)
    if media_type == "image/bmp":
        (hsize,) = struct.unpack("<I", data[14:18])
        if hsize == 12:
            w, h = struct.unpack("<HH", data[18:22])
        else:
            w, h = struct.unpack("<ii", data[18:26])
        return abs(int(w)), abs(int(h))
    if media_type == "image/gif":
        if len(data) < 10:
            raise UploadError("truncated GIF header")
        w, h = struct.unpack("<HH", data[6:10])
        return int(w), int(h)
    if media_type == "image/webp":
        return _webp_dimensions(data)
    return None


def check_image(data: bytes, media_type: str, max_pixels: int) -> tuple[int, int] | None:
    """Refuses an image whose header declares an empty image or more than ``max_pixels`` pixels."""
    dims = image_dimensions(data, media_type)
    if dims is not None:
        w, h = dims
        if w <= 0 or h <= 0:
            raise UploadError(f"invalid image size {w}x{h}")
        if w * h > max_pixels:
            raise UploadError(
                f"image is {w}x{h} = {w * h:,} pixels, above the limit of {max_pixels:,} pixels "
                "(checked from the header, before decoding)",
                413,
            )
    return dims


# ------------------------------------------------------------------------------------------------- audio


@dataclass(frozen=True)
class WavFormat:
    """What the ``fmt`` chunk of a WAV file says."""

    sample_rate: int
    channels: int
    bits: int
    is_float: bool
    data_offset: int
    data_size: int


def wav_format(data: bytes) -> WavFormat:
    """Parses the RIFF/WAVE chunks; raises :class:`UploadError` for truncated or malformed files."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise UploadError("not a RIFF/WAVE file")
    pos, n = 12, len(data)
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= n:
        cid = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > n:
                raise UploadError("truncated WAV: the fmt chunk is incomplete")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body : body + 16])
            if tag == 0xFFFE and size >= 40:  # WAVE_FORMAT_EXTENSIBLE: the sub-format GUID starts with the tag
                (tag,) = struct.unpack("<H", data[body + 24 : body + 26])
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                raise UploadError("malformed WAV: data chunk before the fmt chunk")
            tag, channels, rate, bits = fmt
            if tag not in (1, 3):
                raise UploadError(f"unsupported WAV encoding (format tag {tag}); send PCM or IEEE float", 415)
            avail = min(size, n - body)
            if avail < size and size != 0xFFFFFFFF:
                raise UploadError(f"truncated WAV: the data chunk declares {size} bytes, {avail} present")
            return WavFormat(int(rate), int(channels), int(bits), tag == 3, body, avail)
        pos = body + size + (size & 1)
    raise UploadError("truncated WAV: no data chunk")


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
