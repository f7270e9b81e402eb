"""Tiled inference equals whole-image inference for a model with a known receptive margin."""

import pytest
import torch
from sa_restoration.tiling import blend_ramp, tile_starts, tiled_forward
from torch import nn


class LocalSR(nn.Module):
    """Three 3x3 convs (receptive margin 3 LR pixels) + pixel shuffle x2."""

    margin = 3

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.GELU(), nn.Conv2d(8, 8, 3, padding=1), nn.GELU(),
                                  nn.Conv2d(8, 12, 3, padding=1), nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)


def test_tile_starts_cover_and_align():
    for size, tile, ov, al in [(100, 32, 8, 1), (100, 32, 8, 8), (33, 32, 8, 4), (20, 32, 8, 1), (257, 64, 16, 16)]:
        st = tile_starts(size, tile, ov, al)
        assert st[0] == 0 and all(s % al == 0 for s in st)
        covered = torch.zeros(size, dtype=torch.bool)
        for k, s in enumerate(st):
            end = size if k == len(st) - 1 else min(s + tile, size)
            covered[s:end] = True
            if k:
                prev_end = min(st[k - 1] + tile, size)
                assert prev_end - s >= ov or k == len(st) - 1
        assert covered.all()


def test_ramp_zero_in_margin_and_full_inside():
    w = blend_ramp(40, 10, 10, 2, torch.device("cpu"))
    assert torch.all(w[:2] == 0) and torch.all(w[-2:] == 0) and w[20] == 1 and w[2] > 0
    assert torch.all(blend_ramp(12, 0, 0, 3, torch.device("cpu")) == 1)


@pytest.mark.parametrize(
    "shape,tile,overlap", [((1, 3, 50, 70), 24, 8), ((2, 3, 41, 33), 16, 7), ((1, 3, 16, 16), 32, 8)]
)
def test_tiled_equals_whole_for_local_model(shape, tile, overlap):
    torch.manual_seed(0)
    m = LocalSR().eval()
    x = torch.rand(shape)
    whole = m(x)
    tiled = tiled_forward(m, x, 2, tile=tile, overlap=overlap, margin=LocalSR.margin, batch=3)
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=1e-5)


def test_too_small_margin_breaks_equality_and_overlap_check():
    torch.manual_seed(0)
    m = LocalSR().eval()
    x = torch.rand(1, 3, 50, 70)
    # margin 0 < receptive margin 3: tiles blend outputs computed without full context -> visible error
    bad = tiled_forward(m, x, 2, tile=24, overlap=8, margin=0)
    assert (bad - m(x)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="overlap"):
        tiled_forward(m, x, 2, tile=24, overlap=6, margin=3)
