"""Image I/O: conversions and clear errors on bad files."""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from sa_restoration import imageio
from sa_restoration.imageio import ImageError, encode_png, find_images, image_size, read_image, write_png


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)


def make_png(rows: list[bytes], width: int, height: int, color_type: int, bit_depth: int = 8) -> bytes:
    """A PNG written by hand (filter 0 on every row) so that layouts cv2 cannot encode are covered."""
    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b"")


def _rgb(h: int = 6, w: int = 7, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_png_roundtrip_is_exact_and_rgb_ordered(tmp_path: Path) -> None:
    img = _rgb()
    img[0, 0] = (255, 0, 0)  # pure red must stay in channel 0
    p = write_png(tmp_path / "sub" / "a.png", img.astype(np.float32) / 255.0)
    assert p.is_file() and oct(p.stat().st_mode & 0o777) == "0o644"
    back = read_image(p)
    assert back.dtype == np.float32 and back.shape == (6, 7, 3)
    np.testing.assert_array_equal(np.round(back * 255).astype(np.uint8), img)
    assert back[0, 0].tolist() == [1.0, 0.0, 0.0]
    # bytes input and explicit name
    np.testing.assert_array_equal(read_image(encode_png(img), name="x"), back)


def test_write_png_rounds_and_clips(tmp_path: Path) -> None:
    x = np.array([[[-0.2, 0.5 / 255, 1.3]]], dtype=np.float32)  # 0.5 level rounds half up
    back = read_image(write_png(tmp_path / "r.png", x))
    assert (back * 255).round().astype(int).tolist() == [[[0, 1, 255]]]
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_grayscale_replicated(tmp_path: Path) -> None:
    g = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    p = tmp_path / "g.png"
    p.write_bytes(cv2.imencode(".png", g)[1].tobytes())
    img = read_image(p)
    assert img.shape == (4, 5, 3)
    for c in range(3):
        np.testing.assert_allclose(img[..., c], g / 255.0, atol=1e-7)


def test_16bit_scaled_by_65535(tmp_path: Path) -> None:
    a = np.array([[[0, 32768, 65535]]], dtype=np.uint16)  # BGR order on disk
    p = tmp_path / "d.png"
    p.write_bytes(cv2.imencode(".png", a)[1].tobytes())
    img = read_image(p)
    np.testing.assert_allclose(img[0, 0], [65535 / 65535, 32768 / 65535, 0.0], rtol=0, atol=1e-7)


def test_rgba_alpha_dropped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bgra = np.zeros((3, 4, 4), np.uint8)
    bgra[..., 0], bgra[..., 1], bgra[..., 2], bgra[..., 3] = 10, 20, 30, 0  # fully transparent
    p = tmp_path / "rgba.png"
    p.write_bytes(cv2.imencode(".png", bgra)[1].tobytes())
    with caplog.at_level(logging.WARNING, logger="sa_restoration.imageio"):
        img = read_image(p)
    np.testing.assert_allclose(img[0, 0] * 255, [30, 20, 10], atol=1e-4)  # not composited on white
    assert "alpha" in caplog.text and "rgba.png" in caplog.text


def test_gray_alpha_png(tmp_path: Path) -> None:
    w, h = 5, 3
    data = make_png([bytes([77, 200] * w)] * h, w, h, color_type=4)
    p = tmp_path / "la.png"
    p.write_bytes(data)
    img = read_image(p)
    assert img.shape == (3, 5, 3)
    np.testing.assert_allclose(img * 255, 77, atol=1e-4)


def test_float_tiff_clipped(tmp_path: Path) -> None:
    f = np.array([[[-0.5, 0.25, 2.0]]], dtype=np.float32)
    p = tmp_path / "f.tiff"
    ok, buf = cv2.imencode(".tiff", f)
    assert ok
    p.write_bytes(buf.tobytes())
    np.testing.assert_allclose(read_image(p)[0, 0], [1.0, 0.25, 0.0])


def test_nan_float_refused(tmp_path: Path) -> None:
    f = np.full((2, 2, 3), np.nan, dtype=np.float32)
    p = tmp_path / "nan.tiff"
    p.write_bytes(cv2.imencode(".tiff", f)[1].tobytes())
    with pytest.raises(ImageError, match="nan.tiff.*NaN"):
        read_image(p)


def test_truncated_png(tmp_path: Path) -> None:
    data = encode_png(_rgb(32, 32))
    p = tmp_path / "trunc.png"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match=r"trunc\.png.*truncated"):
        read_image(p)
    p.write_bytes(data[:-12])  # only IEND missing: cv2 could decode everything, we still refuse
    with pytest.raises(ImageError, match="truncated"):
        read_image(p)


def test_corrupt_png_crc(tmp_path: Path) -> None:
    data = bytearray(encode_png(_rgb(16, 16)))
    data[40] ^= 0xFF  # inside the IDAT payload
    p = tmp_path / "bad.png"
    p.write_bytes(bytes(data))
    with pytest.raises(ImageError, match=r"bad\.png.*CRC"):
        read_image(p)


def test_truncated_jpeg(tmp_path: Path) -> None:
    data = cv2.imencode(".jpg", _rgb(64, 64))[1].tobytes()
    assert read_image(data).shape == (64, 64, 3)
    p = tmp_path / "cut.jpg"
    p.write_bytes(data[: len(data) - 100])
    with pytest.raises(ImageError, match=r"cut\.jpg.*truncated JPEG"):
        read_image(p)


@pytest.mark.parametrize("payload", [b"garbage bytes, not an image" * 5, b"\x00" * 64, b"GIF89a" + b"\x01" * 40])
def test_garbage(tmp_path: Path, payload: bytes) -> None:
    p = tmp_path / "junk.png"
    p.write_bytes(payload)
    with pytest.raises(ImageError, match=r"junk\.png"):
        read_image(p)


def test_empty_missing_and_directory(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: empty file"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(ImageError, match=r"nope\.png: no such file"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)
    assert issubclass(ImageError, ValueError)


def test_decompression_bomb_png_header(tmp_path: Path) -> None:
    # A valid-looking PNG declaring 100000 x 100000 pixels, with (almost) no data: refused from the header.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")
    p = tmp_path / "bomb.png"
    p.write_bytes(data)
    assert image_size(data) == (100_000, 100_000)
    with pytest.raises(ImageError, match=r"bomb\.png.*100000x100000.*max_pixels"):
        read_image(p)


def test_max_pixels_jpeg_and_decoded_formats(tmp_path: Path) -> None:
    jpg = cv2.imencode(".jpg", _rgb(40, 50))[1].tobytes()
    assert image_size(jpg) == (50, 40)
    with pytest.raises(ImageError, match="50x40 = 2,000 pixels"):
        read_image(jpg, name="small.jpg", max_pixels=1999)
    tif = cv2.imencode(".tiff", _rgb(40, 50))[1].tobytes()
    assert image_size(tif) is None  # decoded first, then checked
    with pytest.raises(ImageError, match="max_pixels"):
        read_image(tif, max_pixels=100)
    assert read_image(tif, max_pixels=2000).shape == (40, 50, 3)


def test_two_sample_tiff_read_as_gray(tmp_path: Path) -> None:
    # Hand-made uncompressed TIFF with SamplesPerPixel=2 (gray + extra sample): OpenCV keeps the gray plane.
    w, h = 3, 2
    pixels = bytes(range(w * h * 2))
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, 2, None), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, None),
            (277, 3, 1, 2), (278, 3, 1, h), (279, 4, 1, len(pixels)), (284, 3, 1, 1), (338, 3, 1, 0)]
    data_off = 8 + 2 + len(tags) * 12 + 4
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(tags))
    for tag, typ, cnt, val in tags:
        if tag == 258:
            out += struct.pack("<HHIHH", tag, typ, cnt, 8, 8)
        elif tag == 273:
            out += struct.pack("<HHII", tag, typ, cnt, data_off)
        elif typ == 3:
            out += struct.pack("<HHIHH", tag, typ, cnt, val, 0)
        else:
            out += struct.pack("<HHII", tag, typ, cnt, val)
    out += struct.pack("<I", 0) + pixels
    img = read_image(out, name="two.tiff")
    assert img.shape == (2, 3, 3)
    np.testing.assert_allclose(img[..., 0] * 255, [[0, 2, 4], [6, 8, 10]], atol=1e-4)


@pytest.mark.parametrize("channels", [2, 5])
def test_unsupported_channel_count(monkeypatch: pytest.MonkeyPatch, channels: int) -> None:
    # OpenCV never hands back 2 channels from real files, so the decoder is stubbed to cover the branch.
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda buf, flags: np.zeros((4, 4, channels), np.uint8))
    with pytest.raises(ImageError, match=rf"odd\.png: unsupported channel count {channels}"):
        read_image(encode_png(_rgb()), name="odd.png")


def test_unsupported_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imageio.cv2, "imdecode", lambda buf, flags: np.zeros((4, 4, 3), np.int32))
    with pytest.raises(ImageError, match="int32"):
        read_image(encode_png(_rgb()), name="i.png")


def test_encode_png_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="HxWx3"):
        encode_png(np.zeros((4, 4, 2), np.float32))
    assert encode_png(np.zeros((4, 4), np.float32)).startswith(b"\x89PNG")


def test_find_images(tmp_path: Path) -> None:
    for n in ["b.PNG", "a.jpg", "c.webp", ".hidden.png", "notes.txt", "d.tif"]:
        (tmp_path / n).write_bytes(b"x")
    (tmp_path / "dir.png").mkdir()
    assert [p.name for p in find_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp", "d.tif"]
    with pytest.raises(FileNotFoundError, match="missing"):
        find_images(tmp_path / "missing")
