"""Reference scorers: the nearest-neighbour memory bank against brute force and on a toy defect."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sa_anomaly.baseline import memory_bank_reference, nearest_distances
from torch import nn


def test_nearest_distances_match_brute_force() -> None:
    g = torch.Generator().manual_seed(0)
    q, bank = torch.randn(37, 5, generator=g), torch.randn(53, 5, generator=g)
    naive = torch.tensor([min(float((a - b).norm()) for b in bank) for a in q])
    got = nearest_distances(q, bank, chunk=8)  # several chunks, the last one partial
    assert torch.allclose(got, naive, atol=1e-5)
    assert torch.allclose(nearest_distances(bank[:4], bank), torch.zeros(4), atol=1e-3)  # members: distance 0
    with torch.autocast("cpu", dtype=torch.bfloat16):  # --precision bf16: the distances stay float32
        low = nearest_distances(q * 30 + 100, bank * 30 + 100, chunk=8)
    assert low.dtype == torch.float32 and torch.allclose(low, naive * 30, rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="expected"):
        nearest_distances(q, bank[:, :3])
    with pytest.raises(ValueError, match="empty"):
        nearest_distances(q, bank[:0])


class _PoolFeatures(nn.Module):
    """Two toy 'levels': 4x and 8x average-pooled images."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        return [F.avg_pool2d(images, 4), F.avg_pool2d(images, 8)]


def _items(n: int, defect: bool, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = 0.4 + 0.05 * rng.standard_normal((3, 32, 32)).astype(np.float32)
        mask = np.zeros((1, 32, 32), np.float32)
        if defect:
            y, x = rng.integers(0, 24, 2)
            img[:, y : y + 8, x : x + 8] = 1.0
            mask[:, y : y + 8, x : x + 8] = 1.0
        out.append({"image": torch.from_numpy(img), "mask": torch.from_numpy(mask), "label": torch.tensor(int(defect))})
    return out


def test_memory_bank_reference_finds_bright_squares() -> None:
    train, test = _items(6, False, 0), _items(5, False, 1) + _items(5, True, 2)
    kinds = ["good"] * 5 + ["square"] * 5
    res = memory_bank_reference(_PoolFeatures(), train, test, sigma=1.0, defects=kinds)
    assert res["image_auroc"] == 1.0
    assert res["pixel_auroc"] > 0.9
    assert res["per_defect"] == {"square": 1.0}
    with pytest.raises(ValueError, match="defect names"):
        memory_bank_reference(_PoolFeatures(), train, test, defects=kinds[:3])
