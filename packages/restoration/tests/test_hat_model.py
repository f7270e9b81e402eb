"""Tests of the HAT model wiring (sa_restoration.models.hat)."""

from __future__ import annotations

from typing import Any, TypeVar

import pytest
import torch
import torch.nn.functional as F
from sa_restoration.models.hat import HAB, HAT, HAT_VARIANTS, build_hat, shift_mask
from torch import Tensor, nn

from shared_attention.attention import (
    OverlappingCrossAttention,
    WindowAttention,
    shifted_window_attention,
    window_partition,
    window_reverse,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


M = TypeVar("M", bound=nn.Module)


def _perturb(model: M, scale: float = 0.05) -> M:
    """Move LayerNorm / biases away from their trivial init so every path matters."""
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn_like(p))
    return model


def _tiny(upscale: int = 2, **kw: Any) -> HAT:
    cfg: dict[str, Any] = dict(
        embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, compress_ratio=3, squeeze_factor=4, img_size=16,
        mlp_ratio=2.0, drop_path_rate=0.0,
    )  # fmt: skip
    cfg.update(kw)
    return HAT(upscale=upscale, **cfg).eval()


def _blocks(model: HAT, group: int) -> Any:
    layer: Any = model.layers[group]
    return layer.residual_group.blocks


# ----------------------------------------------------------------------------- shapes and padding


def test_any_input_size_hat_cpu() -> None:
    model = build_hat("hat-cpu", upscale=2).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 23, 37))
    assert y.shape == (1, 3, 46, 74)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("upscale", [2, 3, 4, 8])
def test_upscale_shapes(upscale: int) -> None:
    model = _tiny(upscale)
    with torch.no_grad():
        assert model(torch.rand(2, 3, 8, 12)).shape == (2, 3, 8 * upscale, 12 * upscale)
    n_up = len([m for m in model.upsample if isinstance(m, nn.Conv2d)])
    assert n_up == {2: 1, 3: 1, 4: 2, 8: 3}[upscale]


def test_bad_upscale_and_upsampler() -> None:
    with pytest.raises(ValueError, match="upscale"):
        _tiny(5)
    with pytest.raises(ValueError, match="upsampler"):
        _tiny(2, upsampler="")


def test_padded_path_equals_manual_reflect_pad_and_crop() -> None:
    model = _perturb(_tiny(3))
    x = torch.rand(1, 3, 10, 7, dtype=torch.float64)
    model = model.double()
    with torch.no_grad():
        y = model(x)
        xp = F.pad(x, (0, 1, 0, 2), mode="reflect")  # to 12 x 8, as HATModel.pre_process
        y_ref = model(xp)[..., : 10 * 3, : 7 * 3]
    assert y.shape == (1, 3, 30, 21)
    torch.testing.assert_close(y, y_ref, atol=1e-12, rtol=1e-10)


def test_multiple_of_window_is_not_padded() -> None:
    model = _tiny(2)
    seen: list[tuple[int, ...]] = []
    model.conv_first.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 12))
    assert seen == [(1, 3, 8, 12)]


def test_tiny_input_replicate_fallback() -> None:
    model = _tiny(2)
    with torch.no_grad():
        y = model(torch.rand(1, 3, 1, 3))  # too small to reflect-pad to 4
    assert y.shape == (1, 3, 2, 6) and torch.isfinite(y).all()


def test_mean_shift_and_img_range() -> None:
    """Zeroing the whole body leaves out = conv_last(up(before(conv_first(x_n))))/range + mean."""
    model = _tiny(2, img_range=255.0)
    assert "mean" not in model.state_dict()
    torch.testing.assert_close(model.mean.flatten(), torch.tensor([0.4488, 0.4371, 0.4040]))
    gray = _tiny(2, in_chans=1)
    assert gray.mean.shape == (1, 1, 1, 1) and float(gray.mean.sum()) == 0.0
    with torch.no_grad():
        assert gray(torch.rand(1, 1, 5, 6)).shape == (1, 1, 10, 12)


# ----------------------------------------------------------------------------- fast vs naive path


def test_fast_and_naive_paths_agree() -> None:
    model = _perturb(build_hat("hat-cpu", upscale=2)).eval()
    x = torch.rand(1, 3, 24, 40)
    with torch.no_grad():
        y_fast = model(x)
        assert model.set_fast(False) is model
        assert not model.fast
        assert all(
            not m.use_sdpa for m in model.modules() if isinstance(m, WindowAttention | OverlappingCrossAttention)
        )
        y_naive = model(x)
        model.set_fast(True)
        y_fast2 = model(x)
    torch.testing.assert_close(y_fast, y_naive, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(y_fast, y_fast2, atol=0, rtol=0)


def test_fast_and_naive_training_steps_agree_in_gradients() -> None:
    """The training step the speed bench times: the fast path (grouped shifted windows, chunked biased attention,
    strided OCAB windows, head-major bias gather with its index_add backward) against the official pattern
    (set_fast(False)): same loss and every parameter's gradient within 1e-5 relative to its largest entry."""
    model = _perturb(build_hat("hat-cpu", upscale=2)).train()
    x, target = torch.rand(2, 3, 24, 40), torch.rand(2, 3, 48, 80)

    def run(fast: bool) -> tuple[Tensor, dict[str, Tensor]]:
        model.set_fast(fast)
        model.zero_grad()
        torch.manual_seed(0)  # the same stochastic-depth draws on both paths
        loss = F.l1_loss(model(x), target)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    loss_fast, g_fast = run(True)
    loss_naive, g_naive = run(False)
    torch.testing.assert_close(loss_fast, loss_naive, atol=0, rtol=1e-5)
    assert g_fast.keys() == g_naive.keys() and any("relative_position_bias_table" in n for n in g_fast)
    for name, g in g_fast.items():
        ref = g_naive[name]
        rel = float((g - ref).abs().max() / ref.abs().max().clamp_min(1e-12))
        assert rel < 1e-5, f"{name}: relative gradient difference {rel:.2e}"


def test_fast_and_naive_training_gradients_agree() -> None:
    """Training: the fast path's chunked biased window attention (window and overlapping cross attention, shifted
    and not, a batch of 2) gives the naive explicit path's loss gradients within 1e-5 relative, the learned
    relative position bias tables included (bench/speed.py times the two)."""
    torch.manual_seed(3)
    model = _perturb(build_hat("hat-cpu", upscale=2)).train()
    x, gt = torch.rand(2, 3, 16, 24), torch.rand(2, 3, 32, 48)

    def grads(fast: bool) -> dict[str, Tensor]:
        model.set_fast(fast)
        model.zero_grad()
        torch.nn.functional.l1_loss(model(x), gt).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    g_fast, g_naive = grads(True), grads(False)
    assert g_fast.keys() == g_naive.keys()
    assert any("relative_position_bias_table" in n for n in g_fast)
    for name, g in g_fast.items():
        scale = g_naive[name].abs().max().clamp(min=1e-12)
        assert (g - g_naive[name]).abs().max() / scale < 1e-5, name


def test_fast_constructor_flag() -> None:
    model = _tiny(2, fast=False)
    assert all(not m.use_sdpa for m in model.modules() if isinstance(m, WindowAttention))


def test_masks_cached_on_fast_path_rebuilt_on_naive_path(monkeypatch: pytest.MonkeyPatch) -> None:
    a = shift_mask(16, 24, 8, 4, torch.device("cpu"), cached=True)
    assert shift_mask(16, 24, 8, 4, torch.device("cpu"), cached=True) is a
    b = shift_mask(16, 24, 8, 4, torch.device("cpu"), cached=False)
    c = shift_mask(16, 24, 8, 4, torch.device("cpu"), cached=False)
    assert b is not c and b is not a
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert set(a.unique().tolist()) == {0.0, -100.0}

    import sa_restoration.models.hat as hat_mod

    calls: list[bool] = []
    real = hat_mod.shift_mask

    def spy(*args: Any, **kwargs: Any) -> Tensor:
        calls.append(bool(kwargs.get("cached", True)))
        return real(*args, **kwargs)

    monkeypatch.setattr(hat_mod, "shift_mask", spy)
    model = _tiny(2, depths=(2, 2), num_heads=(2, 2))
    with torch.no_grad():
        model(torch.rand(1, 3, 8, 8))
        model.set_fast(False)
        model(torch.rand(1, 3, 8, 8))
    assert calls == [True, False]  # once per forward, not per block


# ----------------------------------------------------------------------------- HAB vs naive composition


def naive_shift_mask(H: int, W: int, ws: int, s: int) -> Tensor:
    """Region labels by explicit slices (Swin sec. 3.2), pairs from different regions get -100."""
    img = torch.zeros(H, W)
    label = 0
    for hs in (slice(0, H - ws), slice(H - ws, H - s), slice(H - s, H)):
        for wsl in (slice(0, W - ws), slice(W - ws, W - s), slice(W - s, W)):
            img[hs, wsl] = label
            label += 1
    mask = torch.zeros((H // ws) * (W // ws), ws * ws, ws * ws)
    n = 0
    for wy in range(H // ws):
        for wx in range(W // ws):
            lab = img[wy * ws : (wy + 1) * ws, wx * ws : (wx + 1) * ws].reshape(-1)
            for i in range(ws * ws):
                for j in range(ws * ws):
                    if lab[i] != lab[j]:
                        mask[n, i, j] = -100.0
            n += 1
    return mask


def test_hab_with_shift_matches_naive_composition() -> None:
    dim, ws, s, H, W = 8, 4, 2, 8, 12
    blk = _perturb(HAB(dim, 2, ws, s, compress_ratio=2, squeeze_factor=2, conv_scale=0.01, mlp_ratio=2.0)).double()
    blk.eval()
    x = torch.randn(2, H * W, dim, dtype=torch.float64, requires_grad=True)
    mask = naive_shift_mask(H, W, ws, s).double()
    torch.testing.assert_close(mask.float(), shift_mask(H, W, ws, s, torch.device("cpu")), atol=0, rtol=0)

    y = blk(x, (H, W), shift_mask(H, W, ws, s, torch.device("cpu")))

    xn = blk.norm1(x)
    img = xn.view(2, H, W, dim)
    conv = blk.conv_block(img.permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(2, H * W, dim)
    rolled = torch.roll(img, (-s, -s), (1, 2))
    win = blk.attn(window_partition(rolled, ws), mask=mask)
    att = torch.roll(window_reverse(win, ws, H, W), (s, s), (1, 2)).reshape(2, H * W, dim)
    ref = x + att + 0.01 * conv
    ref = ref + blk.mlp(blk.norm2(ref))
    torch.testing.assert_close(y, ref, atol=1e-12, rtol=1e-10)
    # the attention branch is the core's shifted-window attention
    att_core = shifted_window_attention(img, blk.attn, shift_size=s).reshape(2, H * W, dim)
    torch.testing.assert_close(att, att_core, atol=1e-12, rtol=1e-10)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gx_ref,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(gx, gx_ref, atol=1e-12, rtol=1e-10)


def test_blocks_alternate_shift() -> None:
    model = build_hat("hat-cpu", upscale=2)
    shifts = [b.shift_size for b in _blocks(model, 0)]
    assert shifts == [0, 4]


def test_official_shift_rule_img_size_equal_window() -> None:
    model = _tiny(2, img_size=4)  # patch resolution == window: no shifted block, as the official HAB
    assert all(b.shift_size == 0 for b in _blocks(model, 0))
    with pytest.raises(ValueError, match="window_size"):
        _tiny(2, img_size=2)


# ----------------------------------------------------------------------------- structure / training


def test_index_buffers_stored_once_and_aliased() -> None:
    model = _tiny(2, depths=(2, 2), num_heads=(2, 2))
    keys = list(model.state_dict())
    assert [k for k in keys if "relative_position_index" in k] == [
        "relative_position_index_SA",
        "relative_position_index_OCA",
    ]
    for m in model.modules():
        if isinstance(m, WindowAttention):
            assert m.relative_position_index is model.relative_position_index_SA
        if isinstance(m, OverlappingCrossAttention):
            assert m.relative_position_index is model.relative_position_index_OCA
    model._apply(lambda t: t.clone())  # what .to(device) does: a new tensor per module buffer
    blk = _blocks(model, 1)[0].attn
    assert blk.relative_position_index is model.relative_position_index_SA  # aliasing survives _apply


def test_variants_table() -> None:
    assert set(HAT_VARIANTS) == {"hat-s", "hat", "hat-l", "hat-cpu"}
    assert HAT_VARIANTS["hat-s"]["embed_dim"] == 144 and HAT_VARIANTS["hat-s"]["compress_ratio"] == 24
    assert HAT_VARIANTS["hat"]["squeeze_factor"] == 30 and len(HAT_VARIANTS["hat-l"]["depths"]) == 12
    model = build_hat("HAT_CPU", upscale=3, embed_dim=24)
    assert model.embed_dim == 24 and model.upscale == 3
    with pytest.raises(ValueError, match="unknown HAT variant"):
        build_hat("hat-xl")


def test_train_step_with_checkpointing_and_3conv() -> None:
    model = _tiny(2, resi_connection="3conv", use_checkpoint=True, drop_path_rate=0.1).train()
    assert "conv_after_body.0.weight" in model.state_dict()
    x = torch.rand(2, 3, 6, 9)
    loss = (model(x) - torch.rand(2, 3, 12, 18)).abs().mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_ape_requires_img_size() -> None:
    model = _tiny(2, ape=True, img_size=8)
    assert model.absolute_pos_embed is not None
    with torch.no_grad():
        assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
        with pytest.raises(ValueError, match="ape"):
            model(torch.rand(1, 3, 12, 8))


def test_official_default_constructor() -> None:
    # official defaults otherwise: window 7, overlap 0.5 -> key window 10 (odd overlap, padded bottom/right)
    model = HAT(embed_dim=12, num_heads=(2, 2, 2, 2), depths=(1, 1, 1, 1), squeeze_factor=4)
    with torch.no_grad():
        assert model.eval()(torch.rand(1, 3, 9, 9)).shape == (1, 3, 18, 18)
