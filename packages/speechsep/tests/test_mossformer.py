"""MossFormer wiring: exact parameter count, strict manifest load through official.py, shapes, fast == naive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sa_speechsep.models.mossformer import MossFormer, build_mossformer
from sa_speechsep.official import OfficialCheckpointError, load_official, official_to_ours

# Copy of the shared reference manifest mossformer.json (facts measured from the official code), kept with
# the tests so that a missing file fails the test.
MANIFEST = Path(__file__).parent / "fixtures" / "manifests" / "mossformer.json"


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def _random_official_state(man: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(shape, generator=g) for k, shape in man["state_dict"].items()}
    for group in man["shared_tensors"]:  # one tensor in the official model, listed once per block
        for k in group[1:]:
            sd[k] = sd[group[0]]
    return sd


def test_mossformer_l_parameter_count_and_strict_manifest_load():
    man = _manifest()
    model = build_mossformer("mossformer-l")
    assert sum(p.numel() for p in model.parameters()) == man["num_params"] == 42_101_850
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == man["num_trainable_params"]
    sd = _random_official_state(man)
    loaded = load_official(sd, **man["constructor_kwargs"])
    assert not loaded.training
    ours = loaded.state_dict()
    assert len(ours) == len(man["state_dict"])
    for k, v in sd.items():  # every official tensor landed, unchanged, under its mapped name
        assert torch.equal(ours[official_to_ours(k)], v), k
    assert sum(p.numel() for p in loaded.parameters()) == 42_101_850


def test_official_load_rejects_missing_unexpected_and_bad_shapes():
    man = _manifest()
    sd = _random_official_state(man)
    bad = dict(sd)
    bad.pop("mask_net.conv1d_out.bias")
    with pytest.raises(OfficialCheckpointError, match="conv1d_out|out_proj"):
        load_official(bad)
    bad = dict(sd, **{"mask_net.extra.weight": torch.zeros(1)})
    with pytest.raises(OfficialCheckpointError, match="unexpected"):
        load_official(bad)
    with pytest.raises(OfficialCheckpointError, match="shape"):
        load_official(sd, num_spks=3)
    with pytest.raises(NotImplementedError):
        load_official(sd, causal=True)
    with pytest.raises(TypeError, match="unknown"):
        load_official(sd, nonsense=1)


def _tiny() -> MossFormer:
    torch.manual_seed(0)
    return build_mossformer("tiny").eval()


@pytest.mark.parametrize("length", [5, 16, 17, 333, 1000])
def test_any_length_gives_batch_speakers_samples(length):
    model = _tiny()
    out = model(torch.randn(2, length))
    assert out.shape == (2, 2, length)
    assert torch.isfinite(out).all()
    assert model(torch.randn(2, 1, length)).shape == (2, 2, length)


def test_three_speakers_and_fast_equals_naive():
    torch.manual_seed(1)
    model = build_mossformer("tiny", num_spks=3).eval()
    x = torch.randn(1, 777)
    fast = model(x)
    model.set_naive(True)
    naive = model(x)
    assert fast.shape == (1, 3, 777)
    torch.testing.assert_close(fast, naive, rtol=1e-4, atol=1e-5)


def test_fast_and_naive_training_gradients_agree():
    """The training path (channels-last depthwise convolutions with their own backward, fused gated attention)
    gives the naive path's loss and parameter gradients within 1e-5 relative (bench/speed.py compares them)."""
    torch.manual_seed(2)
    model = build_mossformer("tiny").train()
    x, target = torch.randn(2, 640), torch.randn(2, 2, 640)

    def grads(naive: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.set_naive(naive)
        model.zero_grad()
        torch.manual_seed(0)  # the same dropout masks (the tiny config has none)
        out = model(x)
        loss = (out - target).pow(2).mean()
        loss.backward()
        return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    out_fast, g_fast = grads(False)
    out_naive, g_naive = grads(True)
    torch.testing.assert_close(out_fast, out_naive, rtol=1e-5, atol=1e-6)
    assert g_fast.keys() == g_naive.keys() and len(g_fast) > 20
    for name, g in g_fast.items():
        scale = g_naive[name].abs().max().clamp(min=1e-12)
        assert (g - g_naive[name]).abs().max() / scale < 1e-5, name


def test_hub_folder_layout_and_rotary_sharing(tmp_path):
    """encoder.bin / decoder.bin / masknet.bin (sub-module state dicts) load strictly into a small config."""
    man = _manifest()
    kwargs = dict(
        in_channels=32, out_channels=32, d_model=32, num_blocks=2, query_key_dim=16, group_size=16, expansion_factor=2.0
    )
    ours = MossFormer(load_official.__globals__["_config_from_official"](kwargs)).state_dict()
    names = [k for k in man["state_dict"] if ".layers." not in k or k.split(".layers.")[1].split(".")[0] in "01"]
    g = torch.Generator().manual_seed(3)
    official = {k: torch.randn(ours[official_to_ours(k)].shape, generator=g) for k in names}
    freqs = official["mask_net.mdl.att_mdl.mossformerM.layers.0.rotary_pos_emb.freqs"]
    official["mask_net.mdl.att_mdl.mossformerM.layers.1.rotary_pos_emb.freqs"] = freqs
    for prefix, fname in (("encoder.", "encoder.bin"), ("decoder.", "decoder.bin"), ("mask_net.", "masknet.bin")):
        torch.save({k[len(prefix) :]: v for k, v in official.items() if k.startswith(prefix)}, tmp_path / fname)
    model = load_official(tmp_path, **kwargs)
    assert model(torch.randn(1, 400)).shape == (1, 2, 400)
    # differing rotary tables cannot be one shared table
    official["mask_net.mdl.att_mdl.mossformerM.layers.1.rotary_pos_emb.freqs"] = freqs + 1
    with pytest.raises(OfficialCheckpointError, match="rotary"):
        load_official(official, **kwargs)
