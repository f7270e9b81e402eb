"""datasets/anomaly/prepare_magnetic_tile.py on a tiny generated MT_* layout (never the real data)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
from sa_anomaly.data import AnomalyImageDataset, list_samples
from sa_anomaly.imageio import read_image, read_mask

SCRIPT = Path(__file__).resolve().parents[3] / "datasets" / "anomaly" / "prepare_magnetic_tile.py"
FREE_SIZES = [(40, 60), (52, 30), (36, 100), (44, 44), (30, 70), (60, 40), (48, 56), (33, 91), (70, 25), (41, 41)]


@pytest.fixture(scope="module")
def prep() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prepare_magnetic_tile", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["prepare_magnetic_tile"] = mod
    spec.loader.exec_module(mod)
    return mod


def _photo(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(seed).integers(40, 200, (h, w), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def _mask(path: Path, h: int, w: int, core: bool = True) -> np.ndarray:
    """A mask with an edge ring of 30 (below the threshold) around a 255 core; returns the expected 0/255 mask."""
    m = np.zeros((h, w), np.uint8)
    want = np.zeros((h, w), np.uint8)
    m[5:15, 6:18] = 30
    if core:
        m[7:13, 8:16] = 255
        m[6, 7] = 128  # just above the threshold: defect
        m[14, 7] = 127  # just at it: not
        want[7:13, 8:16] = 255
        want[6, 7] = 255
    assert cv2.imwrite(str(path), m)
    return want


def _fake_mt(root: Path) -> dict[str, np.ndarray]:
    """10 free images (MT_Free/, masks beside them), MT_Blowhole flat, MT_Crack in Imgs/, MT_Uneven with one empty
    mask; returns the expected 0/255 masks by ``<defect>/<stem>``."""
    for i, (h, w) in enumerate(FREE_SIZES):
        # every photo its own tile (the same set-up each time), so the split counts are exact
        _photo(root / "MT_Free" / f"exp1_num_{100 + i}.jpg", h, w, i)
        _mask(root / "MT_Free" / f"exp1_num_{100 + i}.png", h, w, core=False)
    want: dict[str, np.ndarray] = {}
    layout = {
        "MT_Blowhole": ("", [(40, 50), (64, 32)]),
        "MT_Crack": ("Imgs", [(30, 84), (45, 45), (50, 20)]),
        "MT_Uneven": ("", [(36, 48), (48, 36)]),
    }
    for k, (folder, (sub, sizes)) in enumerate(layout.items()):
        for j, (h, w) in enumerate(sizes):
            stem = f"exp{j + 1}_num_{1000 * k + j}"
            d = root / folder / sub
            _photo(d / f"{stem}.jpg", h, w, 50 + 10 * k + j)
            empty = folder == "MT_Uneven" and j == 1
            want[f"{folder[3:].lower()}/{stem}"] = _mask(d / f"{stem}.png", h, w, core=not empty)
    return want


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return np.asarray(img)


def _stems(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.png"))


def test_layout_names_lossless_and_masks_thresholded(prep: ModuleType, tmp_path: Path) -> None:
    want = _fake_mt(tmp_path / "mt")
    summary = prep.prepare(tmp_path / "mt", tmp_path / "out", test_good=0.3, seed=0)
    cat = tmp_path / "out" / "magnetic_tile"
    assert summary["counts"] == {
        "train/good": 7, "test/good": 3, "test/blowhole": 2, "test/crack": 3, "test/uneven": 1,
    }  # fmt: skip
    free = sorted(f"exp1_num_{100 + i}" for i in range(10))
    assert sorted(_stems(cat / "train/good") + _stems(cat / "test/good")) == free  # names kept, disjoint
    assert _stems(cat / "test/crack") == ["exp1_num_1000", "exp2_num_1001", "exp3_num_1002"]  # found in Imgs/
    assert _stems(cat / "ground_truth/crack") == ["exp1_num_1000_mask", "exp2_num_1001_mask", "exp3_num_1002_mask"]
    assert not (cat / "ground_truth/good").exists() and not list(tmp_path.glob("out/.*"))  # no staging left
    for key, expected in want.items():
        defect, stem = key.split("/")
        if not expected.any():
            continue
        mask = _read(cat / "ground_truth" / defect / f"{stem}_mask.png")
        assert set(np.unique(mask).tolist()) == {0, 255}  # the 30-valued edge and the 127 pixel dropped
        np.testing.assert_array_equal(mask, expected)
    src = tmp_path / "mt/MT_Crack/Imgs/exp1_num_1000.jpg"
    out = _read(cat / "test/crack/exp1_num_1000.png")
    assert out.ndim == 2 and out.shape == (30, 84)  # 1-channel, native size
    np.testing.assert_array_equal(out, _read(src))  # lossless
    # the package reads the 1-channel PNG as 3-channel RGB, and the layout as MVTec AD
    assert read_image(cat / "test/crack/exp1_num_1000.png").shape == (30, 84, 3)
    train = list_samples(cat, "train")
    test = list_samples(cat, "test")
    assert len(train) == 7 and {s.label for s in train} == {0}
    assert len(test) == 9 and sum(s.label for s in test) == 6
    assert {s.defect for s in test} == {"good", "blowhole", "crack", "uneven"}
    assert read_mask(next(s.mask for s in test if s.mask is not None)).any()
    item = AnomalyImageDataset(test, 16)[0]
    assert item["image"].shape == (3, 16, 16)
    saved = json.loads((cat / "split.json").read_text())
    assert saved["counts"] == summary["counts"] and saved["seed"] == 0
    assert saved["files"]["test/good"] == _stems(cat / "test/good")
    assert saved["source"] == str((tmp_path / "mt").resolve())


def test_split_is_seeded_and_order_free(prep: ModuleType, tmp_path: Path) -> None:
    stems = [f"s{i:02d}" for i in range(20)]
    train, test = prep.split_free(stems, 0.3, 0)
    assert len(test) == 6 and len(train) == 14 and sorted(train + test) == stems
    assert prep.split_free(list(reversed(stems)), 0.3, 0) == (train, test)  # input order does not matter
    assert prep.split_free(stems, 0.3, 1)[1] != test
    _fake_mt(tmp_path / "mt")
    a = prep.prepare(tmp_path / "mt", tmp_path / "a", seed=3)["files"]
    b = prep.prepare(tmp_path / "mt", tmp_path / "b", seed=3)["files"]
    c = prep.prepare(tmp_path / "mt", tmp_path / "c", seed=4)["files"]
    assert a == b and a["test/good"] != c["test/good"]
    assert _stems(tmp_path / "a/magnetic_tile/test/good") == _stems(tmp_path / "b/magnetic_tile/test/good")
    with pytest.raises(prep.PrepareError, match="--test-good"):
        prep.split_free(stems, 1.0, 0)
    with pytest.raises(prep.PrepareError, match="too few"):
        prep.split_free(stems[:1], 0.3, 0)


def test_empty_masks_left_out_by_default_or_kept(prep: ModuleType, tmp_path: Path) -> None:
    _fake_mt(tmp_path / "mt")
    s = prep.prepare(tmp_path / "mt", tmp_path / "out")
    cat = tmp_path / "out/magnetic_tile"
    assert s["empty_masks"] == ["MT_Uneven/exp2_num_2001.jpg"] and not s["empty_masks_kept"]
    assert _stems(cat / "test/uneven") == ["exp1_num_2000"]  # neither a defect nor good
    assert "exp2_num_2001" not in _stems(cat / "test/good")
    k = prep.prepare(tmp_path / "mt", tmp_path / "keep", keep_empty_masks=True)
    assert k["empty_masks"] == s["empty_masks"] and k["counts"]["test/uneven"] == 2
    m = _read(tmp_path / "keep/magnetic_tile/ground_truth/uneven/exp2_num_2001_mask.png")
    assert m.shape == (48, 36) and not m.any()


def test_errors_name_the_problem(prep: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mt = tmp_path / "mt"
    with pytest.raises(prep.PrepareError, match="no such source folder"):
        prep.prepare(mt, tmp_path / "o")
    (mt / "MT_Crack").mkdir(parents=True)
    with pytest.raises(prep.PrepareError, match="no MT_Free folder"):
        prep.prepare(mt, tmp_path / "o")
    _fake_mt(mt)
    (mt / "MT_Blowhole/exp2_num_1.png").unlink()
    with pytest.raises(prep.PrepareError, match=r"exp2_num_1\.jpg: no mask exp2_num_1\.png"):
        prep.prepare(mt, tmp_path / "o")
    _mask(mt / "MT_Blowhole/exp2_num_1.png", 20, 20)
    with pytest.raises(prep.PrepareError, match=r"exp2_num_1\.png: mask size 20x20 differs from its image 32x64"):
        prep.prepare(mt, tmp_path / "o")
    _mask(mt / "MT_Blowhole/exp2_num_1.png", 64, 32)
    (mt / "MT_Free/exp3_num_102.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(prep.PrepareError, match=r"exp3_num_102\.jpg: not a readable image"):
        prep.prepare(mt, tmp_path / "o")
    assert not (tmp_path / "o/magnetic_tile").exists() and not list(tmp_path.glob("o/.*"))  # nothing half-written
    with pytest.raises(prep.PrepareError, match="plain folder name"):
        prep.prepare(mt, tmp_path / "o", category="../x")
    rc = prep.main(["--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "nope: no such source folder" in err


def test_cli_summary_refuses_non_empty_unless_force(
    prep: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_mt(tmp_path / "mt")
    args = ["--src", str(tmp_path / "mt"), "--out", str(tmp_path / "o"), "--category", "tile", "--seed", "1"]
    assert prep.main(args) == 0
    out = capsys.readouterr().out
    assert "train/good           7" in out and "test/crack           3" in out and "total               16" in out
    assert "empty masks: 1 (left out): MT_Uneven/exp2_num_2001.jpg" in out
    cat = tmp_path / "o/tile"
    (cat / "notes.txt").write_text("mine")
    (cat / "train/good/stale.png").write_bytes(b"x")
    assert prep.main(args) == 2
    assert "not empty (use --force" in capsys.readouterr().err
    assert prep.main([*args, "--force", "--test-good", "0.5"]) == 0
    assert len(_stems(cat / "train/good")) == 5 and "stale" not in _stems(cat / "train/good")  # replaced
    assert (cat / "notes.txt").read_text() == "mine"  # files it does not own are left alone


def test_photos_of_one_tile_stay_on_one_side(prep: ModuleType) -> None:
    """The set shoots each tile under up to six set-ups (exp1..6 at increasing num): a tile never straddles."""
    mod = prep
    stems = [f"exp{e}_num_{n}" for e, n in [(1, 10), (2, 12), (3, 15), (1, 20), (4, 22), (2, 30), (3, 31)]]
    stems += ["exp5_num_40", "exp5_num_41", "odd_name"]
    groups = mod.tile_groups(stems)
    assert ["exp1_num_10", "exp2_num_12", "exp3_num_15"] in groups and ["exp1_num_20", "exp4_num_22"] in groups
    assert ["exp2_num_30", "exp3_num_31", "exp5_num_40"] in groups and ["exp5_num_41"] in groups
    assert ["odd_name"] in groups and len(groups) == 5
    for seed in range(6):
        train, test = mod.split_free(stems, 0.3, seed)
        assert sorted(train + test) == sorted(stems) and test
        for g in groups:
            assert set(g) <= set(train) or set(g) <= set(test), (seed, g)
    by_image = [mod.split_free(stems, 0.3, s, by_tile=False)[1] for s in range(6)]
    assert all(len(t) == 3 for t in by_image)
