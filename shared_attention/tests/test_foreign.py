"""The foreign-checkpoint reader and the strict load that explains a mismatch."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from shared_attention.engine.foreign import (
    ForeignCheckpointError,
    call_repr,
    compare_state,
    load_strict,
    read_state_dict,
)


class Net(nn.Module):
    """A small model with a parameter, a nested module and a persistent integer buffer."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.stem = nn.Linear(3, width)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(width, 2))
        self.register_buffer("steps", torch.tensor(7, dtype=torch.int64))


class Opaque:
    """An arbitrary Python object, as research checkpoints pickle (argparse namespaces, configs...)."""

    def __init__(self) -> None:
        self.lr = 0.1


def _state(width: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return dict(Net(width).state_dict())


def test_mapping_source_prefix_strip_and_no_copy() -> None:
    sd = _state()
    state, source = read_state_dict({f"module.{k}": v for k, v in sd.items()})
    assert source == "<state dict>"
    assert list(state) == list(sd)
    assert all(state[k].data_ptr() == v.data_ptr() for k, v in sd.items())
    state, _ = read_state_dict({f"net.module.{k}": v for k, v in sd.items()}, strip_prefixes=("net.", "module."))
    assert list(state) == list(sd)
    kept, _ = read_state_dict({f"module.{k}": v for k, v in sd.items()}, strip_prefixes=())
    assert all(k.startswith("module.") for k in kept)
    with pytest.raises(ForeignCheckpointError, match="two entries become 'stem.bias'"):
        read_state_dict({"stem.bias": sd["stem.bias"], "module.stem.bias": sd["stem.bias"]})


def test_wrapper_unwrapping_and_priority() -> None:
    ema, raw = _state(seed=1), _state(seed=2)
    ckpt = {"params": raw, "params_ema": ema, "epoch": 3}
    state, source = read_state_dict(ckpt)
    assert torch.equal(state["stem.weight"], ema["stem.weight"]) and source == "<state dict>['params_ema']"
    state, source = read_state_dict(ckpt, wrappers=("params", "params_ema"))
    assert torch.equal(state["stem.weight"], raw["stem.weight"]) and source.endswith("['params']")
    state, _ = read_state_dict({"model": raw, "state_dict": ema})  # default order: state_dict before model
    assert torch.equal(state["stem.weight"], ema["stem.weight"])
    state, _ = read_state_dict({"params": 1, "model": raw})  # a wrapper key that is not a mapping is skipped
    assert torch.equal(state["stem.weight"], raw["stem.weight"])
    with pytest.raises(ForeignCheckpointError, match=r"holds no tensors.*entries holding a dict: \['params'"):
        read_state_dict({"params": raw, "epoch": 3}, wrappers=())


def test_rename_rules_and_callable() -> None:
    sd = _state()
    rules = [(r"^stem\.", "encoder."), (r"^head\.1\.", "decoder.")]
    state, _ = read_state_dict({f"module.{k}": v for k, v in sd.items()}, rename=rules)
    assert sorted(state) == ["decoder.bias", "decoder.weight", "encoder.bias", "encoder.weight", "steps"]
    state, _ = read_state_dict(sd, rename=str.upper)
    assert "STEM.WEIGHT" in state
    with pytest.raises(ForeignCheckpointError, match="renamed to 'x'"):
        read_state_dict(sd, rename=lambda k: "x")


def test_non_tensor_entries_dropped_or_rejected_and_cast() -> None:
    sd = {k: v.double() if v.is_floating_point() else v for k, v in _state().items()}
    ckpt = {**sd, "epoch": 3, "config": {"lr": 0.1}}
    state, _ = read_state_dict(ckpt)
    assert set(state) == set(sd)
    with pytest.raises(ForeignCheckpointError, match=r"<state dict>: entry 'epoch' is int, not a tensor"):
        read_state_dict(ckpt, drop_non_tensors=False)
    state, _ = read_state_dict(sd, dtype=torch.float32)
    assert state["stem.weight"].dtype == torch.float32 and state["steps"].dtype == torch.int64
    assert read_state_dict(state, dtype=torch.float32)[0]["stem.weight"].data_ptr() == state["stem.weight"].data_ptr()
    with pytest.raises(ForeignCheckpointError, match="<state dict>: holds no tensors"):
        read_state_dict({"epoch": 3})


def test_pth_and_safetensors_files(tmp_path: Path) -> None:
    sd = _state()
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 5}, tmp_path / "a.pth")
    save_file(sd, str(tmp_path / "a.safetensors"))
    for name, where in (("a.pth", "['state_dict']"), ("a.safetensors", "")):
        state, source = read_state_dict(tmp_path / name)
        assert source == str(tmp_path / name) + where
        assert set(state) == set(sd) and all(torch.equal(state[k], v) for k, v in sd.items())
    state, _ = read_state_dict(str(tmp_path / "a.pth"))
    assert set(state) == set(sd)


@pytest.mark.parametrize("name", ["ckpt.pth", "ckpt.safetensors"])
def test_truncated_file_error_names_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    if name.endswith(".pth"):
        torch.save(_state(), path)
    else:
        save_file(_state(), str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ForeignCheckpointError, match=re.escape(f"{path}: cannot read checkpoint")):
        read_state_dict(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ForeignCheckpointError, match=re.escape(str(path))):
        read_state_dict(path)


def test_missing_file_not_a_mapping_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ForeignCheckpointError, match=re.escape(f"{tmp_path / 'nope.pth'}: no such file")):
        read_state_dict(tmp_path / "nope.pth")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    with pytest.raises(ForeignCheckpointError, match="list.pt: expected a dict of tensors, got list"):
        read_state_dict(tmp_path / "list.pt")
    with pytest.raises(ForeignCheckpointError, match="is a folder"):
        read_state_dict(tmp_path)


def test_arbitrary_pickle_is_refused_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "research.pth"
    torch.save({"model": _state(), "args": Opaque()}, path)
    with pytest.raises(ForeignCheckpointError) as err:
        read_state_dict(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: cannot read checkpoint")
    assert "Opaque" in msg and "weights_only=True" in msg and "re-save it as a plain state dict" in msg
    assert "weights_only=False" not in msg  # never suggest executing the pickle


def test_folder_of_parts_is_merged(tmp_path: Path) -> None:
    sd = _state()
    torch.save({k.removeprefix("stem."): v for k, v in sd.items() if k.startswith("stem.")}, tmp_path / "enc.bin")
    torch.save({"model": {f"module.{k}": v for k, v in sd.items() if not k.startswith("stem.")}}, tmp_path / "rest.bin")
    parts = {"enc.bin": "stem.", "rest.bin": ""}
    state, source = read_state_dict(tmp_path, parts=parts)
    assert source == str(tmp_path) and set(state) == set(sd)
    state, _ = read_state_dict(tmp_path, parts=parts, rename=[(r"^stem\.", "encoder.")])  # rename after merging
    assert "encoder.weight" in state
    with pytest.raises(ForeignCheckpointError, match=r"folder lacks \['dec.bin'\]"):
        read_state_dict(tmp_path, parts={**parts, "dec.bin": "decoder."})
    (tmp_path / "enc.bin").write_bytes(b"garbage")
    with pytest.raises(ForeignCheckpointError, match=re.escape(str(tmp_path / "enc.bin"))):
        read_state_dict(tmp_path, parts=parts)


def test_load_strict_loads_and_assigns() -> None:
    sd = _state(seed=3)
    model = Net()
    load_strict(model, sd, "x.pth")
    assert torch.equal(model.stem.weight, sd["stem.weight"])
    with torch.device("meta"):
        meta = Net()
    load_strict(meta, sd, "x.pth", assign=True)
    assert meta.stem.weight.data_ptr() == sd["stem.weight"].data_ptr()


def test_load_strict_lists_missing_unexpected_and_shapes() -> None:
    sd = _state(width=6)
    del sd["head.1.bias"]
    sd["extra.weight"] = torch.zeros(1)
    model = Net(width=4)
    before = model.stem.weight.detach().clone()
    with pytest.raises(ForeignCheckpointError) as err:
        load_strict(model, sd, "ckpt.pth['model']", "check the width", what=call_repr("Net", {"width": 4}))
    msg = str(err.value)
    assert msg.startswith("ckpt.pth['model']: the checkpoint does not fit Net(width=4)")
    assert re.search(r"1 missing key.*'head.1.bias'", msg)
    assert re.search(r"1 unexpected key.*'extra.weight'", msg)
    assert "shape mismatch 'stem.weight': checkpoint [6, 3] vs model [4, 3]" in msg
    assert "shape mismatch 'head.1.weight': checkpoint [2, 6] vs model [2, 4]" in msg
    assert msg.endswith("hint: check the width")
    assert torch.equal(model.stem.weight, before)  # nothing loaded
    with pytest.raises(ForeignCheckpointError, match=r"and 2 more shape mismatch.*\n  hint: 3 shapes"):
        load_strict(model, _state(width=6), "c.pth", lambda m: f"{len(m.shapes)} shapes", show=1)


def test_compare_state_in_model_order() -> None:
    ours = {"a": torch.zeros(2), "b": torch.zeros(3), "c": torch.zeros(1)}
    theirs = {"z": torch.zeros(1), "b": torch.zeros(4), "a": torch.zeros(2)}
    mismatch = compare_state(ours, theirs)
    assert mismatch.missing == ["c"] and mismatch.unexpected == ["z"] and mismatch.shapes == [("b", (4,), (3,))]
    assert mismatch.keys() == ["c", "z", "b"] and bool(mismatch)
    assert not compare_state(ours, ours)
