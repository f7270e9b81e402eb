"""Super-resolution datasets: paired (GT + stored LR) and GT-only (LR made on the fly with MATLAB bicubic).

Both yield ``{"lq": (3, h, w) float32, "gt": (3, h * s, w * s) float32, "name": str}`` with values in
``[0, 1]``.

Randomness (crop positions, flips, rot90) comes from torch's *global* generator (``torch.randint``): the
training engine checkpoints that state, and ``DataLoader`` seeds it differently in every worker (numpy's
global RNG would be duplicated across workers).

Caching: with ``cache=True`` (default) each image is kept in memory as uint8 after its first read (meant
for small sets; 16-bit sources are then quantised to 8 bits). ``cache=False`` re-reads the file each time
and keeps the full precision. With DataLoader workers each worker holds its own cache.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .imageio import IMAGE_EXTENSIONS, find_images, read_image
from .metrics import quantize_uint8
from .resize import imresize

__all__ = [
    "IMAGE_EXTENSIONS",
    "DegradedImageDataset",
    "PairedImageDataset",
    "augment_pair",
    "find_images",
    "match_pairs",
    "modcrop",
]

def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crops H and W down to multiples of ``scale`` (keeps the top-left corner, like MATLAB ``modcrop``)."""
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def _lq_key(stem: str, scale: int) -> str:
    """``0001x4`` / ``baby_x4`` / ``baby-x4`` -> GT stem; other names unchanged."""
    m = re.fullmatch(rf"(.+?)[_-]?[xX]{scale}", stem)
    return m.group(1) if m else stem


def match_pairs(gt_files: Sequence[Path], lq_files: Sequence[Path], scale: int) -> list[tuple[Path, Path]]:
    """Pairs GT and LQ files by stem (LQ may carry an ``x{scale}`` suffix). Raises listing unmatched names."""
    gt_by_key: dict[str, Path] = {}
    for p in gt_files:
        if p.stem in gt_by_key:
            raise ValueError(f"two GT images share the stem {p.stem!r}: {gt_by_key[p.stem].name}, {p.name}")
        gt_by_key[p.stem] = p
    lq_by_key: dict[str, Path] = {}
    for p in lq_files:
        key = p.stem if p.stem in gt_by_key else _lq_key(p.stem, scale)
        if key in lq_by_key:
            raise ValueError(f"two LQ images map to GT {key!r}: {lq_by_key[key].name}, {p.name}")
        lq_by_key[key] = p
    missing_lq = sorted(set(gt_by_key) - set(lq_by_key))
    missing_gt = sorted(set(lq_by_key) - set(gt_by_key))
    if missing_lq or missing_gt:
        parts = []
        if missing_lq:
            first = ", ".join(gt_by_key[k].name for k in missing_lq[:5])
            parts.append(f"{len(missing_lq)} GT image(s) without an LQ partner (first: {first})")
        if missing_gt:
            first = ", ".join(lq_by_key[k].name for k in missing_gt[:5])
            parts.append(f"{len(missing_gt)} LQ image(s) without a GT partner (first: {first})")
        raise ValueError("GT/LQ folders do not match: " + "; ".join(parts))
    return [(gt_by_key[k], lq_by_key[k]) for k in sorted(gt_by_key)]


def _rand_int(high: int) -> int:
    """Uniform integer in [0, high) from torch's global generator."""
    return int(torch.randint(0, high, (1,)).item()) if high > 1 else 0


def _apply_transform(img: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> np.ndarray:
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if transpose:
        img = img.transpose(1, 0, 2)
    return img


def _random_transform() -> tuple[bool, bool, bool]:
    """(hflip, vflip, transpose), each with probability 1/2: the 8 dihedral transforms (flips + rot90)."""
    hflip, vflip, transpose = (bool(b) for b in (torch.rand(3) < 0.5).tolist())
    return hflip, vflip, transpose


def augment_pair(lq: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Same random horizontal flip, vertical flip and transpose (rot90 with the flips) on both HxWxC arrays."""
    t = _random_transform()
    return _apply_transform(lq, *t), _apply_transform(gt, *t)


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    if img.dtype == np.uint8:
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)
    else:
        t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
    return t


class _ImageCache:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._store: dict[Path, np.ndarray] = {}

    def get(self, path: Path) -> np.ndarray:
        """uint8 (cached) or float32 (uncached) HxWx3 RGB."""
        if not self.enabled:
            return read_image(path)
        img = self._store.get(path)
        if img is None:
            img = quantize_uint8(read_image(path))
            self._store[path] = img
        return img


class PairedImageDataset(Dataset[dict[str, object]]):
    """GT/LQ image pairs from two folders, matched by file stem.

    Naming: ``GTmod4/baby.png`` + ``LRbicx4/baby.png`` (Set5 style) or ``DIV2K_train_HR/0001.png`` +
    ``X4/0001x4.png`` (DIV2K style). ``gt`` must be exactly ``scale`` times ``lq`` (modcrop the GT first).

    ``patch_size`` is the LQ patch side for random aligned crops (GT patch ``patch_size * scale``); ``None``
    returns whole images (validation). ``augment`` adds random flips and rot90. ``repeat`` lists the set
    that many times per epoch (useful for tiny sets).
    """

    def __init__(
        self,
        gt_dir: str | os.PathLike[str],
        lq_dir: str | os.PathLike[str],
        scale: int,
        patch_size: int | None = None,
        augment: bool = False,
        repeat: int = 1,
        cache: bool = True,
    ) -> None:
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        if patch_size is not None and patch_size < 1:
            raise ValueError(f"patch_size must be >= 1 or None, got {patch_size}")
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        gt_files = find_images(gt_dir)
        lq_files = find_images(lq_dir)
        if not gt_files:
            raise ValueError(f"no images in GT folder {gt_dir}")
        self.pairs = match_pairs(gt_files, lq_files, scale)
        self.scale = scale
        self.patch_size = patch_size
        self.augment = augment
        self.repeat = repeat
        self._cache = _ImageCache(cache)

    def __len__(self) -> int:
        return len(self.pairs) * self.repeat

    def __getitem__(self, index: int) -> dict[str, object]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        gt_path, lq_path = self.pairs[index % len(self.pairs)]
        gt = self._cache.get(gt_path)
        lq = self._cache.get(lq_path)
        s = self.scale
        if gt.shape[0] != lq.shape[0] * s or gt.shape[1] != lq.shape[1] * s:
            raise ValueError(
                f"{gt_path.name}: GT is {gt.shape[1]}x{gt.shape[0]} but LQ {lq_path.name} is "
                f"{lq.shape[1]}x{lq.shape[0]}; expected GT = LQ x {s} (modcrop the GT to a multiple of {s})"
            )
        if self.patch_size is not None:
            p = self.patch_size
            h, w = lq.shape[:2]
            if h < p or w < p:
                raise ValueError(f"{lq_path.name}: LQ image {w}x{h} is smaller than patch_size {p}")
            top = _rand_int(h - p + 1)
            left = _rand_int(w - p + 1)
            lq = lq[top : top + p, left : left + p]
            gt = gt[top * s : (top + p) * s, left * s : (left + p) * s]
        if self.augment:
            lq, gt = augment_pair(lq, gt)
        return {"lq": _to_tensor(lq), "gt": _to_tensor(gt), "name": gt_path.stem}


class DegradedImageDataset(Dataset[dict[str, object]]):
    """GT-only images; the LQ is made on the fly with MATLAB bicubic ``imresize(gt, 1 / scale)``.

    Each item: a random GT crop of ``patch_size * scale`` (from the modcropped image; ``patch_size=None``
    uses the whole modcropped image), optional flips / rot90, then LQ = bicubic downscale, clipped to
    ``[0, 1]`` and, with ``quantize=True`` (default), rounded to 8 bits like stored LR PNGs.
    """

    def __init__(
        self,
        gt_dir_or_files: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        scale: int,
        patch_size: int | None,
        augment: bool = True,
        repeat: int = 1,
        cache: bool = True,
        quantize: bool = True,
    ) -> None:
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        if patch_size is not None and patch_size < 1:
            raise ValueError(f"patch_size must be >= 1 or None, got {patch_size}")
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        if isinstance(gt_dir_or_files, str | os.PathLike):
            self.files = find_images(gt_dir_or_files)
            if not self.files:
                raise ValueError(f"no images in GT folder {gt_dir_or_files}")
        else:
            self.files = [Path(f) for f in gt_dir_or_files]
            if not self.files:
                raise ValueError("DegradedImageDataset got an empty file list")
        self.scale = scale
        self.patch_size = patch_size
        self.augment = augment
        self.repeat = repeat
        self.quantize = quantize
        self._cache = _ImageCache(cache)

    def __len__(self) -> int:
        return len(self.files) * self.repeat

    def __getitem__(self, index: int) -> dict[str, object]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        path = self.files[index % len(self.files)]
        s = self.scale
        gt = modcrop(self._cache.get(path), s)
        if self.patch_size is not None:
            ps = self.patch_size * s
            h, w = gt.shape[:2]
            if h < ps or w < ps:
                raise ValueError(f"{path.name}: image {w}x{h} is smaller than the GT patch {ps}x{ps}")
            top = _rand_int(h - ps + 1)
            left = _rand_int(w - ps + 1)
            gt = gt[top : top + ps, left : left + ps]
        if gt.shape[0] < s or gt.shape[1] < s:
            raise ValueError(f"{path.name}: image is smaller than the scale {s}")
        gt_f = gt.astype(np.float32) / np.float32(255.0) if gt.dtype == np.uint8 else gt
        if self.augment:
            gt_f = _apply_transform(gt_f, *_random_transform())
        lq = np.clip(imresize(np.ascontiguousarray(gt_f), 1.0 / s), 0.0, 1.0)
        expected = (gt_f.shape[0] // s, gt_f.shape[1] // s)
        if lq.shape[:2] != expected:  # guard against float noise in ceil(n / s)
            raise AssertionError(f"{path.name}: LQ shape {lq.shape[:2]} != {expected}")
        lq_out: np.ndarray = quantize_uint8(lq) if self.quantize else lq.astype(np.float32)
        return {"lq": _to_tensor(lq_out), "gt": _to_tensor(gt_f), "name": path.stem}
