"""Anomaly-detection metrics: image AUROC, pixel AUROC and AUPRO (per-region overlap up to a false-positive
rate of 30 %, normalised by that limit: the anomalib / MVTec AD convention)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["auroc", "aupro", "gaussian_smooth", "image_scores", "per_defect_auroc"]


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie correction); ``labels`` 1 = anomalous.

    Returns ``nan`` when only one class is present.
    """
    from scipy.stats import rankdata

    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Normalised area under the per-region-overlap curve for false-positive rates in ``[0, fpr_limit]``.

    Every connected ground-truth region (8-connectivity, per image) weighs the same; the FPR counts normal pixels
    of all images. The curve is exact (every distinct threshold), linearly interpolated at ``fpr_limit``.

    Args:
        maps: ``(N, H, W)`` anomaly maps. masks: ``(N, H, W)`` boolean ground truth.

    Returns:
        AUPRO in [0, 1], or ``nan`` without anomalous regions or without normal pixels.
    """
    from scipy import ndimage

    maps = np.asarray(maps, dtype=np.float64)
    masks = np.asarray(masks).astype(bool)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape")
    region = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for i in range(len(masks)):
        lab, k = ndimage.label(masks[i], structure=np.ones((3, 3)))
        region[i] = np.where(lab > 0, lab + n_regions, 0)
        n_regions += k
    n_normal = int((~masks).sum())
    if n_regions == 0 or n_normal == 0:
        return float("nan")
    sizes = np.bincount(region.ravel(), minlength=n_regions + 1).astype(np.float64)
    s = maps.ravel()
    r = region.ravel()
    order = np.argsort(-s, kind="stable")
    s, r = s[order], r[order]
    fpr_step = np.where(r == 0, 1.0 / n_normal, 0.0)
    pro_step = np.where(r > 0, 1.0 / (sizes[r] * n_regions), 0.0)
    fpr = np.cumsum(fpr_step)
    pro = np.cumsum(pro_step)
    last_of_tie = np.r_[s[1:] != s[:-1], True]  # thresholds between distinct scores
    fpr = np.r_[0.0, fpr[last_of_tie]]
    pro = np.r_[0.0, pro[last_of_tie]]
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit and keep.sum() < len(fpr):
        j = int(keep.sum())  # first point past the limit
        x0, x1, y0, y1 = fpr[j - 1], fpr[j], pro[j - 1], pro[j]
        y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / max(x1 - x0, 1e-300)
        x, y = np.r_[x, fpr_limit], np.r_[y, y_lim]
    return float(np.trapezoid(y, x) / fpr_limit)


def gaussian_smooth(maps: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """Per-image Gaussian smoothing of ``(N, H, W)`` maps (scipy, as the official scoring)."""
    from scipy.ndimage import gaussian_filter

    return np.stack([gaussian_filter(m, sigma=sigma) for m in np.asarray(maps, dtype=np.float32)])


def image_scores(maps: np.ndarray, sigma: float = 4.0) -> np.ndarray:
    """Image anomaly score = maximum of the Gaussian-smoothed map, ``(N, H, W)`` -> ``(N,)``."""
    sm = gaussian_smooth(maps, sigma) if sigma > 0 else np.asarray(maps)
    return sm.reshape(len(sm), -1).max(axis=1)


def per_defect_auroc(scores: np.ndarray, labels: np.ndarray, defects: Sequence[str]) -> dict[str, float]:
    """Image AUROC of each defect type against all normal images: ``{defect: auroc}``.

    ``defects``: the defect type of every image (any name for the normal ones, which are told by ``labels == 0``).
    """
    kinds = np.asarray(list(defects))
    if len(kinds) != len(labels) or len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores, {len(labels)} labels and {len(kinds)} defect names differ in length")
    good = labels == 0
    return {
        k: auroc(scores[good | (kinds == k)], labels[good | (kinds == k)]) for k in sorted(set(kinds[~good].tolist()))
    }
