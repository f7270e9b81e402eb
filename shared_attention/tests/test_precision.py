"""bf16 / fp32 inference precision of served models (one mechanism for every predictor)."""

from __future__ import annotations

from collections import namedtuple

import pytest
import torch
from torch import nn

from shared_attention.serving import (
    PRECISIONS,
    PredictorBase,
    model_compiled,
    model_precision,
    set_model_compiled,
    set_model_precision,
)

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


def test_compiled_forward_matches_eager_and_turns_off_again() -> None:
    torch.manual_seed(0)
    net = _Net().eval()
    x = torch.randn(2, 3, 16, 16)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        ref = net(x)
        assert set_model_compiled(net) is net and model_compiled(net) and model_precision(net) == "fp32"
        got = net(x)  # inductor: generated kernels
        again = net(x)
    assert isinstance(got["pair"], Pair) and got["n"] == 3
    torch.testing.assert_close(got["y"], ref["y"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again["y"], got["y"], rtol=0, atol=0)
    assert net.state_dict().keys() == state.keys() and all(torch.equal(net.state_dict()[k], state[k]) for k in state)
    set_model_compiled(net, False)
    assert not model_compiled(net) and "forward" not in net.__dict__  # the class's forward again
    with torch.no_grad():
        torch.testing.assert_close(net(x)["y"], ref["y"], rtol=0, atol=0)


def test_compile_and_precision_compose_in_either_order() -> None:
    torch.manual_seed(1)
    net = _Net().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        low = set_model_precision(_Net().eval(), "bf16")
        low.load_state_dict(net.state_dict())
        want = low(x)["y"]
        set_model_precision(net, "bf16")
        set_model_compiled(net, backend="eager")  # tracing only: the wiring, not the kernels
        assert model_compiled(net) and model_precision(net) == "bf16"
        torch.testing.assert_close(net(x)["y"], want, rtol=0, atol=0)  # still under bf16 autocast
        set_model_precision(net, "fp32")  # stays compiled, now in float32
        assert model_compiled(net) and model_precision(net) == "fp32"
        set_model_compiled(net, False)
        fp32 = net(x)["y"]
        set_model_compiled(net, backend="eager")
        set_model_precision(net, "bf16")
        assert model_compiled(net) and model_precision(net) == "bf16"
        torch.testing.assert_close(net(x)["y"], want, rtol=0, atol=0)
    assert not torch.equal(fp32, want)


def test_predictor_base_compile_flag_and_info() -> None:
    class P(PredictorBase):
        domain = "toy"

    p = P()
    with pytest.raises(ValueError, match="no model loaded"):
        p.set_compile(True)
    p.model = nn.Linear(4, 2)
    assert p.compiled is False and p.info()["compiled"] is False
    p.set_compile(True)
    assert p.compiled is True and p.info()["compiled"] is True
    p.set_compile(False)
    assert p.compiled is False
