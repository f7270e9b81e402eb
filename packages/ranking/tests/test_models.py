"""Hiformer (pruned serving == full model), DCN-v2 and logistic regression on KeyedJaggedTensor inputs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from sa_ranking.data import TableBuilder
from sa_ranking.models import DCNv2, Hiformer, LogisticRegression, ModelConfig, build_model
from sa_ranking.schema import Schema
from sa_ranking.synthetic import SYNTHETIC_SCHEMA

SCHEMA = Schema.from_dict(SYNTHETIC_SCHEMA)
CFG = ModelConfig(
    embedding_dim=8,
    num_layers=2,
    num_heads=2,
    head_dim=4,
    key_rank=6,
    value_rank=6,
    dense_tokens=2,
    ffn_hidden=16,
    mlp_dims=(16,),
    cross_layers=2,
    cross_rank=4,
)


def _batch(n: int = 7, seed: int = 0):
    rng = np.random.default_rng(seed)
    b = TableBuilder(SCHEMA)
    for i in range(n):
        tags = [int(t) for t in rng.integers(0, 16, int(rng.integers(0, 4)))]  # multi-hot, sometimes empty
        b.add(
            0.0,
            [float(rng.normal()), float(rng.random())],
            [[int(rng.integers(64))], [int(rng.integers(96))], [i % 32], tags],
        )
    return b.build().batch()


def _randomize(model: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.3)


@pytest.mark.parametrize("key_rank", [6, None])
def test_pruned_serving_equals_full_model(key_rank: int | None) -> None:
    model = Hiformer(SCHEMA, replace(CFG, key_rank=key_rank, value_rank=key_rank)).eval()
    _randomize(model)  # non-trivial weights everywhere (task token, per-feature FFNs, low-rank factors)
    b = _batch(9)
    with torch.no_grad():
        full = model(b.dense_features, b.sparse_features, prune=False)
        pruned = model(b.dense_features, b.sparse_features, prune=True)
    assert full.shape == (9,)
    assert full.std() > 1e-3  # the scores are not all equal
    torch.testing.assert_close(pruned, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("prune", [False, True])
def test_naive_pattern_equals_ours_in_outputs_and_gradients(prune: bool) -> None:
    """``set_naive(True)`` (batch-major, step-by-step softmax: the speed bench's reference) computes the same
    logits and parameter gradients as the default token-major fused path, so the bench compares equal work."""
    model = Hiformer(SCHEMA, CFG)
    _randomize(model)
    b = _batch(6)

    def run(naive: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.set_naive(naive)
        model.zero_grad()
        out = model(b.dense_features, b.sparse_features, prune=prune)
        torch.nn.functional.binary_cross_entropy_with_logits(out, b.labels).backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    ours, g_ours = run(False)
    ref, g_ref = run(True)
    assert model.encoder.naive and all(layer.attn.explicit for layer in model.encoder.layers)
    assert ours.std() > 1e-3
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    assert g_ours.keys() == g_ref.keys() and len(g_ours) > 10
    for name, g in g_ours.items():
        torch.testing.assert_close(g, g_ref[name], rtol=1e-5, atol=1e-6, msg=name)


def test_hiformer_tokens_and_every_parameter_trains() -> None:
    model = Hiformer(SCHEMA, CFG)
    assert model.num_tokens == 1 + 4 + 2
    b = _batch(5)  # a batch size that differs from the token count, so a swapped layout cannot pass
    assert model.tokens(b.dense_features, b.sparse_features).shape == (5, 7, 8)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(b.dense_features, b.sparse_features), b.labels)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_low_rank_shrinks_the_composite_projections() -> None:
    full = Hiformer(SCHEMA, replace(CFG, key_rank=None, value_rank=None))
    low = Hiformer(SCHEMA, CFG)
    n, d, inner = 7, 8, 8  # tokens, dim, heads * head_dim
    per_layer_full = 2 * (n * d * n * inner + n * inner)
    per_layer_low = 2 * (n * d * 6 + 6 * n * inner + n * inner)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) - count(low) == 2 * (per_layer_full - per_layer_low)


def test_baselines_forward_and_parameters() -> None:
    b = _batch()
    dcn = build_model(SCHEMA, replace(CFG, arch="dcnv2"))
    lr = build_model(SCHEMA, replace(CFG, arch="lr"))
    assert isinstance(dcn, DCNv2) and isinstance(lr, LogisticRegression)
    from torchrec.modules.crossnet import LowRankCrossNet

    assert isinstance(dcn.cross, LowRankCrossNet)
    for m in (dcn, lr):
        assert m(b.dense_features, b.sparse_features).shape == (7,)
    # logistic regression: one width-4 row per id, one weight per dense column, one bias
    assert sum(p.numel() for p in lr.parameters()) == 4 * (64 + 96 + 32 + 16) + 2 + 1 + 1
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model(SCHEMA, replace(CFG, arch="bogus"))  # type: ignore[arg-type]


def test_logistic_regression_is_linear_in_one_hot_ids() -> None:
    lr = LogisticRegression(SCHEMA, CFG)
    b1, b2 = _batch(5, seed=3), _batch(5, seed=3)
    with torch.no_grad():
        a = lr(b1.dense_features, b1.sparse_features)
        z = lr(b2.dense_features * 0, b2.sparse_features)
        # dense contribution is exactly linear
        torch.testing.assert_close(a - z, (b1.dense_features @ lr.linear.weight.T).squeeze(-1))


@pytest.mark.parametrize("arch", ["hiformer", "dcnv2", "lr"])
def test_embedding_init_scale_zero_keeps_unseen_ids_neutral(arch: str) -> None:
    model = build_model(SCHEMA, replace(CFG, arch=arch, embedding_init_scale=0.0))
    tables = [p for n, p in model.named_parameters() if n.startswith("ebc.")]
    assert tables and all(float(t.abs().max()) == 0.0 for t in tables)
    default = build_model(SCHEMA, replace(CFG, arch=arch))
    assert any(float(p.abs().max()) > 0 for n, p in default.named_parameters() if n.startswith("ebc."))
    small = build_model(SCHEMA, replace(CFG, arch=arch, embedding_init_scale=0.01))
    assert all(float(p.abs().max()) <= 0.01 for n, p in small.named_parameters() if n.startswith("ebc."))
    with pytest.raises(ValueError, match="embedding_init_scale"):
        build_model(SCHEMA, replace(CFG, arch=arch, embedding_init_scale=-1.0))
