"""``seg-sample``: an offline brain-tissue segmentation set from anatomy that ships in the nilearn wheel.

Source: nilearn's MNI152 (2009) T1 template at 1 mm with its grey-matter and white-matter probability
maps (``load_mni152_template`` / ``load_mni152_gm_template`` / ``load_mni152_wm_template``; nothing is
downloaded). Labels: ``argmax(background = 1 - GM - WM, GM, WM)`` -> 0 background, 1 GM, 2 WM.

The volume is cut into axial slabs so that no test or validation slice neighbours a training slice
(4-slice gaps): train ``z in [12, 56) + [100, 148)``, validation ``[60, 68)``, test ``[72, 96)``. Written in
the TransUNet layout (``train_npz/*.npz`` slices, ``val_vol_h5`` / ``test_vol_h5`` volumes) plus the
test slab as Synapse-style NIfTI (``test_nifti/img``, ``test_nifti/label``, with the slab's affine) and one
test slice as PNG (``test_png``). Intensities are the template's, already in [0, 1].
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["build_seg_sample", "main", "CLASSES", "SLABS"]

CLASSES = ("background", "grey_matter", "white_matter")
SLABS: dict[str, list[tuple[int, int]]] = {"train": [(12, 56), (100, 148)], "val": [(60, 68)], "test": [(72, 96)]}


def _load_mni(resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    from nilearn import datasets

    t1 = datasets.load_mni152_template(resolution=resolution)
    gm = datasets.load_mni152_gm_template(resolution=resolution).get_fdata()
    wm = datasets.load_mni152_wm_template(resolution=resolution).get_fdata()
    labels = np.argmax(np.stack([np.clip(1.0 - gm - wm, 0.0, 1.0), gm, wm]), axis=0).astype(np.uint8)
    zooms = tuple(float(z) for z in t1.header.get_zooms()[:3])
    return t1.get_fdata().astype(np.float32), labels, np.asarray(t1.affine), zooms  # type: ignore[return-value]


def _slab(arr: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    return np.concatenate([arr[..., a:b] for a, b in ranges], axis=-1)


def build_seg_sample(out: str | Path, resolution: int = 1, force: bool = False) -> dict[str, object]:
    """Writes the sample set to ``out``; returns its description (also saved as ``out/sample.json``).

    Raises:
        FileExistsError: ``out`` already holds a sample and ``force`` is false.
    """
    import h5py
    import nibabel as nib
    from tqdm.auto import tqdm

    from shared_attention.engine.checkpoint import atomic_write_text

    root = Path(out)
    if (root / "sample.json").exists() and not force:
        raise FileExistsError(f"{root}: a sample already exists (use --force to rebuild)")
    image, labels, affine, zooms = _load_mni(resolution)
    scale = 1 if resolution == 1 else 1.0 / resolution
    slabs = {k: [(int(a * scale), int(b * scale)) for a, b in v] for k, v in SLABS.items()}
    # train: one npz per axial slice, (X, Y) arrays
    tdir = root / "train_npz"
    tdir.mkdir(parents=True, exist_ok=True)
    zs = [z for a, b in slabs["train"] for z in range(a, b)]
    for z in tqdm(zs, desc="train slices", leave=False):
        np.savez_compressed(tdir / f"mni152_z{z:03d}.npz", image=image[..., z], label=labels[..., z])
    # val / test volumes (S, H, W) = (Z, X, Y)
    for split in ("val", "test"):
        d = root / f"{split}_vol_h5"
        d.mkdir(parents=True, exist_ok=True)
        vol = np.transpose(_slab(image, slabs[split]), (2, 0, 1))
        lab = np.transpose(_slab(labels, slabs[split]), (2, 0, 1))
        with h5py.File(d / f"mni152_{split}.npy.h5", "w") as f:
            f.create_dataset("image", data=vol, compression="gzip")
            f.create_dataset("label", data=lab, compression="gzip")
    # test slab as NIfTI, the affine shifted to the slab's first slice
    (a, b) = slabs["test"][0]
    aff = affine.copy()
    aff[:3, 3] = affine[:3, :3] @ np.array([0, 0, a]) + affine[:3, 3]
    for sub, arr, dtype in (("img", image[..., a:b], np.float32), ("label", labels[..., a:b], np.uint8)):
        d = root / "test_nifti" / sub
        d.mkdir(parents=True, exist_ok=True)
        img = nib.Nifti1Image(arr.astype(dtype), aff)
        img.header.set_zooms(zooms)
        nib.save(img, str(d / f"{sub}0001.nii.gz"))
    # one test slice as an 8-bit PNG for the 2D predictor path
    import cv2

    pdir = root / "test_png"
    pdir.mkdir(parents=True, exist_ok=True)
    zmid = (a + b) // 2
    cv2.imwrite(str(pdir / f"mni152_z{zmid:03d}.png"), np.round(np.clip(image[..., zmid], 0, 1) * 255).astype(np.uint8))
    cv2.imwrite(str(pdir / f"mni152_z{zmid:03d}_label.png"), labels[..., zmid])
    lists = root / "lists"
    lists.mkdir(exist_ok=True)
    (lists / "train.txt").write_text("".join(f"mni152_z{z:03d}\n" for z in zs))
    (lists / "test_vol.txt").write_text("mni152_test\n")
    desc: dict[str, object] = {
        "source": "nilearn MNI152 2009 template, GM/WM probability maps (shipped in the nilearn wheel)",
        "resolution_mm": resolution,
        "shape_xyz": list(image.shape),
        "classes": list(CLASSES),
        "label_rule": "argmax(1 - GM - WM, GM, WM)",
        "slabs_z": slabs,
        "gap_slices": 4,
        "train_slices": len(zs),
        "spacing_mm": list(zooms),
        "layout": {
            "train": "train_npz/*.npz",
            "val": "val_vol_h5/*.npy.h5",
            "test": "test_vol_h5/*.npy.h5",
            "test_nifti": "test_nifti/{img,label}/*.nii.gz",
            "test_png": "test_png/*.png",
        },
    }
    atomic_write_text(root / "sample.json", json.dumps(desc, indent=2))
    return desc


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``seg-sample``."""
    ap = argparse.ArgumentParser(prog="seg-sample", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="data/seg-sample", help="output folder (default data/seg-sample)")
    ap.add_argument("--resolution", type=int, default=1, choices=(1, 2), help="template resolution in mm")
    ap.add_argument("--force", action="store_true", help="rebuild even if the folder holds a sample")
    args = ap.parse_args(argv)
    try:
        desc = build_seg_sample(args.out, args.resolution, args.force)
    except FileExistsError as exc:
        print(f"{exc}; nothing to do")
        return 0
    print(f"wrote {args.out}: {desc['train_slices']} training slices, validation and test slabs {desc['slabs_z']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
