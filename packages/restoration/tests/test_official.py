"""Loading official HAT checkpoints: state dicts built from the reference manifests (names, shapes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from sa_restoration.models.hat import HAT, build_hat
from sa_restoration.official import (
    OfficialCheckpointError,
    convert_official,
    infer_official_kwargs,
    load_official,
    official_defaults,
    official_to_ours,
)
from torch import Tensor

# Copies of the shared reference manifests (facts measured from the official code), kept with the tests
# so that a missing file fails the test instead of skipping it.
MANIFESTS = Path(__file__).parent / "fixtures" / "manifests"


def _manifest(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MANIFESTS / f"{name}.json").read_text())
    return data


def official_oca_index(ws: int, ows: int) -> Tensor:
    """The official index formula as it is stored in real checkpoints (with negative entries)."""
    qy, qx = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    ky, kx = torch.meshgrid(torch.arange(ows), torch.arange(ows), indexing="ij")
    dy = ky.reshape(1, -1) - qy.reshape(-1, 1)
    dx = kx.reshape(1, -1) - qx.reshape(-1, 1)
    return (dy + ws - ows + 1) * (ws + ows - 1) + (dx + ws - ows + 1)


def official_sa_index(ws: int) -> Tensor:
    qy, qx = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    dy = qy.reshape(-1, 1) - qy.reshape(1, -1)
    dx = qx.reshape(-1, 1) - qx.reshape(1, -1)
    return (dy + ws - 1) * (2 * ws - 1) + (dx + ws - 1)


def state_dict_from_manifest(m: dict[str, Any]) -> dict[str, Tensor]:
    ws = int(m["constructor_kwargs"]["window_size"])
    ows = int(ws * float(m["constructor_kwargs"]["overlap_ratio"])) + ws
    g = torch.Generator().manual_seed(0)
    sd: dict[str, Tensor] = {}
    for key, shape in m["state_dict"].items():
        if key == "relative_position_index_SA":
            sd[key] = official_sa_index(ws)
        elif key == "relative_position_index_OCA":
            sd[key] = official_oca_index(ws, ows)
        else:
            sd[key] = 0.02 * torch.randn(*shape, generator=g)
        assert list(sd[key].shape) == list(shape), key
    for key, dtype in m.get("non_float32_state_dict_entries", {}).items():
        assert str(sd[key].dtype) == f"torch.{dtype}"
    return sd


@pytest.fixture(scope="module")
def hat_s() -> tuple[dict[str, Any], dict[str, Tensor]]:
    m = _manifest("hat_s_x4")
    return m, state_dict_from_manifest(m)


@pytest.fixture(scope="module")
def hat_l() -> tuple[dict[str, Any], dict[str, Tensor]]:
    m = _manifest("hat_x4")
    return m, state_dict_from_manifest(m)


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("fixture", "expected"), [("hat_s", 9_621_183), ("hat_l", 20_772_507)])
def test_manifest_loads_strictly_with_exact_param_count(
    fixture: str, expected: int, request: pytest.FixtureRequest
) -> None:
    m, sd = request.getfixturevalue(fixture)
    assert m["num_params"] == expected
    # the manifest counts parameters, not the two index buffers
    n_buffers = sum(sd[k].numel() for k in m["buffers"])
    assert sum(t.numel() for t in sd.values()) - n_buffers == expected
    model = load_official(sd, **m["constructor_kwargs"])
    assert isinstance(model, HAT) and not model.training
    assert _num_params(model) == expected
    ours = model.state_dict()
    # the rename map covers every key, both ways, with equal shapes
    mapped = {official_to_ours(k): k for k in m["state_dict"]}
    assert set(mapped) == set(ours)
    for ok, ck in mapped.items():
        assert list(ours[ok].shape) == m["state_dict"][ck]
    # values really landed (a parameter deep inside and one of the OCAB)
    key = "layers.3.residual_group.overlap_attn.relative_position_bias_table"
    torch.testing.assert_close(ours[key], sd[key], atol=0, rtol=0)
    # official (partly negative) OCA index replaced by the canonical one, equal modulo the table size
    oca = model.relative_position_index_OCA
    assert int(oca.min()) >= 0
    table = ours[key].shape[0]
    assert torch.equal(torch.remainder(sd["relative_position_index_OCA"], table), oca)
    assert torch.equal(sd["relative_position_index_SA"], model.relative_position_index_SA)


def test_manifest_matches_build_hat_variant(hat_s: tuple[dict[str, Any], dict[str, Tensor]]) -> None:
    m, _ = hat_s
    model = build_hat("hat-s", upscale=4)
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == m["state_dict"]


def test_wrappers_and_preference(hat_s: tuple[dict[str, Any], dict[str, Tensor]]) -> None:
    m, sd = hat_s
    kw = m["constructor_kwargs"]
    other = {k: (v + 1.0 if v.is_floating_point() else v) for k, v in sd.items()}
    key = "conv_first.bias"
    model = load_official({"params": other, "params_ema": sd}, **kw)
    torch.testing.assert_close(model.state_dict()[key], sd[key], atol=0, rtol=0)
    model = load_official({"params": other}, **kw)
    torch.testing.assert_close(model.state_dict()[key], other[key], atol=0, rtol=0)
    prefixed = {f"module.{k}": v for k, v in sd.items()}  # DataParallel save
    model = load_official({"params_ema": prefixed}, **kw, type="HAT")  # option-file network_g with 'type'
    torch.testing.assert_close(model.state_dict()[key], sd[key], atol=0, rtol=0)


def test_pth_file_on_disk_and_convert(hat_s: tuple[dict[str, Any], dict[str, Tensor]], tmp_path: Path) -> None:
    from shared_attention.engine.checkpoint import load_weights

    m, sd = hat_s
    kw = m["constructor_kwargs"]
    path = tmp_path / "HAT-S_SRx4.pth"
    torch.save({"params_ema": sd}, path)
    model = load_official(path, **kw)
    model_str = load_official(str(path), **kw)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y = model(x)
        torch.testing.assert_close(y, model_str(x), atol=0, rtol=0)
    assert y.shape == (1, 3, 64, 64)

    dst = convert_official(path, tmp_path / "hat_s.safetensors", **kw)
    weights = load_weights(dst)
    fresh = build_hat("hat-s", upscale=4).eval()
    fresh.load_state_dict(weights, strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), y, atol=0, rtol=0)

    # the generated CLI's convert writes a servable run folder whose predictor computes the same output
    from sa_restoration.domain import main
    from sa_restoration.predictor import RestorationPredictor

    run = tmp_path / "hat-s-x4"
    assert main(["convert", str(path), "--out", str(run), "--variant", "hat-s", "--scale", "4"]) == 0
    pred = RestorationPredictor.load(run)
    with torch.no_grad():
        torch.testing.assert_close(pred.model(x), y, atol=0, rtol=0)
    assert main(["convert", str(path), "--out", str(tmp_path / "wrong"), "--variant", "hat", "--scale", "4"]) == 2


def test_wrong_embed_dim_gives_clear_error(hat_s: tuple[dict[str, Any], dict[str, Tensor]], tmp_path: Path) -> None:
    m, sd = hat_s
    path = tmp_path / "ckpt.pth"
    torch.save({"params_ema": sd}, path)
    kw = {**m["constructor_kwargs"], "embed_dim": 180, "squeeze_factor": 30, "compress_ratio": 3}
    with pytest.raises(OfficialCheckpointError) as err:
        load_official(path, **kw)
    msg = str(err.value)
    assert "ckpt.pth" in msg and "params_ema" in msg
    assert "'conv_first.weight': checkpoint [144, 3, 3, 3] vs model [180, 3, 3, 3]" in msg
    assert "embed_dim=144 (given 180)" in msg


def test_wrong_compress_ratio_names_the_kwarg(hat_s: tuple[dict[str, Any], dict[str, Tensor]]) -> None:
    m, sd = hat_s
    with pytest.raises(OfficialCheckpointError) as err:
        load_official(sd, **{**m["constructor_kwargs"], "compress_ratio": 3})
    msg = str(err.value)
    assert "conv_block.cab.0.weight" in msg and "compress_ratio" in msg
    assert "compress_ratio=24 (given 3)" in msg


def test_wrong_depths_lists_keys(hat_s: tuple[dict[str, Any], dict[str, Tensor]]) -> None:
    m, sd = hat_s
    with pytest.raises(OfficialCheckpointError) as err:
        load_official(sd, **{**m["constructor_kwargs"], "depths": [6] * 5, "num_heads": [6] * 5})
    msg = str(err.value)
    assert "checkpoint keys are unexpected" in msg and "layers.5." in msg
    assert "depths=[6, 6, 6, 6, 6, 6]" in msg


def test_wrong_window_and_upscale(hat_s: tuple[dict[str, Any], dict[str, Tensor]]) -> None:
    m, sd = hat_s
    with pytest.raises(OfficialCheckpointError, match="window_size"):
        load_official(sd, **{**m["constructor_kwargs"], "window_size": 8})
    with pytest.raises(OfficialCheckpointError, match="upscale"):
        load_official(sd, **{**m["constructor_kwargs"], "upscale": 2})


def test_missing_kwargs_use_official_defaults(hat_s: tuple[dict[str, Any], dict[str, Tensor]]) -> None:
    _, sd = hat_s
    defaults = official_defaults()
    assert defaults["window_size"] == 7 and defaults["embed_dim"] == 96 and defaults["drop_path_rate"] == 0.1
    assert defaults["mlp_ratio"] == 4.0 and defaults["upscale"] == 2 and defaults["patch_size"] == 1
    with pytest.raises(OfficialCheckpointError, match="window_size=16"):
        load_official(sd)  # defaults are not HAT-S


def test_infer_kwargs(hat_s: tuple[dict[str, Any], dict[str, Tensor]]) -> None:
    m, sd = hat_s
    got = infer_official_kwargs(sd)
    ck = m["constructor_kwargs"]
    for k in ("embed_dim", "depths", "num_heads", "window_size", "compress_ratio", "squeeze_factor", "upscale"):
        assert list(got[k]) == list(ck[k]) if isinstance(ck[k], list) else got[k] == ck[k], k
    assert got["overlap_ratio"] == 0.5 and got["mlp_ratio"] == 2.0 and got["resi_connection"] == "1conv"


def test_tampered_index_and_bad_files(hat_s: tuple[dict[str, Any], dict[str, Tensor]], tmp_path: Path) -> None:
    m, sd = hat_s
    bad = dict(sd)
    bad["relative_position_index_SA"] = torch.flip(sd["relative_position_index_SA"], (0,))
    with pytest.raises(OfficialCheckpointError, match="relative_position_index_SA"):
        load_official(bad, **m["constructor_kwargs"])
    with pytest.raises(OfficialCheckpointError, match="missing.pth"):
        load_official(tmp_path / "missing.pth", **m["constructor_kwargs"])
    with pytest.raises(OfficialCheckpointError, match="not a tensor"):
        load_official({"params_ema": {"a": 1}}, **m["constructor_kwargs"])
