"""shared_attention.io: header sniffing and sizes, PNG / WAV encoding, synthetic inputs."""

from __future__ import annotations

import io
import struct
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

from shared_attention.io import (
    MediaError,
    MediaTooLargeError,
    UnsupportedMediaError,
    check_pixels,
    encode_png,
    encode_wav,
    image_dimensions,
    sniff_media_type,
    synth_audio,
    synth_png,
    synth_wav,
    wav_format,
    write_png,
    write_wav,
)

cv2 = pytest.importorskip("cv2")


def _decode(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None
    return img


def _unfilter(data: bytes) -> tuple[tuple[int, ...], np.ndarray]:
    """A minimal PNG reader (one IDAT, 8-bit): the IHDR fields and the (H, stride) unfiltered bytes."""
    ihdr = struct.unpack(">IIBBBBB", data[16:29])
    w, h, depth, color = ihdr[:4]
    bpp = {0: 1, 2: 3, 6: 4}[color] * depth // 8
    (idat_len,) = struct.unpack(">I", data[33:37])
    raw = zlib.decompress(data[41 : 41 + idat_len])
    stride = w * bpp
    out = np.zeros((h, stride), np.int64)
    for y in range(h):
        ftype, row = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        up = out[y - 1] if y else np.zeros(stride, np.int64)
        for i in range(stride):
            a = out[y, i - bpp] if i >= bpp else 0
            c = up[i - bpp] if i >= bpp else 0
            p = a + up[i] - c
            paeth = min((abs(p - a), 0, a), (abs(p - up[i]), 1, up[i]), (abs(p - c), 2, c))[2]
            pred = (0, a, up[i], (a + up[i]) // 2, paeth)[ftype]
            out[y, i] = (row[i] + pred) & 0xFF
    return ihdr, out.astype(np.uint8)


def test_png_round_trip_gray_rgb_rgba_16bit() -> None:
    rng = np.random.default_rng(1)
    smooth = (np.add.outer(np.arange(9), np.arange(11)) * 10).astype(np.uint8)  # makes Sub/Up/Paeth win
    rgb = np.dstack([smooth, rng.integers(0, 256, (9, 11), dtype=np.uint8), smooth[::-1]])
    np.testing.assert_array_equal(_decode(encode_png(rgb))[:, :, ::-1], rgb)
    np.testing.assert_array_equal(_decode(encode_png(smooth)), smooth)
    np.testing.assert_array_equal(_decode(encode_png(smooth[:, :, None])), smooth)
    rgba = np.dstack([rgb, smooth])
    np.testing.assert_array_equal(cv2.cvtColor(_decode(encode_png(rgba)), cv2.COLOR_BGRA2RGBA), rgba)
    deep = rng.integers(0, 65536, (5, 6, 3), dtype=np.uint16)
    back = _decode(encode_png(deep, compression=9))
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back[:, :, ::-1], deep)
    # the independent reader agrees (filters undone by hand)
    ihdr, raw = _unfilter(encode_png(rgb, compression=0))
    assert ihdr == (11, 9, 8, 2, 0, 0, 0)
    np.testing.assert_array_equal(raw.reshape(9, 11, 3), rgb)


def test_png_float_clipping_bool_and_integer_labels() -> None:
    x = np.array([[[-0.2, 0.5 / 255, 1.3], [0.25, 0.6, 1.0]]])
    assert _decode(encode_png(x))[:, :, ::-1].tolist() == [[[0, 1, 255], [64, 153, 255]]]
    assert _decode(encode_png(np.eye(3, dtype=bool))).tolist() == (np.eye(3) * 255).tolist()
    labels = np.array([[0, 1], [2, 7]], np.int64)
    np.testing.assert_array_equal(_decode(encode_png(labels)), labels)
    assert _decode(encode_png(labels * 1000)).dtype == np.uint16
    with pytest.raises(ValueError, match=r"\[0, 65535\]"):
        encode_png(labels - 1)
    with pytest.raises(ValueError, match="HxWx3"):
        encode_png(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="empty"):
        encode_png(np.zeros((0, 4)))


def test_write_png_is_atomic_and_public(tmp_path: Path) -> None:
    p = write_png(tmp_path / "a" / "b.png", np.zeros((3, 4, 3), np.uint8))
    assert p == tmp_path / "a" / "b.png" and oct(p.stat().st_mode & 0o777) == "0o644"
    assert image_dimensions(p.read_bytes(), name=str(p)) == (4, 3)
    assert [f.name for f in p.parent.iterdir()] == ["b.png"]


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp", ".gif"])
def test_dimensions_from_headers(ext: str) -> None:
    img = np.random.default_rng(0).integers(0, 256, (13, 29, 3), dtype=np.uint8)
    if ext == ".gif" and not cv2.haveImageWriter("x.gif"):
        pytest.skip("OpenCV without a GIF writer")
    data = cv2.imencode(ext, img)[1].tobytes()
    assert image_dimensions(data) == (29, 13)
    assert image_dimensions(data, sniff_media_type(data), name="x") == (29, 13)


def test_webp_lossless_and_extended_headers() -> None:
    data = cv2.imencode(".webp", np.zeros((7, 300, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert data[12:16] == b"VP8L" and image_dimensions(data) == (300, 7)
    vp8x = b"RIFF" + struct.pack("<I", 22) + b"WEBPVP8X" + struct.pack("<I", 10) + bytes(4)
    vp8x += (1999).to_bytes(3, "little") + (99).to_bytes(3, "little")
    assert image_dimensions(vp8x) == (2000, 100)


def test_sniffing() -> None:
    png = synth_png(4, 5)
    assert sniff_media_type(png) == "image/png" and sniff_media_type(synth_wav(0.01, 8000)) == "audio/wav"
    assert sniff_media_type(cv2.imencode(".tiff", np.zeros((2, 2), np.uint8))[1].tobytes()) == "image/tiff"
    assert image_dimensions(cv2.imencode(".tiff", np.zeros((2, 2), np.uint8))[1].tobytes()) is None
    assert sniff_media_type(b"\x1f\x8b\x08") == "application/gzip" and sniff_media_type(b" [1]") == "application/json"
    assert sniff_media_type(b"") is None and image_dimensions(b"hello") is None


def test_truncated_and_corrupt_headers_name_the_input() -> None:
    png = synth_png(16, 16)
    with pytest.raises(MediaError, match=r"^cut\.png: truncated PNG"):
        image_dimensions(png[: len(png) // 2], name="cut.png")
    with pytest.raises(MediaError, match=r"^a\.png: truncated PNG: no IEND"):
        image_dimensions(png[:-12], name="a.png")
    bad = bytearray(png)
    bad[45] ^= 0xFF
    with pytest.raises(MediaError, match=r"^bad\.png: corrupt PNG: bad CRC in chunk 'IDAT'"):
        image_dimensions(bytes(bad), name="bad.png")
    idat_first = png[:8] + png[33:]
    with pytest.raises(MediaError, match=r"x: corrupt PNG: the first chunk is 'IDAT', not a 13-byte IHDR"):
        image_dimensions(idat_first, name="x")
    jpg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with pytest.raises(MediaError, match=r"^j\.jpg: truncated JPEG: no end-of-image"):
        image_dimensions(jpg[:-2], name="j.jpg")
    with pytest.raises(MediaError, match=r"^j\.jpg: truncated JPEG"):
        image_dimensions(jpg[:30], name="j.jpg")
    with pytest.raises(MediaError, match=r"^b\.bmp: truncated BMP"):
        image_dimensions(b"BM" + bytes(10), "image/bmp", name="b.bmp")
    with pytest.raises(MediaError, match=r"^w\.webp: truncated WebP"):
        image_dimensions(b"RIFF\x00\x00\x00\x00WEBPVP8 ", name="w.webp")


def test_check_pixels() -> None:
    check_pixels(10, 10, 100)
    with pytest.raises(MediaError, match="big.png: invalid image size 0x5"):
        check_pixels(0, 5, 100, "big.png")
    with pytest.raises(MediaTooLargeError, match=r"big.png: image is 20x10 = 200 pixels, above the limit"):
        check_pixels(20, 10, 100, "big.png")


def test_wav_round_trip_through_the_parser_and_the_wave_module(tmp_path: Path) -> None:
    x = np.stack([np.linspace(-1.5, 1.5, 101), np.linspace(0.5, -0.5, 101)])  # (C, T), clipped to int16
    data = encode_wav(x, 16000)
    fmt = wav_format(data, "s.wav")
    assert (fmt.sample_rate, fmt.channels, fmt.bits, fmt.is_float) == (16000, 2, 16, False)
    assert fmt.data_offset == 44 and fmt.data_size == 101 * 2 * 2
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()) == (2, 2, 16000, 101)
        back = np.frombuffer(w.readframes(101), "<i2").reshape(101, 2).T
    np.testing.assert_array_equal(back, np.clip(np.rint(x * 32768), -32768, 32767))
    assert back[0, 0] == -32768 and back[0, -1] == 32767 and back[1, 50] == 0
    sf = pytest.importorskip("soundfile")  # a reader that divides by 32768 gets the input back to half a step
    y, rate = sf.read(io.BytesIO(encode_wav(x[1], 8000)), dtype="float64")
    assert rate == 8000 and np.abs(y - x[1]).max() <= 0.5 / 32768
    ints = np.array([1, -2, 32767], np.int16)
    assert np.frombuffer(encode_wav(ints, 8000)[44:], "<i2").tolist() == [1, -2, 32767]
    floats = encode_wav(np.array([0.5, np.nan], np.float32), 8000, float32=True)
    f = wav_format(floats)
    assert f.is_float and f.bits == 32 and np.isnan(np.frombuffer(floats, "<f4", 2, f.data_offset)[1])
    p = write_wav(tmp_path / "x" / "m.wav", x[0], 8000)
    assert wav_format(p.read_bytes()).channels == 1 and oct(p.stat().st_mode & 0o777) == "0o644"
    with pytest.raises(ValueError, match="int16"):
        encode_wav(np.zeros(3, np.int32), 8000)


def test_wav_errors_name_the_input() -> None:
    data = synth_wav(0.1, 8000)
    with pytest.raises(MediaError, match=r"^up: not a RIFF/WAVE"):
        wav_format(b"RIFX" + data[4:], "up")
    with pytest.raises(MediaError, match=r"^up: truncated WAV: the data chunk declares 1600 bytes, 16 present"):
        wav_format(data[:60], "up")
    with pytest.raises(MediaError, match="no data chunk"):
        wav_format(data[:36])
    alaw = bytearray(data)
    alaw[20:22] = struct.pack("<H", 6)
    with pytest.raises(UnsupportedMediaError, match="format tag 6"):
        wav_format(bytes(alaw))


def test_synthetic_inputs_are_deterministic() -> None:
    assert synth_png(3, 4, seed=1) == synth_png(3, 4, seed=1) != synth_png(3, 4, seed=2)
    assert image_dimensions(synth_png(3, 4)) == (4, 3)
    a = synth_audio(0.5, 8000, seed=3, channels=2)
    assert a.shape == (2, 4000) and a.dtype == np.float32 and 0.05 < np.abs(a).max() <= 0.32
    np.testing.assert_array_equal(a[0], a[1])
    assert wav_format(synth_wav(0.25, 16000, channels=2)).data_size == 16000 // 4 * 2 * 2
