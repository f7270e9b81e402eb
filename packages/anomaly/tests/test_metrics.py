"""AUROC and AUPRO against naive formulas."""

from __future__ import annotations

import numpy as np
import pytest
from sa_anomaly.metrics import aupro, auroc, image_scores


def _naive_auroc(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def test_auroc_matches_pairwise_count() -> None:
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    y = rng.integers(0, 2, 40)
    assert auroc(s, y) == pytest.approx(_naive_auroc(s, y))
    assert auroc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert np.isnan(auroc(np.array([0.1, 0.2]), np.array([0, 0])))


def _naive_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    from scipy import ndimage

    regions = []
    for i in range(len(masks)):
        lab, k = ndimage.label(masks[i], structure=np.ones((3, 3)))
        regions += [(i, lab == j) for j in range(1, k + 1)]
    fprs, pros = [0.0], [0.0]
    for t in np.sort(np.unique(maps))[::-1]:
        pred = maps >= t
        fprs.append(float((pred & ~masks).sum() / (~masks).sum()))
        pros.append(float(np.mean([pred[i][r].mean() for i, r in regions])))
    fprs, pros = np.array(fprs), np.array(pros)
    grid = np.linspace(0, limit, 20001)
    return float(np.trapezoid(np.interp(grid, fprs, pros), grid) / limit)


def test_aupro_matches_threshold_sweep() -> None:
    rng = np.random.default_rng(1)
    masks = np.zeros((3, 12, 12), bool)
    masks[0, 2:5, 2:5] = True
    masks[0, 8:11, 7:9] = True  # two regions in one image
    masks[1, 5:9, 1:3] = True
    maps = rng.random((3, 12, 12)) + 0.8 * masks
    assert aupro(maps, masks) == pytest.approx(_naive_aupro(maps, masks), abs=2e-3)
    perfect = masks.astype(float) + 0.01 * rng.random(masks.shape)
    assert aupro(perfect, masks) == pytest.approx(1.0)
    assert np.isnan(aupro(maps, np.zeros_like(masks)))


def test_image_score_is_max_of_smoothed_map() -> None:
    m = np.zeros((2, 32, 32), np.float32)
    m[1, 16, 16] = 1.0
    s = image_scores(m, sigma=4)
    assert s[0] == 0 and 0 < s[1] < 1  # smoothing spreads the single hot pixel


def test_per_defect_auroc_scores_each_type_against_all_normals() -> None:
    from sa_anomaly.metrics import per_defect_auroc

    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.15, 0.25])
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    kinds = ["good", "good", "good", "stain", "stain", "cut", "cut"]
    res = per_defect_auroc(scores, labels, kinds)
    assert res["stain"] == 1.0
    assert res["cut"] == pytest.approx(_naive_auroc(scores[[0, 1, 2, 5, 6]], labels[[0, 1, 2, 5, 6]]))
    assert set(res) == {"stain", "cut"}
    with pytest.raises(ValueError, match="differ in length"):
        per_defect_auroc(scores, labels, kinds[:-1])
