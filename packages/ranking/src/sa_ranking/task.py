"""The ranking :class:`~shared_attention.engine.TrainTask`: torchrec models on the one engine loop.

What ranking adds to the engine goes through its hooks, nothing else:

- ``build_model``: the model inside :class:`TrainModule` (``forward(batch) -> (loss, (loss, logits, labels))``),
  its embedding tables' sparse optimizer fused into their backward (torchrec ``apply_optimizer_in_backward``);
- ``wrap_model``: torchrec ``DistributedModelParallel`` with table-wise sharding over the ranks (a one-process
  gloo group when training alone);
- ``build_optimizer``: DMP's fused sparse optimizer combined with the engine's optimizer (``train.optim``) over
  the dense parameters;
- ``checkpoint_strategy = "dcp"``: every rank writes its shards with ``torch.distributed.checkpoint``;
- ``train_batches`` / ``validation_batches``: batches cut straight from the columnar table (shuffled per epoch
  from the seed, or streamed in file order), and equal-sized validation shards so every rank runs the same
  number of sharded forwards.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from shared_attention.engine import TaskHooks
from shared_attention.engine.distributed import DistContext

from .config import RankingConfig
from .data import RankingTable, ReadReport, iter_table, load_table
from .metrics import log_loss, roc_auc
from .models import build_model
from .schema import Schema, load_schema

logger = logging.getLogger(__name__)

__all__ = ["RankingTask", "TrainModule", "read_rows"]


class TrainModule(nn.Module):
    """Wraps a ranking model for the engine and torchrec: ``forward(batch) -> (loss, (loss, logits, labels))``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Any) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor]]:
        logits = self.model(batch.dense_features, batch.sparse_features)  # (B,)
        loss = nn.functional.binary_cross_entropy_with_logits(logits, batch.labels)
        return loss, (loss.detach(), logits.detach(), batch.labels)


def read_rows(path: str, schema: Schema, on_error: Any, report: ReadReport, limit: int = 0) -> RankingTable:
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


class _Rows(torch.utils.data.Dataset[int]):
    """The row indices of a table (the engine asks for the training set's length)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class RankingTask(TaskHooks):
    """Hiformer / DCN-v2 / logistic regression on torchrec, trained by the engine.

    Args:
        cfg: the ranking config. world_size: ranks taking part (for the steps per epoch; read from the
            environment when ``None``).
    """

    name = "ranking"
    checkpoint_strategy = "dcp"

    def __init__(self, cfg: RankingConfig, world_size: int | None = None) -> None:
        import os

        self.cfg = cfg
        if getattr(cfg.train, "compile", False):
            # checked before any data is read: torch.compile through the DMP-sharded embedding bags fails only
            # at the first backward, with an in-place version error about their offsets
            raise ValueError(
                "train.compile=true is not supported by the ranking trainer: torchrec's sharded embedding bags do "
                "not compile (Hiformer's training step is fast eagerly: about 15 s per Frappe epoch on 2 cores)"
            )
        self.world_size = world_size or int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.schema = load_schema(cfg.data.schema)
        self.report = ReadReport()
        d = cfg.data
        self.val = read_rows(d.valid, self.schema, d.on_error, self.report, d.max_valid_rows)
        self.train_table: RankingTable | None = None
        t = cfg.train
        if not d.streaming:
            self.train_table = read_rows(d.train, self.schema, d.on_error, self.report, d.max_train_rows)
            self.steps_per_epoch = len(self.train_table) // (t.batch_size * self.world_size)
            if self.steps_per_epoch < 1:
                raise ValueError(
                    f"train.batch_size={t.batch_size} x {self.world_size} ranks exceeds the "
                    f"{len(self.train_table)} training rows"
                )
        else:
            if t.max_steps is None:
                raise ValueError("data.streaming=true needs train.max_steps (the file length is unknown)")
            self.steps_per_epoch = 0
        if self.report.skipped:
            logger.warning("data: %s", self.report.summary())
        if t.pipeline:
            logger.warning(
                "train.pipeline is deprecated and ignored: the engine's step trains the same weights "
                "(TrainPipelineSparseDist only overlapped the input distribution)"
            )
        self.created_group = False

    # ------------------------------------------------------------------ model and optimizer
    def build_model(self) -> nn.Module:
        from torchrec.modules.embedding_modules import EmbeddingBagCollection
        from torchrec.optim import RowWiseAdagrad
        from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward

        t = self.cfg.train
        sparse_cls: Any = {
            "adagrad": torch.optim.Adagrad,
            "rowwise_adagrad": RowWiseAdagrad,
            "sgd": torch.optim.SGD,
        }[t.sparse_optim]
        module = TrainModule(build_model(self.schema, self.cfg.model))
        for m in module.modules():
            if isinstance(m, EmbeddingBagCollection):
                apply_optimizer_in_backward(sparse_cls, m.parameters(), {"lr": t.sparse_lr})
        return module

    def wrap_model(self, model: nn.Module, ctx: DistContext) -> nn.Module:
        """torchrec DMP, table-wise sharding over the ranks (a one-process gloo group when alone)."""
        from torchrec.distributed import DistributedModelParallel
        from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
        from torchrec.distributed.planner import EmbeddingShardingPlanner, ParameterConstraints, Topology
        from torchrec.distributed.types import ShardingEnv
        from torchrec.modules.embedding_modules import EmbeddingBagCollection

        if not dist.is_initialized():
            dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
            self.created_group = True
        tables = [
            c.name for m in model.modules() if isinstance(m, EmbeddingBagCollection) for c in m.embedding_bag_configs()
        ]
        constraints = {name: ParameterConstraints(sharding_types=["table_wise"]) for name in tables}
        topology = Topology(world_size=dist.get_world_size(), compute_device="cpu")
        planner = EmbeddingShardingPlanner(topology=topology, constraints=constraints)
        sharders: list[Any] = [EmbeddingBagCollectionSharder()]
        pg = dist.GroupMember.WORLD
        plan = planner.collective_plan(model, sharders, pg)
        return DistributedModelParallel(
            model, env=ShardingEnv.from_process_group(pg), device=torch.device("cpu"), plan=plan, sharders=sharders
        )

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """DMP's fused sparse optimizer + the engine's optimizer (``train.optim``) over the dense parameters."""
        from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
        from torchrec.optim.optimizers import in_backward_optimizer_filter

        from shared_attention.engine import build_optimizer

        dense = dict(in_backward_optimizer_filter(model.named_parameters()))
        optim_cfg = self.cfg.train.optim

        def make(params: Any) -> torch.optim.Optimizer:  # the same parameters, by name (weight-decay groups)
            return build_optimizer(dense, optim_cfg)

        return CombinedOptimizer([model.fused_optimizer, KeyedOptimizerWrapper(dense, make)])

    def export_module(self, model: nn.Module) -> nn.Module:
        """The served module: the ranking model inside :class:`TrainModule`."""
        return model.model if isinstance(model, TrainModule) else model

    def teardown(self) -> None:
        """Destroys the one-process group :meth:`wrap_model` created."""
        if self.created_group and dist.is_initialized():
            dist.destroy_process_group()
        self.created_group = False

    # ------------------------------------------------------------------ data
    def build_datasets(self) -> tuple[torch.utils.data.Dataset[Any], torch.utils.data.Dataset[Any] | None]:
        n = len(self.train_table) if self.train_table is not None else self.cfg.train.batch_size * self.world_size
        return _Rows(n), _Rows(len(self.val))

    def train_batches(self, epoch: int, start: int, ctx: DistContext) -> Iterator[Any]:
        """This rank's batches of ``epoch`` from batch ``start`` on: a seeded permutation of the in-memory
        table (the same on every rank, each rank taking its slice of every global batch), or the file
        streamed in order."""
        t = self.cfg.train
        gb = t.batch_size * ctx.world_size
        if self.train_table is not None:
            perm = np.random.default_rng(t.seed * 1_000_003 + epoch).permutation(len(self.train_table))
            for k in range(start, self.steps_per_epoch):
                yield self.train_table.batch(perm[k * gb + ctx.rank * t.batch_size :][: t.batch_size])
            return
        k = 0
        for chunk in iter_table(self.cfg.data.train, self.schema, self.cfg.data.on_error, chunk_rows=gb * 64):
            for s in range(0, len(chunk) - gb + 1, gb):
                if k >= start:
                    yield chunk.batch(np.arange(s + ctx.rank * t.batch_size, s + (ctx.rank + 1) * t.batch_size))
                k += 1

    def validation_batches(self, ctx: DistContext) -> Iterator[Any]:
        """Equal shares of the validation table per rank (padded with the last row, masked out), so every
        rank runs the same number of sharded forwards."""
        n, ws = len(self.val), ctx.world_size
        per = -(-n // ws)
        idx = np.arange(ctx.rank * per, ctx.rank * per + per)
        valid = idx < n
        idx = np.where(valid, idx, n - 1)
        bs = self.cfg.train.eval_batch_size or self.cfg.train.batch_size
        for s in range(0, per, bs):
            yield self.val.batch(idx[s : s + bs]), torch.from_numpy(valid[s : s + bs])

    # ------------------------------------------------------------------ steps and metrics
    def training_step(self, model: nn.Module, batch: Any) -> Mapping[str, Tensor]:
        loss, _ = model(batch)
        return {"loss": loss}

    def validation_step(self, model: nn.Module, batch: Any) -> Mapping[str, Tensor]:
        b, valid = batch
        _, (_, logits, labels) = model(b)
        return {"logits": logits.float()[valid], "labels": labels.float()[valid]}

    def metrics(self, outputs: Sequence[Mapping[str, Tensor]]) -> dict[str, float]:
        z = torch.cat([o["logits"] for o in outputs]).numpy()
        y = torch.cat([o["labels"] for o in outputs]).numpy()
        return {"auc": roc_auc(z, y), "logloss": log_loss(z, y)}

    # ------------------------------------------------------------------ run folder
    def extra_files(self) -> dict[str, str]:
        import json

        return {"schema.json": json.dumps(self.schema.to_dict(), indent=2)}

    def metadata(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        from .predictor import RankingPredictor

        versions = {}
        for d in ("torchrec", "sa-ranking"):
            with contextlib.suppress(PackageNotFoundError):
                versions[d] = version(d)
        return {
            "arch": self.cfg.model.arch,
            "io": RankingPredictor.io_spec.to_dict(),
            "schema": self.schema.to_dict(),
            "sharding": "torchrec DistributedModelParallel, table-wise",
            "weights": f"{self.cfg.train.export} evaluation",
            "package_versions": versions,
            "data_report": {
                "rows": self.report.rows,
                "skipped": self.report.skipped,
                "errors": self.report.errors[:5],
            },
        }
