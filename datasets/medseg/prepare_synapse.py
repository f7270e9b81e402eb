#!/usr/bin/env python
"""Synapse (BTCV abdomen) raw NIfTI -> the TransUNet-preprocessed layout, from folders you downloaded.

Nothing is downloaded. Input: ``--raw DIR`` with ``img/img0001.nii.gz`` ... and ``label/label0001.nii.gz``
(the 30 training CTs of the MICCAI 2015 Multi-Atlas Abdomen challenge). Output (``--out DIR``):

    train_npz/case0005_slice000.npz   image (512, 512) float32 in [0, 1], label uint8 (per axial slice)
    test_vol_h5/case0001.npy.h5       image (S, 512, 512), label (S, 512, 512)
    lists/train.txt, lists/test_vol.txt

Preprocessing (TransUNet): HU clipped to [-125, 275] and scaled to [0, 1]; the 13 BTCV organ labels
remapped to the 8 Synapse classes (aorta 8->1, gallbladder 4->2, kidney L 3->3, kidney R 2->4, liver 6->5,
pancreas 11->6, spleen 1->7, stomach 7->8; everything else 0). The split is TransUNet's: 12 test cases
(``--test-ids``), the other 18 for training.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

BTCV_TO_SYNAPSE = {8: 1, 4: 2, 3: 3, 2: 4, 6: 5, 11: 6, 1: 7, 7: 8}
TEST_IDS = ("0001", "0002", "0003", "0004", "0008", "0022", "0025", "0029", "0032", "0035", "0036", "0038")


def remap(label: np.ndarray) -> np.ndarray:
    """BTCV organ ids -> the 8 Synapse classes (others -> background)."""
    out = np.zeros(label.shape, np.uint8)
    for src, dst in BTCV_TO_SYNAPSE.items():
        out[label == src] = dst
    return out


def prepare(raw: Path, out: Path, test_ids: Sequence[str]) -> tuple[int, int]:
    """Writes the layout; returns (training slices, test volumes)."""
    import h5py
    from sa_medseg.data import find_nifti_pairs, read_nifti, window
    from tqdm.auto import tqdm

    pairs = find_nifti_pairs(raw / "img", raw / "label")
    (out / "train_npz").mkdir(parents=True, exist_ok=True)
    (out / "test_vol_h5").mkdir(parents=True, exist_ok=True)
    (out / "lists").mkdir(parents=True, exist_ok=True)
    train_names, test_names = [], []
    for cid, ip, lp in tqdm(pairs, desc="cases"):
        img, _, _ = read_nifti(ip)  # (S, X, Y)
        assert lp is not None
        lab, _, _ = read_nifti(lp, label=True)
        if img.shape != lab.shape:
            raise SystemExit(f"error: {ip} and {lp}: shapes differ ({img.shape} vs {lab.shape})")
        img, lab = window(img, "ct"), remap(lab)
        name = f"case{cid}"
        if cid in test_ids:
            with h5py.File(out / "test_vol_h5" / f"{name}.npy.h5", "w") as f:
                f.create_dataset("image", data=img, compression="gzip")
                f.create_dataset("label", data=lab, compression="gzip")
            test_names.append(name)
        else:
            for s in range(img.shape[0]):
                np.savez_compressed(out / "train_npz" / f"{name}_slice{s:03d}.npz", image=img[s], label=lab[s])
                train_names.append(f"{name}_slice{s:03d}")
    (out / "lists" / "train.txt").write_text("".join(f"{n}\n" for n in train_names))
    (out / "lists" / "test_vol.txt").write_text("".join(f"{n}\n" for n in test_names))
    return len(train_names), len(test_names)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--raw", required=True, help="folder with img/ and label/")
    ap.add_argument("--out", required=True, help="output folder (e.g. data/Synapse)")
    ap.add_argument("--test-ids", nargs="+", default=list(TEST_IDS))
    args = ap.parse_args(argv)
    n_train, n_test = prepare(Path(args.raw), Path(args.out), args.test_ids)
    print(f"wrote {args.out}: {n_train} training slices, {n_test} test volumes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
