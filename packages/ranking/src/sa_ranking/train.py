"""Training on torchrec: DistributedModelParallel (table-wise sharding, gloo on CPU), fused sparse
optimizer + dense optimizer, optional ``TrainPipelineSparseDist``, DCP checkpoints with automatic resume,
AUC / LogLoss evaluation.

The shared engine's loop (``shared_attention.engine.fit``) saves one safetensors state dict from rank 0;
sharded embedding tables and their fused optimizer state need every rank to write its shards, so ranking
runs this loop instead and reuses the engine's pieces (config loading, run-folder files, atomic writes,
CSV logger, RNG state, torchrun environment).

Run folder::

    runs/ranking/<name>/
        config.yaml  schema.json  metadata.json  metrics.csv
        model.safetensors                 unsharded weights of the best evaluation (served by the predictor)
        checkpoints/step_00000500/        DCP shards of model + optimizers (.metadata, __0_0.distcp, ...)
                                          and trainer_state.pt (step, epoch, best, RNG of every rank)

A checkpoint is written under a temporary name by every rank and renamed by rank 0 once complete, so a
killed run resumes from the newest complete one. Works alone (a one-process gloo group) or under torchrun.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from shared_attention.engine import checkpoint as ckpt_io
from shared_attention.engine.config import dump_config
from shared_attention.engine.distributed import DistContext, all_gather_objects, barrier, resolve_device
from shared_attention.engine.loggers import CSVLogger
from shared_attention.engine.seeding import get_rng_state, seed_everything, set_rng_state

from .config import RankingConfig
from .data import RankingTable, ReadReport, iter_table, load_table
from .metrics import log_loss, roc_auc
from .models import build_model
from .schema import Schema, load_schema

logger = logging.getLogger(__name__)

__all__ = ["TrainModule", "RankTrainResult", "train", "evaluate_model", "shard_model", "export_checkpoint"]

SCHEMA_FILE = "schema.json"


class TrainModule(nn.Module):
    """Wraps a ranking model for torchrec's train pipeline: ``forward(batch) -> (loss, (loss, logits, labels))``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        logits = self.model(batch.dense_features, batch.sparse_features)  # (B,)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
        return loss, (loss.detach(), logits.detach(), batch.labels)


@dataclass
class RankTrainResult:
    """What :func:`train` returns (on every rank)."""

    run_dir: Path
    step: int
    resumed_from: int | None
    best_step: int | None
    best_auc: float | None
    last_metrics: dict[str, float]
    seconds: float


def _init_process_group() -> tuple[DistContext, bool]:
    """The torchrun group (gloo on CPU) or a one-process gloo group; returns (context, created)."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    created = False
    if not dist.is_initialized():
        if world > 1:
            dist.init_process_group("gloo")
        else:
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        created = True
    rank, ws = dist.get_rank(), dist.get_world_size()
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    return DistContext(rank, ws, local, resolve_device("cpu"), True), created


def shard_model(module: nn.Module, cfg: RankingConfig, ctx: DistContext) -> tuple[nn.Module, Any]:
    """Applies the fused sparse optimizer to the embedding tables, wraps ``module`` in DMP with table-wise
    sharding over the ranks, and returns ``(dmp_model, combined_optimizer)``."""
    from torchrec.distributed import DistributedModelParallel
    from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
    from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
    from torchrec.distributed.types import ShardingEnv
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.optim import RowWiseAdagrad
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    t = cfg.train
    sparse_cls: Any = {"adagrad": torch.optim.Adagrad, "rowwise_adagrad": RowWiseAdagrad, "sgd": torch.optim.SGD}[
        t.sparse_optim
    ]
    tables: list[str] = []
    for m in module.modules():
        if isinstance(m, EmbeddingBagCollection):
            apply_optimizer_in_backward(sparse_cls, m.parameters(), {"lr": t.sparse_lr})
            tables += [c.name for c in m.embedding_bag_configs()]
    constraints = {name: ParameterConstraints(sharding_types=["table_wise"]) for name in tables}
    topology = Topology(world_size=ctx.world_size, compute_device="cpu")
    planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
    sharders: list[Any] = [EmbeddingBagCollectionSharder()]
    pg = dist.GroupMember.WORLD
    plan = planner.collective_plan(module, sharders, pg)
    dmp = DistributedModelParallel(
        module, env=ShardingEnv.from_process_group(pg), device=torch.device("cpu"), plan=plan, sharders=sharders
    )
    dense_params = dict(in_backward_optimizer_filter(dmp.named_parameters()))
    if t.dense_optim == "adam":

        def make(ps: Any) -> torch.optim.Optimizer:
            return torch.optim.Adam(ps, lr=t.dense_lr, weight_decay=t.weight_decay)
    else:

        def make(ps: Any) -> torch.optim.Optimizer:
            return torch.optim.Adagrad(ps, lr=t.dense_lr, weight_decay=t.weight_decay)

    optimizer = CombinedOptimizer([dmp.fused_optimizer, KeyedOptimizerWrapper(dense_params, make)])
    return dmp, optimizer


def _complete_checkpoints(run_dir: Path) -> list[Path]:
    return [
        p
        for p in ckpt_io.list_checkpoints(run_dir)
        if (p / ".metadata").is_file() and (p / ckpt_io.STATE_FILE).is_file()
    ]


def export_checkpoint(ckpt_dir: str | Path, schema: Schema, cfg: RankingConfig) -> nn.Module:
    """Loads a (sharded) DCP checkpoint into a plain, unsharded model on this process (no process group)."""
    import torch.distributed.checkpoint as dcp

    wrapper = TrainModule(build_model(schema, cfg.model))
    state = {"model": wrapper.state_dict()}
    dcp.load(state, checkpoint_id=str(ckpt_dir), no_dist=True)
    wrapper.load_state_dict(state["model"])
    return wrapper.model.eval()


@torch.no_grad()
def evaluate_model(
    model: nn.Module, table: RankingTable, batch_size: int, ctx: DistContext | None = None
) -> dict[str, Any]:
    """AUC and LogLoss of ``model`` on ``table``; under DMP every rank runs the same number of batches on its
    share (padded) and the results are gathered. Returns metrics plus ``logits`` / ``labels`` arrays."""
    rank, ws = (ctx.rank, ctx.world_size) if ctx is not None else (0, 1)
    n = len(table)
    per = math.ceil(n / ws)
    idx = np.arange(rank * per, rank * per + per)
    valid = idx < n
    idx = np.where(valid, idx, n - 1)
    was = model.training
    model.eval()
    logits = []
    for s in range(0, per, batch_size):
        b = table.batch(idx[s : s + batch_size])
        out = model(b) if isinstance(_inner(model), TrainModule) else model(b.dense_features, b.sparse_features)
        logits.append((out[1][1] if isinstance(out, tuple) else out).float().numpy())
    model.train(was)
    mine = (np.concatenate(logits)[valid], table.labels[idx[valid]])
    parts = all_gather_objects(ctx, mine) if ctx is not None else [mine]
    z = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return {"auc": roc_auc(z, y), "logloss": log_loss(z, y), "rows": int(y.size), "logits": z, "labels": y}


def _inner(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)


def _read_rows(path: str, schema: Schema, on_error: Any, report: ReadReport, limit: int = 0) -> RankingTable:
    """The first ``limit`` rows of a file (0: all), reading only as many chunks as needed."""
    if limit <= 0:
        return load_table(path, schema, on_error, report)
    chunks, total = [], 0
    for chunk in iter_table(path, schema, on_error, report, chunk_rows=min(limit, 65536)):
        chunks.append(chunk)
        total += len(chunk)
        if total >= limit:
            break
    table = RankingTable.concat(chunks, schema)
    if len(table) > limit:
        table = RankingTable(schema, *table.take(np.arange(limit)))
    return table


class _Trainer:
    def __init__(self, cfg: RankingConfig) -> None:
        self.cfg = cfg
        self.run_dir = Path(cfg.train.run_dir)

    def setup(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        if t.num_threads > 0:
            torch.set_num_threads(t.num_threads)
        self.ctx, self.created_pg = _init_process_group()
        ctx = self.ctx
        seed_everything(t.seed)
        self.schema = load_schema(cfg.data.schema)
        report = ReadReport()
        self.val = _read_rows(cfg.data.valid, self.schema, cfg.data.on_error, report, cfg.data.max_valid_rows)
        self.train_table: RankingTable | None = None
        if not cfg.data.streaming:
            self.train_table = _read_rows(
                cfg.data.train, self.schema, cfg.data.on_error, report, cfg.data.max_train_rows
            )
            self.steps_per_epoch = len(self.train_table) // (t.batch_size * ctx.world_size)
            if self.steps_per_epoch < 1:
                raise ValueError(
                    f"train.batch_size={t.batch_size} x {ctx.world_size} ranks exceeds the "
                    f"{len(self.train_table)} training rows"
                )
            self.max_steps = t.max_steps or t.epochs * self.steps_per_epoch
        else:
            if t.max_steps is None:
                raise ValueError("data.streaming=true needs train.max_steps (the file length is unknown)")
            self.steps_per_epoch = 0
            self.max_steps = t.max_steps
        self.read_report = report
        if report.skipped and ctx.is_main:
            logger.warning("data: %s", report.summary())
        self.model = build_model(self.schema, cfg.model)
        self.dmp, self.optimizer = shard_model(TrainModule(self.model), cfg, ctx)
        self.step, self.epoch, self.in_epoch = 0, 0, 0
        self.best_auc: float | None = None
        self.best_step: int | None = None
        self.last_metrics: dict[str, float] = {}
        self.resumed_from: int | None = None
        found = _complete_checkpoints(self.run_dir)
        if found:
            self._restore(found[-1])
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt_io.atomic_write_text(self.run_dir / "config.yaml", dump_config(cfg))
            ckpt_io.atomic_write_text(self.run_dir / SCHEMA_FILE, json.dumps(self.schema.to_dict(), indent=2))
            self._write_metadata()
            self.log = CSVLogger(self.run_dir / "metrics.csv", resume_step=self.resumed_from)
        barrier(ctx)
        self.pipeline = None
        if t.pipeline:
            from torchrec.distributed.train_pipeline import TrainPipelineSparseDist

            self.pipeline = TrainPipelineSparseDist(self.dmp, self.optimizer, torch.device("cpu"))

    # ---------------------------------------------------------------- checkpoints
    def _restore(self, path: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torchrec.optim.keyed import KeyedOptimizerWrapper

        for entry in self.optimizer.optimizers:  # dense Adam/Adagrad state exists only after a first step
            opt = entry[1] if isinstance(entry, tuple) else entry
            if isinstance(opt, KeyedOptimizerWrapper):
                opt.init_state()
        state = {"model": self.dmp.state_dict(), "optim": self.optimizer.state_dict()}
        try:
            dcp.load(state, checkpoint_id=str(path))
            self.dmp.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optim"])
            ts = ckpt_io.load_trainer_state(path / ckpt_io.STATE_FILE)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise ckpt_io.CheckpointError(
                f"{path}: checkpoint does not match this model/config ({type(exc).__name__}: {exc}); "
                "use a new run_dir"
            ) from exc
        self.step, self.epoch, self.in_epoch = int(ts["step"]), int(ts["epoch"]), int(ts["in_epoch"])
        self.best_auc, self.best_step = ts.get("best_auc"), ts.get("best_step")
        self.last_metrics = dict(ts.get("last_metrics", {}))
        rngs = ts.get("rng", [])
        if len(rngs) == self.ctx.world_size:
            set_rng_state(rngs[self.ctx.rank])
        self.resumed_from = self.step
        if self.ctx.is_main:
            logger.info("resumed %s from %s (step %d)", self.run_dir, path, self.step)

    def _save(self) -> Path:
        import torch.distributed.checkpoint as dcp

        root = self.run_dir / ckpt_io.CHECKPOINT_DIR
        final = root / f"step_{self.step:08d}"
        tmp = root / f".step_{self.step:08d}.tmp"
        rngs = all_gather_objects(self.ctx, get_rng_state())
        if self.ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier(self.ctx)
        dcp.save({"model": self.dmp.state_dict(), "optim": self.optimizer.state_dict()}, checkpoint_id=str(tmp))
        barrier(self.ctx)
        if self.ctx.is_main:
            ckpt_io.save_trainer_state(
                tmp / ckpt_io.STATE_FILE,
                {
                    "step": self.step,
                    "epoch": self.epoch,
                    "in_epoch": self.in_epoch,
                    "best_auc": self.best_auc,
                    "best_step": self.best_step,
                    "last_metrics": self.last_metrics,
                    "rng": rngs,
                    "world_size": self.ctx.world_size,
                },
            )
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            keep = self.cfg.train.keep_checkpoints
            if keep > 0:
                done = _complete_checkpoints(self.run_dir)
                best = root / f"step_{self.best_step:08d}" if self.best_step is not None else None
                for old in done[:-keep]:
                    if old != best:
                        shutil.rmtree(old, ignore_errors=True)
        barrier(self.ctx)
        return final

    def _write_metadata(self, result: dict[str, Any] | None = None) -> None:
        from .predictor import RankingPredictor

        meta: dict[str, Any] = {
            "task": "ranking",
            "arch": self.cfg.model.arch,
            "world_size": self.ctx.world_size,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "versions": _versions(),
            "io": RankingPredictor.io_spec.to_dict(),
            "schema": self.schema.to_dict(),
            "sharding": "torchrec DistributedModelParallel, table-wise",
            "weights": f"{self.cfg.train.export} evaluation",
            "data_report": {
                "rows": self.read_report.rows,
                "skipped": self.read_report.skipped,
                "errors": self.read_report.errors[:5],
            },
        }
        if result is not None:
            meta["result"] = result
        ckpt_io.atomic_write_text(self.run_dir / "metadata.json", json.dumps(meta, indent=2, default=str))

    # ---------------------------------------------------------------- data
    def _batches(self) -> Iterator[Any]:
        """This rank's batches of the current epoch, from ``self.in_epoch`` on."""
        t, ctx = self.cfg.train, self.ctx
        gb = t.batch_size * ctx.world_size
        if self.train_table is not None:
            perm = np.random.default_rng(t.seed * 1_000_003 + self.epoch).permutation(len(self.train_table))
            for k in range(self.in_epoch, self.steps_per_epoch):
                yield self.train_table.batch(perm[k * gb + ctx.rank * t.batch_size :][: t.batch_size])
            return
        k = 0
        for chunk in iter_table(self.cfg.data.train, self.schema, self.cfg.data.on_error, chunk_rows=gb * 64):
            for s in range(0, len(chunk) - gb + 1, gb):
                if k >= self.in_epoch:
                    yield chunk.batch(np.arange(s + ctx.rank * t.batch_size, s + (ctx.rank + 1) * t.batch_size))
                k += 1

    # ---------------------------------------------------------------- loop
    def _evaluate(self) -> dict[str, float]:
        res = evaluate_model(self.dmp, self.val, self.cfg.train.eval_batch_size, self.ctx)
        return {"auc": res["auc"], "logloss": res["logloss"]}

    def _eval_and_checkpoint(self) -> None:
        if self.pipeline is not None:  # the pipelined forward serves prefetched batches: evaluate unpipelined
            self.pipeline.detach()
        m = self._evaluate()
        if self.pipeline is not None:
            self.pipeline.attach()
        self.last_metrics = m
        improved = self.best_auc is None or m["auc"] > self.best_auc
        if improved:
            self.best_auc, self.best_step = m["auc"], self.step
        if self.cfg.train.export == "last":  # served weights: the latest evaluation, no selection on this split
            improved = True
        path = self._save()
        if self.ctx.is_main:
            self.log.log(self.step, "val", m)
            if improved:
                model = export_checkpoint(path, self.schema, self.cfg)
                ckpt_io.save_weights(self.run_dir / ckpt_io.MODEL_FILE, model.state_dict(), {"step": str(self.step)})
            logger.info("step %d: AUC %.4f, LogLoss %.4f", self.step, m["auc"], m["logloss"])
        barrier(self.ctx)

    def run(self) -> RankTrainResult:
        from tqdm.auto import tqdm

        t, ctx = self.cfg.train, self.ctx
        t0 = time.time()
        eval_every = t.eval_every or self.steps_per_epoch or self.max_steps
        bar = tqdm(
            total=self.max_steps,
            initial=self.step,
            disable=not (ctx.is_main and t.progress),
            desc=f"ranking/{self.cfg.model.arch}",
            unit="step",
            dynamic_ncols=True,
        )
        self.dmp.train()
        loss_sum, n_loss = 0.0, 0
        stop = self.step >= self.max_steps
        while not stop:
            batches = self._batches()
            exhausted = False
            while not stop:
                if self.pipeline is not None:
                    try:
                        loss, _, _ = self.pipeline.progress(batches)
                    except StopIteration:
                        exhausted = True
                        break
                else:
                    batch = next(batches, None)
                    if batch is None:
                        exhausted = True
                        break
                    loss, _ = self.dmp(batch)
                    loss.backward()
                    self.optimizer.step()
                    self.optimizer.zero_grad()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite loss at step {self.step + 1}; lower the learning rates")
                self.step += 1
                self.in_epoch += 1
                loss_sum += float(loss.detach())
                n_loss += 1
                bar.update(1)
                if self.step % t.log_every == 0 and ctx.is_main:
                    self.log.log(self.step, "train", {"loss": loss_sum / n_loss})
                    bar.set_postfix(loss=f"{loss_sum / n_loss:.4f}")
                    loss_sum, n_loss = 0.0, 0
                out_of_time = False
                if t.max_minutes is not None:
                    out_of_time = any(all_gather_objects(ctx, time.time() - t0 > t.max_minutes * 60))
                if self.step >= self.max_steps or out_of_time:
                    stop = True
                if stop or self.step % eval_every == 0:
                    self._eval_and_checkpoint()
            if exhausted:
                if self.in_epoch == 0:
                    raise ValueError(f"{self.cfg.data.train}: no complete training batch")
                self.epoch += 1
                self.in_epoch = 0
        bar.close()
        if ctx.is_main:
            self._write_metadata(
                {
                    "step": self.step,
                    "best_step": self.best_step,
                    "best_auc": self.best_auc,
                    "last_metrics": self.last_metrics,
                    "max_steps": self.max_steps,
                }
            )
            self.log.close()
        barrier(ctx)
        return RankTrainResult(
            self.run_dir,
            self.step,
            self.resumed_from,
            self.best_step,
            self.best_auc,
            self.last_metrics,
            time.time() - t0,
        )

    def close(self) -> None:
        if self.created_pg and dist.is_initialized():
            dist.destroy_process_group()


def _versions() -> dict[str, str]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for d in ("torchrec", "shared-attention", "sa-ranking"):
        with contextlib.suppress(PackageNotFoundError):
            out[d] = version(d)
    return out


def train(cfg: RankingConfig) -> RankTrainResult:
    """Trains ``cfg.model`` on ``cfg.data`` with DMP; resumes from ``cfg.train.run_dir`` when it has a
    complete checkpoint. Works alone or under ``torchrun`` (gloo)."""
    trainer = _Trainer(cfg)
    try:
        trainer.setup()
        return trainer.run()
    finally:
        if hasattr(trainer, "ctx"):
            trainer.close()
