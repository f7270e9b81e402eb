"""shared_attention.io: header sniffing and sizes, PNG / WAV encoding, NIfTI headers and bounded gunzip, titled
panels with legends and colour bars, synthetic inputs."""

from __future__ import annotations

import io
import struct
import wave
import zlib
from pathlib import Path

import numpy as np
import pytest

from shared_attention.io import (
    DARK_PANELS,
    MediaError,
    MediaTooLargeError,
    PanelStyle,
    UnsupportedMediaError,
    check_pixels,
    class_legend,
    colour_bar,
    colourize,
    encode_png,
    encode_wav,
    image_dimensions,
    iter_gunzip_bounded,
    iter_nifti_bytes,
    parse_nifti_header,
    read_nifti_header,
    sniff_media_type,
    synth_audio,
    synth_png,
    synth_wav,
    titled_panels,
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
    tall = np.random.default_rng(4).random((700, 3)) * 1.2 - 0.1  # float rows converted a block at a time
    np.testing.assert_array_equal(_decode(encode_png(tall)), np.floor(np.clip(tall, 0, 1) * 255 + 0.5))


def _chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """(type, body) of every chunk of a PNG file, in order."""
    out, pos = [], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def test_png_text_chunks() -> None:
    img = np.linspace(0, 1, 12).reshape(3, 4)
    data = encode_png(img, text={"heatmap_max": "0.8", "colormap": "jet"})
    kinds = [k for k, _ in _chunks(data)]
    assert kinds == [b"IHDR", b"tEXt", b"tEXt", b"IDAT", b"IEND"]
    assert [b for k, b in _chunks(data) if k == b"tEXt"] == [b"heatmap_max\x000.8", b"colormap\x00jet"]
    np.testing.assert_array_equal(_decode(data), _decode(encode_png(img)))  # the same pixels
    assert image_dimensions(data, name="t.png") == (4, 3)  # CRCs of the text chunks are right
    with pytest.raises(ValueError, match="PNG text 'caf\u00e9\u20ac'"):
        encode_png(img, text={"caf\u00e9\u20ac": "x"})
    with pytest.raises(ValueError, match="1-79"):
        encode_png(img, text={"k" * 80: "x"})


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


# ------------------------------------------------------------------------------------------------------ NIfTI


def _nifti_head(
    shape: tuple[int, ...], datatype: int = 4, vox_offset: float = 352.0, magic: bytes = b"n+1", endian: str = "<"
) -> bytes:
    """352 bytes: a NIfTI-1 header written field by field (no NIfTI library) and the extension flag."""
    head = bytearray(352)
    head[0:4] = struct.pack(endian + "i", 348)
    head[40:56] = struct.pack(endian + "8h", len(shape), *shape, *([1] * (7 - len(shape))))
    head[70:72] = struct.pack(endian + "h", datatype)
    head[108:112] = struct.pack(endian + "f", vox_offset)
    head[344:348] = magic + b"\x00"
    return bytes(head)


def _gz(*parts: bytes) -> bytes:
    """One gzip member holding ``parts`` one after another."""
    z = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join(z.compress(p) for p in parts) + z.flush()


def test_nifti_header_fields_in_either_byte_order() -> None:
    for endian in "<>":
        hdr = parse_nifti_header(_nifti_head((6, 5, 4), 16, 400.0, endian=endian), "v.nii")
        assert (hdr.shape, hdr.datatype, hdr.itemsize, hdr.offset, hdr.single_file) == ((6, 5, 4), 16, 4, 400, True)
        assert hdr.voxels == 120 and hdr.nbytes == 400 + 480
    assert parse_nifti_header(_nifti_head((3, 3), vox_offset=0.0)).offset == 352  # voxels never start earlier
    pair = parse_nifti_header(_nifti_head((3, 3, 3), magic=b"ni1"))
    assert not pair.single_file and pair.offset == 0


def test_nifti_header_errors_name_the_file() -> None:
    good = _nifti_head((6, 5, 4))

    def broken(at: int, value: bytes) -> bytes:
        return good[:at] + value + good[at + len(value) :]

    refused: list[tuple[bytes, type[MediaError], str]] = [
        (broken(0, struct.pack("<i", 349)), UnsupportedMediaError, r"not a NIfTI-1 file \(sizeof_hdr is not 348\)"),
        (good[:300], MediaError, "truncated NIfTI: the header needs 348 bytes, 300 present"),
        (broken(344, b"abc"), UnsupportedMediaError, r"not a NIfTI-1 file \(bad magic"),
        (broken(40, struct.pack("<h", 0)), MediaError, r"invalid NIfTI header: dim\[0\]=0"),
        (broken(42, struct.pack("<h", -6)), MediaError, r"invalid NIfTI shape \(-6, 5, 4\)"),
        (broken(70, struct.pack("<h", 7)), UnsupportedMediaError, "unsupported NIfTI datatype code 7"),
        (broken(108, struct.pack("<f", float("nan"))), MediaError, "invalid NIfTI header: vox_offset=nan"),
    ]
    for head, kind, message in refused:
        with pytest.raises(kind, match=r"^scan\.nii\.gz: " + message):
            parse_nifti_header(head, "scan.nii.gz")
    with pytest.raises(MediaError, match=r"^not a NIfTI-1 file"):  # no name: no prefix
        parse_nifti_header(b"plain text", "")


class _Counting:
    """A ``read(n)`` over bytes that records how much was read."""

    def __init__(self, data: bytes) -> None:
        self.stream, self.consumed = io.BytesIO(data), 0

    def read(self, n: int) -> bytes:
        chunk = self.stream.read(n)
        self.consumed += len(chunk)
        return chunk


def test_bounded_gunzip_stops_at_the_cap() -> None:
    noise = np.random.default_rng(0).integers(0, 256, 4 << 20, dtype=np.uint8).tobytes()  # incompressible
    src = _Counting(_gz(noise))
    out = list(iter_gunzip_bounded(src.read, 100_000, "n.gz"))
    assert b"".join(out) == noise[:100_000]
    assert src.consumed <= 2 * 64 * 1024  # the rest of the 4 MiB stream is never read
    zeros = _Counting(_gz(bytes(64 << 20)))  # a 64 MiB bomb, ~65 KB compressed
    sizes = [len(c) for c in iter_gunzip_bounded(zeros.read, 3 << 20, "z.gz")]
    assert sum(sizes) == 3 << 20 and max(sizes) <= 1 << 20  # 1 MiB steps, nothing kept by the function
    # a stream that ends before the cap yields what it holds; members in sequence and zero padding are read
    two = _gz(b"abc") + _gz(b"def") + bytes(10)
    assert b"".join(iter_gunzip_bounded(io.BytesIO(two).read, 1000)) == b"abcdef"
    whole = _gz(b"x" * 500)
    assert b"".join(iter_gunzip_bounded(io.BytesIO(whole).read, 500)) == b"x" * 500  # exactly the cap
    with pytest.raises(MediaError, match=r"^w\.gz: truncated gzip data \(the CRC / size trailer is missing"):
        list(iter_gunzip_bounded(io.BytesIO(whole[:-4]).read, 500, "w.gz"))
    with pytest.raises(MediaError, match=r"^w\.gz: truncated gzip data \(the stream ends after"):
        list(iter_gunzip_bounded(io.BytesIO(_gz(noise[:5000])[:2000]).read, 10_000, "w.gz"))
    with pytest.raises(MediaError, match=r"^w\.gz: corrupt gzip data"):
        list(iter_gunzip_bounded(io.BytesIO(b"\x1f\x8b\x08\x00" + bytes(30)).read, 10, "w.gz"))


def test_nifti_is_read_header_first_from_bytes_or_a_file(tmp_path: Path) -> None:
    head = _nifti_head((6, 5, 4))  # int16: 240 bytes of voxels
    voxels = bytes(range(240))
    gz = _gz(head, voxels, bytes(5 << 20))  # data after the declared voxels: never inflated
    hdr, gzipped = read_nifti_header(gz, "v.nii.gz", max_voxels=120)
    assert gzipped and hdr.shape == (6, 5, 4) and hdr.nbytes == 592
    assert b"".join(iter_nifti_bytes(gz, hdr, gzipped, "v.nii.gz")) == head + voxels
    path = tmp_path / "v.nii"
    path.write_bytes(head + voxels + b"tail")
    with path.open("rb") as f:  # a file is rewound for each pass, never read whole
        hdr, gzipped = read_nifti_header(f, str(path))
        assert not gzipped and b"".join(iter_nifti_bytes(f, hdr, gzipped, str(path))) == head + voxels
    with pytest.raises(MediaTooLargeError, match=r"^v\.nii\.gz: volume \(6, 5, 4\) has 120 voxels, above .* 100"):
        read_nifti_header(gz, "v.nii.gz", max_voxels=100)
    with pytest.raises(MediaError, match=r"^e\.nii: empty file"):
        read_nifti_header(b"", "e.nii")
    with pytest.raises(UnsupportedMediaError, match="not a NIfTI-1"):  # told it is not gzip: read as it is
        read_nifti_header(gz, "v.nii.gz", gzipped=False)
    short = _gz(head, voxels[:-1])
    hdr, gzipped = read_nifti_header(short, "s.nii.gz")
    with pytest.raises(MediaError, match=r"^s\.nii\.gz: truncated NIfTI: the header declares 592 bytes, 591 present"):
        list(iter_nifti_bytes(short, hdr, gzipped, "s.nii.gz"))
    pair = _nifti_head((6, 5, 4), magic=b"ni1")
    hdr, gzipped = read_nifti_header(pair, "p.hdr")
    with pytest.raises(MediaError, match=r"^p\.hdr: .*\.hdr/\.img pair"):
        list(iter_nifti_bytes(pair, hdr, gzipped, "p.hdr"))


# ------------------------------------------------------------------------------------------- panels, legends


def _find(out: np.ndarray, panel: np.ndarray) -> tuple[int, int]:
    """Where ``panel`` stands unchanged in ``out`` (exact match)."""
    diff = cv2.matchTemplate(out, panel, cv2.TM_SQDIFF)
    r, c = (int(i) for i in np.unravel_index(int(diff.argmin()), diff.shape))
    assert np.array_equal(out[r : r + panel.shape[0], c : c + panel.shape[1]], panel), "panel not found unchanged"
    return r, c


def test_titled_panels_layout() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (60, 150, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (60, 130, 3), dtype=np.uint8)
    out = titled_panels([a, b], ["first", "second"])
    assert out.dtype == np.uint8 and out.shape[2] == 3
    (ra, ca), (rb, cb) = _find(out, a), _find(out, b)
    assert ra == rb > 0 and ca == 0 and cb >= 150 + 4  # one row, left to right, a gap between, titles above
    assert out.shape == (ra + 60, cb + 130, 3)  # nothing below or beside without a legend or a colour bar
    strip = out[:ra]
    assert (strip == 255).all(axis=2).mean() > 0.5 and (strip.max(axis=2) < 128).any()  # black text on white
    # scaled to a common height, aspect kept; a whole factor is an exact enlargement
    tall = titled_panels([a, np.zeros((30, 40), np.float32)], ["a", "b"], height=120)
    r, c = _find(tall, np.repeat(np.repeat(a, 2, axis=0), 2, axis=1))
    assert tall.shape[0] == r + 120 and tall[r : r + 120, c + 300 + 4 :].shape[1] >= 160
    # narrow panels are enlarged by a whole factor so that titles fit; a legend below; a colour bar beside
    small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    swatches = [("1 liver", (230, 80, 60)), ("2 spleen", (70, 140, 240))]
    out = titled_panels([small], ["image"], min_width=64, legend=swatches, colour_scale=(0.0, 2.0))
    r, c = _find(out, np.repeat(np.repeat(small, 4, axis=0), 4, axis=1))
    assert c == 0 and out.shape[1] > 64 + 4  # the bar stands right of the panel
    below = out[r + 48 :]
    for _, colour in swatches:
        assert (below == colour).all(axis=2).sum() >= 25
    bar = out[r : r + 48, 64 + 4 + 2 + 5]  # the middle of the 10 px bar, after the gap and its 2 px margin
    assert bar[0].argmax() == 0 and bar[-1].argmax() == 2  # red (vmax) at the top, blue (vmin) at the bottom
    with pytest.raises(ValueError, match="titles"):
        titled_panels([a, b], ["one"])
    with pytest.raises(ValueError, match="no panels"):
        titled_panels([], [])


def test_styles_legends_and_colour_bars() -> None:
    dark = titled_panels([np.full((40, 140), 0.5)], ["x"], style=DARK_PANELS)
    assert tuple(dark[0, 0]) == DARK_PANELS.background and (dark[:-40].max(axis=2) > 200).any()
    assert PanelStyle().background == (255, 255, 255)
    strip = class_legend([(f"{i} class number {i}", (i * 20, 100, 50)) for i in range(1, 9)], 200, 18)
    assert strip.shape[1] == 200 and strip.shape[0] >= 3 * 18 and strip.shape[0] % 18 == 0  # wrapped lines
    assert class_legend([], 50).shape == (0, 50, 3)
    bar = colour_bar(100, -1.0, 3.0, "map value")
    assert bar.dtype == np.uint8 and bar.shape[0] > 100
    jet = colourize(np.array([[-1.0, 1.0, 3.0, 9.0]]), -1.0, 3.0)
    assert jet.dtype == np.float32 and jet.shape == (1, 4, 3)
    assert jet[0, 0].argmax() == 2 and jet[0, 2].argmax() == 0 and np.array_equal(jet[0, 2], jet[0, 3])  # clipped
