#!/usr/bin/env python
"""Prepares DIV2K / DF2K training sub-images and the standard SR test sets from folders you downloaded.

Nothing is downloaded. Subcommands (see README.md in this folder for the layout):

    subimages  --input DIR --output DIR [--crop 480 --step 240 --thresh 48] [--workers N]
        Cuts every image of DIR into overlapping crop x crop tiles (the HAT / BasicSR DF2K recipe).
    div2k      --root DIR [--scales 2 3 4] [--hr-name DIV2K_train_HR] [--generate-lr] [--workers N]
        HR sub-images 480/240/48 and, per scale, LR sub-images (480/s)/(240/s)/(48/s) from
        DIR/DIV2K_train_LR_bicubic/X{s} (or generated from the HR with our MATLAB-style imresize).
    testset    --hr DIR --output DIR [--scales 2 3 4]
        OUTPUT/GTmod{s}/NAME.png (HR modcropped to a multiple of s) and OUTPUT/LRbicx{s}/NAME.png.

Tiling rule (per axis, image length L): starts 0, step, 2*step, ... up to L - crop; if the part left
uncovered at the end is larger than ``thresh`` pixels, one more tile aligned to the end (L - crop) is
added. Tiles are named ``{stem}_s{index:03d}.png`` (index from 1, row-major), identical names for the HR
and the LR tiles so ``PairedImageDataset`` matches them. Images smaller than ``crop`` are copied whole.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
from sa_restoration.data import find_images, modcrop
from sa_restoration.imageio import image_size, read_image, write_png
from sa_restoration.metrics import quantize_uint8
from sa_restoration.resize import imresize


def _progress(it: Iterable[int], total: int, desc: str, enabled: bool) -> Iterator[int]:
    if not enabled:
        yield from it
        return
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional
        yield from it
        return
    yield from tqdm(it, total=total, desc=desc, unit="img")


def tile_starts(length: int, crop: int, step: int, thresh: int) -> list[int]:
    """Start offsets of the tiles along one axis (see the module docstring)."""
    if crop <= 0 or step <= 0:
        raise ValueError(f"crop and step must be positive, got crop={crop} step={step}")
    if length <= crop:
        return [0]
    starts = list(range(0, length - crop + 1, step))
    if length - (starts[-1] + crop) > thresh:
        starts.append(length - crop)
    return starts


def crop_tiles(img: np.ndarray, crop: int, step: int, thresh: int) -> list[np.ndarray]:
    """All tiles of an HxWxC image, row-major."""
    h, w = img.shape[:2]
    ys = tile_starts(h, crop, step, thresh)
    xs = tile_starts(w, crop, step, thresh)
    return [img[y : y + crop, x : x + crop] for y in ys for x in xs]


def _tile_one(path: Path, output: Path, crop: int, step: int, thresh: int, strip_scale: int | None) -> int:
    img = quantize_uint8(read_image(path))
    tiles = crop_tiles(img, crop, step, thresh)
    name = path.stem if strip_scale is None else _lr_stem(path.stem, strip_scale)
    for i, tile in enumerate(tiles, start=1):
        write_png(output / f"{name}_s{i:03d}.png", np.ascontiguousarray(tile))
    return len(tiles)


def _lr_stem(stem: str, scale: int) -> str:
    """``0001x4`` -> ``0001`` so LR tiles carry the HR names."""
    suffix = f"x{scale}"
    return stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem


def _run(
    jobs: Sequence[Path], fn: partial[int], workers: int, desc: str, progress: bool
) -> int:
    total = 0
    if workers <= 1:
        for n in _progress((fn(p) for p in jobs), len(jobs), desc, progress):
            total += n
        return total
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for n in _progress(pool.map(fn, jobs, chunksize=1), len(jobs), desc, progress):
            total += n
    return total


def extract_subimages(
    input_dir: str | Path,
    output_dir: str | Path,
    crop: int = 480,
    step: int = 240,
    thresh: int = 48,
    workers: int = 1,
    strip_scale: int | None = None,
    progress: bool = True,
) -> int:
    """Tiles every image of ``input_dir`` into ``output_dir``; returns the number of tiles written.

    ``strip_scale=s`` drops an ``x{s}`` suffix from the names (DIV2K LR ``0001x4.png`` -> ``0001_s001.png``).
    """
    files = find_images(input_dir)
    if not files:
        raise ValueError(f"no images in {input_dir}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fn = partial(_tile_one, output=out, crop=crop, step=step, thresh=thresh, strip_scale=strip_scale)
    return _run(files, fn, workers, Path(input_dir).name, progress)


def _bicubic_lr(img: np.ndarray, scale: int) -> np.ndarray:
    return quantize_uint8(imresize(img.astype(np.float64), 1.0 / scale))


def _lr_one(path: Path, output: Path, scale: int) -> int:
    hr = modcrop(read_image(path), scale)
    write_png(output / f"{path.stem}x{scale}.png", _bicubic_lr(hr, scale))
    return 1


def generate_lr(hr_dir: str | Path, lr_dir: str | Path, scale: int, workers: int = 1, progress: bool = True) -> int:
    """DIV2K-style LR: ``lr_dir/{stem}x{s}.png`` = imresize(modcrop(HR, s), 1/s), rounded to 8 bits."""
    files = find_images(hr_dir)
    if not files:
        raise ValueError(f"no images in {hr_dir}")
    Path(lr_dir).mkdir(parents=True, exist_ok=True)
    return _run(files, partial(_lr_one, output=Path(lr_dir), scale=scale), workers, f"LR x{scale}", progress)


def prepare_div2k(
    root: str | Path,
    scales: Sequence[int] = (2, 3, 4),
    hr_name: str = "DIV2K_train_HR",
    lr_name: str = "DIV2K_train_LR_bicubic",
    generate: bool = False,
    crop: int = 480,
    step: int = 240,
    thresh: int = 48,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, int]:
    """HR sub-images into ``{hr_name}_sub`` and LR ones into ``{lr_name}/X{s}_sub``; returns tile counts."""
    root = Path(root)
    hr_dir = root / hr_name
    if not hr_dir.is_dir():
        raise FileNotFoundError(f"HR folder not found: {hr_dir} (see datasets/restoration/README.md)")
    bad = []
    for f in find_images(hr_dir):
        wh = image_size(f.read_bytes(), str(f))
        if wh is None:
            img = read_image(f)
            wh = (img.shape[1], img.shape[0])
        if any(wh[0] % s or wh[1] % s for s in scales):
            bad.append(f"{f.name} ({wh[0]}x{wh[1]})")
    if bad:
        raise ValueError(
            f"{len(bad)} HR image(s) are not multiples of every scale {list(scales)}, so HR and LR tiles would "
            f"not align (first: {', '.join(bad[:5])}); modcrop them first"
        )
    counts = {"HR": extract_subimages(hr_dir, root / f"{hr_name}_sub", crop, step, thresh, workers, None, progress)}
    for s in scales:
        if crop % s or step % s:
            raise ValueError(f"crop {crop} and step {step} must be multiples of the scale {s}")
        lr_dir = root / lr_name / f"X{s}"
        if generate or not lr_dir.is_dir():
            if not generate:
                raise FileNotFoundError(f"LR folder not found: {lr_dir} (download it or pass --generate-lr)")
            generate_lr(hr_dir, lr_dir, s, workers, progress)
        counts[f"X{s}"] = extract_subimages(
            lr_dir, root / lr_name / f"X{s}_sub", crop // s, step // s, math.ceil(thresh / s), workers, s, progress
        )
        if counts[f"X{s}"] != counts["HR"]:
            raise ValueError(
                f"X{s}: {counts[f'X{s}']} LR tiles but {counts['HR']} HR tiles; are the LR images exactly HR / {s}?"
            )
    return counts


def prepare_testset(
    hr_dir: str | Path, output_dir: str | Path, scales: Sequence[int] = (2, 3, 4), progress: bool = True
) -> int:
    """``output/GTmod{s}/NAME.png`` (modcropped HR) and ``output/LRbicx{s}/NAME.png``; returns images done."""
    files = find_images(hr_dir)
    if not files:
        raise ValueError(f"no images in {hr_dir}")
    out = Path(output_dir)
    for i in _progress(iter(range(len(files))), len(files), Path(hr_dir).name, progress):
        path = files[i]
        hr = quantize_uint8(read_image(path))
        for s in scales:
            gt = modcrop(hr, s)
            write_png(out / f"GTmod{s}" / f"{path.stem}.png", gt)
            write_png(out / f"LRbicx{s}" / f"{path.stem}.png", _bicubic_lr(gt.astype(np.float64) / 255.0, s))
    return len(files)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("subimages", help="tile one folder")
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--crop", type=int, default=480)
    p.add_argument("--step", type=int, default=240)
    p.add_argument("--thresh", type=int, default=48)
    p.add_argument("--strip-scale", type=int, default=None, help="drop an x{s} name suffix (LR folders)")

    p = sub.add_parser("div2k", help="HR + LR sub-images of a DIV2K / DF2K root")
    p.add_argument("--root", required=True)
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])
    p.add_argument("--hr-name", default="DIV2K_train_HR")
    p.add_argument("--lr-name", default="DIV2K_train_LR_bicubic")
    p.add_argument("--generate-lr", action="store_true", help="make the LR from the HR with our imresize")
    p.add_argument("--crop", type=int, default=480)
    p.add_argument("--step", type=int, default=240)
    p.add_argument("--thresh", type=int, default=48)

    p = sub.add_parser("testset", help="GTmod{s} / LRbicx{s} from a folder of HR images")
    p.add_argument("--hr", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4])

    for p in sub.choices.values():
        p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
        p.add_argument("--no-progress", action="store_true")

    args = parser.parse_args(argv)
    progress = not args.no_progress
    try:
        if args.cmd == "subimages":
            n = extract_subimages(
                args.input, args.output, args.crop, args.step, args.thresh, args.workers, args.strip_scale, progress
            )
            print(f"{n} sub-images written to {args.output}")
        elif args.cmd == "div2k":
            counts = prepare_div2k(
                args.root, args.scales, args.hr_name, args.lr_name, args.generate_lr,
                args.crop, args.step, args.thresh, args.workers, progress,
            )
            print("sub-images: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        else:
            n = prepare_testset(args.hr, args.output, args.scales, progress)
            print(f"{n} test images written to {args.output} (GTmod{{s}} / LRbicx{{s}})")
    except (ValueError, FileNotFoundError) as e:
        print(f"prepare_div2k: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
