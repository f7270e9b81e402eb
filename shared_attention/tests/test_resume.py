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


# The demo CLI in a child that parks itself for good at a chosen training micro-step, after touching a file:
# the test kills it there (no race between the test's polling and the child's progress, whatever the load).
_PARKING_CHILD = """
import sys, threading
from pathlib import Path
from shared_attention import cli, toy

park_at, marker = int(sys.argv[1]), Path(sys.argv[2])
calls = 0
step = toy.PointerTask.training_step

def training_step(self, model, batch):
    global calls
    calls += 1
    if calls == park_at:
        marker.touch()
        threading.Event().wait()  # until SIGKILL
    return step(self, model, batch)

toy.PointerTask.training_step = training_step
sys.exit(cli.main(sys.argv[3:]))
"""


def _demo_args(run_dir: Path) -> list[str]:
    return ["demo", "--quiet", f"train.run_dir={run_dir}", *ARGS]


def _cmd(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "shared_attention.cli", *_demo_args(run_dir)]


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
    subprocess.run(_cmd(ref_dir), check=True, env=_env(), timeout=240)

    # park in the middle of step 26 (its second micro-batch of two): after checkpoint 20, before checkpoint 30
    marker = tmp_path / "parked"
    proc = subprocess.Popen([sys.executable, "-c", _PARKING_CHILD, str(2 * 26), str(marker), *_demo_args(run_dir)],
                            env=_env())
    try:
        deadline = time.monotonic() + 240  # a hang guard: the child needs seconds
        while not marker.exists():
            assert proc.poll() is None, "training ended before it reached step 26"
            assert time.monotonic() < deadline, "the child did not reach step 26"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(run_dir)] == ["step_00000010", "step_00000020"]
    found = find_resumable(run_dir)
    assert found is not None and found[2]["step"] == 20

    subprocess.run(_cmd(run_dir), check=True, env=_env(), timeout=240)
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
    cmd = _cmd(run_dir)
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
    subprocess.run(_cmd(ref_dir), check=True, env=_env(), timeout=240)
    ref, got = _final(ref_dir), _final(run_dir)
    assert all(torch.equal(ref[k], got[k]) for k in ref)
