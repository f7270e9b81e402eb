"""Media bytes with the standard library and numpy only: header sniffing, PNG and WAV encoding, test inputs.

Every domain package and the server read, check and write the same few formats; this module is the one place
that knows their bytes. Nothing here decodes pixels (decoding stays with OpenCV in the packages that have it):

* :func:`sniff_media_type` names the format from magic bytes; :func:`image_dimensions` reads ``(width, height)``
  from a PNG / JPEG / BMP / GIF / WebP header only. PNG files are walked chunk by chunk (CRC checked, ``IEND``
  required) and JPEG files up to the first scan (``SOFn`` required before it, an end-of-image marker after it),
  so truncated or corrupt files are refused before anything is decoded. :func:`check_pixels` refuses empty
  images and more than ``max_pixels`` pixels (a decompression bomb is a tiny file declaring a huge image).
* :func:`encode_png` / :func:`write_png`: zlib + the five PNG row filters (chosen per row, the usual
  minimum-sum-of-absolute-differences heuristic); 8 or 16 bit, gray / RGB / RGBA. Float input in ``[0, 1]`` is
  clipped and rounded half up: ``floor(clip(x, 0, 1) * 255 + 0.5)``.
* :func:`wav_format` parses a RIFF/WAVE header; :func:`encode_wav` / :func:`write_wav` write 16-bit PCM
  (float input scaled by 32768, the scale readers such as libsndfile divide by, rounded and clipped to the
  int16 range) or 32-bit float.
* :func:`synth_png` / :func:`synth_wav`: small deterministic inputs for warm-ups and tests.

Errors are :class:`MediaError` (a ``ValueError``) whose message starts with the ``name`` of the input;
:class:`MediaTooLargeError` and :class:`UnsupportedMediaError` refine it so callers can map them (e.g. to HTTP
413 / 415). Files are written atomically (temp file in the same folder, then ``os.replace``) with mode 0644.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "PNG_SIGNATURE",
    "MediaError",
    "MediaTooLargeError",
    "UnsupportedMediaError",
    "WavFormat",
    "check_pixels",
    "encode_png",
    "encode_wav",
    "image_dimensions",
    "png_chunk",
    "sniff_media_type",
    "synth_audio",
    "synth_image",
    "synth_png",
    "synth_wav",
    "wav_format",
    "write_png",
    "write_wav",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


class MediaError(ValueError):
    """Bytes that are not a valid file of their format: truncated, corrupt or a malformed header."""


class MediaTooLargeError(MediaError):
    """A header declares more pixels than allowed (a possible decompression bomb)."""


class UnsupportedMediaError(MediaError):
    """A well-formed file in an encoding that is not handled (e.g. a compressed WAV)."""


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


def _png_samples(img: np.ndarray) -> np.ndarray:
    """``img`` as uint8 / uint16 samples of shape (H, W) or (H, W, 3|4), following :func:`encode_png`."""
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))):
        raise ValueError(f"encode_png expects HxW gray, HxWx3 RGB or HxWx4 RGBA, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"encode_png got an empty image of shape {arr.shape}")
    if arr.dtype in (np.uint8, np.uint16):
        return arr
    if arr.dtype.kind in "fb":
        x = np.clip(np.asarray(arr, dtype=np.float64), 0.0, 1.0)
        return np.floor(x * 255.0 + 0.5).astype(np.uint8)
    if arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo >= 0 and hi <= 0xFFFF:
            return arr.astype(np.uint8 if hi <= 0xFF else np.uint16)
        raise ValueError(f"encode_png: integer samples must lie in [0, 65535], got [{lo}, {hi}]")
    raise ValueError(f"encode_png: unsupported sample type {arr.dtype}")


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


def encode_png(img: np.ndarray, compression: int = 3) -> bytes:
    """PNG bytes of an image (gray, RGB or RGBA; 8 or 16 bit).

    Args:
        img: ``(H, W)`` / ``(H, W, 1)`` gray, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA. ``uint8`` and ``uint16``
            are written as they are (8 / 16 bit); float and bool mean ``[0, 1]`` and are clipped and rounded
            half up to 8 bit (``floor(clip(x, 0, 1) * 255 + 0.5)``); other integers are written as 8 bit when
            they lie in ``[0, 255]``, 16 bit when in ``[0, 65535]`` (label maps).
        compression: zlib level, 0 (none) to 9 (smallest).

    Returns:
        The bytes of a PNG file (``IHDR``, one ``IDAT``, ``IEND``).

    Raises:
        ValueError: unsupported shape, empty image, unsupported sample type or out-of-range integers.
    """
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
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


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
