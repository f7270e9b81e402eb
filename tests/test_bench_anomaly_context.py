"""bench/anomaly_context.py helpers: the neighbour ring and the context-regression residual (no data needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _mod():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("bench_anomaly_context", BENCH / "anomaly_context.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ring_holds_the_neighbours_at_each_offset() -> None:
    mod = _mod()
    f = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    r = mod.ring(f, 2, 1)  # offsets with max(|dy|, |dx|) == 2: 16 of them
    assert r.shape == (2, 5, 6, 16 * 3)
    offsets = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if max(abs(dy), abs(dx)) > 1]
    for k, (dy, dx) in enumerate(offsets):
        for y, x in ((2, 3), (0, 0), (4, 5)):
            yy, xx = min(max(y + dy, 0), 4), min(max(x + dx, 0), 5)  # replicated edges
            assert torch.equal(r[:, y, x, 3 * k : 3 * k + 3], f[:, :, yy, xx])


def test_context_residual_is_small_where_the_centre_is_a_function_of_its_neighbours() -> None:
    mod = _mod()
    torch.manual_seed(0)
    # every image a constant field (random per image and channel) plus tiny noise: any neighbour predicts the
    # centre, so the radius-1 predictor explains all but the noise
    feats = torch.randn(40, 4, 1, 1).expand(40, 4, 12, 12) + 1e-3 * torch.randn(40, 4, 12, 12)
    tr, va = feats[:30], feats[30:].clone()
    maps, kept = mod.context_maps([tr], [va], 1, 0, ridge=1e-6)
    assert maps[0].shape == (10, 12, 12)
    assert kept[0] < 0.05  # the noise is all that stays
    # a feature that breaks the relation at one position scores far above the rest of its map
    va[0, :, 6, 6] += 1.0
    maps, _ = mod.context_maps([tr], [va], 1, 0, ridge=1e-6)
    m = maps[0][0]
    assert m[6, 6] == m.max()
    assert m[6, 6] > 10 * m.median()


def test_context_maps_need_matching_levels() -> None:
    mod = _mod()
    with pytest.raises(RuntimeError):
        mod.context_maps([torch.randn(4, 3, 5, 5)], [torch.randn(2, 4, 5, 5)], 1, 0)
