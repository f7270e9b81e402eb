import json
import os

import pytest
import torch

from shared_attention.engine import checkpoint as ck


def _state(v: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3, 4), v), "b": torch.arange(4.0) + v}


def test_atomic_write_leaves_no_temp_and_replaces(tmp_path):
    p = tmp_path / "a.txt"
    ck.atomic_write_text(p, "one")
    ck.atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [x.name for x in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_write_failure_keeps_old_file(tmp_path):
    p = tmp_path / "a.bin"
    ck.atomic_write_bytes(p, b"old")

    def boom(fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ck.atomic_write(p, boom)
    assert p.read_bytes() == b"old"
    assert [x.name for x in tmp_path.iterdir()] == ["a.bin"]


def test_weights_round_trip_with_shared_storage(tmp_path):
    base = torch.randn(6)
    state = {"a": base[:3], "b": base[3:], "c": base}
    ck.save_weights(tmp_path / "m.safetensors", state)
    back = ck.load_weights(tmp_path / "m.safetensors")
    for k in state:
        assert torch.equal(back[k], state[k])


def test_truncated_weights_error_names_file(tmp_path):
    p = tmp_path / "model.safetensors"
    ck.save_weights(p, _state(1.0))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError, match=str(p)):
        ck.load_weights(p)


def test_corrupt_trainer_state_error_names_file(tmp_path):
    p = tmp_path / "trainer_state.pt"
    ck.save_trainer_state(p, {"step": 3, "x": torch.ones(2)})
    assert ck.load_trainer_state(p)["step"] == 3
    p.write_bytes(p.read_bytes()[:40])
    with pytest.raises(ck.CheckpointError, match="trainer_state.pt"):
        ck.load_trainer_state(p)


def test_trainer_state_refuses_arbitrary_pickles(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.getcwd, ())

    p = tmp_path / "trainer_state.pt"
    torch.save({"evil": Evil()}, p)
    with pytest.raises(ck.CheckpointError, match="trainer_state.pt"):
        ck.load_trainer_state(p)


def test_keep_and_fallback_to_previous_complete_checkpoint(tmp_path, caplog):
    for step in (10, 20, 30):
        ck.write_checkpoint(tmp_path, step, _state(step), {"step": step}, keep=2)
    dirs = ck.list_checkpoints(tmp_path)
    assert [d.name for d in dirs] == ["step_00000020", "step_00000030"]
    # truncate the newest model file: resume must name it and fall back to step 20
    bad = dirs[-1] / ck.MODEL_FILE
    bad.write_bytes(bad.read_bytes()[:-7])
    with pytest.raises(ck.CheckpointError, match=r"step_00000030.*model\.safetensors.*truncated"):
        ck.verify_checkpoint(dirs[-1])
    with caplog.at_level("WARNING"):
        path, weights, state = ck.find_resumable(tmp_path)
    assert path.name == "step_00000020" and state["step"] == 20
    assert torch.equal(weights["w"], _state(20)["w"])
    assert "step_00000030" in caplog.text and "model.safetensors" in caplog.text


def test_same_size_corruption_detected_by_checksum(tmp_path):
    d = ck.write_checkpoint(tmp_path, 5, _state(5), {"step": 5})
    f = d / ck.STATE_FILE
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    f.write_bytes(bytes(raw))
    with pytest.raises(ck.CheckpointError, match="checksum"):
        ck.verify_checkpoint(d)
    assert ck.find_resumable(tmp_path) is None


def test_incomplete_checkpoint_without_manifest_is_skipped(tmp_path):
    ck.write_checkpoint(tmp_path, 1, _state(1), {"step": 1}, keep=0)
    d2 = ck.write_checkpoint(tmp_path, 2, _state(2), {"step": 2}, keep=0)
    (d2 / ck.MANIFEST_FILE).unlink()
    path, _, state = ck.find_resumable(tmp_path)
    assert state["step"] == 1
    manifest = json.loads((path / ck.MANIFEST_FILE).read_text())
    assert set(manifest["files"]) == {ck.MODEL_FILE, ck.STATE_FILE}
