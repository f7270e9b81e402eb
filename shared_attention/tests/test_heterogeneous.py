"""Heterogeneous attention (Hiformer) against a naive per-pair loop of eq. 5-7."""

from __future__ import annotations

import math

import pytest
import torch

from shared_attention.attention.heterogeneous import HeterogeneousAttention, PerTokenLinear, PerTokenMlp


def _dense_composite(attn: HeterogeneousAttention, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The composite projection as one ``(L d, L H d_k)`` matrix and bias (multiplying out the low rank)."""
    rank = attn.key_rank if name == "k" else attn.value_rank
    if rank is None:
        lin = getattr(attn, name)
        return lin.weight.T, lin.bias
    down, up = getattr(attn, f"{name}_down"), getattr(attn, f"{name}_up")
    return down.weight.T @ up.weight.T, up.bias


def naive(attn: HeterogeneousAttention, x: torch.Tensor) -> torch.Tensor:
    """att_h(i, j) = softmax_j(q_i^h . k_j^h / sqrt(d_k)), o_i = concat_h(sum_j att v_j) O_i, pair by pair."""
    b, n, d = x.shape
    h, dk = attn.num_heads, attn.head_dim
    out = torch.zeros(b, n, d, dtype=torch.float64)
    x = x.double()
    for s in range(b):
        if attn.composite:
            wk, bk = _dense_composite(attn, "k")
            wv, bv = _dense_composite(attn, "v")
            flat = x[s].reshape(-1)
            keys = (flat @ wk.double() + bk.double()).reshape(n, h * dk)
            vals = (flat @ wv.double() + bv.double()).reshape(n, h * dk)
        else:
            keys = torch.stack([x[s, j] @ attn.k.weight[j].double() + attn.k.bias[j].double() for j in range(n)])
            vals = torch.stack([x[s, j] @ attn.v.weight[j].double() + attn.v.bias[j].double() for j in range(n)])
        for i in range(n):
            qi = x[s, i] @ attn.q.weight[i].double() + attn.q.bias[i].double()  # e_i Q_i
            heads = []
            for hh in range(h):
                sl = slice(hh * dk, (hh + 1) * dk)
                logits = torch.stack([qi[sl] @ keys[j, sl] / math.sqrt(dk) for j in range(n)])
                a = torch.softmax(logits, 0)
                heads.append(sum(a[j] * vals[j, sl] for j in range(n)))
            out[s, i] = torch.cat(heads) @ attn.o.weight[i].double() + attn.o.bias[i].double()
    return out


@pytest.mark.parametrize(
    "composite,key_rank,value_rank,heads", [(False, None, None, 2), (True, None, None, 2), (True, 3, 5, 1)]
)
def test_matches_naive_pair_loop(composite: bool, key_rank: int | None, value_rank: int | None, heads: int) -> None:
    torch.manual_seed(0)
    attn = HeterogeneousAttention(
        5, 8, heads, head_dim=3, composite=composite, key_rank=key_rank, value_rank=value_rank
    ).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        got = attn(x)
    ref = naive(attn, x)
    assert got.shape == (2, 5, 8)
    torch.testing.assert_close(got.double(), ref, atol=1e-5, rtol=1e-5)


def test_pairs_are_heterogeneous() -> None:
    # moving a token changes the result (each position has its own bilinear form), unlike vanilla attention
    torch.manual_seed(1)
    attn = HeterogeneousAttention(4, 6, 2, composite=False).eval()
    x = torch.randn(1, 4, 6)
    perm = torch.tensor([1, 0, 2, 3])
    with torch.no_grad():
        assert not torch.allclose(attn(x)[:, perm], attn(x[:, perm]), atol=1e-4)


@pytest.mark.parametrize("composite,rank", [(False, None), (True, None), (True, 2)])
def test_query_pruning_equals_full_rows(composite: bool, rank: int | None) -> None:
    torch.manual_seed(2)
    attn = HeterogeneousAttention(6, 8, 2, composite=composite, key_rank=rank, value_rank=rank).eval()
    x = torch.randn(3, 6, 8)
    with torch.no_grad():
        full = attn(x)
        for idx in ([0], [4, 1]):
            torch.testing.assert_close(attn(x, idx), full[:, idx], atol=1e-6, rtol=1e-6)


def test_low_rank_parameter_count() -> None:
    n, d, h, dk, r = 10, 16, 2, 8, 4
    full = HeterogeneousAttention(n, d, h, dk, composite=True)
    low = HeterogeneousAttention(n, d, h, dk, composite=True, key_rank=r, value_rank=r)
    per_token = n * d * h * dk + n * h * dk + n * h * dk * d + n * d
    assert sum(p.numel() for p in full.parameters()) == per_token + 2 * (n * d * n * h * dk + n * h * dk)
    assert sum(p.numel() for p in low.parameters()) == per_token + 2 * (n * d * r + r * n * h * dk + n * h * dk)


def test_per_token_layers_and_errors() -> None:
    torch.manual_seed(3)
    lin = PerTokenLinear(3, 4, 5)
    x = torch.randn(2, 3, 4)
    ref = torch.stack([x[:, i] @ lin.weight[i] + lin.bias[i] for i in range(3)], 1)
    torch.testing.assert_close(lin(x), ref)
    torch.testing.assert_close(lin(x[:, [2]], [2]), ref[:, [2]])
    mlp = PerTokenMlp(3, 4, 8)
    assert mlp(x).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="expected 3 tokens"):
        lin(torch.randn(2, 2, 4))
    with pytest.raises(ValueError, match="expected"):
        HeterogeneousAttention(3, 4, 2)(torch.randn(1, 4, 4))
    with pytest.raises(ValueError, match="composite"):
        HeterogeneousAttention(3, 4, 2, composite=False, key_rank=2)


def test_gradients_flow_to_every_projection() -> None:
    attn = HeterogeneousAttention(4, 8, 2, composite=True, key_rank=3, value_rank=3)
    attn(torch.randn(2, 4, 8)).sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("composite,key_rank,value_rank", [(False, None, None), (True, None, None), (True, 3, 2)])
def test_token_major_layout_equals_batch_major(composite: bool, key_rank: int | None, value_rank: int | None) -> None:
    # the (L, B, d) layout the Hiformer encoder runs in gives the same rows as (B, L, d), pruned or not
    torch.manual_seed(4)
    attn = HeterogeneousAttention(5, 8, 2, composite=composite, key_rank=key_rank, value_rank=value_rank).eval()
    x = torch.randn(3, 5, 8)
    xt = x.transpose(0, 1).contiguous()  # (L, B, d)
    with torch.no_grad():
        torch.testing.assert_close(attn(xt, token_major=True), attn(x).transpose(0, 1), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(attn(xt, [0, 3], token_major=True), attn(x, [0, 3]).transpose(0, 1))
        ref = naive(attn, x).float()
        torch.testing.assert_close(attn(xt, token_major=True).transpose(0, 1), ref, atol=1e-5, rtol=1e-5)
    mlp = PerTokenMlp(5, 8, 6)
    torch.testing.assert_close(mlp(xt, token_major=True), mlp(x).transpose(0, 1))
    torch.testing.assert_close(mlp(xt[[2]], [2], token_major=True), mlp(x[:, [2]], [2]).transpose(0, 1))
    with pytest.raises(ValueError, match=r"expected \(5, B, 8\)"):
        attn(x[:, :4], token_major=True)


def test_residual_is_accumulated_by_the_output_products() -> None:
    """``residual=`` gives ``residual + layer(x)`` for the per-token linear map, the MLP and the attention, in both
    layouts, with the same gradients; under autocast the residual is added to the low-precision result."""
    torch.manual_seed(0)
    dt = torch.float64
    lin = PerTokenLinear(5, 6, 4).to(dt)
    mlp = PerTokenMlp(5, 6, 8).to(dt)
    att = HeterogeneousAttention(5, 6, 2, 3, key_rank=4, value_rank=4).to(dt)
    x = torch.randn(5, 7, 6, dtype=dt, requires_grad=True)  # token-major
    for mod, r in ((lin, torch.randn(5, 7, 4, dtype=dt)), (mlp, torch.randn(5, 7, 6, dtype=dt)), (att, x)):
        for token_major in (True, False):
            xi = x if token_major else x.transpose(0, 1)
            ri = r if token_major else r.transpose(0, 1)
            fused = mod(xi, None, token_major, residual=ri)
            plain = ri + mod(xi, None, token_major)
            torch.testing.assert_close(fused, plain, atol=1e-12, rtol=1e-10)
            g = torch.randn_like(plain)
            params = [x, *mod.parameters()]
            for a, b in zip(torch.autograd.grad(fused, params, g), torch.autograd.grad(plain, params, g), strict=True):
                torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    lin32, x32, r32 = lin.float(), x.detach().float(), torch.randn(5, 7, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lin32(x32, None, True, residual=r32)
        ref = r32 + lin32(x32, None, True)
    torch.testing.assert_close(out, ref)


def test_head_major_composite_keys_match_the_published_layout() -> None:
    """The fast path permutes the composite up-projection's rows on the fly (keys / values come out head-major);
    the explicit (reference) path keeps the published layout: same keys, values and outputs, same state dict."""
    torch.manual_seed(0)
    for ranks in ((4, 4), (None, None)):
        att = HeterogeneousAttention(5, 6, 2, 3, key_rank=ranks[0], value_rank=ranks[1]).double()
        x = torch.randn(7, 5, 6, dtype=torch.float64)
        k, v = att.keys_values(x)
        assert k.is_contiguous() and v.is_contiguous()
        att.explicit = True
        k_ref, v_ref = att.keys_values(x)
        torch.testing.assert_close(k, k_ref)
        torch.testing.assert_close(v, v_ref)
