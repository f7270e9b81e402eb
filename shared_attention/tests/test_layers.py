"""MLP, drop path and the pre-norm transformer block against naive formulas."""

import math

import pytest
import torch

from shared_attention.layers import DropPath, Mlp, TransformerBlock


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def test_mlp_matches_formula():
    torch.manual_seed(0)
    m = Mlp(5, 7, 3).double()
    x = torch.randn(2, 4, 5, dtype=torch.float64)
    ref = _gelu(x @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias
    torch.testing.assert_close(m(x), ref)


def test_drop_path_whole_samples_and_expectation():
    torch.manual_seed(0)
    dp = DropPath(0.25).train()
    x = torch.ones(4000, 3, 2)
    y = dp(x)
    per_sample = y.reshape(4000, -1)
    assert torch.all((per_sample == 0).all(1) | (per_sample == 1 / 0.75).all(1))  # whole samples dropped
    assert abs(y.mean().item() - 1.0) < 0.05
    assert torch.equal(dp.eval()(x), x)
    with pytest.raises(ValueError):
        DropPath(1.0)


def test_transformer_block_matches_naive_prenorm_formula():
    torch.manual_seed(0)
    C, H = 8, 2
    blk = TransformerBlock(C, H, mlp_ratio=2.0).double().eval()
    x = torch.randn(2, 5, C, dtype=torch.float64, requires_grad=True)

    def ln(t, mod):
        mu = t.mean(-1, keepdim=True)
        var = t.var(-1, unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + mod.eps) * mod.weight + mod.bias

    def naive(x):
        h = ln(x, blk.norm1)
        qkv = h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = qkv.split(C, -1)
        outs = []
        for i in range(H):
            sl = slice(i * C // H, (i + 1) * C // H)
            a = torch.softmax(q[..., sl] @ k[..., sl].transpose(-1, -2) / math.sqrt(C // H), -1)
            outs.append(a @ v[..., sl])
        x = x + torch.cat(outs, -1) @ blk.attn.proj.weight.T + blk.attn.proj.bias
        h = ln(x, blk.norm2)
        return x + _gelu(h @ blk.mlp.fc1.weight.T + blk.mlp.fc1.bias) @ blk.mlp.fc2.weight.T + blk.mlp.fc2.bias

    out, ref = blk(x), naive(x)
    torch.testing.assert_close(out, ref)
    g1 = torch.autograd.grad(out.square().sum(), x)[0]
    g2 = torch.autograd.grad(ref.square().sum(), x)[0]
    torch.testing.assert_close(g1, g2)
    assert [n for n, _ in blk.named_children()] == ["norm1", "attn", "drop_path", "norm2", "mlp"]
