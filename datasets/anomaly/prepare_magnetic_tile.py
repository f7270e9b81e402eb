#!/usr/bin/env python
"""Magnetic-tile defect set (Huang et al. 2018) -> the MVTec AD layout that ``sa-anomaly`` reads.

Nothing is downloaded. Input (``--src DIR``): the published ``MT_*`` folders, ``MT_Free`` (defect-free) and one
folder per defect (``MT_Blowhole``, ``MT_Break``, ``MT_Crack``, ``MT_Fray``, ``MT_Uneven``), each holding
``NAME.jpg`` photos with a same-named ``NAME.png`` pixel mask, directly in the folder or in its ``Imgs/``
subfolder. Output (``--out DIR``, category ``--category``):

    <category>/train/good/NAME.png                  defect-free, the rest of MT_Free
    <category>/test/good/NAME.png                   defect-free, a seeded --test-good share of MT_Free
    <category>/test/<defect>/NAME.png               every image of MT_<Defect> (defect name lower-cased)
    <category>/ground_truth/<defect>/NAME_mask.png  its mask, thresholded at > 127 and written as 0 / 255
    <category>/split.json                           counts, seed, source, file names per part, empty masks

File names keep the original stems so every file traces back to its source. Images are written losslessly as
PNG at their native size and channel count (the photos are grayscale: 1-channel PNG; ``sa-anomaly`` reads gray as
RGB). The ``MT_Free`` split keeps the photos of one tile (the set shoots each tile under up to six set-ups,
``exp1..exp6`` at increasing ``num``) on one side, so no test photo is another exposure of a training tile
(``--split-by-image`` splits photo by photo). Nothing is resized here: ``data.fit`` in the anomaly config
decides resize or crop at load time.

A defect image whose mask has no pixel above the threshold (two of ``MT_Uneven``) is left out of the test set
by default and listed in ``split.json``: its folder says "defect" while its mask says "no defective pixel", so
as a defect it would count the unmarked defect as normal pixels, and as ``good`` it would punish a model that
flags a visibly uneven tile. ``--keep-empty-masks`` keeps it in ``test/<defect>`` with an all-zero mask.
``MT_Free`` masks are not read (they are all zero).

Errors (missing folders, an image without its mask, an unreadable file, a mask of another size, a non-empty
output category without ``--force``) are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sa_anomaly.imageio import write_png

FREE = "MT_Free"
PREFIX = "MT_"
IMAGE_SUFFIXES = (".jpg", ".jpeg")
OWNED = ("train", "test", "ground_truth", "split.json")  # what --force replaces in the category folder

__all__ = [
    "PrepareError",
    "Item",
    "defect_name",
    "image_folder",
    "list_items",
    "split_free",
    "tile_groups",
    "read_image_u8",
    "read_mask_binary",
    "prepare",
    "format_summary",
    "main",
]


class PrepareError(ValueError):
    """A one-line problem with the input or output folders (the CLI prints it and exits with code 2)."""


@dataclass(frozen=True)
class Item:
    """One source photo: its stem (kept as the output name), image path and mask path (``None``: not read)."""

    stem: str
    image: Path
    mask: Path | None


def defect_name(folder: str) -> str:
    """``MT_Blowhole`` -> ``blowhole``.

    Raises:
        PrepareError: for a folder name without the ``MT_`` prefix or with nothing after it.
    """
    if not folder.startswith(PREFIX) or len(folder) == len(PREFIX):
        raise PrepareError(f"{folder}: not an MT_<name> folder")
    return folder[len(PREFIX) :].lower()


def _photos(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def image_folder(folder: Path) -> Path:
    """Where an ``MT_*`` folder keeps its photos: ``folder/Imgs`` (the original archive) or ``folder`` itself."""
    sub = folder / "Imgs"
    if sub.is_dir() and _photos(sub):
        return sub
    return folder


def list_items(folder: Path, with_masks: bool) -> list[Item]:
    """The photos of one ``MT_*`` folder sorted by name (the OS listing order does not matter).

    Args:
        folder: an ``MT_*`` folder. with_masks: require and return each photo's same-named ``.png`` mask.

    Raises:
        PrepareError: no photos, two photos with one stem, or (``with_masks``) a photo without its mask.
    """
    src = image_folder(folder)
    photos = _photos(src)
    if not photos:
        raise PrepareError(f"{folder}: no .jpg images (looked in {folder.name}/ and {folder.name}/Imgs/)")
    items: list[Item] = []
    seen: dict[str, Path] = {}
    for p in photos:
        if p.stem in seen:
            raise PrepareError(f"{p}: same name as {seen[p.stem].name}")
        seen[p.stem] = p
        mask = None
        if with_masks:
            mask = p.with_suffix(".png")
            if not mask.is_file():
                raise PrepareError(f"{p}: no mask {mask.name} beside it")
        items.append(Item(p.stem, p, mask))
    return items


_PHOTO = re.compile(r"^exp(\d+)_num_(\d+)$")


def tile_groups(stems: Sequence[str]) -> list[list[str]]:
    """Photos of one physical tile, grouped: the set names photos ``exp<E>_num_<N>`` where one tile is shot
    under up to six set-ups ``E = 1..6`` at increasing ``N``. Sorted by ``N``, a new tile starts whenever ``E``
    does not increase. Names of another form are a group each. Groups (and their members) are sorted."""
    parsed = sorted((int(m[2]), int(m[1]), s) for s in stems if (m := _PHOTO.match(s)))
    groups: list[list[str]] = []
    last_exp: int | None = None
    for _, exp, stem in parsed:
        if last_exp is None or exp <= last_exp:
            groups.append([])
        groups[-1].append(stem)
        last_exp = exp
    groups += [[s] for s in stems if not _PHOTO.match(s)]
    return sorted(sorted(g) for g in groups)


def split_free(stems: Sequence[str], test_good: float, seed: int, by_tile: bool = True) -> tuple[list[str], list[str]]:
    """Seeded split of the defect-free stems into ``(train, test)``, both sorted.

    With ``by_tile`` (the default) the photos of one tile (:func:`tile_groups`) stay on the same side, so a
    test photo is never another exposure of a training tile; whole groups go to test, in seeded order, until
    ``round(test_good * n)`` images are reached (the last group may overshoot by a few). Without it, images
    are split one by one. The split depends only on the set of names, ``test_good`` and ``seed``.

    Raises:
        PrepareError: ``test_good`` outside ``(0, 1)`` or too few images for both parts.
    """
    if not 0 < test_good < 1:
        raise PrepareError(f"--test-good must be in (0, 1), got {test_good}")
    names = sorted(stems)
    n_test = round(test_good * len(names))
    if not 1 <= n_test < len(names):
        raise PrepareError(f"{FREE}: {len(names)} images are too few for --test-good {test_good}")
    groups = tile_groups(names) if by_tile else [[s] for s in names]
    order = np.random.default_rng(seed).permutation(len(groups))
    test: list[str] = []
    for g in order:
        if len(test) >= n_test:
            break
        test += groups[int(g)]
    if len(test) >= len(names):
        raise PrepareError(
            f"{FREE}: {len(names)} images in {len(groups)} tiles are too few for --test-good {test_good}"
        )
    chosen = set(test)
    return [s for s in names if s not in chosen], sorted(test)


def _decode(path: Path) -> np.ndarray:
    import cv2

    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise PrepareError(f"{path}: cannot read: {exc}") from exc
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise PrepareError(f"{path}: not a readable image")
    if img.dtype not in (np.uint8, np.uint16):
        raise PrepareError(f"{path}: unsupported pixel type {img.dtype}")
    return np.asarray(img)


def read_image_u8(path: Path) -> np.ndarray:
    """A photo as stored: ``(H, W)`` gray (also for a colour file whose channels are equal) or ``(H, W, 3)`` RGB.

    Raises:
        PrepareError: naming the file when it cannot be read or decoded.
    """
    import cv2

    img = _decode(path)
    if img.ndim == 3:
        img = img[..., :3]
        if img.shape[2] == 1 or (np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])):
            return np.ascontiguousarray(img[..., 0])
        return np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return img


def read_mask_binary(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A mask as ``(H, W)`` uint8 0 / 255: 255 where the value is above half the range (> 127 for 8 bit).

    Raises:
        PrepareError: naming the mask when it cannot be read or its size differs from ``shape`` (its image's).
    """
    m = _decode(path)
    if m.ndim == 3:
        m = m[..., :3].max(axis=2)
    if m.shape != shape:
        raise PrepareError(f"{path}: mask size {m.shape[1]}x{m.shape[0]} differs from its image {shape[1]}x{shape[0]}")
    return np.where(m > np.iinfo(m.dtype).max // 2, 255, 0).astype(np.uint8)


def _check_category(category: str) -> None:
    if not category or category in (".", "..") or "/" in category or "\\" in category:
        raise PrepareError(f"--category must be a plain folder name, got {category!r}")


def prepare(
    src: str | Path,
    out: str | Path,
    category: str = "magnetic_tile",
    test_good: float = 0.3,
    seed: int = 0,
    force: bool = False,
    keep_empty_masks: bool = False,
    by_tile: bool = True,
) -> dict[str, Any]:
    """Converts the ``MT_*`` folders under ``src`` into ``out/category`` (see the module docstring).

    Everything is written to a hidden staging folder beside the category first and moved in place only when
    every file has been read, so a failed run leaves the output as it was.

    Args:
        src: folder with ``MT_Free`` and the ``MT_<Defect>`` folders. out: output root.
        category: the category folder name. test_good: share of ``MT_Free`` for ``test/good``.
        seed: split seed. force: replace ``train``, ``test``, ``ground_truth`` and ``split.json`` of an existing
            non-empty category (other files there are left alone).
        keep_empty_masks: keep defect images without a defective pixel (all-zero mask) instead of leaving them out.
        by_tile: keep the photos of one tile on one side of the split (see :func:`split_free`).

    Returns:
        The summary also written to ``split.json``: ``counts`` per part (``train/good``, ``test/good``,
        ``test/<defect>``), ``files`` (stems per part), ``empty_masks`` (``MT_<Defect>/NAME.jpg``), seed, source.

    Raises:
        PrepareError: one line naming the folder, file or option at fault.
    """
    src, out = Path(src), Path(out)
    _check_category(category)
    if not src.is_dir():
        raise PrepareError(f"{src}: no such source folder (expected the MT_* folders of the magnetic-tile set)")
    if not (src / FREE).is_dir():
        raise PrepareError(f"{src}: no {FREE} folder (the defect-free images)")
    defect_dirs = sorted(p for p in src.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name != FREE)
    if not defect_dirs:
        raise PrepareError(f"{src}: no MT_<Defect> folders beside {FREE}")
    target = out / category
    if target.exists() and not target.is_dir():
        raise PrepareError(f"{target}: exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise PrepareError(f"{target}: not empty (use --force to replace its train/test/ground_truth)")

    free = list_items(src / FREE, with_masks=False)
    train_stems, test_stems = split_free([it.stem for it in free], test_good, seed, by_tile)
    by_stem = {it.stem: it for it in free}
    defects: dict[str, tuple[Path, list[Item]]] = {}
    for d in defect_dirs:
        name = defect_name(d.name)
        if name == "good" or name in defects:
            raise PrepareError(f"{d}: defect name {name!r} is taken (good, or another folder differing in case)")
        defects[name] = (d, list_items(d, with_masks=True))

    stage = out / f".{category}.partial"
    if stage.exists():
        shutil.rmtree(stage)
    files: dict[str, list[str]] = {"train/good": train_stems, "test/good": test_stems}
    empty: list[str] = []
    try:
        for part, stems in (("train/good", train_stems), ("test/good", test_stems)):
            for stem in stems:
                write_png(stage / part / f"{stem}.png", read_image_u8(by_stem[stem].image))
        for name, (folder, items) in defects.items():
            kept: list[str] = []
            for it in items:
                img = read_image_u8(it.image)
                assert it.mask is not None
                mask = read_mask_binary(it.mask, img.shape[:2])
                if not mask.any():
                    empty.append(f"{folder.name}/{it.image.name}")
                    if not keep_empty_masks:
                        continue
                write_png(stage / "test" / name / f"{it.stem}.png", img)
                write_png(stage / "ground_truth" / name / f"{it.stem}_mask.png", mask)
                kept.append(it.stem)
            files[f"test/{name}"] = kept
        summary: dict[str, Any] = {
            "category": category,
            "source": str(src.resolve()),
            "seed": seed,
            "test_good": test_good,
            "split": "by tile" if by_tile else "by image",
            "mask_threshold": "> 127 (8 bit), written as 0 / 255",
            "counts": {part: len(stems) for part, stems in files.items()},
            "empty_masks": empty,
            "empty_masks_kept": keep_empty_masks,
            "files": files,
        }
        (stage / "split.json").write_text(json.dumps(summary, indent=1) + "\n")
        target.mkdir(parents=True, exist_ok=True)
        for name in OWNED:
            old = target / name
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old)
            elif old.exists() or old.is_symlink():
                old.unlink()
        for entry in stage.iterdir():
            entry.rename(target / entry.name)
    finally:
        if stage.exists():
            shutil.rmtree(stage)
    return summary


def format_summary(summary: dict[str, Any], target: str | Path) -> str:
    """The printed report: one line per part with its image count, then the empty-mask images."""
    lines = [f"wrote {target} (seed {summary['seed']}, test-good {summary['test_good']}, from {summary['source']})"]
    lines += [f"  {part:<16} {n:5d}" for part, n in summary["counts"].items()]
    lines.append(f"  {'total':<16} {sum(summary['counts'].values()):5d}")
    empty = summary["empty_masks"]
    how = "kept with an all-zero mask" if summary["empty_masks_kept"] else "left out"
    lines.append(f"  empty masks: {len(empty)} ({how})" + (": " + ", ".join(empty) if empty else ""))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line; returns the exit code (0, or 2 after a one-line error on stderr)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default="../shared/data/magnetic-tile", help="folder with the MT_* folders")
    ap.add_argument("--out", default="data/magnetic-tile", help="output root (MVTec AD layout)")
    ap.add_argument("--category", default="magnetic_tile", help="category folder name (default magnetic_tile)")
    ap.add_argument("--test-good", type=float, default=0.3, help="share of MT_Free for test/good (default 0.3)")
    ap.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    ap.add_argument("--force", action="store_true", help="replace an existing non-empty category")
    ap.add_argument(
        "--keep-empty-masks", action="store_true", help="keep defect images whose mask is empty (default: left out)"
    )
    ap.add_argument(
        "--split-by-image",
        action="store_true",
        help="split MT_Free photo by photo (default: by tile, so no tile is in both train and test)",
    )
    args = ap.parse_args(argv)
    try:
        summary = prepare(
            args.src,
            args.out,
            args.category,
            args.test_good,
            args.seed,
            args.force,
            args.keep_empty_masks,
            not args.split_by_image,
        )
    except PrepareError as exc:
        print(f"prepare_magnetic_tile: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(summary, Path(args.out) / args.category))
    return 0


if __name__ == "__main__":
    sys.exit(main())
