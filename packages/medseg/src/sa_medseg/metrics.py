"""Segmentation metrics on 3D volumes (MONAI): Dice and HD95 per class, HD95 in millimetres.

The official TransUNet-style evaluation reports HD95 in voxels; here the voxel spacing is passed to
MONAI's surface distance so the numbers are in mm. Conventions per class (as the official
``calculate_metric_percase``): both masks empty -> Dice 1, HD95 0; exactly one empty -> Dice 0,
HD95 ``nan`` (excluded from the means, counted in ``hd95_undefined``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["per_class_metrics", "multi_otsu_segment", "format_table", "summarise"]


def _onehot(x: np.ndarray, num_classes: int) -> torch.Tensor:
    t = torch.from_numpy(np.asarray(x, dtype=np.int64))
    return torch.nn.functional.one_hot(t, num_classes).movedim(-1, 0)[None].float()  # (1, C, ...)


def per_class_metrics(
    pred: np.ndarray, label: np.ndarray, num_classes: int, spacing: Sequence[float] | None = None
) -> dict[int, dict[str, float]]:
    """Dice and HD95 (mm) of every foreground class of one volume.

    Args:
        pred / label: integer maps of one shape (2D or 3D). num_classes: including background 0.
        spacing: voxel size per axis in mm (``None``: 1).

    Returns:
        ``{class: {"dice": float, "hd95": float (nan when undefined)}}`` for classes 1..C-1.
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance

    if pred.shape != label.shape:
        raise ValueError(f"prediction {pred.shape} and label {label.shape} shapes differ")
    p1, l1 = _onehot(pred, num_classes), _onehot(label, num_classes)
    sp = list(spacing) if spacing is not None else [1.0] * pred.ndim
    out: dict[int, dict[str, float]] = {}
    dice = compute_dice(p1, l1, include_background=True, ignore_empty=False)[0]  # (C,)
    for c in range(1, num_classes):
        ps, ls = bool(p1[0, c].any()), bool(l1[0, c].any())
        if ps and ls:
            with warnings.catch_warnings():  # MONAI 1.6 warns about an argument it passes internally
                warnings.simplefilter("ignore", FutureWarning)
                hd = compute_hausdorff_distance(
                    p1[:, c : c + 1], l1[:, c : c + 1], include_background=True, percentile=95, spacing=sp
                )
            out[c] = {"dice": float(dice[c]), "hd95": float(hd.reshape(-1)[0])}
        elif not ps and not ls:
            out[c] = {"dice": 1.0, "hd95": 0.0}
        else:
            out[c] = {"dice": 0.0, "hd95": float("nan")}
    return out


def summarise(per_volume: list[dict[int, dict[str, float]]], class_names: Sequence[str]) -> dict[str, Any]:
    """Means over volumes per class and over classes: ``{"dice", "hd95", "per_class": {name: {...}}}``."""
    per_class: dict[str, dict[str, float]] = {}
    for c, name in enumerate(class_names):
        if c == 0:
            continue
        d = [v[c]["dice"] for v in per_volume if c in v]
        h = [v[c]["hd95"] for v in per_volume if c in v and np.isfinite(v[c]["hd95"])]
        per_class[name] = {
            "dice": float(np.mean(d)) if d else float("nan"),
            "hd95": float(np.mean(h)) if h else float("nan"),
            "hd95_undefined": float(len(d) - len(h)),
        }
    dices = [v["dice"] for v in per_class.values()]
    hds = [v["hd95"] for v in per_class.values() if np.isfinite(v["hd95"])]
    return {
        "dice": float(np.mean(dices)) if dices else float("nan"),
        "hd95": float(np.mean(hds)) if hds else float("nan"),
        "per_class": per_class,
    }


def multi_otsu_segment(image: np.ndarray, num_classes: int = 3) -> np.ndarray:
    """The intensity baseline: multi-Otsu thresholds fitted on the whole volume, classes by brightness."""
    from skimage.filters import threshold_multiotsu

    th = threshold_multiotsu(np.asarray(image, dtype=np.float32), classes=num_classes)
    return np.digitize(image, th).astype(np.int64)


def format_table(rows: dict[str, dict[str, Any]], class_names: Sequence[str]) -> str:
    """A per-class Dice / HD95 table, one column pair per method (``rows``: method -> :func:`summarise`)."""
    methods = list(rows)
    head = f"{'class':<14}" + "".join(f"{m + ' Dice':>22}{m + ' HD95 mm':>22}" for m in methods)
    lines = [head]
    for name in class_names[1:]:
        cells = "".join(
            f"{rows[m]['per_class'][name]['dice']:>22.4f}{rows[m]['per_class'][name]['hd95']:>22.2f}" for m in methods
        )
        lines.append(f"{name:<14}{cells}")
    lines.append(f"{'mean':<14}" + "".join(f"{rows[m]['dice']:>22.4f}{rows[m]['hd95']:>22.2f}" for m in methods))
    return "\n".join(lines)
