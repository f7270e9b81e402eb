"""Header-only checks of uploads: sniffing, image sizes, WAV and NIfTI headers, strict JSON."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from sa_serve.uploads import (
    UploadError,
    check_audio,
    check_image,
    check_volume,
    image_dimensions,
    parse_json,
    sniff,
    wav_format,
)


def test_sniff_by_magic_bytes(kit, sample_png):
    import cv2

    img = np.zeros((5, 7, 3), np.uint8)
    assert sniff(sample_png) == "image/png"
    assert sniff(cv2.imencode(".jpg", img)[1].tobytes()) == "image/jpeg"
    assert sniff(cv2.imencode(".bmp", img)[1].tobytes()) == "image/bmp"
    assert sniff(cv2.imencode(".webp", img)[1].tobytes()) == "image/webp"
    assert sniff(cv2.imencode(".tiff", img)[1].tobytes()) == "image/tiff"
    assert sniff(kit.wav_bytes()) == "audio/wav"
    assert sniff(kit.nifti_bytes(gz=True)) == "application/gzip"
    assert sniff(kit.nifti_bytes(gz=False)) == "application/x-nifti"
    assert sniff(b'  {"a": 1}') == "application/json" and sniff(b"[1]") == "application/json"
    assert sniff(b"hello") is None and sniff(b"") is None


@pytest.mark.parametrize("ext", [".png", ".jpg", ".bmp", ".webp"])
def test_image_dimensions_match_the_encoder(ext):
    import cv2

    data = cv2.imencode(ext, np.zeros((13, 29, 3), np.uint8))[1].tobytes()
    assert image_dimensions(data, sniff(data)) == (29, 13)


def test_check_image_limits_and_truncation(kit, sample_png):
    assert check_image(sample_png, "image/png", 1000) == (16, 12)
    with pytest.raises(UploadError, match="above the limit") as exc:
        check_image(kit.bomb_png(100_000, 100_000), "image/png", 16_000_000)
    assert exc.value.status == 413
    with pytest.raises(UploadError, match="truncated PNG"):
        check_image(sample_png[:-5], "image/png", 1000)
    with pytest.raises(UploadError, match="IHDR"):
        check_image(b"\x89PNG\r\n\x1a\n" + kit.png_chunk(b"IDAT", b"x"), "image/png", 1000)
    with pytest.raises(UploadError, match="invalid image size 0x5"):
        check_image(kit.bomb_png(0, 5), "image/png", 1000)


def test_jpeg_without_end_marker_is_truncated():
    import cv2

    data = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    with pytest.raises(UploadError, match="end-of-image"):
        check_image(data[:-2], "image/jpeg", 1000)


def test_wav_format_and_constraints(kit):
    fmt = wav_format(kit.wav_bytes(16000, 0.25, channels=2))
    assert (fmt.sample_rate, fmt.channels, fmt.bits, fmt.is_float) == (16000, 2, 16, False)
    assert fmt.data_size == 16000 // 4 * 2 * 2
    assert check_audio(kit.wav_bytes(8000, 0.1), {"sample_rate": 8000, "channels": 1}).sample_rate == 8000
    with pytest.raises(UploadError, match="3.0 s long") as exc:
        check_audio(kit.wav_bytes(8000, 3.0), {"max_seconds": 2})
    assert exc.value.status == 413
    x = np.zeros(100, np.float32)
    assert check_audio(kit.wav_bytes(8000, float_data=x), {}).is_float
    x[3] = np.inf
    with pytest.raises(UploadError, match="NaN or Inf"):
        check_audio(kit.wav_bytes(8000, float_data=x), {})
    with pytest.raises(UploadError, match="RIFF"):
        wav_format(b"RIFX" + b"\x00" * 40)


def test_check_volume(kit):
    assert check_volume(kit.nifti_bytes((6, 5, 4)), "application/gzip", 1000, 10**6) == (6, 5, 4)
    assert check_volume(kit.nifti_bytes((6, 5, 4), gz=False), "application/x-nifti", 1000, 10**6) == (6, 5, 4)
    with pytest.raises(UploadError, match="120 voxels"):
        check_volume(kit.nifti_bytes((6, 5, 4)), "application/gzip", 100, 10**6)
    with pytest.raises(UploadError, match="not a NIfTI-1 file") as exc:  # header first: nothing inflated
        check_volume(kit.gzip(b"\x00" * 10**6), "application/gzip", 10**9, 10**5)
    assert exc.value.status == 415
    big = bytearray(kit.nifti_bytes((6, 5, 4), gz=False))
    big[108:112] = struct.pack("<f", float(10**6))  # voxels start at 1 MB: the declared size is over the cap
    with pytest.raises(UploadError, match="inflates") as exc:
        check_volume(kit.gzip(bytes(big) + b"\x00" * 10**6), "application/gzip", 10**9, 10**5)
    assert exc.value.status == 413
    with pytest.raises(UploadError, match="truncated gzip"):
        check_volume(kit.nifti_bytes((6, 5, 4))[:-20], "application/gzip", 1000, 10**6)
    bad = bytearray(kit.nifti_bytes((6, 5, 4), gz=False))
    bad[0:4] = struct.pack("<i", 349)
    with pytest.raises(UploadError, match="sizeof_hdr"):
        check_volume(bytes(bad), "application/x-nifti", 1000, 10**6)


def test_parse_json_is_strict():
    assert parse_json(b'{"a": [1, 2.5, -3e10]}') == {"a": [1, 2.5, -3e10]}
    for text, msg in (
        (b"NaN", "NaN"),
        (b"[Infinity]", "Infinity"),
        (b"[-Infinity]", "-Infinity"),
        (b"[1e400]", "overflows"),
    ):
        with pytest.raises(UploadError, match=msg) as exc:
            parse_json(text)
        assert exc.value.status == 422
    with pytest.raises(UploadError, match="line 2 column 1"):
        parse_json(b'{"a":\n}')
    with pytest.raises(UploadError, match="UTF-8"):
        parse_json(b'["\xff"]')
    with pytest.raises(UploadError, match="invalid JSON"):
        parse_json(b"[" + b"9" * 5000 + b"]")


def test_declared_media_types_of_the_real_packages_are_honoured(kit):
    """medseg declares raw NIfTI as application/octet-stream; speechsep accepts FLAC/OGG at any rate."""
    from sa_serve.app import Limits, _check_content

    from shared_attention.serving import FieldSpec

    seg = FieldSpec(
        "volume", "volume", ("application/gzip", "application/octet-stream", "image/png"), "", "", {"max_voxels": 1000}
    )
    assert _check_content(kit.nifti_bytes((6, 5, 4), gz=False), seg, Limits())[0] == "application/x-nifti"
    assert _check_content(kit.nifti_bytes((6, 5, 4), gz=True), seg, Limits())[0] == "application/gzip"
    with pytest.raises(UploadError, match="audio/wav"):
        _check_content(kit.wav_bytes(), seg, Limits())
    sep = FieldSpec("audio", "audio", ("audio/wav", "audio/flac", "audio/ogg"), "", "", {"max_seconds": 600})
    assert _check_content(kit.wav_bytes(44100, 0.1, channels=2), sep, Limits())[0] == "audio/wav"
    assert _check_content(b"fLaC" + b"\x00" * 60, sep, Limits())[0] == "audio/flac"
    assert _check_content(b"OggS" + b"\x00" * 60, sep, Limits())[0] == "audio/ogg"
    with pytest.raises(UploadError, match="image/png") as exc:
        _check_content(kit.png_bytes(np.zeros((4, 4, 3), np.uint8)), sep, Limits())
    assert exc.value.status == 415


def test_ndjson_bodies_when_the_predictor_accepts_them():
    from sa_serve.app import Limits, _check_content

    from shared_attention.serving import FieldSpec

    spec = FieldSpec("candidates", "json", ("application/json", "application/x-ndjson"))
    assert _check_content(b'{"a": 1}\n\n{"a": 2}\n', spec, Limits())[:2] == (
        "application/x-ndjson",
        [{"a": 1}, {"a": 2}],
    )
    with pytest.raises(UploadError, match="NDJSON line 2: JSON contains NaN"):
        _check_content(b'{"a": 1}\n{"a": NaN}\n', spec, Limits())
    plain = FieldSpec("candidates", "json", ("application/json",))
    with pytest.raises(UploadError, match="invalid JSON at line 2"):
        _check_content(b'{"a": 1}\n{"a": 2}\n', plain, Limits())
