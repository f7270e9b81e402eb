"""Paired and on-the-fly degraded SR datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sa_restoration.data import DegradedImageDataset, PairedImageDataset, find_images, match_pairs, modcrop
from sa_restoration.imageio import read_image, write_png
from sa_restoration.metrics import quantize_uint8
from sa_restoration.resize import imresize


def _img(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    # a position code in R/G makes crops identifiable; B is noise
    return np.stack([yy % 256, xx % 256, rng.integers(0, 256, (h, w))], axis=-1).astype(np.uint8)


def _make_pair_dirs(root: Path, scale: int, names: list[str], lq_suffix: str = "") -> tuple[Path, Path]:
    gt_dir, lq_dir = root / f"GTmod{scale}", root / f"LRbicx{scale}"
    for i, n in enumerate(names):
        gt = _img(8 * scale + 4 * i * scale, 12 * scale, i)
        write_png(gt_dir / f"{n}.png", gt)
        write_png(lq_dir / f"{n}{lq_suffix}.png", quantize_uint8(imresize(gt / 255.0, 1 / scale)))
    return gt_dir, lq_dir


def test_modcrop_and_find(tmp_path: Path) -> None:
    assert modcrop(np.zeros((10, 13, 3)), 4).shape == (8, 12, 3)
    assert modcrop(np.zeros((8, 12)), 4).shape == (8, 12)
    with pytest.raises(ValueError):
        modcrop(np.zeros((4, 4)), 0)
    assert find_images(tmp_path) == []


def test_paired_whole_images_set5_style(tmp_path: Path) -> None:
    gt_dir, lq_dir = _make_pair_dirs(tmp_path, 2, ["baby", "bird"])
    ds = PairedImageDataset(gt_dir, lq_dir, scale=2)
    assert len(ds) == 2
    item = ds[1]
    assert item["name"] == "bird"
    lq, gt = item["lq"], item["gt"]
    assert isinstance(lq, torch.Tensor) and isinstance(gt, torch.Tensor)
    assert lq.dtype == torch.float32 and lq.shape == (3, 12, 12) and gt.shape == (3, 24, 24)
    np.testing.assert_allclose(gt.permute(1, 2, 0).numpy(), read_image(gt_dir / "bird.png"), atol=1e-6)


def test_paired_div2k_suffix_and_repeat(tmp_path: Path) -> None:
    gt_dir, lq_dir = _make_pair_dirs(tmp_path, 4, ["0001", "0002", "0003"], lq_suffix="x4")
    assert [p.name for p in find_images(lq_dir)] == ["0001x4.png", "0002x4.png", "0003x4.png"]
    ds = PairedImageDataset(gt_dir, lq_dir, scale=4, patch_size=6, augment=True, repeat=3)
    assert len(ds) == 9
    assert ds[4]["name"] == "0002"
    with pytest.raises(IndexError):
        ds[9]


def test_random_crops_are_aligned_and_augmented(tmp_path: Path) -> None:
    s = 2
    gt_dir, lq_dir = tmp_path / "gt", tmp_path / "lq"
    gt = _img(40, 48, 0)
    write_png(gt_dir / "a.png", gt)
    # LQ = 2x2 block means of the GT: block pooling commutes with flips / transposes, so alignment
    # (and the same transform on both) can be checked pixel by pixel
    write_png(lq_dir / "a.png", gt.reshape(20, 2, 24, 2, 3).mean(axis=(1, 3)) / 255.0)
    torch.manual_seed(0)
    ds = PairedImageDataset(gt_dir, lq_dir, scale=s, patch_size=5, augment=True, repeat=50)
    tops = set()
    orientations = set()
    for i in range(len(ds)):
        item = ds[i]
        lq, g = item["lq"], item["gt"]
        assert isinstance(lq, torch.Tensor) and isinstance(g, torch.Tensor)
        assert lq.shape == (3, 5, 5) and g.shape == (3, 10, 10)
        pooled = torch.nn.functional.avg_pool2d(g[None], s)[0]
        assert (pooled - lq).abs().max() <= 0.5 / 255 + 1e-6  # aligned crop, same transform on both
        tops.add(round(float(g[0].min()) * 255))
        # orientation: does R (the source row code) run down the patch (else transposed), and in which
        # direction do R and G (source column code) run
        r, c = g[0] * 255, g[1] * 255
        transposed = bool(r[1, 0] == r[0, 0])
        orientations.add((transposed, float(torch.sign(r[-1, -1] - r[0, 0])), float(torch.sign(c[-1, -1] - c[0, 0]))))
    assert len(tops) > 5  # crops move around
    assert len(orientations) == 8  # all flips / rot90 combinations occur


def test_crops_follow_global_torch_rng(tmp_path: Path) -> None:
    gt_dir, lq_dir = _make_pair_dirs(tmp_path, 2, ["a"])
    ds = PairedImageDataset(gt_dir, lq_dir, scale=2, patch_size=4, augment=True)
    torch.manual_seed(123)
    a = ds[0]["gt"]
    torch.manual_seed(123)
    b = ds[0]["gt"]
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
    torch.testing.assert_close(a, b)


def test_mismatched_pairs_listed(tmp_path: Path) -> None:
    gt_dir, lq_dir = _make_pair_dirs(tmp_path, 2, ["a", "b", "c"])
    (lq_dir / "b.png").unlink()
    write_png(lq_dir / "zzz.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match=r"1 GT image\(s\) without an LQ partner \(first: b\.png\).*zzz\.png"):
        PairedImageDataset(gt_dir, lq_dir, scale=2)
    files = [Path(f"g{i}.png") for i in range(9)]
    with pytest.raises(ValueError, match=r"9 GT image\(s\).*first: g0.png, g1.png, g2.png, g3.png, g4.png\)"):
        match_pairs(files, [], 2)


def test_size_mismatch_names_file(tmp_path: Path) -> None:
    gt_dir, lq_dir = _make_pair_dirs(tmp_path, 2, ["a"])
    write_png(gt_dir / "a.png", _img(17, 24, 0))  # not modcropped
    ds = PairedImageDataset(gt_dir, lq_dir, scale=2)
    with pytest.raises(ValueError, match=r"a\.png: GT is 24x17 but LQ a\.png is 12x8"):
        ds[0]


def test_patch_larger_than_image(tmp_path: Path) -> None:
    gt_dir, lq_dir = _make_pair_dirs(tmp_path, 2, ["a"])
    with pytest.raises(ValueError, match="smaller than patch_size"):
        PairedImageDataset(gt_dir, lq_dir, scale=2, patch_size=64)[0]


def test_degraded_dataset(tmp_path: Path) -> None:
    write_png(tmp_path / "x.png", _img(37, 50, 1))
    write_png(tmp_path / "y.png", _img(30, 30, 2))
    ds = DegradedImageDataset(tmp_path, scale=4, patch_size=6, augment=True, repeat=2)
    assert len(ds) == 4
    torch.manual_seed(0)
    item = ds[0]
    lq, gt = item["lq"], item["gt"]
    assert isinstance(lq, torch.Tensor) and isinstance(gt, torch.Tensor)
    assert item["name"] == "x" and lq.shape == (3, 6, 6) and gt.shape == (3, 24, 24)
    expect = quantize_uint8(imresize(gt.permute(1, 2, 0).numpy(), 0.25)) / 255.0
    np.testing.assert_allclose(lq.permute(1, 2, 0).numpy(), expect, atol=1e-6)

    whole = DegradedImageDataset([tmp_path / "x.png"], scale=4, patch_size=None, augment=False, cache=False)
    item = whole[0]
    assert item["gt"].shape == (3, 36, 48) and item["lq"].shape == (3, 9, 12)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match=r"y\.png: image 28x28 is smaller"):
        DegradedImageDataset(tmp_path, scale=4, patch_size=8)[1]


def test_cache_holds_uint8(tmp_path: Path) -> None:
    gt_dir, lq_dir = _make_pair_dirs(tmp_path, 2, ["a"])
    ds = PairedImageDataset(gt_dir, lq_dir, scale=2)
    first = ds[0]["gt"]
    (gt_dir / "a.png").unlink()  # served from memory now
    second = ds[0]["gt"]
    assert isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)
    torch.testing.assert_close(first, second)
    assert all(v.dtype == np.uint8 for v in ds._cache._store.values())


def test_dataloader_batches(tmp_path: Path) -> None:
    gt_dir, lq_dir = _make_pair_dirs(tmp_path, 2, ["a", "b"])
    dl = torch.utils.data.DataLoader(PairedImageDataset(gt_dir, lq_dir, 2, patch_size=4, repeat=2), batch_size=4)
    batch = next(iter(dl))
    assert batch["lq"].shape == (4, 3, 4, 4) and batch["gt"].shape == (4, 3, 8, 8)
    assert batch["name"] == ["a", "b", "a", "b"]
