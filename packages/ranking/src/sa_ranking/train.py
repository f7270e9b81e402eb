"""Training a ranking model: the engine's one loop (``shared_attention.engine.fit``) on :class:`RankingTask`.

DistributedModelParallel (table-wise sharding, gloo on CPU), the fused sparse optimizer, DCP checkpoints with
automatic resume and AUC / LogLoss evaluation are the task's hooks (see :mod:`sa_ranking.task`); resume,
best-checkpoint tracking, the config-drift check, the reseed warning, logging and metadata are the engine's, as
for every domain. Works alone (a one-process gloo group) or under torchrun.

Run folder::

    runs/ranking/<name>/
        config.yaml  schema.json  metadata.json  metrics.csv
        model.safetensors                 unsharded weights of the chosen evaluation (served by the predictor)
        checkpoints/step_00000500/        DCP shards of model + optimizers (.metadata, __0_0.distcp, ...)
                                          and trainer_state.pt (step, epoch, best, RNG of every rank)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shared_attention.engine import FitResult, fit

from .config import RankingConfig
from .data import RankingTable
from .metrics import log_loss, roc_auc
from .models import build_model
from .schema import Schema
from .task import RankingTask, TrainModule

__all__ = ["RankTrainResult", "TrainModule", "evaluate_model", "export_checkpoint", "run", "train"]

#: deprecated name (one release): ``train`` returns the engine's :class:`~shared_attention.engine.FitResult`
RankTrainResult = FitResult


def train(cfg: RankingConfig) -> FitResult:
    """Trains ``cfg.model`` on ``cfg.data`` with DMP on the engine; resumes from ``cfg.train.run_dir`` when it
    has a complete checkpoint. Works alone or under ``torchrun`` (gloo)."""
    if cfg.train.num_threads > 0:
        torch.set_num_threads(cfg.train.num_threads)
    task = RankingTask(cfg)
    try:
        return fit(task, cfg.train.resolved(task.steps_per_epoch), full_config=cfg)
    finally:
        task.teardown()


def run(cfg: RankingConfig, options: dict[str, Any]) -> FitResult:
    """The domain's train runner (``sa-ranking train``): :func:`train` of ``cfg``.

    The progress bar (stderr) is shown only when stdout and stderr are both terminals, so it never lands in a
    redirected log or between result lines; while it shows, log lines are written above it, not through it.
    """
    import sys

    from tqdm.contrib.logging import logging_redirect_tqdm

    if cfg.train.progress and not (_isatty(sys.stdout) and _isatty(sys.stderr)):
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, progress=False))
    if not cfg.train.progress:
        return train(cfg)
    with logging_redirect_tqdm():
        return train(cfg)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def export_checkpoint(ckpt_dir: str | Path, schema: Schema, cfg: RankingConfig) -> nn.Module:
    """Loads a (sharded) DCP checkpoint into a plain, unsharded model on this process (no process group)."""
    import torch.distributed.checkpoint as dcp

    wrapper = TrainModule(build_model(schema, cfg.model))
    state = {"model": wrapper.state_dict()}
    dcp.load(state, checkpoint_id=str(ckpt_dir), no_dist=True)
    wrapper.load_state_dict(state["model"])
    return wrapper.model.eval()


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


@torch.no_grad()
def evaluate_model(model: nn.Module, table: RankingTable, batch_size: int | None) -> dict[str, Any]:
    """AUC and LogLoss of an unsharded ``model`` on ``table`` in this process (training evaluates through
    :meth:`RankingTask.validation_batches`). Returns metrics plus ``logits`` / ``labels`` arrays."""
    bs = batch_size or 4096
    was = model.training
    model.eval()
    logits = []
    for s in range(0, len(table), bs):
        b = table.batch(np.arange(s, min(s + bs, len(table))))
        out = model(b) if isinstance(_inner(model), TrainModule) else model(b.dense_features, b.sparse_features)
        logits.append((out[1][1] if isinstance(out, tuple) else out).float().numpy())
    model.train(was)
    z = np.concatenate(logits) if logits else np.zeros(0, np.float32)
    y = table.labels
    return {"auc": roc_auc(z, y), "logloss": log_loss(z, y), "rows": int(y.size), "logits": z, "labels": y}
