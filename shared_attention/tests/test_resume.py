"""Kill a training process with SIGKILL after a checkpoint, resume it, and compare with an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shared_attention.engine.checkpoint import find_resumable, list_checkpoints, load_weights

ARGS = [
    "train.max_steps=40", "train.checkpoint_every=10", "train.eval_every=20", "train.batch_size=32",
    "train.grad_accum_steps=2", "train.progress=false", "train.tensorboard=false", "train.keep_checkpoints=0",
    "train.seed=3", "data.n_train=400", "data.n_val=64", "model.dim=32", "model.dropout=0.1",
]


def _cmd(run_dir: Path, slow: float) -> list[str]:
    return [sys.executable, "-m", "shared_attention.cli", "demo", "--quiet", f"train.run_dir={run_dir}",
            f"data.slow_step_s={slow}", *ARGS]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _final(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpts = list_checkpoints(run_dir)
    assert ckpts and ckpts[-1].name == "step_00000040", ckpts
    return load_weights(ckpts[-1] / "model.safetensors")


@pytest.mark.timeout(300)
def test_sigkill_then_resume_is_bit_identical(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "killed"
    subprocess.run(_cmd(ref_dir, 0.0), check=True, env=_env(), timeout=240)

    proc = subprocess.Popen(_cmd(run_dir, 0.05), env=_env())
    target = run_dir / "checkpoints" / "step_00000020" / "manifest.json"
    deadline = time.time() + 200
    while not target.exists():
        assert proc.poll() is None, "training ended before it could be killed"
        assert time.time() < deadline, "no checkpoint at step 20"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    steps_at_kill = [p.name for p in list_checkpoints(run_dir)]
    assert "step_00000040" not in steps_at_kill
    found = find_resumable(run_dir)
    assert found is not None
    resumed_from = found[2]["step"]
    assert 20 <= resumed_from < 40

    subprocess.run(_cmd(run_dir, 0.0), check=True, env=_env(), timeout=240)
    ref, got = _final(ref_dir), _final(run_dir)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), f"{k} differs after resume"
    # the served weights (best by validation accuracy) agree as well
    a = load_weights(ref_dir / "model.safetensors")
    b = load_weights(run_dir / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # and the weights did change during training (the comparison is not vacuous)
    first = load_weights(list_checkpoints(ref_dir)[0] / "model.safetensors")
    assert any(not torch.equal(first[k], ref[k]) for k in ref)


@pytest.mark.timeout(300)
def test_resume_skips_corrupted_latest_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    ref_dir = tmp_path / "ref"
    cmd = _cmd(run_dir, 0.0)
    short = [a if not a.startswith("train.max_steps") else "train.max_steps=30" for a in cmd]
    subprocess.run(short, check=True, env=_env(), timeout=240)
    latest = list_checkpoints(run_dir)[-1]
    assert latest.name == "step_00000030"
    f = latest / "trainer_state.pt"
    f.write_bytes(f.read_bytes()[:100])  # truncated: resume must fall back to step 20
    out = subprocess.run(cmd, env=_env(), timeout=240, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "trainer_state.pt" in out.stderr and "step_00000030" in out.stderr
    assert "step 20" in out.stderr
    subprocess.run(_cmd(ref_dir, 0.0), check=True, env=_env(), timeout=240)
    ref, got = _final(ref_dir), _final(run_dir)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
