"""``ad-sample``: an offline anomaly-detection sample set in MVTec AD layout from scikit-image's textures.

The CC0 textures ``brick``, ``grass`` and ``gravel`` (512 x 512, shipped in the scikit-image wheel) are cut into
128 px crops: training crops (normal only) from rows 0-300, test crops from rows 300-512, so train and test
never overlap. Test crops are either left good or get one synthetic defect (scratch, stain, cut-paste) whose
exact mask is written to ``ground_truth``. Layout under ``OUT``::

    <texture>/train/good/NNN.png
    <texture>/test/good/NNN.png
    <texture>/test/<defect>/NNN.png
    <texture>/ground_truth/<defect>/NNN_mask.png
    README.txt, manifest.json   (manifest written last; a complete set with the same settings is kept)
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .defects import DEFECT_SETS, apply_defect
from .imageio import write_png

__all__ = ["TEXTURES", "build_sample", "main"]

TEXTURES = ("brick", "grass", "gravel")
TRAIN_ROWS = (0, 300)
TEST_ROWS = (300, 512)


def _texture(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)().astype(np.float32) / 255.0
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img[..., :3]


def _positions(rows: tuple[int, int], width: int, crop: int, ny: int, nx: int) -> list[tuple[int, int]]:
    ys = np.linspace(rows[0], rows[1] - crop, ny).round().astype(int)
    xs = np.linspace(0, width - crop, nx).round().astype(int)
    return [(int(y), int(x)) for y in ys for x in xs]


def build_sample(
    out_dir: str | Path,
    textures: Sequence[str] = TEXTURES,
    crop: int = 128,
    n_train: tuple[int, int] = (5, 13),
    n_test: tuple[int, int] = (3, 7),
    seed: int = 0,
    force: bool = False,
) -> Path:
    """Builds the set (see the module docstring) and returns ``out_dir``.

    Args:
        textures: subset of ``brick``, ``grass``, ``gravel``.
        crop: crop size in pixels. n_train / n_test: crop grid (rows, columns) in the train / test bands;
            every test position appears once as good and once with a defect (defects cycle).
        seed: defect randomness. force: rebuild even if a complete set exists.
    """
    out = Path(out_dir)
    bad = [t for t in textures if t not in TEXTURES]
    if bad:
        raise ValueError(f"unknown texture(s) {bad}; available: {list(TEXTURES)}")
    settings: dict[str, Any] = {
        "textures": list(textures),
        "crop": crop,
        "n_train": list(n_train),
        "n_test": list(n_test),
        "seed": seed,
        "version": 1,
    }
    manifest = out / "manifest.json"
    if manifest.exists() and not force:
        try:
            if json.loads(manifest.read_text())["settings"] == settings:
                print(f"ad-sample: {out} is complete (use --force to rebuild)")
                return out
        except (ValueError, KeyError):
            pass
    if crop > TEST_ROWS[1] - TEST_ROWS[0]:
        raise ValueError(f"crop {crop} is larger than the test band of {TEST_ROWS[1] - TEST_ROWS[0]} rows")
    files: dict[str, list[str]] = {}
    names = list(DEFECT_SETS["generic"])
    for t_i, tex in enumerate(textures):
        img = _texture(tex)
        rng = np.random.default_rng(seed * 1000 + t_i)
        listing: list[str] = []
        for i, (y, x) in enumerate(_positions(TRAIN_ROWS, img.shape[1], crop, *n_train)):
            rel = f"{tex}/train/good/{i:03d}.png"
            write_png(out / rel, img[y : y + crop, x : x + crop])
            listing.append(rel)
        for i, (y, x) in enumerate(_positions(TEST_ROWS, img.shape[1], crop, *n_test)):
            patch = img[y : y + crop, x : x + crop]
            rel = f"{tex}/test/good/{i:03d}.png"
            write_png(out / rel, patch)
            listing.append(rel)
            defect = names[i % len(names)]
            bad_img, mask = apply_defect(defect, patch, rng)
            k = i // len(names)
            rel = f"{tex}/test/{defect}/{k:03d}.png"
            write_png(out / rel, bad_img)
            write_png(out / f"{tex}/ground_truth/{defect}/{k:03d}_mask.png", mask)
            listing += [rel, f"{tex}/ground_truth/{defect}/{k:03d}_mask.png"]
        files[tex] = listing
    (out / "README.txt").write_text(
        "ad-sample: anomaly-detection sample set in MVTec AD layout, built offline by sa-anomaly's ad-sample\n"
        f"from the scikit-image textures {', '.join(textures)} (CC0). Train crops: rows {TRAIN_ROWS}; test crops:\n"
        f"rows {TEST_ROWS}; synthetic defects {', '.join(names)} with exact masks.\n"
    )
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"settings": settings, "package_version": __version__, "files": files}, indent=1))
    tmp.replace(manifest)
    n = sum(len(v) for v in files.values())
    print(f"ad-sample: wrote {n} files for {len(textures)} textures to {out}")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ad-sample",
        description="Build an offline anomaly-detection sample set (MVTec layout) from scikit-image textures.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="output folder (e.g. data/ad-sample)")
    parser.add_argument("--textures", default=",".join(TEXTURES), help="comma-separated subset of brick,grass,gravel")
    parser.add_argument("--crop", type=int, default=128, help="crop size in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, help="defect seed")
    parser.add_argument("--force", action="store_true", help="rebuild even if the set is complete")
    args = parser.parse_args(argv)
    try:
        build_sample(
            args.out_dir,
            [t.strip() for t in args.textures.split(",") if t.strip()],
            crop=args.crop,
            seed=args.seed,
            force=args.force,
        )
    except ValueError as e:
        print(f"ad-sample: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
