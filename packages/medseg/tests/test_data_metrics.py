"""Readers (NIfTI, ACDC, TransUNet npz/h5), windowing, MONAI slice datasets, metrics in mm, overlays."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from sa_medseg.data import (
    DataError,
    SliceDataset,
    find_acdc_pairs,
    load_volumes,
    read_h5_volume,
    read_nifti,
    read_nifti_bytes,
    read_npz_slice,
    window,
)
from sa_medseg.metrics import format_table, multi_otsu_segment, per_class_metrics, summarise
from sa_medseg.overlay import overlay


def _nii(path: Path, arr: np.ndarray, zooms: tuple[float, ...] = (0.8, 0.7, 2.5)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, np.diag([*zooms[:3], 1.0]))
    img.header.set_zooms(tuple(zooms[: arr.ndim]) + (1.0,) * max(0, arr.ndim - len(zooms)))
    nib.save(img, str(path))
    return path


def test_window_ct_and_mr() -> None:
    ct = np.array([-1000.0, -125.0, 75.0, 275.0, 3000.0])
    np.testing.assert_allclose(window(ct, "ct"), [0, 0, 0.5, 1, 1])
    mr = np.arange(1000, dtype=np.float32)
    w = window(mr, "mr", percentiles=(10, 90))
    assert (
        w.min() == 0
        and w.max() == pytest.approx(1)
        and w[500] == pytest.approx((500 - 99.9) / (899.1 - 99.9), abs=1e-3)
    )


def test_nifti_synapse_layout_axes_spacing_and_errors(tmp_path: Path) -> None:
    img = np.random.default_rng(0).normal(size=(6, 5, 4)).astype(np.float32)  # (X, Y, Z)
    lab = (img > 0).astype(np.uint8)
    _nii(tmp_path / "img" / "img0001.nii.gz", img)
    _nii(tmp_path / "label" / "label0001.nii.gz", lab)
    vol, aff, sp = read_nifti(tmp_path / "img" / "img0001.nii.gz")
    assert vol.shape == (4, 6, 5) and sp == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_allclose(vol[2], img[:, :, 2])
    vols = load_volumes("nifti", tmp_path / "img", "none", str(tmp_path / "label"))
    assert vols[0].name == "0001" and vols[0].label is not None and vols[0].label.dtype == np.int64
    # mismatched shapes, 4D, empty file, wrong dtype, non-integer labels
    _nii(tmp_path / "label" / "label0001.nii.gz", lab[:, :, :3])
    with pytest.raises(DataError, match="shapes differ"):
        load_volumes("nifti", tmp_path / "img", "none", str(tmp_path / "label"))
    with pytest.raises(DataError, match="4D"):
        read_nifti(_nii(tmp_path / "x4.nii.gz", np.zeros((3, 3, 3, 2), np.float32)))
    (tmp_path / "empty.nii.gz").write_bytes(b"")
    with pytest.raises(DataError, match="empty file"):
        read_nifti(tmp_path / "empty.nii.gz")
    with pytest.raises(DataError, match="integer class ids"):
        read_nifti(_nii(tmp_path / "fl.nii.gz", np.full((3, 3, 3), 0.5, np.float32)), label=True)
    with pytest.raises(DataError, match="dtype"):
        read_nifti_bytes(nib.Nifti1Image(np.zeros((3, 3, 3), np.complex64), np.eye(4)).to_bytes())
    with pytest.raises(DataError, match="not a NIfTI"):
        read_nifti_bytes(b"hello world, not nifti at all")


def test_acdc_and_transunet_layouts(tmp_path: Path) -> None:
    p = tmp_path / "acdc" / "patient001"
    _nii(p / "patient001_frame01.nii.gz", np.ones((4, 4, 2), np.float32))
    _nii(p / "patient001_frame01_gt.nii.gz", np.ones((4, 4, 2), np.uint8))
    assert [c for c, _, _ in find_acdc_pairs(tmp_path / "acdc")] == ["patient001_frame01"]
    np.savez(tmp_path / "case0005_slice000.npz", image=np.zeros((8, 8), np.float32), label=np.ones((8, 8)))
    im, lb = read_npz_slice(tmp_path / "case0005_slice000.npz")
    assert im.shape == lb.shape == (8, 8) and lb.dtype == np.int64
    np.savez(tmp_path / "bad.npz", image=np.zeros((8, 8)))
    with pytest.raises(DataError, match="'label'"):
        read_npz_slice(tmp_path / "bad.npz")
    with h5py.File(tmp_path / "case0001.npy.h5", "w") as f:
        f["image"] = np.zeros((3, 8, 8), np.float32)
        f["label"] = np.zeros((3, 8, 7), np.uint8)
    with pytest.raises(DataError, match="shapes differ"):
        read_h5_volume(tmp_path / "case0001.npy.h5")


def test_slice_dataset_monai_augmentations_keep_labels_integer() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((40, 50)).astype(np.float32)
    lab = (img * 3).astype(np.int64).clip(0, 2)
    ds = SliceDataset([(img, lab)], patch_size=(32, 64), rot90_flip=0.5, rotate_deg=20, repeat=3)
    assert len(ds) == 3
    for i in range(3):
        item = ds[i]
        assert item["image"].shape == (1, 32, 64) and item["label"].shape == (32, 64)
        assert set(item["label"].unique().tolist()) <= {0, 1, 2}
    plain = SliceDataset([(img, lab)], patch_size=(40, 50), augment=False)[0]
    torch.testing.assert_close(plain["image"][0], torch.from_numpy(img))
    assert torch.equal(plain["label"], torch.from_numpy(lab))


def test_dice_and_hd95_in_millimetres() -> None:
    label = np.zeros((1, 40, 40), np.int64)
    label[0, 10:20, 10:20] = 1
    pred = np.zeros_like(label)
    pred[0, 10:20, 13:23] = 1  # shifted by 3 voxels along the last axis
    one = per_class_metrics(pred, label, 2, spacing=(1.0, 1.0, 1.0))[1]
    mm = per_class_metrics(pred, label, 2, spacing=(1.0, 1.0, 2.0))[1]
    assert one["dice"] == pytest.approx(2 * 70 / 200)
    assert one["hd95"] == pytest.approx(3.0)
    assert mm["hd95"] == pytest.approx(6.0)  # 3 voxels of 2 mm
    empty = per_class_metrics(np.zeros_like(label), label, 3)
    assert empty[1]["dice"] == 0 and np.isnan(empty[1]["hd95"]) and empty[2] == {"dice": 1.0, "hd95": 0.0}
    s = summarise([per_class_metrics(pred, label, 2)], ["bg", "fg"])
    assert s["dice"] == pytest.approx(0.7) and "fg" in format_table({"m": s}, ["bg", "fg"])


def test_multi_otsu_baseline_and_overlay() -> None:
    img = np.concatenate([np.full((1, 8, 8), v) for v in (0.1, 0.5, 0.9)], axis=2)
    img = img + np.random.default_rng(0).normal(0, 0.02, img.shape)
    seg = multi_otsu_segment(img, 3)
    truth = np.repeat(np.arange(3), 8)[None, None, :].repeat(8, axis=1)
    assert (seg == truth).mean() > 0.95  # dark -> 0, mid -> 1, bright -> 2
    ov = overlay(img[0], truth[0])
    assert ov.shape == (8, 24, 3) and ov.dtype == np.uint8
    assert (ov[:, :8] == ov[:, :8, :1]).all() and not (ov[:, 16:] == ov[:, 16:, :1]).all()  # bg grey, class coloured
