"""datasets/restoration/prepare_div2k.py on tiny generated folders."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from sa_restoration.data import PairedImageDataset, find_images
from sa_restoration.imageio import read_image, write_png
from sa_restoration.metrics import quantize_uint8
from sa_restoration.resize import imresize

SCRIPT = Path(__file__).resolve().parents[3] / "datasets" / "restoration" / "prepare_div2k.py"


@pytest.fixture(scope="module")
def prep() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prepare_div2k", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["prepare_div2k"] = mod  # lets worker processes unpickle its functions
    spec.loader.exec_module(mod)
    return mod


def _img(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_tile_starts(prep: ModuleType) -> None:
    assert prep.tile_starts(2040, 480, 240, 48) == [0, 240, 480, 720, 960, 1200, 1440, 1560]
    assert prep.tile_starts(1356, 480, 240, 48) == [0, 240, 480, 720, 876]  # 156 px left > 48: edge tile
    assert prep.tile_starts(1000, 480, 240, 48) == [0, 240, 480]  # 40 px left <= 48: dropped
    assert prep.tile_starts(300, 480, 240, 48) == [0]
    assert prep.tile_starts(510, 120, 60, 12) == [0, 60, 120, 180, 240, 300, 360, 390]  # = HR / 4


def test_div2k_layout_with_generated_lr(prep: ModuleType, tmp_path: Path) -> None:
    root = tmp_path / "DIV2K"
    hr = root / "DIV2K_train_HR"
    write_png(hr / "0001.png", _img(48, 72, 1))
    write_png(hr / "0002.png", _img(36, 36, 2))
    counts = prep.prepare_div2k(root, scales=(2, 4), generate=True, crop=24, step=12, thresh=4, progress=False)
    # 0001: rows [0, 12, 24], cols [0, 12, 24, 36, 48] -> 15 tiles; 0002: [0, 12] x [0, 12] -> 4 tiles
    assert counts == {"HR": 19, "X2": 19, "X4": 19}
    assert (root / "DIV2K_train_LR_bicubic/X4/0001x4.png").is_file()
    names = [p.name for p in find_images(root / "DIV2K_train_HR_sub")]
    assert names[0] == "0001_s001.png" and len(names) == 19
    assert [p.name for p in find_images(root / "DIV2K_train_LR_bicubic/X4_sub")] == names
    tile = read_image(root / "DIV2K_train_HR_sub/0001_s007.png")  # row 1 (y=12), col 1 (x=12)
    np.testing.assert_array_equal(quantize_uint8(tile), _img(48, 72, 1)[12:36, 12:36])
    lr_tile = read_image(root / "DIV2K_train_LR_bicubic/X4_sub/0001_s007.png")
    lr_full = quantize_uint8(imresize(_img(48, 72, 1) / 255.0, 0.25))
    np.testing.assert_array_equal(quantize_uint8(lr_tile), lr_full[3:9, 3:9])
    ds = PairedImageDataset(root / "DIV2K_train_HR_sub", root / "DIV2K_train_LR_bicubic/X2_sub", 2, patch_size=8)
    assert len(ds) == 19 and ds[0]["gt"].shape == (3, 16, 16)  # type: ignore[union-attr]


def test_div2k_errors(prep: ModuleType, tmp_path: Path) -> None:
    root = tmp_path / "D"
    with pytest.raises(FileNotFoundError, match="DIV2K_train_HR"):
        prep.prepare_div2k(root, progress=False)
    write_png(root / "DIV2K_train_HR/0001.png", _img(50, 48, 0))
    with pytest.raises(ValueError, match=r"0001\.png \(48x50\)"):
        prep.prepare_div2k(root, scales=(4,), crop=24, step=12, progress=False)
    write_png(root / "DIV2K_train_HR/0001.png", _img(48, 48, 0))
    with pytest.raises(FileNotFoundError, match="--generate-lr"):
        prep.prepare_div2k(root, scales=(4,), crop=24, step=12, progress=False)


def test_subimages_cli_with_workers(prep: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    for i in range(3):
        write_png(src / f"im{i}.png", _img(40, 40, i))
    rc = prep.main(["subimages", "--input", str(src), "--output", str(tmp_path / "out"), "--crop", "20",
                    "--step", "10", "--thresh", "2", "--workers", "2"])
    assert rc == 0 and "27 sub-images" in capsys.readouterr().out
    assert len(find_images(tmp_path / "out")) == 27
    assert prep.main(["subimages", "--input", str(tmp_path / "empty"), "--output", str(tmp_path / "o")]) == 2


def test_testset_cli(prep: ModuleType, tmp_path: Path) -> None:
    hr = tmp_path / "Set5/original"
    write_png(hr / "baby.png", _img(27, 30, 3))
    assert prep.main(["testset", "--hr", str(hr), "--output", str(tmp_path / "Set5"), "--scales", "2", "3",
                      "--no-progress"]) == 0
    assert read_image(tmp_path / "Set5/GTmod3/baby.png").shape == (27, 30, 3)
    assert read_image(tmp_path / "Set5/LRbicx3/baby.png").shape == (9, 10, 3)
    gt2 = read_image(tmp_path / "Set5/GTmod2/baby.png")
    assert gt2.shape == (26, 30, 3)
    np.testing.assert_array_equal(
        quantize_uint8(read_image(tmp_path / "Set5/LRbicx2/baby.png")), quantize_uint8(imresize(gt2, 0.5))
    )
    ds = PairedImageDataset(tmp_path / "Set5/GTmod3", tmp_path / "Set5/LRbicx3", 3)
    assert ds[0]["name"] == "baby"
