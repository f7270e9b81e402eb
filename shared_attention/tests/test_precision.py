"""bf16 / fp32 inference precision of served models (one mechanism for every predictor)."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch import nn

from shared_attention.serving import PRECISIONS, PredictorBase, model_precision, set_model_precision

Pair = namedtuple("Pair", "a b")


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> dict[str, object]:
        h = self.conv(x).mean((2, 3))  # (B, 8)
        y = self.fc(h)  # (B, 5)
        return {"y": y, "pair": Pair(y * 2, torch.arange(3)), "list": [h], "n": 3}


def test_bf16_autocast_returns_float32_close_to_fp32_and_fp32_restores_exactly() -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = net(x)
        assert set_model_precision(net, "bf16") is net and model_precision(net) == "bf16"
        low = net(x)
        set_model_precision(net, "bf16")  # idempotent: not wrapped twice
        again = net(x)
    for got in (low, again):
        assert got["y"].dtype == torch.float32 and got["list"][0].dtype == torch.float32
        assert isinstance(got["pair"], Pair) and got["pair"].b.dtype == torch.int64 and got["n"] == 3
        torch.testing.assert_close(got["y"], ref["y"], atol=3e-2, rtol=3e-2)
    assert not torch.equal(low["y"], ref["y"])  # the products really ran in bf16
    torch.testing.assert_close(low["y"], again["y"], atol=0, rtol=0)
    assert all(p.dtype == torch.float32 for p in net.parameters())  # weights untouched
    assert "forward" not in "".join(net.state_dict())
    with torch.no_grad():
        set_model_precision(net, "fp32")
        assert model_precision(net) == "fp32"
        torch.testing.assert_close(net(x)["y"], ref["y"], atol=0, rtol=0)


def test_unknown_precision_is_named() -> None:
    with pytest.raises(ValueError, match="one of fp32, bf16, got 'fp16'"):
        set_model_precision(nn.Linear(2, 2), "fp16")


def test_predictor_base_precision_and_info() -> None:
    class P(PredictorBase):
        domain = "toy"

    p = P()
    with pytest.raises(ValueError, match="no model loaded"):
        p.set_precision("bf16")
    p.model = nn.Linear(4, 2)
    assert p.precision == "fp32" and p.info()["precision"] == "fp32"
    p.set_precision("bf16")
    assert p.precision == "bf16" and p.info()["precision"] == "bf16"
    assert p.model(torch.randn(3, 4)).dtype == torch.float32


def test_cli_choices_match_the_core() -> None:
    from shared_attention.domain import _PRECISIONS

    assert _PRECISIONS == PRECISIONS
