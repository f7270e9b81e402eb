"""ad-sample builder, synthetic defects and the MVTec / BTAD / MVTec3D-RGB readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sa_anomaly.config import load_ad_config
from sa_anomaly.data import (
    AnomalyImageDataset,
    SyntheticValidationDataset,
    detect_layout,
    list_samples,
    split_train_val,
)
from sa_anomaly.defects import DEFECT_SETS, DEFECTS, apply_defect, defect_names
from sa_anomaly.imageio import read_image, read_mask, write_png
from sa_anomaly.sample import build_sample, main


def test_defect_masks_are_exact() -> None:
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 3), 0.4, np.float32) + 0.05 * rng.random((64, 64, 3)).astype(np.float32)
    for name in DEFECTS:
        out, mask = apply_defect(name, img, rng)
        changed = np.abs(out - img).max(axis=2) > 0
        assert mask.sum() >= 8
        assert np.array_equal(changed, mask), name


@pytest.mark.parametrize("name", DEFECT_SETS["surface"])
def test_surface_defects_change_intensity_only_and_are_seeded(name: str) -> None:
    rng = np.random.default_rng(1)
    grey = 0.3 + 0.4 * rng.random((96, 80, 1)).astype(np.float32)
    img = np.repeat(grey, 3, axis=2)  # a grey surface (magnetic tiles are grey photos)
    for seed in range(5):
        out, mask = apply_defect(name, img, np.random.default_rng(seed))
        again, mask2 = apply_defect(name, img, np.random.default_rng(seed))
        assert np.array_equal(out, again) and np.array_equal(mask, mask2)
        assert np.array_equal(np.abs(out - img).max(axis=2) > 0, mask) and mask.sum() >= 8
        assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 0], out[..., 2])  # still grey
        assert mask.mean() < 0.3, f"{name} covers {mask.mean():.0%} of the image"
        if name in ("pit", "crack", "chip"):
            assert (out[mask] < img[mask]).all(), f"{name} must darken"


def test_defect_sets_and_names() -> None:
    assert defect_names("surface") == ("pit", "crack", "uneven", "chip")
    assert defect_names(["pit", "scratch"]) == ("pit", "scratch")
    assert defect_names("crack") == ("crack",)
    with pytest.raises(KeyError, match="'hole'"):
        defect_names(["pit", "hole"])
    with pytest.raises(ValueError, match="data.val_defects: .*'hole'"):
        load_ad_config("cpu", ["data.val_defects=hole"])
    assert load_ad_config("cpu", ["data.val_defects=surface"]).data.val_defects == "surface"


def test_sample_layout_and_disjoint_rows(tmp_path: Path) -> None:
    out = build_sample(tmp_path / "ad", textures=("gravel",), crop=64, n_train=(2, 3), n_test=(2, 3))
    train = list_samples(out / "gravel", "train")
    test = list_samples(out / "gravel", "test")
    assert len(train) == 6 and all(s.label == 0 for s in train)
    assert len(test) == 12 and sum(s.label for s in test) == 6
    assert {s.defect for s in test} == {"good", *DEFECT_SETS["generic"]}  # the sample set keeps its defects
    bad = next(s for s in test if s.label)
    img_bad = read_image(bad.path)
    mask = read_mask(bad.mask)
    assert mask.any() and img_bad.shape[:2] == mask.shape
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["textures"] == ["gravel"]
    # test crops come from rows >= 300 and never equal a training crop
    train_imgs = [read_image(s.path) for s in train]
    good = [read_image(s.path) for s in test if s.label == 0]
    assert not any(np.array_equal(a, b) for a in train_imgs for b in good)
    assert main([str(tmp_path / "ad"), "--textures", "sand"]) == 2


def _write_tree(root: Path, files: dict[str, np.ndarray]) -> None:
    for rel, arr in files.items():
        write_png(root / rel, arr)


def test_btad_and_mvtec3d_layouts(tmp_path: Path) -> None:
    img = np.random.default_rng(0).random((20, 24, 3)).astype(np.float32)
    mask = np.zeros((20, 24), bool)
    mask[3:6, 4:9] = True
    _write_tree(
        tmp_path / "btad" / "01",
        {"train/ok/0000.png": img, "test/ok/0001.png": img, "test/ko/0002.png": img, "ground_truth/ko/0002.png": mask},
    )
    _write_tree(
        tmp_path / "m3d" / "bagel",
        {
            "train/good/rgb/000.png": img,
            "test/good/rgb/000.png": img,
            "test/crack/rgb/000.png": img,
            "test/crack/gt/000.png": mask,
        },
    )
    assert detect_layout(tmp_path / "btad" / "01") == "btad"
    assert detect_layout(tmp_path / "m3d" / "bagel") == "mvtec3d"
    for cat in (tmp_path / "btad" / "01", tmp_path / "m3d" / "bagel"):
        test = list_samples(cat, "test")
        assert [s.label for s in test] == sorted(s.label for s in test) or len(test) == 2
        bad = [s for s in test if s.label]
        assert len(bad) == 1 and bad[0].mask is not None
        ds = AnomalyImageDataset(test, image_size=16, resize=16)
        item = ds[[s.label for s in test].index(1)]
        assert item["image"].shape == (3, 16, 16) and item["mask"].sum() > 0
    _write_tree(tmp_path / "broken" / "c", {"train/good/a.png": img, "test/hole/b.png": img})
    with pytest.raises(ValueError, match="without a mask"):
        list_samples(tmp_path / "broken" / "c", "test")
    with pytest.raises(ValueError, match="not an MVTec"):
        detect_layout(tmp_path / "m3d")


def test_validation_split_and_synthetic(tmp_path: Path) -> None:
    out = build_sample(tmp_path / "ad", textures=("brick",), crop=64, n_train=(2, 5), n_test=(1, 3))
    train = list_samples(out / "brick", "train")
    tr, va = split_train_val(train, 0.2, seed=0)
    assert len(va) == 2 and len(tr) == 8 and not {s.path for s in tr} & {s.path for s in va}
    assert split_train_val(train, 0.2, seed=0) == (tr, va)
    val = SyntheticValidationDataset(AnomalyImageDataset(va, 64), synthetic=1, seed=0)
    items = [val[i] for i in range(len(val))]
    assert [int(it["label"]) for it in items] == [0, 0, 1, 1]
    assert items[0]["mask"].sum() == 0 and items[2]["mask"].sum() > 0
    assert np.array_equal(val[3]["image"].numpy(), items[3]["image"].numpy())  # deterministic
    surface = SyntheticValidationDataset(AnomalyImageDataset(va, 64), synthetic=4, seed=0, defects="surface")
    assert surface.names == ["pit", "crack", "uneven", "chip"] and len(surface) == 10
    assert all(int(surface[i]["label"]) == 1 and surface[i]["mask"].sum() > 0 for i in range(2, 10))
