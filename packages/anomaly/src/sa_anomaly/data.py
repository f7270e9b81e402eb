"""Anomaly-detection datasets on disk: MVTec AD, BTAD and MVTec 3D-AD (RGB only) layouts.

* MVTec AD: ``<root>/<category>/train/good/*.png``, ``test/<defect>/*.png``,
  ``ground_truth/<defect>/<stem>_mask.png`` (``good`` has no masks).
* BTAD: ``<root>/<product>/train/ok/*``, ``test/ok/*``, ``test/ko/*``, ``ground_truth/ko/<stem>.*``.
* MVTec 3D-AD: ``<root>/<category>/train/good/rgb/*.png``, ``test/<defect>/rgb/*.png``,
  ``test/<defect>/gt/<stem>.png``.

:func:`list_samples` detects the layout. The training split's normal images are divided into a training and a
validation part (:func:`split_train_val`); validation may add synthetic anomalies with exact masks
(:class:`SyntheticValidationDataset`). The test split is only for the final evaluation, never for selection.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .imageio import IMAGE_SUFFIXES, read_image, read_mask

__all__ = [
    "Sample",
    "detect_layout",
    "list_samples",
    "split_train_val",
    "resize_crop",
    "resize_shorter",
    "scaled_size",
    "tile_starts",
    "AnomalyImageDataset",
    "SyntheticValidationDataset",
]

Layout = Literal["mvtec", "btad", "mvtec3d"]


@dataclass(frozen=True)
class Sample:
    """One image: its path, label (1 = anomalous), mask path (``None``: all normal) and defect type."""

    path: Path
    label: int
    mask: Path | None
    defect: str


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def detect_layout(category_dir: str | Path) -> Layout:
    """``mvtec``, ``btad`` or ``mvtec3d`` from the folder structure of one category."""
    d = Path(category_dir)
    if not d.is_dir():
        raise FileNotFoundError(f"{d}: no such category folder")
    if (d / "train" / "ok").is_dir():
        return "btad"
    if (d / "train" / "good" / "rgb").is_dir():
        return "mvtec3d"
    if (d / "train" / "good").is_dir():
        return "mvtec"
    raise ValueError(
        f"{d}: not an MVTec AD / BTAD / MVTec 3D-AD category (expected train/good, train/ok or train/good/rgb)"
    )


def _find_mask(folder: Path, stem: str) -> Path | None:
    for cand in (f"{stem}_mask", stem):
        for suf in IMAGE_SUFFIXES:
            p = folder / f"{cand}{suf}"
            if p.is_file():
                return p
    return None


def list_samples(category_dir: str | Path, split: Literal["train", "test"]) -> list[Sample]:
    """Lists the images of one category's split with labels and masks (any supported layout).

    Raises:
        FileNotFoundError / ValueError: naming the folder or the image without a mask.
    """
    d = Path(category_dir)
    layout = detect_layout(d)
    good = "ok" if layout == "btad" else "good"
    out: list[Sample] = []
    split_dir = d / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"{split_dir}: missing {split} folder")
    for sub in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if split == "train" and sub.name != good:
            continue
        img_dir = sub / "rgb" if layout == "mvtec3d" else sub
        normal = sub.name == good
        for img in _images(img_dir):
            mask = None
            if not normal:
                mask_dir = sub / "gt" if layout == "mvtec3d" else d / "ground_truth" / sub.name
                mask = _find_mask(mask_dir, img.stem)
                if mask is None:
                    raise ValueError(f"{img}: anomalous image without a mask in {mask_dir}")
            out.append(Sample(img, 0 if normal else 1, mask, sub.name))
    if not out:
        raise ValueError(f"{split_dir}: no images found")
    return out


def split_train_val(samples: list[Sample], val_fraction: float, seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Deterministically holds out ``val_fraction`` of the normal training images (at least one, if > 0)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(samples))
    n_val = max(1, round(val_fraction * len(samples))) if val_fraction > 0 else 0
    if n_val >= len(samples):
        raise ValueError(f"{len(samples)} training images are too few for a validation split")
    val_idx = set(order[:n_val].tolist())
    return [s for i, s in enumerate(samples) if i not in val_idx], [samples[i] for i in sorted(val_idx)]


def scaled_size(height: int, width: int, resize: int, min_side: int) -> tuple[int, int]:
    """``(h, w)`` after scaling the shorter side to ``resize`` (aspect kept), each side at least ``min_side``."""
    s = resize / min(height, width)
    return max(min_side, round(height * s)), max(min_side, round(width * s))


def resize_shorter(img: np.ndarray, resize: int, min_side: int, nearest: bool = False) -> np.ndarray:
    """Resizes ``(H, W, ...)`` to :func:`scaled_size` (area when shrinking, bilinear when enlarging, nearest for
    masks); returns ``img`` itself when the size does not change."""
    import cv2

    h, w = img.shape[:2]
    nh, nw = scaled_size(h, w, resize, min_side)
    if (nh, nw) == (h, w):
        return img
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if resize < min(h, w) else cv2.INTER_LINEAR)
    return cv2.resize(img, (nw, nh), interpolation=interp)


def resize_crop(img: np.ndarray, resize: int, crop: int, nearest: bool = False) -> np.ndarray:
    """Resizes the shorter side to ``resize`` (area/bilinear, or nearest for masks), then centre-crops ``crop``."""
    img = resize_shorter(img, resize, crop, nearest)
    nh, nw = img.shape[:2]
    top, left = (nh - crop) // 2, (nw - crop) // 2
    return img[top : top + crop, left : left + crop]


def tile_starts(length: int, tile: int, overlap: float = 0.5) -> list[int]:
    """Offsets of ``tile``-long windows covering ``[0, length)`` with at least ``overlap`` of a tile shared by
    neighbours, spread evenly from ``0`` to ``length - tile`` (one window when ``length == tile``).

    Raises:
        ValueError: ``length < tile`` or ``overlap`` outside ``[0, 1)``.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if length < tile:
        raise ValueError(f"a length of {length} is shorter than the tile of {tile}")
    stride = max(1, int(tile * (1 - overlap)))
    n = 1 + -(-(length - tile) // stride)  # ceil
    if n == 1:
        return [0]
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _to_item(img: np.ndarray, mask: np.ndarray, label: int, index: int) -> dict[str, Any]:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))),  # (3, S, S)
        "mask": torch.from_numpy(np.ascontiguousarray(mask.astype(np.float32)))[None],  # (1, S, S)
        "label": torch.tensor(label, dtype=torch.long),
        "index": torch.tensor(index, dtype=torch.long),
    }


class AnomalyImageDataset(Dataset[dict[str, Any]]):
    """Images (+ masks) resized and centre-cropped to ``image_size``, as float RGB in [0, 1].

    Args:
        samples: from :func:`list_samples`. resize / image_size: shorter side, then centre crop.
        augment: random horizontal/vertical flips (textures only; off for objects).
        repeat: passes over the images per epoch.
    """

    def __init__(
        self,
        samples: list[Sample],
        image_size: int,
        resize: int | None = None,
        augment: bool = False,
        repeat: int = 1,
        fit: str = "crop",
    ) -> None:
        if fit not in ("crop", "resize"):
            raise ValueError(f"data.fit must be 'crop' or 'resize', got {fit!r}")
        self.samples, self.image_size = samples, image_size
        self.resize = resize or image_size
        self.augment, self.repeat, self.fit = augment, repeat, fit

    def _fit(self, img: np.ndarray, nearest: bool = False) -> np.ndarray:
        if self.fit == "resize":
            import cv2

            size = (self.image_size, self.image_size)
            smaller = img.shape[0] * img.shape[1] >= self.image_size**2
            inter = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if smaller else cv2.INTER_LINEAR
            return cv2.resize(img, size, interpolation=inter)
        return resize_crop(img, self.resize, self.image_size, nearest=nearest)

    def __len__(self) -> int:
        return len(self.samples) * self.repeat

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s = self.samples[i % len(self.samples)]
        raw = read_image(s.path)
        img = self._fit(raw)
        if s.mask is not None:
            m = read_mask(s.mask).astype(np.uint8)
            if m.shape != raw.shape[:2]:
                raise ValueError(f"{s.mask}: mask size {m.shape} differs from its image {s.path}")
            mask = self._fit(m, nearest=True) > 0
        else:
            mask = np.zeros((self.image_size, self.image_size), bool)
        return img, mask

    def __getitem__(self, i: int) -> dict[str, Any]:
        img, mask = self.load(i)
        if self.augment:
            rng = np.random.default_rng()
            if rng.random() < 0.5:
                img, mask = img[:, ::-1], mask[:, ::-1]
            if rng.random() < 0.5:
                img, mask = img[::-1], mask[::-1]
        return _to_item(img, mask, self.samples[i % len(self.samples)].label, i)


class SyntheticValidationDataset(Dataset[dict[str, Any]]):
    """Held-out normal images plus, for each, ``synthetic`` copies with a seeded synthetic defect and exact mask.

    Selection on it never touches the test set; defects come from :mod:`sa_anomaly.defects` (``defects``: a set
    name, ``generic`` or ``surface``, or a list of defect names), taken in turn.
    """

    def __init__(
        self,
        base: AnomalyImageDataset,
        synthetic: int = 1,
        seed: int = 0,
        defects: str | tuple[str, ...] | list[str] = "generic",
    ) -> None:
        from .defects import defect_names

        self.base, self.synthetic, self.seed = base, synthetic, seed
        self.names = list(defect_names(defects))

    def __len__(self) -> int:
        return len(self.base.samples) * (1 + self.synthetic)

    def __getitem__(self, i: int) -> dict[str, Any]:
        from .defects import apply_defect

        n = len(self.base.samples)
        img, mask = self.base.load(i % n)
        if i < n:
            return _to_item(img, mask, 0, i)
        rng = np.random.default_rng(self.seed * 100003 + i)
        img, mask = apply_defect(self.names[i % len(self.names)], img, rng)
        return _to_item(img, mask, 1, i)
