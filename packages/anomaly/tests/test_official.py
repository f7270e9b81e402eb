"""Official FOD heads: strict loads of manifest-built state dicts, exact counts, official forward numerics."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sa_anomaly.model import FODHead, fod_position_embedding
from sa_anomaly.official import assemble_official, head_kwargs_from_state, load_official

# Copies of the shared reference manifests (facts measured from the official code), kept with the tests
# so that a missing file fails the test instead of skipping it.
MANIFESTS = Path(__file__).parent / "fixtures" / "manifests"


def _manifest(name: str) -> dict[str, Any]:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def _random_state(m: dict[str, Any]) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {k: torch.randn(*shape, generator=g) * 0.02 for k, shape in m["state_dict"].items()}


@pytest.mark.parametrize("name", ["fod_level0", "fod_level1"])
def test_strict_load_and_exact_count(name: str) -> None:
    m = _manifest(name)
    state = _random_state(m)
    head = load_official(state, **m["constructor_kwargs"])
    assert sum(p.numel() for p in head.parameters()) == m["num_params"]
    assert set(head.state_dict()) == set(m["state_dict"])
    assert not head.training
    key = "encoder.encode_layers.1.cross_attention.sigma_projection.weight"
    assert torch.equal(head.state_dict()[key], state[key])
    kw = head_kwargs_from_state(state)
    assert kw["d_model"] == m["constructor_kwargs"]["d_model"] and kw["n_layers"] == 3 and kw["n_heads"] == 8


def test_strict_load_rejects_missing_or_renamed_keys() -> None:
    m = _manifest("fod_level1")
    state = _random_state(m)
    state.pop("projection.bias")
    with pytest.raises(ValueError, match="missing key.*projection.bias"):  # ForeignCheckpointError
        load_official(state, **m["constructor_kwargs"])


def test_position_embedding_matches_official_formula() -> None:
    d, h, w = 16, 3, 5
    half = d // 2
    div = torch.exp(torch.arange(0, half, 2).float() * -(math.log(10000.0) / half))
    ref = torch.zeros(d, h, w)
    cols = torch.arange(w).float()[None, :, None] * div  # (1, w, F)
    rows = torch.arange(h).float()[:, None, None] * div  # (h, 1, F)
    ref[0:half:2] = torch.sin(cols).expand(h, w, -1).permute(2, 0, 1)
    ref[1:half:2] = torch.cos(cols).expand(h, w, -1).permute(2, 0, 1)
    ref[half::2] = torch.sin(rows).expand(h, w, -1).permute(2, 0, 1)
    ref[half + 1 :: 2] = torch.cos(rows).expand(h, w, -1).permute(2, 0, 1)
    torch.testing.assert_close(
        fod_position_embedding(h, w, d), ref.permute(1, 2, 0).reshape(h * w, d), atol=1e-6, rtol=0
    )


def _naive_official_forward(head: FODHead, x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, list, list]:
    """The official computation written out: embeddings, Attention2D (output projection discarded), fusion."""
    n, length, _ = x.shape
    side = math.isqrt(length)
    pos = fod_position_embedding(side, side, head.d_model)
    emb = head.embedding.project_embedding.project(x.transpose(1, 2)).transpose(1, 2) + pos
    remb = head.ref_embedding.project_embedding.project(ref.transpose(1, 2)).transpose(1, 2) + pos
    idx = torch.arange(length)
    dy = ((idx // side)[:, None] - (idx // side)[None]).float() ** 2
    dx = ((idx % side)[:, None] - (idx % side)[None]).float() ** 2
    heads = head.n_heads

    def attn2d(mod: Any, q_in: torch.Tensor, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sig = mod.sigma_projection(q_in).view(n, length, heads, 2).transpose(1, 2)
        sig = torch.pow(3, torch.sigmoid(sig * 5) + 1e-5) - 1
        s1, s2 = sig[..., 0:1], sig[..., 1:2]
        target = 1 / (2 * math.pi * s1 * s2) * torch.exp(-dy / (2 * s1**2) - dx / (2 * s2**2))
        q = mod.query_projection(q_in).view(n, length, heads, -1)
        k = mod.key_projection(kv).view(kv.shape[0], length, heads, -1).expand(n, -1, -1, -1)
        v = mod.value_projection(kv).view(kv.shape[0], length, heads, -1).expand(n, -1, -1, -1)
        a = torch.softmax(torch.einsum("blhe,bshe->bhls", q, k) / math.sqrt(head.d_model // heads), -1)
        return torch.einsum("bhls,bshd->blhd", a, v).reshape(n, length, -1), a, target

    corrs, targets = [], []
    for layer in head.encoder.encode_layers:
        a, _, _ = attn2d(layer.self_attention, emb, emb)
        c, ca, ct = attn2d(layer.cross_attention, emb, remb)
        h = layer.norm1((emb + a) - (emb + c))
        emb = layer.norm2(h + layer.ffn.fc2(torch.nn.functional.gelu(layer.ffn.fc1(h))))
        corrs.append(ca)
        targets.append(ct)
    return head.projection(head.encoder.norm(emb)), corrs, targets


def test_small_head_matches_naive_official_forward() -> None:
    torch.manual_seed(0)
    head = FODHead(seq_len=16, in_channels=6, out_channels=6, d_model=16, n_heads=4, n_layers=2).eval()
    x, ref = torch.randn(2, 16, 6), torch.randn(1, 16, 6)
    out = head(x, ref)
    x_ref, corrs, targets = _naive_official_forward(head, x, ref)
    torch.testing.assert_close(out.x_out, x_ref, rtol=1e-4, atol=1e-5)
    for p, q, p_ref, q_ref in zip(out.inter_corrs, out.inter_targets, corrs, targets):
        torch.testing.assert_close(p, p_ref, rtol=1e-4, atol=1e-6)
        big = q_ref > 1e-6 * q_ref.amax(-1, keepdim=True)
        torch.testing.assert_close(q[big], q_ref[big], rtol=1e-3, atol=0)
    # the output projection is discarded unless asked for
    with torch.no_grad():
        head.encoder.encode_layers[0].self_attention.out_projection.weight.mul_(5)
    torch.testing.assert_close(head(x, ref).x_out, out.x_out)
    for layer in head.encoder.encode_layers:
        layer.self_attention.use_out_projection = layer.cross_attention.use_out_projection = True
    assert not torch.allclose(head(x, ref).x_out, out.x_out)


def test_reference_in_official_layout_and_assembly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    heads, refs = [], []
    for i, (c, side) in enumerate([(32, 8), (48, 4)]):  # timm test_efficientnet levels 2, 3 at 64 px
        h = FODHead(side * side, c, c, d_model=16, n_heads=2, n_layers=1)
        from safetensors.torch import save_file

        save_file(h.state_dict(), str(tmp_path / f"l{i}.safetensors"))
        heads.append(tmp_path / f"l{i}.safetensors")
        r = np.random.rand(c, side * side).astype(np.float32)  # the official (C, L) pickle layout
        np.save(tmp_path / f"r{i}.npy", r)
        refs.append(tmp_path / f"r{i}.npy")
    model = assemble_official(heads, refs, None, "test_efficientnet", 64)
    np.testing.assert_allclose(model.reference_0.reshape(32, -1).numpy(), np.load(refs[0]))
    outs = model(torch.rand(1, 3, 64, 64))
    assert outs[0][1].x_out.shape == (1, 64, 32)
    single = load_official(
        heads[1], seq_len=16, in_channels=48, out_channels=48, d_model=16, n_heads=2, n_layers=1, ref_features=refs[1]
    )
    assert single.reference.shape == (1, 16, 48)
    assert single(torch.rand(1, 16, 48)).x_out.shape == (1, 16, 48)
    with pytest.raises(ValueError, match="npy or .safetensors"):
        load_official(
            heads[1],
            seq_len=16,
            in_channels=48,
            out_channels=48,
            d_model=16,
            n_heads=2,
            n_layers=1,
            ref_features=tmp_path / "refs.pkl",
        )
