"""Winograd F(2x2, 3x3) convolution: equal to ``F.conv2d`` (outputs and gradients), its layer and switch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shared_attention.layers.winograd import WinogradConv2d, set_winograd, winograd_conv3x3, winograd_eligible


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.mark.parametrize("shape", [(2, 5, 7, 9, 6), (1, 3, 4, 1, 1), (3, 16, 8, 7, 8), (1, 4, 4, 2, 5)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_equals_direct_convolution_in_float64(shape: tuple[int, ...], with_bias: bool) -> None:
    n, c, co, h, w = shape
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=g, requires_grad=True)
    weight = torch.randn(co, c, 3, 3, dtype=torch.float64, generator=g, requires_grad=True)
    bias = torch.randn(co, dtype=torch.float64, generator=g, requires_grad=True) if with_bias else None
    ref = F.conv2d(x, weight, bias, padding=1)
    out = winograd_conv3x3(x, weight, bias)
    assert out.shape == ref.shape
    assert _rel(out, ref) < 1e-12
    up = torch.randn(ref.shape, dtype=torch.float64, generator=g)
    inputs = [t for t in (x, weight, bias) if t is not None]
    for a, b in zip(torch.autograd.grad(out, inputs, up), torch.autograd.grad(ref, inputs, up)):
        assert _rel(a, b) < 1e-12


def test_float32_wide_layer_within_1e5() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 96, 12, 10, generator=g, requires_grad=True)
    weight = (torch.randn(80, 96, 3, 3, generator=g) * 0.05).requires_grad_()
    ref = F.conv2d(x, weight, padding=1)
    out = winograd_conv3x3(x, weight)
    assert _rel(out, ref) < 1e-5
    up = torch.randn(ref.shape, generator=g)
    for a, b in zip(torch.autograd.grad(out, (x, weight), up), torch.autograd.grad(ref, (x, weight), up)):
        assert _rel(a, b) < 1e-5


def test_wrong_weight_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="3, 3"):
        winograd_conv3x3(torch.zeros(1, 4, 5, 5), torch.zeros(2, 4, 5, 5))


def test_eligibility() -> None:
    assert winograd_eligible(nn.Conv2d(8, 8, 3, padding=1))
    assert not winograd_eligible(nn.Conv2d(8, 8, 3, padding=1), min_channels=16)
    assert not winograd_eligible(nn.Conv2d(8, 8, 3, stride=2, padding=1))
    assert not winograd_eligible(nn.Conv2d(8, 8, 3, padding=2, dilation=2))
    assert not winograd_eligible(nn.Conv2d(8, 8, 3, padding=1, groups=2))
    assert not winograd_eligible(nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"))
    assert not winograd_eligible(nn.Conv2d(8, 8, 1))
    assert not winograd_eligible(nn.ConvTranspose2d(8, 8, 3, padding=1))


def test_switch_keeps_parameters_and_switches_back() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, stride=2, padding=1))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 4, 9, 9)
    ref = model(x)
    assert set_winograd(model, True, min_channels=1) == 1
    assert type(model[0]) is WinogradConv2d and type(model[2]) is nn.Conv2d
    assert model.state_dict().keys() == state.keys()
    torch.testing.assert_close(model(x), ref, rtol=1e-5, atol=1e-6)
    assert set_winograd(model, True, min_channels=1) == 0  # already switched
    assert set_winograd(model, False) == 1
    assert type(model[0]) is nn.Conv2d
    assert set_winograd(model, True, min_channels=8) == 0  # narrower than the threshold


def test_inference_cache_follows_weight_updates() -> None:
    """In inference the transformed filter is cached; an in-place update (optimizer step, load) is seen."""
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 7, 3, padding=1)
    set_winograd(conv, True, min_channels=1)
    x = torch.randn(1, 5, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-5, atol=1e-6)
        conv.weight.mul_(-2.0)
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-5, atol=1e-6)
    conv.load_state_dict({"weight": torch.randn(7, 5, 3, 3), "bias": torch.zeros(7)})
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv2d(x, conv.weight, conv.bias, padding=1), rtol=1e-5, atol=1e-6)


def test_direct_kernel_with_gradients_and_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training (a gradient needed) and autocast run ``F.conv2d`` exactly as ``nn.Conv2d``; inference runs Winograd."""
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 4, 3, padding=1)
    ref = nn.Conv2d(6, 4, 3, padding=1)
    ref.load_state_dict(conv.state_dict())
    set_winograd(conv, True, min_channels=1)
    x = torch.randn(2, 6, 8, 8)
    calls: list[int] = []
    real = winograd_conv3x3

    def counting(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("shared_attention.layers.winograd.winograd_conv3x3", counting)
    conv(x).square().sum().backward()
    ref(x).square().sum().backward()
    assert not calls
    assert torch.equal(conv.weight.grad, ref.weight.grad) and torch.equal(conv.bias.grad, ref.bias.grad)
    with torch.no_grad():
        torch.testing.assert_close(conv(x), ref(x), rtol=1e-5, atol=1e-6)
    assert len(calls) == 1
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(conv(x), ref(x))
    assert len(calls) == 1


def test_compiled_model_runs_the_direct_kernel() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 5, 3, padding=1)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        ref = conv(x)
        set_winograd(conv, True, min_channels=1)
        compiled = torch.compile(conv, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(x), ref)
