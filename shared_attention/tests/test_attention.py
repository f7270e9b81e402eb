"""Tests for shared_attention.attention against naive reference formulas written here."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from shared_attention.attention import (
    ChannelAttention,
    MultiHeadAttention,
    RelativePositionBias,
    SpatialReductionAttention,
    SqueezeExcitation,
    WindowAttention,
    relative_position_index,
    scaled_dot_product,
    shifted_window_attention,
    shifted_window_mask,
    window_partition,
    window_reverse,
)
from shared_attention.attention.window import clear_bias_cache

DT = torch.float64
TOL = {"atol": 1e-10, "rtol": 1e-8}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- naive references


def naive_attention(
    q: Tensor, k: Tensor, v: Tensor, add: Tensor | None = None, scale: float | None = None
) -> Tensor:
    """softmax(q k^T * scale + add) v, per (batch, head) with explicit loops over the score matrix."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("...id,...jd->...ij", q, k) * scale
    if add is not None:
        scores = scores + add
    return torch.softmax(scores, dim=-1) @ v


def naive_probs(q: Tensor, k: Tensor, add: Tensor | None = None, scale: float | None = None) -> Tensor:
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = torch.einsum("...id,...jd->...ij", q, k) * scale
    if add is not None:
        scores = scores + add
    return torch.softmax(scores, dim=-1)


def bool_to_additive(mask: Tensor) -> Tensor:
    return torch.zeros(mask.shape, dtype=DT).masked_fill(~mask, float("-inf"))


def grads(out: Tensor, inputs: list[Tensor], g: Tensor) -> list[Tensor]:
    return list(torch.autograd.grad((out * g).sum(), inputs))


def assert_grads_close(a: list[Tensor], b: list[Tensor]) -> None:
    assert len(a) == len(b)
    for ga, gb in zip(a, b):
        torch.testing.assert_close(ga, gb, **TOL)


def qkv_tensors(
    B: int = 2,  # noqa: N803
    h: int = 3,
    nq: int = 5,
    nk: int = 7,
    d: int = 4,
    dv: int = 6,  # noqa: N803
) -> tuple[Tensor, ...]:
    q = torch.randn(B, h, nq, d, dtype=DT, requires_grad=True)
    k = torch.randn(B, h, nk, d, dtype=DT, requires_grad=True)
    v = torch.randn(B, h, nk, dv, dtype=DT, requires_grad=True)
    return q, k, v


# ----------------------------------------------------------------------------- scaled_dot_product


@pytest.mark.parametrize("need_weights", [False, True])
def test_sdp_matches_naive_values_and_grads(need_weights: bool) -> None:
    q, k, v = qkv_tensors()
    out, attn = scaled_dot_product(q, k, v, need_weights=need_weights)
    ref = naive_attention(q, k, v)
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn_like(ref)
    assert_grads_close(grads(out, [q, k, v], g), grads(ref, [q, k, v], g))
    if need_weights:
        assert attn is not None and attn.shape == (2, 3, 5, 7)
        torch.testing.assert_close(attn, naive_probs(q, k), **TOL)
    else:
        assert attn is None


def test_sdp_custom_scale() -> None:
    q, k, v = qkv_tensors()
    for nw in (False, True):
        out, _ = scaled_dot_product(q, k, v, scale=0.37, need_weights=nw)
        torch.testing.assert_close(out, naive_attention(q, k, v, scale=0.37), **TOL)


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("mask_shape", [(2, 3, 5, 7), (5, 7), (2, 1, 5, 7)])
def test_sdp_bool_mask(need_weights: bool, mask_shape: tuple[int, ...]) -> None:
    q, k, v = qkv_tensors()
    mask = torch.rand(mask_shape) > 0.4
    mask[..., 0] = True  # every query keeps at least one key
    out, attn = scaled_dot_product(q, k, v, attn_mask=mask, need_weights=need_weights)
    ref = naive_attention(q, k, v, bool_to_additive(mask))
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn_like(ref)
    assert_grads_close(grads(out, [q, k, v], g), grads(ref, [q, k, v], g))
    if need_weights:
        assert attn is not None
        assert torch.all(attn.masked_select(~mask.expand_as(attn)) == 0)


@pytest.mark.parametrize("need_weights", [False, True])
def test_sdp_additive_mask(need_weights: bool) -> None:
    q, k, v = qkv_tensors()
    add = torch.randn(2, 1, 5, 7, dtype=DT) * 2
    add[..., 3] = float("-inf")
    out, attn = scaled_dot_product(q, k, v, attn_mask=add, need_weights=need_weights)
    ref = naive_attention(q, k, v, add)
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn_like(ref)
    assert_grads_close(grads(out, [q, k, v], g), grads(ref, [q, k, v], g))
    if need_weights:
        assert attn is not None
        torch.testing.assert_close(attn, naive_probs(q, k, add), **TOL)
        assert torch.all(attn[..., 3] == 0)


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdp_masked_keys_are_excluded(need_weights: bool, kind: str) -> None:
    """Changing keys/values at masked positions must not change the output."""
    q, k, v = qkv_tensors()
    keep = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    keep[0, ..., 2] = False
    keep[1, ..., 5:] = False
    mask = keep if kind == "bool" else bool_to_additive(keep)
    out1, _ = scaled_dot_product(q, k, v, attn_mask=mask, need_weights=need_weights)
    k2, v2 = k.detach().clone(), v.detach().clone()
    k2[0, :, 2] += 100.0
    v2[0, :, 2] -= 50.0
    k2[1, :, 5:] = torch.randn_like(k2[1, :, 5:]) * 10
    v2[1, :, 5:] = torch.randn_like(v2[1, :, 5:]) * 10
    out2, _ = scaled_dot_product(q, k2, v2, attn_mask=mask, need_weights=need_weights)
    torch.testing.assert_close(out1, out2, **TOL)
    # ...and it equals attention over the kept keys only
    ref1 = naive_attention(q[1:], k[1:, :, :5], v[1:, :, :5])
    torch.testing.assert_close(out1[1:], ref1, **TOL)


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_sdp_fully_masked_row_gives_zeros_on_both_paths(kind: str) -> None:
    q, k, v = qkv_tensors()
    keep = torch.ones(5, 7, dtype=torch.bool)
    keep[2] = False
    mask = keep if kind == "bool" else bool_to_additive(keep)
    out_f, _ = scaled_dot_product(q, k, v, attn_mask=mask)
    out_e, attn = scaled_dot_product(q, k, v, attn_mask=mask, need_weights=True)
    assert attn is not None
    torch.testing.assert_close(out_f, out_e, **TOL)
    assert torch.all(out_e[:, :, 2] == 0) and torch.all(attn[:, :, 2] == 0)
    ref = naive_attention(q, k, v, bool_to_additive(keep))
    torch.testing.assert_close(out_e[:, :, [0, 1, 3, 4]], ref[:, :, [0, 1, 3, 4]], **TOL)
    (gq,) = torch.autograd.grad(out_e.sum(), [q])
    assert torch.isfinite(gq).all()


@pytest.mark.parametrize("finite_mask", [False, True])
def test_sdp_grad_requiring_float_mask_vs_naive(finite_mask: bool) -> None:
    """A learned bias (mask with grad) takes the explicit CPU path: values and all grads, incl. the mask's."""
    q, k, v = qkv_tensors()
    bias = (torch.randn(3, 5, 7, dtype=DT) * 2).requires_grad_(True)
    out, attn = scaled_dot_product(q, k, v, attn_mask=bias, finite_mask=finite_mask)
    assert attn is None
    ref = naive_attention(q, k, v, bias)
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn_like(ref)
    params = [q, k, v, bias]
    assert_grads_close(grads(out, params, g), grads(ref, params, g))
    with torch.no_grad():  # inference keeps the fused path: same values
        out_ng, _ = scaled_dot_product(q, k, v, attn_mask=bias, finite_mask=finite_mask)
    torch.testing.assert_close(out_ng, ref.detach(), **TOL)


def test_sdp_float32_mask_cast_for_lower_precision() -> None:
    q, k, v = (t.detach().float() for t in qkv_tensors())
    add = torch.randn(5, 7, dtype=torch.float64)
    a, _ = scaled_dot_product(q.bfloat16(), k.bfloat16(), v.bfloat16(), attn_mask=add)
    b, _ = scaled_dot_product(q.bfloat16(), k.bfloat16(), v.bfloat16(), attn_mask=add, need_weights=True)
    assert a.dtype == b.dtype == torch.bfloat16
    torch.testing.assert_close(a.float(), b.float(), atol=3e-2, rtol=3e-2)


def test_sdp_dropout_is_applied_only_when_requested() -> None:
    q, k, v = qkv_tensors()
    out, _ = scaled_dot_product(q, k, v, dropout_p=0.0, need_weights=True)
    out_d, attn = scaled_dot_product(q, k, v, dropout_p=0.5, need_weights=True)
    assert attn is not None
    torch.testing.assert_close(attn, naive_probs(q, k), **TOL)  # weights are returned pre-dropout
    assert not torch.allclose(out, out_d)


# ----------------------------------------------------------------------------- MultiHeadAttention


def naive_mha(
    x: Tensor,
    ctx: Tensor,
    wq: Tensor,
    bq: Tensor | None,
    wk: Tensor,
    bk: Tensor | None,
    wv: Tensor,
    bv: Tensor | None,
    wo: Tensor,
    bo: Tensor,
    heads: int,
    add: Tensor | None = None,
) -> Tensor:
    """Per-head loop: head_i = softmax(x Wq_i (ctx Wk_i)^T / sqrt(d) + add) ctx Wv_i; concat; W^O."""
    d = wq.shape[0] // heads
    outs = []
    for i in range(heads):
        sl = slice(i * d, (i + 1) * d)
        qi = x @ wq[sl].T + (bq[sl] if bq is not None else 0)
        ki = ctx @ wk[sl].T + (bk[sl] if bk is not None else 0)
        vi = ctx @ wv[sl].T + (bv[sl] if bv is not None else 0)
        s = qi @ ki.transpose(-1, -2) / math.sqrt(d)
        if add is not None:
            s = s + add[:, 0] if add.dim() == 4 else s + add
        outs.append(torch.softmax(s, -1) @ vi)
    return torch.cat(outs, -1) @ wo.T + bo


def test_mha_self_attention_vs_naive_values_and_grads() -> None:
    m = MultiHeadAttention(12, 3).to(DT)
    x = torch.randn(2, 5, 12, dtype=DT, requires_grad=True)
    out = m(x)
    wq, wk, wv = m.qkv.weight.split(12)
    bq, bk, bv = m.qkv.bias.split(12)
    ref = naive_mha(x, x, wq, bq, wk, bk, wv, bv, m.proj.weight, m.proj.bias, 3)
    torch.testing.assert_close(out, ref, **TOL)
    params = [x, m.qkv.weight, m.qkv.bias, m.proj.weight, m.proj.bias]
    g = torch.randn_like(ref)
    assert_grads_close(grads(out, params, g), grads(ref, params, g))
    assert set(m.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}


def test_mha_cross_attention_kv_dim_differs() -> None:
    m = MultiHeadAttention(12, 3, kv_dim=7).to(DT)
    x = torch.randn(2, 5, 12, dtype=DT, requires_grad=True)
    ctx = torch.randn(2, 9, 7, dtype=DT, requires_grad=True)
    out = m(x, ctx)
    assert out.shape == (2, 5, 12)
    wk, wv = m.kv.weight.split(12)
    bk, bv = m.kv.bias.split(12)
    ref = naive_mha(x, ctx, m.q.weight, m.q.bias, wk, bk, wv, bv, m.proj.weight, m.proj.bias, 3)
    torch.testing.assert_close(out, ref, **TOL)
    params = [x, ctx, m.q.weight, m.kv.weight, m.kv.bias, m.proj.weight]
    g = torch.randn_like(ref)
    assert_grads_close(grads(out, params, g), grads(ref, params, g))
    assert set(m.state_dict()) == {"q.weight", "q.bias", "kv.weight", "kv.bias", "proj.weight", "proj.bias"}
    with pytest.raises(ValueError):
        m(x)


def test_mha_head_dim_override_no_bias_and_weights() -> None:
    m = MultiHeadAttention(8, 2, qkv_bias=False, head_dim=6).to(DT)
    assert m.qkv.weight.shape == (36, 8) and m.qkv.bias is None and m.proj.weight.shape == (8, 12)
    x = torch.randn(3, 4, 8, dtype=DT)
    out, attn = m(x, need_weights=True)
    wq, wk, wv = m.qkv.weight.split(12)
    ref = naive_mha(x, x, wq, None, wk, None, wv, None, m.proj.weight, m.proj.bias, 2)
    torch.testing.assert_close(out, ref, **TOL)
    assert attn.shape == (3, 2, 4, 4)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 2, 4, dtype=DT), **TOL)
    torch.testing.assert_close(m(x), out, **TOL)


def test_mha_self_mode_with_same_width_context_uses_qkv_rows() -> None:
    m = MultiHeadAttention(8, 2).to(DT)
    x = torch.randn(2, 4, 8, dtype=DT)
    ctx = torch.randn(2, 6, 8, dtype=DT)
    wq, wk, wv = m.qkv.weight.split(8)
    bq, bk, bv = m.qkv.bias.split(8)
    ref = naive_mha(x, ctx, wq, bq, wk, bk, wv, bv, m.proj.weight, m.proj.bias, 2)
    torch.testing.assert_close(m(x, ctx), ref, **TOL)


@pytest.mark.parametrize("need_weights", [False, True])
def test_mha_key_padding_mask(need_weights: bool) -> None:
    m = MultiHeadAttention(8, 2, kv_dim=5).to(DT)
    x = torch.randn(2, 3, 8, dtype=DT)
    ctx = torch.randn(2, 6, 5, dtype=DT)
    keep = torch.ones(2, 1, 1, 6, dtype=torch.bool)
    keep[1, ..., 4:] = False
    res = m(x, ctx, attn_mask=keep, need_weights=need_weights)
    out = res[0] if need_weights else res
    wk, wv = m.kv.weight.split(8)
    bk, bv = m.kv.bias.split(8)
    ref0 = naive_mha(x[:1], ctx[:1], m.q.weight, m.q.bias, wk, bk, wv, bv, m.proj.weight, m.proj.bias, 2)
    ref1 = naive_mha(x[1:], ctx[1:, :4], m.q.weight, m.q.bias, wk, bk, wv, bv, m.proj.weight, m.proj.bias, 2)
    torch.testing.assert_close(out, torch.cat([ref0, ref1]), **TOL)


def test_mha_dropout_only_in_training() -> None:
    m = MultiHeadAttention(8, 2, attn_drop=0.5, proj_drop=0.5).to(DT)
    ref = MultiHeadAttention(8, 2).to(DT)
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 4, 8, dtype=DT)
    m.eval()
    torch.testing.assert_close(m(x), ref(x), **TOL)
    m.train()
    assert not torch.allclose(m(x), ref(x))


def test_mha_rejects_indivisible_dim() -> None:
    with pytest.raises(ValueError):
        MultiHeadAttention(10, 3)


# ----------------------------------------------------------------------------- window partition


@pytest.mark.parametrize("ws", [2, (2, 3)])
def test_window_partition_layout_vs_loop_and_round_trip(ws: int | tuple[int, int]) -> None:
    wh, ww = (ws, ws) if isinstance(ws, int) else ws
    B, H, W, C = 2, 4, 6, 3
    x = torch.randn(B, H, W, C)
    win = window_partition(x, ws)
    nh, nw = H // wh, W // ww
    assert win.shape == (B * nh * nw, wh * ww, C)
    for b in range(B):
        for i in range(nh):
            for j in range(nw):
                for r in range(wh):
                    for c in range(ww):
                        assert torch.equal(
                            win[b * nh * nw + i * nw + j, r * ww + c], x[b, i * wh + r, j * ww + c]
                        )
    assert torch.equal(window_reverse(win, ws, H, W), x)
    assert torch.equal(window_reverse(win.view(-1, wh, ww, C), ws, H, W), x)


def test_window_partition_rejects_non_multiple() -> None:
    with pytest.raises(ValueError):
        window_partition(torch.randn(1, 5, 4, 2), 2)
    with pytest.raises(ValueError):
        window_reverse(torch.randn(4, 4, 2), 2, 4, 5)


# ----------------------------------------------------------------------------- relative position


def naive_swin_index(wh: int, ww: int) -> Tensor:
    idx = torch.zeros(wh * ww, wh * ww, dtype=torch.long)
    for i in range(wh * ww):
        for j in range(wh * ww):
            yi, xi, yj, xj = i // ww, i % ww, j // ww, j % ww
            idx[i, j] = (yi - yj + wh - 1) * (2 * ww - 1) + (xi - xj + ww - 1)
    return idx


def naive_hat_oca_index(w: int, kw: int) -> Tensor:
    """HAT's calculate_rpi_oca formula (key minus query, shifted by w - kw + 1), negatives wrapped."""
    table = (w + kw - 1) ** 2
    idx = torch.zeros(w * w, kw * kw, dtype=torch.long)
    for i in range(w * w):
        for j in range(kw * kw):
            yi, xi, yj, xj = i // w, i % w, j // kw, j % kw
            raw = (yj - yi + w - kw + 1) * (w + kw - 1) + (xj - xi + w - kw + 1)
            idx[i, j] = raw % table
    return idx


@pytest.mark.parametrize("ws", [(3, 3), (2, 3), (4, 2)])
def test_relative_position_index_swin_vs_loop(ws: tuple[int, int]) -> None:
    idx = relative_position_index(ws)
    assert idx.dtype == torch.long
    assert torch.equal(idx, naive_swin_index(*ws))
    assert int(idx.max()) == (2 * ws[0] - 1) * (2 * ws[1] - 1) - 1 and int(idx.min()) == 0


def test_relative_position_index_overlapping_vs_hat_formula() -> None:
    idx = relative_position_index(4, 6)
    assert idx.shape == (16, 36)
    assert torch.equal(idx, naive_hat_oca_index(4, 6))
    # one table row per relative displacement: same (dy, dx) <=> same index; all 9*9 rows used
    disp = {}
    for i in range(16):
        for j in range(36):
            key = (j // 6 - i // 4, j % 6 - i % 4)
            disp.setdefault(key, set()).add(int(idx[i, j]))
    assert all(len(s) == 1 for s in disp.values())
    assert len({next(iter(s)) for s in disp.values()}) == len(disp) == 81


def test_relative_position_bias_module() -> None:
    rpb = RelativePositionBias(3, num_heads=2)
    assert rpb.relative_position_bias_table.shape == (25, 2)
    sd = rpb.state_dict()
    assert set(sd) == {"relative_position_bias_table", "relative_position_index"}
    assert sd["relative_position_index"].dtype == torch.long
    bias = rpb()
    assert bias.shape == (2, 9, 9)
    idx = naive_swin_index(3, 3)
    table = rpb.relative_position_bias_table
    for h in range(2):
        for i in range(9):
            for j in range(9):
                assert bias[h, i, j] == table[idx[i, j], h]
    ext = RelativePositionBias(4, num_heads=3, key_window_size=6)
    assert ext.relative_position_bias_table.shape == ((4 + 6 - 1) ** 2, 3)
    assert ext().shape == (3, 16, 36)
    hat_idx = naive_hat_oca_index(4, 6)
    torch.testing.assert_close(
        ext(), ext.relative_position_bias_table[hat_idx.view(-1)].view(16, 36, 3).permute(2, 0, 1)
    )


def test_relative_position_bias_table_init_std() -> None:
    rpb = RelativePositionBias(7, num_heads=8)  # 169 * 8 samples
    std = rpb.relative_position_bias_table.detach().std().item()
    assert 0.017 < std < 0.023
    assert rpb.relative_position_bias_table.requires_grad


# ----------------------------------------------------------------------------- shifted mask


def naive_shift_mask(H: int, W: int, ws: int, s: int, fill: float) -> Tensor:  # noqa: N803
    """Region labels by the three official slices per axis, then a loop over window token pairs."""

    def band(p: int, n: int) -> int:
        return 0 if p < n - ws else (1 if p < n - s else 2)

    labels = [[band(y, H) * 3 + band(x, W) for x in range(W)] for y in range(H)]
    nh, nw = H // ws, W // ws
    mask = torch.zeros(nh * nw, ws * ws, ws * ws)
    for wi in range(nh):
        for wj in range(nw):
            toks = [labels[wi * ws + r][wj * ws + c] for r in range(ws) for c in range(ws)]
            for a in range(ws * ws):
                for b in range(ws * ws):
                    mask[wi * nw + wj, a, b] = 0.0 if toks[a] == toks[b] else fill
    return mask


@pytest.mark.parametrize("H,W,ws,s", [(8, 8, 4, 2), (6, 9, 3, 1), (4, 4, 4, 2)])
def test_shifted_window_mask_vs_naive(H: int, W: int, ws: int, s: int) -> None:  # noqa: N803
    m = shifted_window_mask(H, W, ws, s)
    assert m.dtype == torch.float32 and m.shape == ((H // ws) * (W // ws), ws * ws, ws * ws)
    assert torch.equal(m, naive_shift_mask(H, W, ws, s, -100.0))
    m_inf = shifted_window_mask(H, W, ws, s, fill=float("-inf"))
    assert torch.equal(m_inf, naive_shift_mask(H, W, ws, s, float("-inf")))


def test_shifted_window_mask_semantics() -> None:
    """Two tokens of a shifted window may attend iff neither or both axes' wrap-around agree."""
    H = W = 8
    ws, s = 4, 2
    m = shifted_window_mask(H, W, ws, s)
    coords = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij"), -1)
    win = window_partition(coords[None], ws)  # (nW, N, 2) coordinates in the shifted map
    wrapped = win >= torch.tensor([H - s, W - s])  # token came from the wrapped-around strip
    same = (wrapped[:, :, None, :] == wrapped[:, None, :, :]).all(-1)
    assert torch.equal(m == 0, same)


def test_shifted_window_mask_is_cached() -> None:
    a = shifted_window_mask(8, 8, 4, 2)
    assert shifted_window_mask(8, 8, 4, 2) is a
    assert shifted_window_mask(8, 8, 4, 2, device="cpu") is a
    assert shifted_window_mask(8, 8, (4, 4), (2, 2), device=torch.device("cpu")) is a
    assert shifted_window_mask(8, 8, 4, 2, fill=-1e4) is not a
    assert shifted_window_mask(8, 12, 4, 2) is not a


def test_shifted_window_mask_rejects_bad_args() -> None:
    with pytest.raises(ValueError):
        shifted_window_mask(8, 8, 4, 4)
    with pytest.raises(ValueError):
        shifted_window_mask(9, 8, 4, 2)


# ----------------------------------------------------------------------------- WindowAttention


def naive_window_attention(m: WindowAttention, x: Tensor, mask: Tensor | None) -> Tensor:
    wh, ww = m.window_size
    idx = naive_swin_index(wh, ww)
    h = m.num_heads
    bias = torch.stack([m.relative_position_bias_table[idx, i] for i in range(h)])  # (h, N, N)
    B_, N, C = x.shape
    wq, wk, wv = m.qkv.weight.split(C)
    bq, bk, bv = m.qkv.bias.split(C)
    outs = []
    for n in range(B_):
        add = bias + (mask[n % mask.shape[0]] if mask is not None else 0)
        heads = []
        for i in range(h):
            sl = slice(i * m.head_dim, (i + 1) * m.head_dim)
            q = x[n] @ wq[sl].T + bq[sl]
            k = x[n] @ wk[sl].T + bk[sl]
            v = x[n] @ wv[sl].T + bv[sl]
            heads.append(torch.softmax(q @ k.T * m.scale + add[i], -1) @ v)
        outs.append(torch.cat(heads, -1))
    return torch.stack(outs) @ m.proj.weight.T + m.proj.bias


def test_window_attention_state_dict_names() -> None:
    m = WindowAttention(8, 3, 2)
    assert set(m.state_dict()) == {
        "relative_position_bias_table",
        "relative_position_index",
        "qkv.weight",
        "qkv.bias",
        "proj.weight",
        "proj.bias",
    }
    assert m.relative_position_bias_table.shape == (25, 2)
    assert m.state_dict()["relative_position_index"].dtype == torch.long


@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("with_mask", [False, True])
def test_window_attention_vs_naive(use_sdpa: bool, with_mask: bool) -> None:
    m = WindowAttention(8, (2, 3), 2, use_sdpa=use_sdpa).to(DT)
    nW, B = 3, 2
    x = torch.randn(B * nW, 6, 8, dtype=DT, requires_grad=True)
    mask = torch.randn(nW, 6, 6, dtype=DT) * 3 if with_mask else None
    if mask is not None:
        mask[1, :, 0] = -100.0
    out = m(x, mask)
    ref = naive_window_attention(m, x, mask)
    torch.testing.assert_close(out, ref, **TOL)
    params = [x, m.qkv.weight, m.proj.weight, m.relative_position_bias_table]
    g = torch.randn_like(ref)
    assert_grads_close(grads(out, params, g), grads(ref, params, g))


def test_window_attention_sdpa_vs_explicit_and_weights() -> None:
    m = WindowAttention(8, 3, 2, qk_scale=0.3).to(DT)
    x = torch.randn(8, 9, 8, dtype=DT)
    mask = shifted_window_mask(6, 6, 3, 1).to(DT)
    out_sdpa = m(x, mask)
    out_w, attn = m(x, mask, need_weights=True)
    m.use_sdpa = False
    torch.testing.assert_close(out_sdpa, m(x, mask), **TOL)
    torch.testing.assert_close(out_sdpa, out_w, **TOL)
    assert attn.shape == (8, 2, 9, 9)
    torch.testing.assert_close(out_sdpa, naive_window_attention(m, x, mask), **TOL)
    with pytest.raises(ValueError):
        m(x[:7], mask)


def naive_shifted_window_attention(x: Tensor, m: WindowAttention, s: int) -> Tensor:
    ws = m.window_size[0]
    B, H, W, C = x.shape
    xs = torch.roll(x, (-s, -s), (1, 2)) if s else x
    mask = naive_shift_mask(H, W, ws, s, -100.0).to(x.dtype) if s else None
    y = torch.zeros_like(xs)
    nw = W // ws
    for b in range(B):
        for i in range(H // ws):
            for j in range(nw):
                patch = xs[b, i * ws : (i + 1) * ws, j * ws : (j + 1) * ws].reshape(1, ws * ws, C)
                mk = mask[i * nw + j : i * nw + j + 1] if mask is not None else None
                o = naive_window_attention(m, patch, mk)
                y[b, i * ws : (i + 1) * ws, j * ws : (j + 1) * ws] = o.reshape(ws, ws, C)
    return torch.roll(y, (s, s), (1, 2)) if s else y


@pytest.mark.parametrize("shift", [0, 1])
def test_shifted_window_attention_vs_naive(shift: int) -> None:
    m = WindowAttention(4, 3, 2).to(DT)
    x = torch.randn(2, 6, 9, 4, dtype=DT, requires_grad=True)
    out = shifted_window_attention(x, m, 3, shift)
    ref = naive_shifted_window_attention(x, m, shift)
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn_like(ref)
    params = [x, m.qkv.weight, m.relative_position_bias_table]
    assert_grads_close(grads(out, params, g), grads(ref, params, g))


@pytest.mark.parametrize(
    ("B", "H", "W", "shift"),
    [(3, 6, 9, (1, 1)), (1, 3, 9, (1, 1)), (2, 9, 6, (0, 2)), (2, 6, 6, (1, 0)), (1, 3, 3, (2, 1))],
)
def test_grouped_shifted_attention_equals_roll_partition_path(
    monkeypatch: pytest.MonkeyPatch, B: int, H: int, W: int, shift: tuple[int, int]
) -> None:
    """The core's own mask takes the one-gather, mask-class-grouped path; any other mask object the plain
    roll / partition / per-window mask path: both give the same outputs and gradients (float64, training) and
    match the explicit path in float32 without gradients (the fused kernel's inference case)."""
    from shared_attention.attention import window as window_mod

    calls = []
    real = window_mod._grouped_shifted_attention
    monkeypatch.setattr(window_mod, "_grouped_shifted_attention", lambda *a: calls.append(1) or real(*a))
    m = WindowAttention(4, 3, 2).to(DT)
    x = torch.randn(B, H, W, 4, dtype=DT, requires_grad=True)
    own = shifted_window_mask(H, W, 3, shift)
    grouped = shifted_window_attention(x, m, 3, shift, mask=own)  # the cached mask object: grouped
    assert calls == [1]
    plain = shifted_window_attention(x, m, 3, shift, mask=own.clone())  # another object: not grouped
    assert calls == [1]
    torch.testing.assert_close(grouped, plain, **TOL)
    g = torch.randn_like(plain)
    params = [x, m.qkv.weight, m.relative_position_bias_table]
    assert_grads_close(grads(grouped, params, g), grads(plain, params, g))
    m32 = m.float().eval()
    with torch.no_grad():
        fast = shifted_window_attention(x.float(), m32, 3, shift)
        m32.use_sdpa = False
        explicit = shifted_window_attention(x.float(), m32, 3, shift)
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=1e-5)


def test_gather_bias_matches_indexing_with_gradients() -> None:
    """The core's bias gather (index_add backward) against the official indexing pattern, negative entries too."""
    from shared_attention.attention.window import _gather_bias

    table = torch.randn(25, 3, dtype=DT, requires_grad=True)
    index = relative_position_index(3)
    for idx in (index, index - 25 * (index % 2)):  # every odd entry written as its negative alias
        fast = _gather_bias(table, idx)
        ref = _gather_bias(table, idx, reference=True)
        torch.testing.assert_close(fast, ref, **TOL)
        g = torch.randn_like(ref)
        torch.testing.assert_close(grads(fast, [table], g)[0], grads(ref, [table], g)[0], **TOL)
    with pytest.raises((IndexError, RuntimeError)):  # below -rows: rejected like any out-of-range entry
        _gather_bias(table, index - 60)
    with pytest.raises((IndexError, RuntimeError)):
        _gather_bias(table, index + 25)


def test_window_attention_bias_reused_in_inference_and_refreshed_on_change() -> None:
    m = WindowAttention(4, 3, 2)
    with torch.no_grad():
        b1 = m.relative_position_bias()
        assert m.relative_position_bias() is b1  # kept while nothing changed
        m.relative_position_bias_table.add_(1.0)  # an optimizer step: in place, bumps the version
        b2 = m.relative_position_bias()
        assert b2 is not b1
        torch.testing.assert_close(b2, b1 + 1.0)
        state = {k: v.clone() for k, v in m.state_dict().items()}
        state["relative_position_bias_table"].zero_()
        m.load_state_dict(state)
        assert float(m.relative_position_bias().abs().max()) == 0.0
    b3 = m.relative_position_bias()  # with gradients: gathered afresh, connected to the table
    assert b3.requires_grad and b3.grad_fn is not None
    with torch.no_grad():
        b4 = m.relative_position_bias()
        m.relative_position_bias_table.data.add_(2.0)  # .data writes bypass the version counter ...
        assert m.relative_position_bias() is b4
        clear_bias_cache(m)  # ... so the cache is cleared by hand after them
        torch.testing.assert_close(m.relative_position_bias(), b4 + 2.0)


def test_inference_mode_evaluation_then_training() -> None:
    """A model first run under inference_mode (a validation pass) trains afterwards: the shift plan and the kept
    bias made then are ordinary tensors that autograd may save; inference tensors themselves are never cached."""
    m = WindowAttention(4, 3, 2)
    x = torch.randn(1, 6, 6, 4)
    with torch.inference_mode():
        shifted_window_attention(x, m, 3, (1, 2))
        assert not m.relative_position_bias().is_inference()
        frozen = WindowAttention(4, 3, 2)  # parameters made in inference mode: no version counter to key on
        assert frozen.relative_position_bias_table.is_inference()
        frozen(torch.randn(4, 9, 4))
        assert "_bias_cache" not in frozen.__dict__
    out = shifted_window_attention(x.requires_grad_(), m, 3, (1, 2))
    out.sum().backward()
    assert x.grad is not None and m.relative_position_bias_table.grad is not None


def test_small_attention_leaves_broadcast_batches_to_the_fused_kernel() -> None:
    q = torch.randn(2, 3, 5, 4, dtype=DT)
    k = torch.randn(1, 3, 5, 4, dtype=DT)  # broadcast over the batch, as SDPA allows
    out, _ = scaled_dot_product(q, k, k)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, k), **TOL)


def test_shifted_window_attention_checks() -> None:
    m = WindowAttention(4, 3, 2)
    with pytest.raises(ValueError):
        shifted_window_attention(torch.randn(1, 7, 6, 4), m, shift_size=1)
    with pytest.raises(ValueError):
        shifted_window_attention(torch.randn(1, 6, 6, 4), m, window_size=2)


# ----------------------------------------------------------------------------- channel attention


def test_channel_attention_vs_naive() -> None:
    m = ChannelAttention(16, squeeze_factor=4).to(DT)
    assert isinstance(m.attention[0], nn.AdaptiveAvgPool2d) and isinstance(m.attention[4], nn.Sigmoid)
    assert set(m.state_dict()) == {
        "attention.1.weight",
        "attention.1.bias",
        "attention.3.weight",
        "attention.3.bias",
    }
    x = torch.randn(2, 16, 5, 3, dtype=DT, requires_grad=True)
    c1, c3 = m.attention[1], m.attention[3]
    z = x.mean((2, 3))
    s = torch.sigmoid(torch.relu(z @ c1.weight[:, :, 0, 0].T + c1.bias) @ c3.weight[:, :, 0, 0].T + c3.bias)
    ref = x * s[:, :, None, None]
    out = m(x)
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn_like(ref)
    params = [x, c1.weight, c1.bias, c3.weight, c3.bias]
    assert_grads_close(grads(out, params, g), grads(ref, params, g))
    assert ChannelAttention(16, 4, bias=False).attention[1].bias is None


@pytest.mark.parametrize("bias", [False, True])
def test_squeeze_excitation_vs_naive(bias: bool) -> None:
    m = SqueezeExcitation(8, reduction=2, bias=bias).to(DT)
    expected = {"fc.0.weight", "fc.2.weight"} | ({"fc.0.bias", "fc.2.bias"} if bias else set())
    assert set(m.state_dict()) == expected
    x = torch.randn(3, 8, 4, 4, dtype=DT, requires_grad=True)
    f0, f2 = m.fc[0], m.fc[2]
    z = x.mean((2, 3))
    h = torch.relu(z @ f0.weight.T + (f0.bias if bias else 0))
    s = torch.sigmoid(h @ f2.weight.T + (f2.bias if bias else 0))
    ref = x * s[:, :, None, None]
    out = m(x)
    torch.testing.assert_close(out, ref, **TOL)
    g = torch.randn_like(ref)
    assert_grads_close(grads(out, [x, f0.weight, f2.weight], g), grads(ref, [x, f0.weight, f2.weight], g))


def test_channel_attention_rejects_empty_bottleneck() -> None:
    with pytest.raises(ValueError):
        ChannelAttention(8, squeeze_factor=16)
    with pytest.raises(ValueError):
        SqueezeExcitation(8, reduction=16)


# ----------------------------------------------------------------------------- PVT SRA


def naive_sra(m: SpatialReductionAttention, x: Tensor, H: int, W: int) -> Tensor:  # noqa: N803
    B, N, C = x.shape
    R = m.sr_ratio
    if R > 1:
        assert m.sr is not None and m.norm is not None
        rows = []
        for py in range(H // R):
            for px in range(W // R):
                acc = m.sr.bias.expand(B, C)
                for i in range(R):
                    for j in range(R):
                        acc = acc + x[:, (py * R + i) * W + px * R + j] @ m.sr.weight[:, :, i, j].T
                rows.append(acc)
        red = torch.stack(rows, 1)
        mu = red.mean(-1, keepdim=True)
        var = red.var(-1, unbiased=False, keepdim=True)
        kv_in = (red - mu) / torch.sqrt(var + m.norm.eps) * m.norm.weight + m.norm.bias
    else:
        kv_in = x
    wk, wv = m.kv.weight.split(C)
    heads = []
    d = C // m.num_heads
    for h in range(m.num_heads):
        sl = slice(h * d, (h + 1) * d)
        q = x @ m.q.weight[sl].T
        k = kv_in @ wk[sl].T
        v = kv_in @ wv[sl].T
        heads.append(torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1) @ v)
    return torch.cat(heads, -1) @ m.proj.weight.T + m.proj.bias


@pytest.mark.parametrize("sr_ratio", [1, 2])
def test_spatial_reduction_attention_vs_naive(sr_ratio: int) -> None:
    m = SpatialReductionAttention(8, num_heads=2, sr_ratio=sr_ratio).to(DT)
    with torch.no_grad():  # non-trivial LayerNorm affine parameters
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    H, W = 4, 6
    x = torch.randn(2, H * W, 8, dtype=DT, requires_grad=True)
    out = m(x, H, W)
    ref = naive_sra(m, x, H, W)
    torch.testing.assert_close(out, ref, **TOL)
    params = [x, *m.parameters()]
    g = torch.randn_like(ref)
    assert_grads_close(grads(out, params, g), grads(ref, params, g))
    names = set(m.state_dict())
    assert {"q.weight", "kv.weight", "proj.weight", "proj.bias"} <= names
    assert "q.bias" not in names
    if sr_ratio > 1:
        assert {"sr.weight", "sr.bias", "norm.weight", "norm.bias"} <= names
    else:
        assert not any(n.startswith(("sr.", "norm.")) for n in names)


def test_spatial_reduction_attention_checks_length() -> None:
    m = SpatialReductionAttention(8, num_heads=2, sr_ratio=2)
    with pytest.raises(ValueError):
        m(torch.randn(1, 10, 8), 4, 4)


@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("chunk_bytes", [1, 3 * 2 * 5 * 7 * 8 * 2, 1 << 30])
def test_biased_attention_matches_explicit_path_with_gradients(monkeypatch, with_mask, chunk_bytes):
    """The chunked training kernel (one window, a few windows with an uneven last chunk, all at once) gives the
    explicit softmax path's output and the gradients of q, k, v and the learned bias."""
    import shared_attention.attention.multihead as mh

    monkeypatch.setattr(mh, "BIASED_CHUNK_BYTES", chunk_bytes)
    torch.manual_seed(0)
    nw, b, h, nq, nk, d = 3, 2, 2, 5, 7, 4
    q = torch.randn(b * nw, h, nq, d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(b * nw, h, nk, d, dtype=torch.float64, requires_grad=True)
    v = torch.randn(b * nw, h, nk, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(h, nq, nk, dtype=torch.float64, requires_grad=True)
    mask = torch.where(torch.rand(nw, nq, nk) < 0.3, -100.0, 0.0).double() if with_mask else None
    g = torch.randn(b * nw, h, nq, 3, dtype=torch.float64)

    def explicit() -> torch.Tensor:
        m = bias.unsqueeze(0) + (mask.unsqueeze(1) if mask is not None else 0)  # (nW or 1, h, Nq, Nk)
        s = (q.view(b, nw, h, nq, d) @ k.view(b, nw, h, nk, d).transpose(-2, -1)) * 0.3 + m
        return (torch.softmax(s, -1) @ v.view(b, nw, h, nk, 3)).reshape(b * nw, h, nq, 3)

    ref = explicit()
    ref_grads = torch.autograd.grad(ref, (q, k, v, bias), g)
    out = mh.biased_attention(q, k, v, bias, mask, 0.3)
    grads = torch.autograd.grad(out, (q, k, v, bias), g)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # inference: the fused kernel, same numbers
        torch.testing.assert_close(mh.biased_attention(q, k, v, bias, mask, 0.3), ref, rtol=1e-10, atol=1e-10)


def test_biased_attention_under_autocast_and_bad_shapes():
    from shared_attention.attention.multihead import biased_attention

    torch.manual_seed(1)
    q, k, v = (torch.randn(4, 2, 6, 8, requires_grad=True) for _ in range(3))
    bias = torch.randn(2, 6, 6, requires_grad=True)
    ref = biased_attention(q, k, v, bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = biased_attention(q, k, v, bias)  # the generic path: gradients still reach the bias
    out.float().sum().backward()
    assert bias.grad is not None and bias.grad.abs().sum() > 0
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match="bias"):
        biased_attention(q, k, v, bias[:, :5])
    with pytest.raises(ValueError, match="mask"):
        biased_attention(q, k, v, bias, torch.zeros(3, 6, 6))


@pytest.mark.parametrize(
    ("lead", "nq", "nk", "d", "dv"), [((3, 2), 5, 7, 4, 6), ((40, 2), 11, 11, 8, 8), ((2, 3, 2), 64, 64, 8, 4)]
)
def test_small_attention_matches_fused_kernel_with_gradients(
    monkeypatch: pytest.MonkeyPatch, lead: tuple[int, ...], nq: int, nk: int, d: int, dv: int
) -> None:
    """Short sequences on the CPU take the batched-product kernel: values and all three gradients equal the fused
    kernel's (float64), on contiguous and on strided (permuted, token-major) inputs; longer ones keep the fused
    kernel, and so do masks and dropout."""
    from shared_attention.attention import multihead

    calls = []
    real = multihead._SmallAttention.apply
    monkeypatch.setattr(multihead._SmallAttention, "apply", lambda *a: calls.append(1) or real(*a))
    q = torch.randn(*lead, nq, d, dtype=DT, requires_grad=True)
    k = torch.randn(*lead, nk, d, dtype=DT, requires_grad=True)
    v = torch.randn(*lead, nk, dv, dtype=DT, requires_grad=True)
    strided = torch.randn(nq, *lead, d, dtype=DT).movedim(0, -2).requires_grad_()  # token-major storage
    for qq in (q, strided):
        out, attn = scaled_dot_product(qq, k, v, scale=0.3)
        assert attn is None and calls
        calls.clear()
        ref = torch.nn.functional.scaled_dot_product_attention(qq, k, v, scale=0.3)
        torch.testing.assert_close(out, ref, **TOL)
        g = torch.randn_like(ref)
        assert_grads_close(grads(out, [qq, k, v], g), grads(ref, [qq, k, v], g))
    with torch.no_grad():
        scaled_dot_product(q.float(), k.float(), v.float())
    assert calls  # float32 inference too
    calls.clear()
    scaled_dot_product(q, k, v, attn_mask=torch.ones(nq, nk, dtype=torch.bool))
    scaled_dot_product(q, k, v, dropout_p=0.1)
    long_q = torch.randn(1, 1, multihead.SMALL_ATTENTION_MAX_LEN + 1, d, dtype=DT)
    scaled_dot_product(long_q, long_q, long_q)
    assert not calls
