"""Exact parameter counts and strict loads of official checkpoints built from the reference manifests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from sa_medseg.models.paratranscnn import ParaTransCNN, build_paratranscnn
from sa_medseg.models.vmunet import build_vmunet
from sa_medseg.official import (
    OfficialCheckpointError,
    load_official_paratranscnn,
    load_official_vmunet,
    paratranscnn_official_to_ours,
)
from torch import Tensor

# Copies of the shared reference manifests (facts measured from the official code), kept with the tests
# so that a missing file fails the test instead of skipping it.
MANIFESTS = Path(__file__).parent / "fixtures" / "manifests"


def _manifest(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MANIFESTS / f"{name}.json").read_text())
    return data


def _state(m: dict[str, Any], big_empty: bool = False) -> dict[str, Tensor]:
    """Random tensors with the manifest's names and shapes (big ones uninitialised when ``big_empty``)."""
    g = torch.Generator().manual_seed(0)
    ints = m.get("non_float32_state_dict_entries", {})
    sd = {}
    for k, shape in m["state_dict"].items():
        if k in ints:
            sd[k] = torch.tensor(7, dtype=torch.int64)
        elif big_empty and torch.Size(shape).numel() > 100_000:
            sd[k] = torch.empty(shape)  # untouched pages: the 1 GB model stays cheap
        else:
            sd[k] = 0.02 * torch.randn(shape, generator=g)
    return sd


def test_vmunet_exact_count_and_strict_load_wrapper_keys() -> None:
    m = _manifest("vmunet")
    assert sum(p.numel() for p in build_vmunet("vmunet-synapse").parameters()) == m["num_params"] == 27_427_761
    sd = _state(m)
    model = load_official_vmunet(sd, **m["constructor_kwargs"])
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == 27_427_761
    ours = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(ours[k], v), k
    with torch.no_grad():
        out = model(torch.rand(1, 1, 64, 32))  # 1 channel repeated, non-square
    assert out.shape == (1, 9, 64, 32) and torch.isfinite(out).all()


def test_vmunet_bare_vssm_keys_and_arguments() -> None:
    m = _manifest("vmunet")
    bare = {k.removeprefix("vmunet."): v for k, v in _state(m).items()}
    model = load_official_vmunet(bare, **m["inner_vssm_kwargs"])
    assert sum(p.numel() for p in model.parameters()) == m["num_params"]
    torch.testing.assert_close(model.vmunet.final_conv.bias, bare["final_conv.bias"])
    # also through a file, as `{"model": ...}` with a DataParallel prefix
    model2 = load_official_vmunet(
        {"model": {f"module.{k}": v for k, v in bare.items()}},
        in_chans=3,
        num_classes=9,
        depths=[2, 2, 2, 2],
        depths_decoder=[2, 2, 2, 1],
        dims=[96, 192, 384, 768],
    )
    torch.testing.assert_close(model2.vmunet.patch_embed.proj.weight, bare["patch_embed.proj.weight"])


def test_vmunet_mismatch_errors_name_keys(tmp_path: Path) -> None:
    m = _manifest("vmunet")
    sd = _state(m)
    with pytest.raises(OfficialCheckpointError, match="unexpected key.*layers.3.blocks.1"):
        load_official_vmunet(sd, num_classes=9, input_channels=3, depths=[2, 2, 2, 1], depths_decoder=[2, 2, 2, 1])
    with pytest.raises(OfficialCheckpointError, match="shape mismatch.*final_conv"):
        load_official_vmunet(sd, num_classes=4, input_channels=3, depths=[2, 2, 2, 2], depths_decoder=[2, 2, 2, 1])
    with pytest.raises(TypeError, match="in_channels"):
        load_official_vmunet(sd, in_channels=3)
    bad = tmp_path / "x.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(OfficialCheckpointError, match="x.pth: cannot read"):
        load_official_vmunet(bad)


def test_paratranscnn_exact_count_and_strict_load(tmp_path: Path) -> None:
    m = _manifest("paratranscnn")
    with torch.device("meta"):
        assert sum(p.numel() for p in ParaTransCNN(**m["constructor_kwargs"]).parameters()) == 245_468_937
    sd = _state(m, big_empty=True)
    model = load_official_paratranscnn(sd, **m["constructor_kwargs"])
    assert not model.training
    assert sum(p.numel() for p in model.parameters()) == m["num_params"]
    ours = model.state_dict()
    for k, v in sd.items():  # assigned, not copied: every official tensor landed on its mapped name
        assert ours[paratranscnn_official_to_ours(k)].data_ptr() == v.data_ptr(), k
    assert model.vit_1.blocks[2].attn.qkv.weight.data_ptr() == sd["vit_1.net.4.fn.fn.qkv.weight"].data_ptr()
    assert model.vit_3.blocks[0].mlp.fc2.weight.data_ptr() == sd["vit_3.net.1.fn.fn.net.3.weight"].data_ptr()
    del sd["out.bias"]
    with pytest.raises(OfficialCheckpointError, match="missing key.*out.bias"):
        load_official_paratranscnn(sd, **m["constructor_kwargs"])


def test_paratranscnn_key_mapping() -> None:
    assert paratranscnn_official_to_ours("vit_2.net.3.fn.norm.weight") == "vit_2.blocks.1.norm2.weight"
    assert paratranscnn_official_to_ours("vit_2.net.2.fn.norm.bias") == "vit_2.blocks.1.norm1.bias"
    assert paratranscnn_official_to_ours("vit_1.net.0.fn.fn.proj.bias") == "vit_1.blocks.0.attn.proj.bias"
    assert paratranscnn_official_to_ours("vit_1.net.5.fn.fn.net.0.weight") == "vit_1.blocks.2.mlp.fc1.weight"
    assert paratranscnn_official_to_ours("decoder1.norm1.weight") == "decoder1.norm1.weight"


def test_paratranscnn_transformer_layer_matches_official_formula() -> None:
    """One official transformer layer written out (pre-norm, qkv no bias, scale head_dim^-0.5, exact GELU)."""
    torch.manual_seed(0)
    model = build_paratranscnn("paratranscnn-tiny", num_classes=3).eval()
    blk = model.vit_1.blocks[0]
    x = torch.randn(2, 12, 16)
    h, d = 2, 8
    y = torch.nn.functional.layer_norm(x, (16,), blk.norm1.weight, blk.norm1.bias)
    qkv = (y @ blk.attn.qkv.weight.T).reshape(2, 12, 3, h, d).permute(2, 0, 3, 1, 4)
    att = ((qkv[0] @ qkv[1].transpose(-1, -2)) * d**-0.5).softmax(-1) @ qkv[2]
    x1 = x + blk.attn.proj(att.transpose(1, 2).reshape(2, 12, 16))
    y = torch.nn.functional.layer_norm(x1, (16,), blk.norm2.weight, blk.norm2.bias)
    expected = x1 + blk.mlp.fc2(torch.nn.functional.gelu(blk.mlp.fc1(y)))
    with torch.no_grad():
        torch.testing.assert_close(blk(x), expected, atol=1e-5, rtol=1e-5)
    assert blk.mlp.fc1.out_features == 32  # MLP x2


def test_resnet_weights_from_torchvision_state_dict() -> None:
    from torchvision.models import resnet34

    ref = resnet34(weights=None)
    with torch.no_grad():
        ref.layer4[2].bn2.weight.uniform_()
    model = build_paratranscnn("paratranscnn", num_classes=2, dim=32, heads=4)
    model.load_resnet_weights(ref.state_dict())
    torch.testing.assert_close(model.encoder4[2].bn2.weight, ref.layer4[2].bn2.weight)
    torch.testing.assert_close(model.firstconv.weight, ref.conv1.weight)
    with pytest.raises(ValueError, match="lack"):
        model.load_resnet_weights({"conv1.weight": ref.conv1.weight})


def test_cli_convert_writes_a_servable_run_folder(tmp_path: Path) -> None:
    """``sa-medseg convert`` -> run folder -> the predictor computes what the official weights compute."""
    from sa_medseg.domain import main
    from sa_medseg.predictor import MedsegPredictor

    m = _manifest("vmunet")
    sd = _state(m)
    path = tmp_path / "vmunet_synapse.pth"
    torch.save(sd, path)
    run = tmp_path / "vmunet-official"
    assert main(["convert", str(path), "--out", str(run), "--family", "vmunet", "--num-classes", "9"]) == 0
    pred = MedsegPredictor.load(run)
    assert len(pred.class_names) == 9
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(pred.model(x), load_official_vmunet(sd, **m["constructor_kwargs"])(x))
    assert main(["convert", str(path), "--out", str(tmp_path / "bad"), "--family", "paratranscnn"]) == 2


def test_paratranscnn_naive_attention_gives_the_same_training_gradients() -> None:
    """``set_naive(True)`` (the official step-by-step attention and direct convolutions; bench/speed.py's reference)
    and the fast path (fused attention, Winograd 3x3 convolutions in inference) give the same outputs in eval mode
    and the same loss gradients in training mode (BatchNorm on batch statistics) within 1e-5 relative."""
    from shared_attention.layers.winograd import WinogradConv2d, set_winograd

    torch.manual_seed(0)
    model = build_paratranscnn("paratranscnn-tiny", num_classes=3).train()
    # the tiny model's layers are narrow: switch every eligible 3x3 convolution to Winograd
    assert set_winograd(model, True, min_channels=1) > 10
    x, target = torch.rand(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64))

    def grads(naive: bool) -> dict[str, torch.Tensor]:
        model.set_naive(naive)
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x), target).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.eval()
    with torch.no_grad():
        fast_out = model(x)
        model.set_naive(True)
        naive_out = model(x)
    assert float((fast_out - naive_out).abs().max() / naive_out.abs().max()) < 1e-5
    assert set_winograd(model, True, min_channels=1) > 10
    model.train()
    fused, naive = grads(False), grads(True)
    attn = [m for m in model.modules() if type(m).__name__ == "MultiHeadAttention"]
    assert attn and all(m.explicit for m in attn)
    assert not any(isinstance(m, WinogradConv2d) for m in model.modules())
    assert fused.keys() == naive.keys() and any(".attn.qkv." in n for n in fused)
    # a convolution bias right before BatchNorm has a zero gradient up to rounding on both paths
    tiny = 1e-6 * max(float(g.abs().max()) for g in naive.values())
    compared = 0
    for name, g in fused.items():
        scale = float(naive[name].abs().max())
        if scale < tiny:
            assert float(g.abs().max()) < tiny, name
            continue
        assert float((g - naive[name]).abs().max()) / scale < 1e-5, name
        compared += 1
    assert compared > len(fused) // 2
