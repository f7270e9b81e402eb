"""Media bytes: header sniffing, PNG and WAV encoding, NIfTI headers, titled preview panels, test inputs.

Every domain package and the server read, check and write the same few formats; this module is the one place
that knows their bytes. Nothing here decodes pixels (decoding stays with OpenCV in the packages that have it);
the byte-level parts need the standard library and numpy only:

* :func:`sniff_media_type` names the format from magic bytes; :func:`image_dimensions` reads ``(width, height)``
  from a PNG / JPEG / BMP / GIF / WebP header only. PNG files are walked chunk by chunk (CRC checked, ``IEND``
  required) and JPEG files up to the first scan (``SOFn`` required before it, an end-of-image marker after it),
  so truncated or corrupt files are refused before anything is decoded. :func:`check_pixels` refuses empty
  images and more than ``max_pixels`` pixels (a decompression bomb is a tiny file declaring a huge image).
* :func:`encode_png` / :func:`write_png`: zlib + the five PNG row filters (chosen per row, the usual
  minimum-sum-of-absolute-differences heuristic); 8 or 16 bit, gray / RGB / RGBA, optional ``tEXt`` entries.
  Float input in ``[0, 1]`` is clipped and rounded half up: ``floor(clip(x, 0, 1) * 255 + 0.5)``.
* :func:`wav_format` parses a RIFF/WAVE header; :func:`encode_wav` / :func:`write_wav` write 16-bit PCM
  (float input scaled by 32768, the scale readers such as libsndfile divide by, rounded and clipped to the
  int16 range) or 32-bit float.
* :func:`read_nifti_header` reads a NIfTI-1 header (``.nii`` or ``.nii.gz``; of a gzip stream only the first
  352 bytes are inflated) and refuses too many voxels before anything else is read; :func:`iter_nifti_bytes`
  then gives exactly the declared bytes in bounded steps (a shorter file is refused, data after the voxels is
  not inflated). :func:`parse_nifti_header` and :func:`iter_gunzip_bounded` are the two halves.
* :func:`synth_png` / :func:`synth_wav`: small deterministic inputs for warm-ups and tests.

Previews (these draw text with OpenCV, imported when called; the packages that draw them depend on it):
:func:`titled_panels` puts images side by side under titles, with a :func:`class_legend` (colour swatches and
names) below and / or a :func:`colour_bar` (the JET scale of :func:`colourize`) on the right, in a
:class:`PanelStyle` (black on white by default, :data:`DARK_PANELS` for scans).

Errors are :class:`MediaError` (a ``ValueError``) whose message starts with the ``name`` of the input;
:class:`MediaTooLargeError` and :class:`UnsupportedMediaError` refine it so callers can map them (e.g. to HTTP
413 / 415). Files are written atomically (temp file in the same folder, then ``os.replace``) with mode 0644.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = [
    "ByteSource",
    "DARK_PANELS",
    "LIGHT_PANELS",
    "NIFTI_DTYPE_BYTES",
    "NIFTI_HEADER_BYTES",
    "PNG_SIGNATURE",
    "MediaError",
    "MediaTooLargeError",
    "NiftiHeader",
    "PanelStyle",
    "UnsupportedMediaError",
    "WavFormat",
    "check_pixels",
    "class_legend",
    "colour_bar",
    "colourize",
    "encode_png",
    "encode_wav",
    "image_dimensions",
    "iter_gunzip_bounded",
    "iter_nifti_bytes",
    "line_chart",
    "parse_nifti_header",
    "png_chunk",
    "read_nifti_header",
    "sniff_media_type",
    "synth_audio",
    "synth_image",
    "synth_png",
    "synth_wav",
    "synth_nifti_header",
    "gzip_with_zeros",
    "titled_panels",
    "wav_format",
    "write_png",
    "write_wav",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class MediaError(ValueError):
    """Bytes that are not a valid file of their format: truncated, corrupt or a malformed header."""


class MediaTooLargeError(MediaError):
    """A header declares more pixels or voxels than allowed (a possible decompression bomb)."""


class UnsupportedMediaError(MediaError):
    """A file of another format, or a well-formed one in an encoding that is not handled (e.g. a compressed
    WAV, an unknown NIfTI datatype)."""


def _prefix(name: str) -> str:
    """The start of a message about the input ``name`` (nothing when it has no name)."""
    return f"{name}: " if name else ""


# ------------------------------------------------------------------------------------------------ sniffing


def sniff_media_type(data: bytes) -> str | None:
    """The MIME type implied by the first bytes of ``data`` (file names and declared types are not trusted).

    Args:
        data: the file's bytes (only the first few hundred are looked at).

    Returns:
        ``image/png``, ``image/jpeg``, ``image/bmp``, ``image/gif``, ``image/webp``, ``image/tiff``,
        ``audio/wav``, ``audio/flac``, ``audio/ogg``, ``application/gzip``, ``application/x-nifti``,
        ``application/json``, or None when the bytes match none of them.
    """
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
    if data.lstrip()[:1] in (b"{", b"["):
        return "application/json"
    return None


# ------------------------------------------------------------------------------------------- image headers


def _png_dimensions(data: bytes, name: str) -> tuple[int, int]:
    n, pos = len(data), len(PNG_SIGNATURE)
    dims: tuple[int, int] | None = None
    while True:
        if pos + 8 > n:
            raise MediaError(f"{name}: truncated PNG: no IEND chunk (the data ends at byte {n})")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        label = ctype.decode("latin-1")
        if end > n:
            raise MediaError(f"{name}: truncated PNG: chunk {label!r} needs {end} bytes, got {n}")
        (crc,) = struct.unpack(">I", data[end - 4 : end])
        if zlib.crc32(data[pos + 4 : end - 4]) & 0xFFFFFFFF != crc:
            raise MediaError(f"{name}: corrupt PNG: bad CRC in chunk {label!r} at byte {pos}")
        if dims is None:
            if ctype != b"IHDR" or length != 13:
                raise MediaError(f"{name}: corrupt PNG: the first chunk is {label!r}, not a 13-byte IHDR")
            w, h = struct.unpack(">II", data[pos + 8 : pos + 16])
            dims = (int(w), int(h))
        if ctype == b"IEND":
            return dims
        pos = end


def _jpeg_dimensions(data: bytes, name: str) -> tuple[int, int]:
    n, pos = len(data), 2
    dims: tuple[int, int] | None = None
    while True:
        while pos + 1 < n and data[pos] == 0xFF and data[pos + 1] == 0xFF:
            pos += 1  # fill bytes
        if pos + 4 > n:
            raise MediaError(f"{name}: truncated JPEG: the header ends at byte {n}")
        if data[pos] != 0xFF:
            raise MediaError(f"{name}: corrupt JPEG: expected a marker at byte {pos}")
        marker = data[pos + 1]
        if 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > n:
            raise MediaError(f"{name}: truncated JPEG: segment 0x{marker:02X} at byte {pos} runs past the end")
        if marker in _JPEG_SOF and length >= 7:
            h, w = struct.unpack(">HH", data[pos + 5 : pos + 9])
            dims = (int(w), int(h))
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            if dims is None:
                raise MediaError(f"{name}: corrupt JPEG: no frame header (SOFn) before the image data")
            if data.find(b"\xff\xd9", end) < 0:
                raise MediaError(f"{name}: truncated JPEG: no end-of-image marker")
            return dims
        pos = end


def _bmp_dimensions(data: bytes, name: str) -> tuple[int, int]:
    if len(data) < 26:
        raise MediaError(f"{name}: truncated BMP header ({len(data)} bytes)")
    (header_size,) = struct.unpack("<I", data[14:18])
    if header_size == 12:  # OS/2 BITMAPCOREHEADER: unsigned 16-bit sizes
        w, h = struct.unpack("<HH", data[18:22])
    else:  # BITMAPINFOHEADER and later: signed 32-bit, a negative height means top-down rows
        w, h = struct.unpack("<ii", data[18:26])
    return abs(int(w)), abs(int(h))


def _gif_dimensions(data: bytes, name: str) -> tuple[int, int]:
    if len(data) < 10:
        raise MediaError(f"{name}: truncated GIF header ({len(data)} bytes)")
    w, h = struct.unpack("<HH", data[6:10])
    return int(w), int(h)


def _webp_dimensions(data: bytes, name: str) -> tuple[int, int]:
    if len(data) < 30:
        raise MediaError(f"{name}: truncated WebP header ({len(data)} bytes)")
    chunk = data[12:16]
    if chunk == b"VP8X":
        return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
    if chunk == b"VP8L":
        if data[20] != 0x2F:
            raise MediaError(f"{name}: corrupt WebP: bad VP8L signature")
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise MediaError(f"{name}: corrupt WebP: bad VP8 start code")
        w, h = struct.unpack("<HH", data[26:30])
        return int(w) & 0x3FFF, int(h) & 0x3FFF
    raise MediaError(f"{name}: unsupported WebP chunk {chunk!r}")


_DIMENSIONS = {
    "image/png": _png_dimensions,
    "image/jpeg": _jpeg_dimensions,
    "image/bmp": _bmp_dimensions,
    "image/gif": _gif_dimensions,
    "image/webp": _webp_dimensions,
}


def image_dimensions(data: bytes, media_type: str | None = None, name: str = "<bytes>") -> tuple[int, int] | None:
    """``(width, height)`` from an image header, without decoding pixels.

    Args:
        data: the file's bytes.
        media_type: its MIME type (``image/png`` ...); sniffed from ``data`` when None.
        name: what error messages call the input (a file name, ``upload`` ...).

    Returns:
        ``(width, height)`` for PNG, JPEG, BMP, GIF and WebP; None for other formats (TIFF has no cheap header).

    Raises:
        MediaError: the header is truncated or corrupt (PNG: any chunk, CRC checked, up to ``IEND``; JPEG: up
            to the first scan, plus an end-of-image marker after it).
    """
    kind = sniff_media_type(data) if media_type is None else media_type
    parse = _DIMENSIONS.get(kind or "")
    return None if parse is None else parse(bytes(data), name)


def check_pixels(width: int, height: int, max_pixels: int, name: str = "<bytes>") -> None:
    """Refuses an empty image or one with more than ``max_pixels`` pixels.

    Args:
        width: image width. height: image height (from :func:`image_dimensions` or a decoded array).
        max_pixels: the largest pixel count accepted.
        name: what error messages call the input.

    Raises:
        MediaError: width or height is not positive.
        MediaTooLargeError: ``width * height > max_pixels``.
    """
    if width <= 0 or height <= 0:
        raise MediaError(f"{name}: invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise MediaTooLargeError(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"max_pixels={max_pixels:,} (a possible decompression bomb; checked before decoding where the header "
            "allows)"
        )


# ----------------------------------------------------------------------------------------------- PNG writing


def _png_samples(img: np.ndarray, what: str = "encode_png") -> np.ndarray:
    """``img`` as uint8 / uint16 samples of shape (H, W) or (H, W, 3|4), following :func:`encode_png`; ``what``
    starts the error messages."""
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"{what} expects HxW gray, HxWx3 RGB or HxWx4 RGBA, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{what} got an empty image of shape {arr.shape}")
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if arr.dtype.kind in "fb":
        out = np.empty(arr.shape, np.uint8)
        for r in range(0, arr.shape[0], 256):  # a block of rows at a time: no full-size float64 temporaries
            x = np.clip(np.asarray(arr[r : r + 256], dtype=np.float64), 0.0, 1.0)
            out[r : r + 256] = np.floor(x * 255.0 + 0.5)
        return out
    if arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 0xFFFF:
            return arr.astype(np.uint8 if hi <= 0xFF else np.uint16)
        raise ValueError(f"{what}: integer samples must lie in [0, 65535], got [{lo}, {hi}]")
    raise ValueError(f"{what}: unsupported sample type {arr.dtype}")


def _filtered_rows(raw: np.ndarray, bpp: int, rows_per_block: int) -> Iterator[bytes]:
    """PNG scanlines (filter byte + filtered bytes) of ``raw`` (H, stride) uint8, a block of rows at a time.

    Each row gets the filter (None, Sub, Up, Average, Paeth) whose output has the smallest sum of absolute
    values read as signed bytes.
    """
    height = raw.shape[0]
    for r0 in range(0, height, rows_per_block):
        r1 = min(r0 + rows_per_block, height)
        x = raw[r0:r1].astype(np.int16)
        up = np.zeros_like(x)
        up[1:] = x[:-1]
        if r0 > 0:
            up[0] = raw[r0 - 1]
        left = np.zeros_like(x)
        left[:, bpp:] = x[:, :-bpp]
        up_left = np.zeros_like(x)
        up_left[:, bpp:] = up[:, :-bpp]
        p = left + up - up_left
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - up_left)
        paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, up_left))
        best = x.astype(np.uint8)
        best_type = np.zeros(r1 - r0, np.uint8)
        best_cost = np.minimum(x, 256 - x).sum(axis=1)
        for ftype, pred in enumerate((left, up, (left + up) >> 1, paeth), start=1):
            f = (x - pred) & 0xFF
            cost = np.minimum(f, 256 - f).sum(axis=1)
            better = cost < best_cost
            best[better] = f[better]
            best_type[better] = ftype
            best_cost = np.minimum(cost, best_cost)
        yield np.concatenate([best_type[:, None], best], axis=1).tobytes()


def png_chunk(ctype: bytes, body: bytes) -> bytes:
    """One PNG chunk: big-endian length, the 4-byte type, ``body`` and the CRC-32 of type + body.

    Args:
        ctype: the chunk type (``b"IHDR"``, ``b"IDAT"`` ...). body: the chunk data.

    Returns:
        The chunk's bytes.
    """
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def _text_chunk(key: str, value: str) -> bytes:
    """A ``tEXt`` chunk; raises ValueError naming the entry that PNG text cannot hold."""
    try:
        k, v = key.encode("latin-1"), str(value).encode("latin-1")
    except UnicodeEncodeError as exc:
        raise ValueError(f"PNG text {key!r}: not Latin-1: {exc}") from exc
    if not 1 <= len(k) <= 79 or b"\0" in k or b"\0" in v:
        raise ValueError(f"PNG text {key!r}: keywords have 1-79 characters and no NUL")
    return png_chunk(b"tEXt", k + b"\0" + v)


def encode_png(img: np.ndarray, compression: int = 3, text: Mapping[str, str] | None = None) -> bytes:
    """PNG bytes of an image (gray, RGB or RGBA; 8 or 16 bit).

    Args:
        img: ``(H, W)`` / ``(H, W, 1)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA. ``uint8`` and ``uint16``
            are written as they are (8 / 16 bit); float and bool mean ``[0, 1]`` and are clipped and rounded
            half up to 8 bit (``floor(clip(x, 0, 1) * 255 + 0.5)``); other integers are written as 8 bit when
            they lie in ``[0, 255]``, 16 bit when in ``[0, 65535]`` (label maps).
        compression: zlib level, 0 (none) to 9 (smallest).
        text: ``tEXt`` entries written after ``IHDR`` (keywords of 1-79 Latin-1 characters, Latin-1 values),
            e.g. the values at the ends of a heatmap's colour scale.

    Returns:
        The bytes of a PNG file (``IHDR``, a ``tEXt`` per text entry, one ``IDAT``, ``IEND``).

    Raises:
        ValueError: unsupported shape, empty image, unsupported sample type, out-of-range integers, or a text
            entry PNG cannot hold (the message names its keyword).
    """
    chunks = [_text_chunk(k, v) for k, v in (text or {}).items()]
    arr = _png_samples(img)
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    depth = 16 if arr.dtype == np.uint16 else 8
    raw = np.ascontiguousarray(arr, dtype=">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(h, -1)
    bpp = channels * depth // 8
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    z = zlib.compressobj(int(compression))
    rows_per_block = max(1, (1 << 20) // raw.shape[1])
    idat = b"".join(z.compress(block) for block in _filtered_rows(raw, bpp, rows_per_block)) + z.flush()
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0))
    return b"".join([PNG_SIGNATURE, ihdr, *chunks, png_chunk(b"IDAT", idat), png_chunk(b"IEND", b"")])


def _write_public(path: str | os.PathLike[str], data: bytes) -> Path:
    from shared_attention.engine.checkpoint import atomic_write_bytes

    out = atomic_write_bytes(Path(path), data)
    os.chmod(out, 0o644)  # the temp file was created 0600
    return out


def write_png(path: str | os.PathLike[str], img: np.ndarray, compression: int = 3) -> Path:
    """Writes :func:`encode_png` of ``img`` to ``path`` atomically (parent folders created, mode 0644).

    Args:
        path: the destination file. img: see :func:`encode_png`. compression: zlib level 0-9.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return _write_public(path, encode_png(img, compression))


# ------------------------------------------------------------------------------------------------------- WAV


@dataclass(frozen=True)
class WavFormat:
    """What the ``fmt`` and ``data`` chunks of a WAV file say.

    Attributes:
        sample_rate: frames per second. channels: interleaved channels. bits: bits per sample.
        is_float: IEEE float samples (format tag 3) rather than integer PCM (tag 1).
        data_offset: byte offset of the first sample. data_size: bytes of sample data present.
    """

    sample_rate: int
    channels: int
    bits: int
    is_float: bool
    data_offset: int
    data_size: int


def wav_format(data: bytes, name: str = "<bytes>") -> WavFormat:
    """Parses the RIFF/WAVE chunks up to the start of the samples.

    Args:
        data: the file's bytes. name: what error messages call the input.

    Returns:
        The :class:`WavFormat` of the file.

    Raises:
        MediaError: not RIFF/WAVE, truncated, or the data chunk comes before the fmt chunk.
        UnsupportedMediaError: neither integer PCM nor IEEE float (e.g. ADPCM, mu-law).
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError(f"{name}: not a RIFF/WAVE file")
    pos, n = 12, len(data)
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= n:
        cid, size = struct.unpack("<4sI", data[pos : pos + 8])
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + 16 > n:
                raise MediaError(f"{name}: truncated WAV: the fmt chunk is incomplete")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body : body + 16])
            if tag == 0xFFFE and size >= 40 and body + 26 <= n:  # WAVE_FORMAT_EXTENSIBLE: GUID starts with the tag
                (tag,) = struct.unpack("<H", data[body + 24 : body + 26])
            fmt = (tag, channels, rate, bits)
        elif cid == b"data":
            if fmt is None:
                raise MediaError(f"{name}: malformed WAV: data chunk before the fmt chunk")
            tag, channels, rate, bits = fmt
            if tag not in (1, 3):
                raise UnsupportedMediaError(
                    f"{name}: unsupported WAV encoding (format tag {tag}); send PCM or IEEE float"
                )
            avail = min(size, n - body)
            if avail < size and size != 0xFFFFFFFF:  # 0xFFFFFFFF: streamed, length unknown
                raise MediaError(f"{name}: truncated WAV: the data chunk declares {size} bytes, {avail} present")
            return WavFormat(int(rate), int(channels), int(bits), tag == 3, body, avail)
        pos = body + size + (size & 1)
    raise MediaError(f"{name}: truncated WAV: no data chunk")


def encode_wav(samples: np.ndarray, sample_rate: int, *, float32: bool = False) -> bytes:
    """WAV bytes of mono or multichannel audio.

    Args:
        samples: ``(T,)`` mono or ``(C, T)`` channels-first; float in ``[-1, 1]`` or int16.
        sample_rate: frames per second.
        float32: write 32-bit IEEE float samples as given (no clipping; NaN/Inf kept) instead of 16-bit PCM.

    Returns:
        A RIFF/WAVE file: 16-bit PCM (float times 32768, rounded half to even, clipped to
        ``[-32768, 32767]``), or 32-bit float when ``float32``.

    Raises:
        ValueError: not 1-D / 2-D, or integer samples that are not int16.
    """
    x = np.asarray(samples)
    if x.ndim not in (1, 2):
        raise ValueError(f"encode_wav expects (T,) or (C, T) samples, got shape {x.shape}")
    frames = np.atleast_2d(x).T  # (T, C), interleaved on output
    channels = frames.shape[1]
    if float32:
        pcm, tag, bits = np.ascontiguousarray(frames, dtype="<f4"), 3, 32
    elif x.dtype == np.int16:
        pcm, tag, bits = np.ascontiguousarray(frames, dtype="<i2"), 1, 16
    elif x.dtype.kind == "f":
        scaled = np.clip(np.rint(np.asarray(frames, dtype=np.float64) * 32768.0), -32768, 32767)
        pcm, tag, bits = np.ascontiguousarray(scaled, dtype="<i2"), 1, 16
    else:
        raise ValueError(f"encode_wav expects float or int16 samples, got {x.dtype}")
    block = channels * bits // 8
    body = pcm.tobytes()
    fmt = struct.pack("<HHIIHH", tag, channels, int(sample_rate), int(sample_rate) * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def write_wav(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> Path:
    """Writes :func:`encode_wav` (16-bit PCM) to ``path`` atomically (parent folders created, mode 0644).

    Args:
        path: the destination file. samples: ``(T,)`` or ``(C, T)``, see :func:`encode_wav`.
        sample_rate: frames per second.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    return _write_public(path, encode_wav(samples, sample_rate))


# ------------------------------------------------------------------------------------------------------ NIfTI

#: the NIfTI-1 header (348 bytes) and the 4-byte extension flag after it
NIFTI_HEADER_BYTES = 352
#: bytes per voxel of each NIfTI-1 ``datatype`` code (nibabel's set: ints, floats, complex, RGB(A))
NIFTI_DTYPE_BYTES: dict[int, int] = {
    2: 1,
    4: 2,
    8: 4,
    16: 4,
    32: 8,
    64: 8,
    128: 3,
    256: 1,
    512: 2,
    768: 4,
    1024: 8,
    1280: 8,
    1536: 16,
    1792: 16,
    2048: 32,
    2304: 4,
}
_GZ_IN_CHUNK = 64 * 1024  # compressed bytes fed per step
_GZ_OUT_CHUNK = 1 << 20  # the most inflated bytes produced per step
_RAW_CHUNK = 16 << 20  # the most bytes of an uncompressed file read per step

#: in-memory bytes, or a binary file object that can seek (it is rewound for each pass)
ByteSource = bytes | bytearray | memoryview | BinaryIO


@dataclass(frozen=True)
class NiftiHeader:
    """What a NIfTI-1 header declares.

    Attributes:
        shape: ``dim[1:dim[0] + 1]``. datatype: the ``datatype`` code. itemsize: bytes per voxel.
        offset: where the voxels of a single ``.nii`` file start (at least 352; 0 for a ``.hdr``).
        single_file: magic ``n+1`` (header and voxels in one file) rather than ``ni1`` (a ``.hdr``/``.img`` pair).
    """

    shape: tuple[int, ...]
    datatype: int
    itemsize: int
    offset: int
    single_file: bool

    @property
    def voxels(self) -> int:
        """The number of voxels (product of the shape)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """The length of a complete single-file NIfTI: ``offset + voxels * itemsize``."""
        return self.offset + self.voxels * self.itemsize


def parse_nifti_header(head: bytes, name: str = "<bytes>") -> NiftiHeader:
    """Parses the first 348 bytes of a NIfTI-1 file (either byte order) without reading any voxels.

    Args:
        head: the file's first bytes (inflated, for a ``.nii.gz``).
        name: what error messages call the input (no prefix when empty).

    Returns:
        The :class:`NiftiHeader`.

    Raises:
        UnsupportedMediaError: not NIfTI-1 (``sizeof_hdr`` or magic) or an unknown datatype code.
        MediaError: a truncated header, invalid ``dim`` or ``vox_offset``.
    """
    pre = _prefix(name)
    endian = next((e for e in ("<", ">") if head[:4] == struct.pack(e + "i", 348)), None)
    if endian is None:
        raise UnsupportedMediaError(f"{pre}not a NIfTI-1 file (sizeof_hdr is not 348)")
    if len(head) < 348:
        raise MediaError(f"{pre}truncated NIfTI: the header needs 348 bytes, {len(head)} present")
    magic = bytes(head[344:348])
    if magic not in (b"n+1\x00", b"ni1\x00"):
        raise UnsupportedMediaError(f"{pre}not a NIfTI-1 file (bad magic {magic!r})")
    dim = struct.unpack(endian + "8h", head[40:56])
    if not 1 <= dim[0] <= 7:
        raise MediaError(f"{pre}invalid NIfTI header: dim[0]={dim[0]}")
    shape = tuple(int(d) for d in dim[1 : 1 + dim[0]])
    if any(d <= 0 for d in shape):
        raise MediaError(f"{pre}invalid NIfTI shape {shape}")
    (datatype,) = struct.unpack(endian + "h", head[70:72])
    if datatype not in NIFTI_DTYPE_BYTES:
        raise UnsupportedMediaError(f"{pre}unsupported NIfTI datatype code {datatype}")
    (vox_offset,) = struct.unpack(endian + "f", head[108:112])
    single = magic == b"n+1\x00"
    if single and not (math.isfinite(vox_offset) and 0 <= vox_offset < 2**31):
        raise MediaError(f"{pre}invalid NIfTI header: vox_offset={vox_offset}")
    # a .nii's voxels start at 352 at the earliest (the spec); a smaller vox_offset is sized as 352
    offset = max(int(vox_offset), NIFTI_HEADER_BYTES) if single else 0
    return NiftiHeader(shape, int(datatype), NIFTI_DTYPE_BYTES[datatype], offset, single)


def iter_gunzip_bounded(read: Callable[[int], bytes], limit: int, name: str = "<bytes>") -> Iterator[bytes]:
    """Inflates a gzip stream (members in sequence, zero padding after them allowed) in bounded steps, stopping
    after ``limit`` bytes.

    Compressed input is read 64 KiB at a time and at most 1 MiB is inflated per step, so memory stays bounded
    whatever the stream declares; nothing is kept here (the caller keeps or drops the chunks).

    Args:
        read: ``read(n) -> bytes`` of the compressed input (``b""`` at its end), e.g. a file's ``read``.
        limit: the most bytes to inflate. At the limit the stream must either end there (its CRC / size
            trailer present) or go on (what follows is neither read further nor inflated).
        name: what error messages call the input (no prefix when empty).

    Yields:
        Inflated chunks of at most 1 MiB each, ``limit`` bytes in all unless the stream ends properly before.

    Raises:
        MediaError: corrupt gzip data, or a stream cut before its end.
    """
    pre = _prefix(name)
    count, src = 0, b""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    exhausted = False

    def more() -> bytes:
        nonlocal exhausted
        chunk = b"" if exhausted else read(_GZ_IN_CHUNK)
        exhausted = exhausted or not chunk
        return chunk

    def cut(what: str) -> MediaError:
        return MediaError(f"{pre}truncated gzip data ({what} after {count:,} of {limit:,} inflated bytes)")

    try:
        while count < limit:
            if d.eof:  # a member ended: another may follow; zero padding ends the stream
                src = d.unused_data or more()
                while src and not src.strip(b"\x00"):
                    src = more()
                if not src:
                    return
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            if not src:
                src = more()
            out = d.decompress(src, min(_GZ_OUT_CHUNK, limit - count))
            src = d.unconsumed_tail
            if not out and not src and not d.eof and exhausted:
                raise cut("the stream ends")
            count += len(out)
            if out:
                yield out
        while not d.eof:  # at the limit: the member ends here (trailer checked) or more output follows
            if not src:
                src = more()
            if d.decompress(src, 1):
                return
            src = d.unconsumed_tail
            if not src and not d.eof and exhausted:
                raise cut("the CRC / size trailer is missing")
    except zlib.error as exc:
        raise MediaError(f"{pre}corrupt gzip data: {exc}") from exc


def _rewind(source: ByteSource) -> Callable[[int], bytes]:
    """``read(n)`` from the start of ``source``: slices of in-memory bytes (no copy of the whole), or the file
    object's own ``read`` after ``seek(0)``."""
    if not isinstance(source, bytes | bytearray | memoryview):
        source.seek(0)
        return source.read
    view, pos = memoryview(source), 0

    def read(n: int) -> bytes:
        nonlocal pos
        chunk = bytes(view[pos : pos + n])
        pos += len(chunk)
        return chunk

    return read


def _read_bounded(read: Callable[[int], bytes], limit: int) -> Iterator[bytes]:
    """Up to ``limit`` bytes of ``read``, at most 16 MiB per chunk."""
    left = limit
    while left > 0:
        chunk = read(min(left, _RAW_CHUNK))
        if not chunk:
            return
        left -= len(chunk)
        yield chunk


def read_nifti_header(
    source: ByteSource, name: str = "<bytes>", max_voxels: int | None = None, gzipped: bool | None = None
) -> tuple[NiftiHeader, bool]:
    """Reads the header of a ``.nii`` or ``.nii.gz`` before anything else; of a gzip stream only the first 352
    bytes are inflated.

    Args:
        source: the file's bytes or a seekable binary file object (read from its start).
        name: what error messages call the input (no prefix when empty).
        max_voxels: refuse a header that declares more voxels (None: no limit).
        gzipped: whether ``source`` is gzip'd (None: from its magic bytes).

    Returns:
        ``(header, gzipped)``; pass both to :func:`iter_nifti_bytes` for the voxels.

    Raises:
        MediaTooLargeError: more than ``max_voxels`` voxels declared.
        UnsupportedMediaError / MediaError: as :func:`parse_nifti_header` and :func:`iter_gunzip_bounded`, or
            an empty file.
    """
    first = _rewind(source)(NIFTI_HEADER_BYTES)
    if not first:
        raise MediaError(f"{_prefix(name)}empty file")
    gz = first[:2] == b"\x1f\x8b" if gzipped is None else gzipped
    head = b"".join(iter_gunzip_bounded(_rewind(source), NIFTI_HEADER_BYTES, name)) if gz else first
    hdr = parse_nifti_header(head, name)
    if max_voxels is not None and hdr.voxels > max_voxels:
        raise MediaTooLargeError(
            f"{_prefix(name)}volume {hdr.shape} has {hdr.voxels:,} voxels, above the limit of {max_voxels:,} "
            "(NIfTI header)"
        )
    return hdr, gz


def iter_nifti_bytes(source: ByteSource, header: NiftiHeader, gzipped: bool, name: str = "<bytes>") -> Iterator[bytes]:
    """The first ``header.nbytes`` bytes of a single-file NIfTI (header and voxels; inflated when ``gzipped``),
    in bounded chunks (at most 16 MiB); a header cannot make one huge allocation, data after the declared voxels
    is not read.

    Args:
        source: what :func:`read_nifti_header` read (read again from its start).
        header: gzipped: what :func:`read_nifti_header` returned.
        name: what error messages call the input (no prefix when empty).

    Yields:
        Byte chunks, ``header.nbytes`` in all.

    Raises:
        MediaError: the header is a ``.hdr`` of a ``.hdr``/``.img`` pair, the file is shorter than its header
            declares, or (gzip) corrupt or cut.
    """
    pre = _prefix(name)
    if not header.single_file:
        raise MediaError(f"{pre}the header of a .hdr/.img pair; give a single .nii or .nii.gz file")
    need, have = header.nbytes, 0
    read = _rewind(source)
    for chunk in iter_gunzip_bounded(read, need, name) if gzipped else _read_bounded(read, need):
        have += len(chunk)
        yield chunk
    if have < need:
        raise MediaError(f"{pre}truncated NIfTI: the header declares {need:,} bytes, {have:,} present")


# ---------------------------------------------------------------------------------------- panels and legends


@dataclass(frozen=True)
class PanelStyle:
    """The colours of :func:`titled_panels`, :func:`class_legend` and :func:`colour_bar` (RGB, 0-255).

    Attributes:
        background: behind titles, between panels and around legends. foreground: the text.
    """

    background: tuple[int, int, int] = (255, 255, 255)
    foreground: tuple[int, int, int] = (0, 0, 0)


#: black text on white (the default)
LIGHT_PANELS = PanelStyle()
#: light grey text on near-black, for scans
DARK_PANELS = PanelStyle((24, 24, 24), (235, 235, 235))
_MIN_FONT_SCALE = 0.35


def _strip_font(strip: int) -> tuple[float, int]:
    """(font scale, stroke thickness) of text in a strip ``strip`` pixels tall."""
    return strip / 32, 1 if strip < 40 else 2


def _font(height: int) -> tuple[float, int, int]:
    """(font scale, thickness, text strip height) for text next to panels ``height`` pixels tall."""
    strip = min(48, max(18, height // 12))
    return (*_strip_font(strip), strip)


def _text_size(text: str, scale: float, thick: int) -> tuple[int, int, int]:
    """(width, height above the baseline, depth below it) of ``text`` in OpenCV's plain sans-serif font."""
    import cv2

    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    return int(w), int(h), int(base)


def _fit_text(text: str, width: int, scale: float, thick: int) -> tuple[float, int]:
    """A font scale at most ``scale`` (down to 0.35) at which ``text`` fits ``width`` pixels where it can, and
    the text's width at that scale (more than ``width`` when even the smallest scale is too wide)."""
    tw = _text_size(text, scale, thick)[0]
    while tw > width and scale > _MIN_FONT_SCALE:
        scale = max(_MIN_FONT_SCALE, scale * 0.9)
        tw = _text_size(text, scale, thick)[0]
    return scale, tw


def _put_text(
    canvas: np.ndarray, text: str, x: int, y: int, scale: float, thick: int, colour: tuple[int, int, int]
) -> None:
    """Draws ``text`` into a uint8 RGB canvas with its baseline at row ``y`` (a row of a line: see
    :func:`_baseline`)."""
    import cv2

    cv2.putText(canvas, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)


def _baseline(text: str, scale: float, thick: int, top: int, line: int) -> int:
    """The baseline row that centres ``text`` in the line of ``line`` pixels starting at row ``top``."""
    _, th, base = _text_size(text, scale, thick)
    return top + th + max(0, (line - th - base) // 2)


def _canvas(height: int, width: int, style: PanelStyle) -> np.ndarray:
    out = np.empty((height, width, 3), np.uint8)
    out[:] = style.background
    return out


def _rgb8(img: np.ndarray) -> np.ndarray:
    """An image as ``(H, W, 3)`` uint8 RGB: samples as :func:`encode_png` reads them, 16 bit cut to 8, gray
    repeated, alpha dropped."""
    arr = _png_samples(img, "titled_panels")
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def _enlarge(img: np.ndarray, k: int) -> np.ndarray:
    """Each pixel as a ``k`` x ``k`` block (nearest neighbour by a whole factor: pixels kept exactly)."""
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def _to_height(img: np.ndarray, height: int) -> np.ndarray:
    """``img`` scaled to ``height`` rows, its aspect kept (exact for a whole factor)."""
    import cv2

    h, w = img.shape[:2]
    if h == height:
        return img
    if height % h == 0:
        return _enlarge(img, height // h)
    size = (max(1, round(w * height / h)), height)
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA if height < h else cv2.INTER_NEAREST)


def colourize(heat: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """Values on OpenCV's JET scale: blue at ``vmin``, red at ``vmax``, clipped outside.

    Args:
        heat: ``(h, w)`` values. vmin: vmax: the values at the two ends of the scale.

    Returns:
        ``(h, w, 3)`` float32 RGB in [0, 1].
    """
    import cv2

    norm = np.array(heat, dtype=np.float32)  # a copy, worked on in place (full-size maps of large uploads)
    norm -= vmin
    norm /= max(vmax - vmin, 1e-12)
    np.clip(norm, 0, 1, out=norm)
    norm *= 255
    colour = cv2.applyColorMap(norm.astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1].astype(np.float32)
    colour /= 255
    return colour


def colour_bar(
    height: int, vmin: float, vmax: float, label: str = "value", style: PanelStyle = LIGHT_PANELS
) -> np.ndarray:
    """A vertical :func:`colourize` scale, ``vmax`` at the top and ``vmin`` at the bottom, with the end and middle
    values beside it and ``label`` in a strip above it.

    Args:
        height: the bar's height (that of the panels it goes beside). vmin: vmax: the values at its ends.
        label: the caption. style: the colours.

    Returns:
        ``(strip + height, w, 3)`` uint8 RGB; the strip is as tall as :func:`titled_panels`' title strip over
        panels ``height`` pixels tall.
    """
    scale, thick, strip = _font(height)
    bar_w = max(10, height // 16)
    ramp = np.linspace(vmax, vmin, height, dtype=np.float32)[:, None].repeat(bar_w, 1)  # (height, bar_w), top = vmax
    values = [f"{v:.3g}" for v in (vmax, 0.5 * (vmin + vmax), vmin)]
    text_w = max(_text_size(t, scale, thick)[0] for t in values)
    out = _canvas(strip + height, max(bar_w + 6 + text_w + 4, _text_size(label, scale, thick)[0] + 4), style)
    out[strip:, 2 : 2 + bar_w] = _rgb8(colourize(ramp, vmin, vmax))
    _put_text(out, label, 2, _baseline(label, scale, thick, 0, strip), scale, thick, style.foreground)
    th = _text_size("0", scale, thick)[1]
    for text, y in zip(values, (strip + th, strip + height // 2 + th // 2, strip + height - 2), strict=True):
        _put_text(out, text, 2 + bar_w + 6, y, scale, thick, style.foreground)
    return out


def class_legend(
    entries: Sequence[tuple[str, Sequence[int]]], width: int, line_height: int = 18, style: PanelStyle = LIGHT_PANELS
) -> np.ndarray:
    """A legend strip: a colour swatch and its text per entry, wrapped over lines of ``width`` pixels.

    Args:
        entries: ``(text, (r, g, b))`` pairs, e.g. ``("1 liver", (230, 80, 60))``.
        width: the strip's width (that of the image it goes under).
        line_height: the height of a line (the font and swatches follow it). style: the colours.

    Returns:
        ``(lines * line_height, width, 3)`` uint8 RGB (no rows when there are no entries).
    """
    scale, thick = _strip_font(line_height)
    swatch = max(6, line_height * 2 // 3)
    placed: list[tuple[int, int, str, float, Sequence[int]]] = []  # (line, x, text, scale, colour)
    line, x = 0, 6
    for text, colour in entries:
        fitted, tw = _fit_text(text, max(8, width - swatch - 18), scale, thick)
        need = swatch + 4 + tw
        if x > 6 and x + need > width - 6:
            line, x = line + 1, 6
        placed.append((line, x, text, fitted, colour))
        x += need + 14
    out = _canvas((line + 1) * line_height if placed else 0, width, style)
    for ln, x0, text, fitted, colour in placed:
        top = ln * line_height
        y0 = top + (line_height - swatch) // 2
        out[y0 : y0 + swatch, x0 : x0 + swatch] = np.asarray(colour)[:3].astype(np.uint8)
        y = _baseline(text, fitted, thick, top, line_height)
        _put_text(out, text, x0 + swatch + 4, y, fitted, thick, style.foreground)
    return out


def _titled(panel: np.ndarray, title: str, strip: int, scale: float, thick: int, style: PanelStyle) -> np.ndarray:
    """One column: ``title`` centred in a strip above ``panel`` (drawn apart: text never touches the panel)."""
    h, w = panel.shape[:2]
    fitted, tw = _fit_text(title, w - 4, scale, thick)
    width = max(w, tw + 4)
    head = _canvas(strip, width, style)
    _put_text(
        head, title, (width - tw) // 2, _baseline(title, fitted, thick, 0, strip), fitted, thick, style.foreground
    )
    body = _canvas(h, width, style)
    body[:, (width - w) // 2 : (width - w) // 2 + w] = panel
    return np.concatenate([head, body], axis=0)


def titled_panels(
    panels: Sequence[np.ndarray],
    titles: Sequence[str],
    *,
    height: int | None = None,
    min_width: int = 0,
    colour_scale: tuple[float, float] | None = None,
    scale_label: str = "value",
    legend: Sequence[tuple[str, Sequence[int]]] | None = None,
    style: PanelStyle = LIGHT_PANELS,
) -> np.ndarray:
    """Images side by side, each under its title; a :func:`colour_bar` on the right and a :func:`class_legend`
    below when asked for.

    Args:
        panels: ``(h, w)`` gray or ``(h, w, 3|4)`` colour images (alpha dropped), samples as :func:`encode_png`
            reads them (uint8 / uint16, float or bool in ``[0, 1]``); sizes may differ.
        titles: one per panel. The font follows the panels' height and shrinks (to a floor) for a long title;
            a title still wider than its panel widens its column (the panel centred in it).
        height: the panels' common height (default: the first panel's). Each panel is scaled to it with its
            aspect kept: by a whole factor exactly (nearest neighbour), otherwise with OpenCV (area averaging
            when shrinking, nearest neighbour when enlarging).
        min_width: then all panels are enlarged by one whole factor (nearest neighbour) until the narrowest is
            at least this wide, so that titles fit over small slices; pixels and orientation are kept.
        colour_scale: ``(vmin, vmax)`` of the :func:`colourize` scale used in the panels: a bar on the right.
        scale_label: the bar's caption.
        legend: ``(text, (r, g, b))`` entries, wrapped to the width below the panels.
        style: the colours (:data:`LIGHT_PANELS` by default, :data:`DARK_PANELS` for scans).

    Returns:
        ``(strip + H + legend lines, W, 3)`` uint8 RGB: the title strip, the panels ``H`` pixels tall and
        ``max(4, H // 64)`` apart, then the legend's lines.

    Raises:
        ValueError: no panels, not one title per panel, or a panel of a shape or type :func:`encode_png` refuses.
    """
    if len(panels) != len(titles):
        raise ValueError(f"titled_panels: {len(panels)} panels but {len(titles)} titles (one title per panel)")
    if not panels:
        raise ValueError("titled_panels: no panels to draw")
    rgb = [_rgb8(p) for p in panels]
    scaled = [_to_height(p, int(height or rgb[0].shape[0])) for p in rgb]
    k = math.ceil(min_width / min(p.shape[1] for p in scaled)) if min_width > 0 else 1
    if k > 1:
        scaled = [_enlarge(p, k) for p in scaled]
    body = scaled[0].shape[0]
    scale, thick, strip = _font(body)
    columns = [_titled(p, t, strip, scale, thick, style) for p, t in zip(scaled, titles, strict=True)]
    if colour_scale is not None:
        columns.append(colour_bar(body, float(colour_scale[0]), float(colour_scale[1]), scale_label, style))
    gap = _canvas(strip + body, max(4, body // 64), style)
    parts = [columns[0]]
    for column in columns[1:]:
        parts += [gap, column]
    out = np.concatenate(parts, axis=1)
    if legend:
        out = np.concatenate([out, class_legend(legend, out.shape[1], strip, style)], axis=0)
    return out


# ------------------------------------------------------------------------------------------ synthetic inputs


def synth_image(height: int, width: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A deterministic noise image, ``(H, W, channels)`` uint8 (``(H, W)`` when ``channels == 1``).

    Args:
        height: rows. width: columns. seed: random seed. channels: 1, 3 or 4.

    Returns:
        uint8 pixels, uniform over 0..255.
    """
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def synth_png(height: int, width: int, seed: int = 0) -> bytes:
    """PNG bytes of :func:`synth_image` (RGB) for warm-ups and tests.

    Args:
        height: rows. width: columns. seed: random seed.

    Returns:
        The bytes of a ``width`` x ``height`` RGB PNG.
    """
    return encode_png(synth_image(height, width, seed))


def synth_audio(seconds: float, sample_rate: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    """A deterministic two-tone signal with a little noise, the same on every channel.

    Args:
        seconds: duration (``int(seconds * sample_rate)`` frames). sample_rate: frames per second.
        seed: random seed (tone phase and noise). channels: channel count.

    Returns:
        ``(channels, T)`` float32, peak at most 0.32.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    x = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 330 * t + rng.uniform(0, 2 * np.pi))
    x += 0.01 * np.clip(rng.standard_normal(t.shape), -2.0, 2.0)
    return np.repeat(x[None, :], channels, axis=0).astype(np.float32)


def synth_wav(seconds: float, sample_rate: int, seed: int = 0, channels: int = 1) -> bytes:
    """16-bit PCM WAV bytes of :func:`synth_audio` for warm-ups and tests.

    Args:
        seconds: duration. sample_rate: frames per second. seed: random seed. channels: channel count.

    Returns:
        The bytes of the WAV file.
    """
    return encode_wav(synth_audio(seconds, sample_rate, seed, channels), sample_rate)


_NIFTI_CODES = {"uint8": 2, "int16": 4, "int32": 8, "float32": 16, "float64": 64}


def synth_nifti_header(shape: Sequence[int], dtype: str = "int16") -> bytes:
    """The 352 bytes (header + empty extension flag) of a single-file little-endian NIfTI-1 declaring ``shape``
    with voxels right after it, for tests of header-first checks (the voxels are not included).

    Args:
        shape: 1 to 7 dimensions. dtype: one of ``uint8``, ``int16``, ``int32``, ``float32``, ``float64``.
    """
    if not 1 <= len(shape) <= 7 or dtype not in _NIFTI_CODES:
        raise ValueError(f"need 1-7 dimensions and a dtype in {sorted(_NIFTI_CODES)}, got {tuple(shape)} {dtype}")
    head = bytearray(348)
    struct.pack_into("<i", head, 0, 348)
    struct.pack_into("<8h", head, 40, len(shape), *shape, *([1] * (7 - len(shape))))
    struct.pack_into("<hh", head, 70, _NIFTI_CODES[dtype], 8 * np.dtype(dtype).itemsize)
    struct.pack_into("<8f", head, 76, 1.0, *([1.0] * 7))
    struct.pack_into("<f", head, 108, 352.0)
    head[344:348] = b"n+1\x00"
    return bytes(head) + b"\x00" * 4


def gzip_with_zeros(head: bytes, zeros: int, step: int = 1 << 20) -> bytes:
    """gzip of ``head`` followed by ``zeros`` zero bytes, compressed ``step`` bytes at a time (so building a
    decompression bomb for a test never holds the inflated bytes)."""
    z = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(step)
    parts = [z.compress(head)]
    for start in range(0, zeros, step):
        parts.append(z.compress(block[: min(step, zeros - start)]))
    parts.append(z.flush())
    return b"".join(parts)


#: line colours of :func:`line_chart` (RGB), one per series in turn
CHART_COLOURS = ((31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2 or 5 times a power of ten)."""
    span = max(hi - lo, 1e-9)
    raw = span / max(n, 1)
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = np.ceil(lo / step - 1e-9) * step
    return [float(round(v / step) * step) + 0.0 for v in np.arange(start, hi + step * 1e-6, step)]  # no -0


def line_chart(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str = "",
    x_label: str = "",
    y_label: str = "",
    size: tuple[int, int] = (480, 720),
    style: PanelStyle = LIGHT_PANELS,
) -> np.ndarray:
    """A line chart (learning curves and the like) drawn with OpenCV: no plotting library needed.

    Args:
        series: ``{name: (xs, ys)}``; each drawn as a line with markers, named in a legend under the title.
        title / x_label / y_label: captions. size: ``(height, width)`` in pixels. style: the colours.

    Returns:
        ``(height, width, 3)`` uint8 RGB (write it with :func:`write_png`).

    Raises:
        ValueError: no series, or a series whose ``xs`` and ``ys`` differ in length or hold no finite point.
    """
    import cv2

    if not series:
        raise ValueError("line_chart: no series to draw")
    pts: dict[str, np.ndarray] = {}
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"line_chart: series {name!r} has {len(xs)} x values and {len(ys)} y values")
        xy = np.asarray([xs, ys], dtype=np.float64).T.reshape(-1, 2)
        xy = xy[np.isfinite(xy).all(axis=1)]
        if not len(xy):
            raise ValueError(f"line_chart: series {name!r} has no finite point")
        pts[name] = xy
    height, width = size
    scale, thick = _strip_font(20)
    out = _canvas(height, width, style)
    allxy = np.concatenate(list(pts.values()))
    x_lo, x_hi = float(allxy[:, 0].min()), float(allxy[:, 0].max())
    y_lo, y_hi = float(allxy[:, 1].min()), float(allxy[:, 1].max())
    if y_hi - y_lo < 1e-9:
        y_lo, y_hi = y_lo - 1, y_hi + 1
    if x_hi - x_lo < 1e-9:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    pad = 0.05 * (y_hi - y_lo)
    y_lo, y_hi = y_lo - pad, y_hi + pad
    xt, yt = _ticks(x_lo, x_hi), _ticks(y_lo, y_hi)
    fmt = "{:.3g}"
    entries = [(n, CHART_COLOURS[i % len(CHART_COLOURS)]) for i, n in enumerate(pts)]
    legend = class_legend(entries, width - 20, 20, style)
    top = 8 + (24 if title else 0) + legend.shape[0] + 8
    left = 16 + (20 if y_label else 0) + max(_text_size(fmt.format(v), scale, thick)[0] for v in yt)
    bottom, right = height - (26 + (22 if x_label else 0)), width - 20
    if bottom - top < 40 or right - left < 40:
        raise ValueError(f"line_chart: size {size} leaves no room for the plot")
    if title:
        tsc, tw = _fit_text(title, width - 8, 0.6, 1)
        _put_text(out, title, (width - tw) // 2, _baseline(title, tsc, 1, 6, 24), tsc, 1, style.foreground)
    out[8 + (24 if title else 0) : 8 + (24 if title else 0) + legend.shape[0], 10 : 10 + legend.shape[1]] = legend

    def px(x: float, y: float) -> tuple[int, int]:
        return (
            int(round(left + (x - x_lo) / (x_hi - x_lo) * (right - left))),
            int(round(bottom - (y - y_lo) / (y_hi - y_lo) * (bottom - top))),
        )

    grid = tuple(int(0.85 * c + 0.15 * (255 - c)) for c in style.background)
    for v in yt:
        _, y = px(x_lo, v)
        cv2.line(out, (left, y), (right, y), grid, 1)
        t = fmt.format(v)
        _put_text(out, t, left - 6 - _text_size(t, scale, thick)[0], y + 5, scale, thick, style.foreground)
    for v in xt:
        x, _ = px(v, y_lo)
        cv2.line(out, (x, top), (x, bottom), grid, 1)
        t = fmt.format(v)
        _put_text(out, t, x - _text_size(t, scale, thick)[0] // 2, bottom + 18, scale, thick, style.foreground)
    cv2.rectangle(out, (left, top), (right, bottom), tuple(int(c) for c in style.foreground), 1)
    for i, xy in enumerate(pts.values()):
        colour = CHART_COLOURS[i % len(CHART_COLOURS)]
        line = np.array([px(x, y) for x, y in xy], dtype=np.int32)
        if len(line) > 1:
            cv2.polylines(out, [line], False, colour, 2, cv2.LINE_AA)
        for p in line:
            cv2.circle(out, (int(p[0]), int(p[1])), 3, colour, -1, cv2.LINE_AA)
    if x_label:
        tw = _text_size(x_label, scale, thick)[0]
        _put_text(out, x_label, (left + right - tw) // 2, height - 8, scale, thick, style.foreground)
    if y_label:
        tw, th, _ = _text_size(y_label, scale, thick)
        strip = _canvas(th + 8, tw + 4, style)
        _put_text(strip, y_label, 2, th + 2, scale, thick, style.foreground)
        rot = np.ascontiguousarray(np.rot90(strip))  # reads bottom to top
        y0 = max(top, (top + bottom - rot.shape[0]) // 2)
        h = min(rot.shape[0], height - y0)
        out[y0 : y0 + h, 4 : 4 + rot.shape[1]] = rot[:h]
    return out
