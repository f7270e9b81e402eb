"""The offline sample builder ``sr-sample`` on a small subset of the scikit-image pictures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from sa_restoration.data import PairedImageDataset
from sa_restoration.imageio import read_image
from sa_restoration.sample import IMAGES, TEST_IMAGES, TRAIN_IMAGES, build_sample, load_skimage, main


def test_image_lists() -> None:
    assert TEST_IMAGES == ("astronaut", "camera", "coffee", "chelsea", "rocket")
    assert not set(TEST_IMAGES) & set(TRAIN_IMAGES)
    assert set(TEST_IMAGES) | set(TRAIN_IMAGES) == set(IMAGES)
    assert "chelsea" in IMAGES and "cat" not in IMAGES  # skimage's cat() is chelsea: never in train
    for n in ("stereo_motorcycle", "coins", "camera"):
        img = load_skimage(n)
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


def test_build_small_subset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sample"
    assert main([str(out), "--scales", "2", "4", "--only", "camera,coins"]) == 0
    text = capsys.readouterr().out
    assert "built sample set" in text and "x2: PSNR-Y" in text and "x4: PSNR-Y" in text

    for s in (2, 4):
        gt = read_image(out / f"test/GTmod{s}/camera.png")
        lr = read_image(out / f"test/LRbicx{s}/camera.png")
        assert gt.shape == (512, 512, 3) and lr.shape == (512 // s, 512 // s, 3)
        np.testing.assert_array_equal(gt[..., 0], gt[..., 2])  # gray replicated to RGB
        coin_gt = read_image(out / "train/GT/coins.png")
        assert coin_gt.shape == (300, 384, 3)  # 303x384 modcropped to lcm(2, 4) = 4
        assert read_image(out / f"train/LRbicx{s}/coins.png").shape == (300 // s, 384 // s, 3)
    assert not (out / "test/GTmod2/astronaut.png").exists()

    readme = (out / "README.txt").read_text()
    assert "camera" in readme and "CC0" in readme and "Brooklyn Museum" in readme
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["scales"] == [2, 4] and manifest["config"]["train"] == ["coins"]

    # the paired training folders load as a dataset
    ds = PairedImageDataset(out / "train/GT", out / "train/LRbicx4", scale=4, patch_size=16)
    assert ds[0]["lq"].shape == (3, 16, 16)  # type: ignore[union-attr]

    # camera alone: 29.894 dB (x2) / 26.170 dB (x4) on its gray values, +1.32 dB as replicated RGB
    res = build_sample(out, scales=(2, 4), only=["camera", "coins"], log=lambda s: None)
    assert res["built"] is False  # idempotent
    cam2 = res["baseline"][2]["images"]["camera"]
    assert cam2["psnr"] == pytest.approx(29.894, abs=0.01)
    assert cam2["psnr_rgb"] - cam2["psnr"] == pytest.approx(1.32, abs=0.02)
    assert res["baseline"][4]["images"]["camera"]["psnr"] == pytest.approx(26.170, abs=0.01)


def test_idempotent_force_and_repair(tmp_path: Path) -> None:
    out = tmp_path / "s"
    quiet = {"log": lambda s: None}
    assert build_sample(out, scales=(3,), only=["text"], **quiet)["built"] is True
    target = out / "train/GT/text.png"
    mtime = target.stat().st_mtime_ns
    assert build_sample(out, scales=(3,), only=["text"], **quiet)["built"] is False
    assert target.stat().st_mtime_ns == mtime
    assert build_sample(out, scales=(3,), only=["text"], force=True, **quiet)["built"] is True
    # a damaged file makes the set incomplete: rebuilt without --force
    (out / "train/LRbicx3/text.png").write_bytes(b"x")
    assert build_sample(out, scales=(3,), only=["text"], **quiet)["built"] is True
    assert read_image(out / "train/LRbicx3/text.png").shape == (57, 149, 3)
    # another configuration removes the files of the previous one
    assert build_sample(out, scales=(2,), only=["text"], **quiet)["built"] is True
    assert not (out / "train/LRbicx3").exists() or not os.listdir(out / "train/LRbicx3")


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--only", "astronaut,nosuchimage"]) == 2
    assert "nosuchimage" in capsys.readouterr().err
    with pytest.raises(ValueError, match="scales"):
        build_sample(tmp_path, scales=(1,), only=["text"])
