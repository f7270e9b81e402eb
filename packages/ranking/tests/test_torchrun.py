"""2-rank torchrun training with DistributedModelParallel (table-wise sharding on CPU, gloo)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from sa_ranking.synthetic import write_synthetic_csv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.timeout(500)
def test_two_rank_dmp_training(tmp_path) -> None:
    data = write_synthetic_csv(tmp_path / "data", 1280, 300)
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_port()}",
        "-m",
        "sa_ranking.domain",
        "train",
        "--config",
        "hiformer",
        f"data.schema={data / 'schema.json'}",
        f"data.train={data / 'train.csv'}",
        f"data.valid={data / 'valid.csv'}",
        f"train.run_dir={run}",
        "train.max_steps=16",
        "train.eval_every=8",
        "train.batch_size=32",
        "train.progress=false",
        "train.num_threads=1",
        "model.embedding_dim=8",
        "model.head_dim=4",
        "model.key_rank=4",
        "model.value_rank=4",
        "model.ffn_hidden=16",
        "model.mlp_dims=[16]",
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["world_size"] == 2 and meta["result"]["step"] == 16
    ckpt = run / "checkpoints" / "step_00000016"
    assert (ckpt / "__0_0.distcp").is_file() and (ckpt / "__1_0.distcp").is_file()

    # table-wise: every embedding table is stored whole, by one rank, and both ranks own some tables
    import torch.distributed.checkpoint as dcp

    md = dcp.FileSystemReader(str(ckpt)).read_metadata()
    owners: dict[str, set[str]] = {}
    for idx, info in md.storage_data.items():
        if idx.fqn.startswith("model.model.ebc.") and idx.fqn.endswith(".weight"):
            owners.setdefault(idx.fqn, set()).add(info.relative_path.split("_")[2])
    assert len(owners) == 4 and all(len(v) == 1 for v in owners.values())
    assert {next(iter(v)) for v in owners.values()} == {"0", "1"}

    from sa_ranking.evaluate import evaluate_run

    res = evaluate_run(run)
    assert res["rows"] == 300 and 0.0 <= res["auc"] <= 1.0
