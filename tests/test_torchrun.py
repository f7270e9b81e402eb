"""The engine under torchrun with 2 CPU ranks (gloo): ranks end with identical parameters."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared_attention.engine.checkpoint import load_weights

WORKER = Path(__file__).with_name("ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(400)
def test_two_rank_gloo_training_keeps_ranks_identical(tmp_path):
    run_dir, out_dir = tmp_path / "run", tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
        str(WORKER), str(run_dir), str(out_dir),
        "train.max_steps=30", "train.batch_size=16", "train.eval_every=15", "train.checkpoint_every=15",
        "train.progress=false", "train.tensorboard=false", "train.device=cpu", "model.dim=32",
        "model.dropout=0.1", "data.n_train=320", "data.n_val=50",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=380)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "rank 0/2 done at step 30" in out.stdout and "rank 1/2 done at step 30" in out.stdout
    r0 = load_weights(out_dir / "rank0.safetensors")
    r1 = load_weights(out_dir / "rank1.safetensors")
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{k} differs between ranks"
    # rank 0 wrote the run folder, and it trained: the last checkpoint differs from the first
    final = load_weights(run_dir / "checkpoints" / "step_00000030" / "model.safetensors")
    assert all(torch.equal(final[k], r0[k]) for k in r0)
    first = load_weights(run_dir / "checkpoints" / "step_00000015" / "model.safetensors")
    assert any(not torch.equal(first[k], final[k]) for k in final)
    meta = (run_dir / "metadata.json").read_text()
    assert '"world_size": 2' in meta
