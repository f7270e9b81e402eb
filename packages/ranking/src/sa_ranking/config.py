"""Configs of the ranking package: model, data and trainer settings (frozen dataclasses + YAML)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shared_attention.engine import OptimConfig, TrainConfig, load_bundled_config

from .models import ModelConfig

__all__ = [
    "RankDataConfig",
    "RankingTrainConfig",
    "RankTrainConfig",
    "RankingConfig",
    "CONFIG_DIR",
    "load_ranking_config",
]

CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class RankDataConfig:
    """Where the data is and how to read it.

    Attributes:
        schema: schema JSON/YAML (``criteo`` or ``criteo:<table_size>`` for the built-in Criteo schema).
        train / valid: data files (``.csv``, ``.parquet``, ``.jsonl`` or Criteo ``.tsv``/``.gz``).
        on_error: ``reject`` (stop at the first bad row, naming file and line) or ``skip`` (skip and count).
        streaming: stream the training file in order (bounded memory, Criteo-size data) instead of loading
            it into memory and shuffling.
        max_train_rows / max_valid_rows: use only the first N rows of the file (0: all; quick demos).
    """

    schema: str = "data/rank-sample/schema.json"
    train: str = "data/rank-sample/train.csv"
    valid: str = "data/rank-sample/test.csv"
    on_error: Literal["reject", "skip"] = "reject"
    streaming: bool = False
    max_train_rows: int = 0
    max_valid_rows: int = 0


@dataclass(frozen=True)
class RankingTrainConfig(TrainConfig):
    """The engine's :class:`~shared_attention.engine.TrainConfig` plus what torchrec training adds.

    Everything the engine knows (``run_dir``, ``batch_size`` per rank, ``eval_every``, ``keep_checkpoints``,
    ``max_minutes``, ``seed``, ``optim`` for the dense parameters, ``schedule`` ...) means what it means for
    every domain. Ranking adds:

    Attributes:
        max_steps: optimizer steps in total; ``None`` (the default) takes ``epochs`` passes over the in-memory
            training set (needed with ``data.streaming``).
        epochs: passes over the training set when ``max_steps`` is not set.
        eval_every: evaluate + checkpoint every N steps (0: at the end of each epoch).
        sparse_optim / sparse_lr: optimizer fused into the embedding tables' backward (CPU kernels support
            ``adagrad``, ``rowwise_adagrad`` and ``sgd``).
        export: which weights ``model.safetensors`` holds: ``best`` (best validation AUC) or ``last`` (the
            latest evaluation; use it when the validation file is the test split, as in rank-sample).
        num_threads: torch intra-op threads per process (0: torch's default; 1 is fastest for these small
            models on a shared CPU).
        pipeline: deprecated and ignored: torchrec's ``TrainPipelineSparseDist`` trained the same weights as
            the plain step (tested to 1e-5); every domain now trains in the one engine loop.
        dense_optim / dense_lr / weight_decay: deprecated spellings of ``optim.name`` / ``optim.lr`` /
            ``optim.weight_decay``; when set they override ``optim``.
    """

    run_dir: str = "runs/ranking/hiformer"
    max_steps: int | None = None  # type: ignore[assignment]
    epochs: int = 2
    batch_size: int = 256
    eval_batch_size: int | None = 4096
    log_every: int = 50
    device: str = "cpu"
    sparse_optim: Literal["adagrad", "rowwise_adagrad", "sgd"] = "adagrad"
    sparse_lr: float = 0.05
    export: Literal["best", "last"] = "best"
    num_threads: int = 0
    pipeline: bool = False
    dense_optim: Literal["adam", "adagrad"] | None = None
    dense_lr: float | None = None
    weight_decay: float | None = None
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-3))

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 or null, got {self.max_steps}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        steps = self.max_steps
        object.__setattr__(self, "max_steps", steps or 1)  # the engine's checks, with "None: from epochs"
        try:
            TrainConfig.__post_init__(self)
        finally:
            object.__setattr__(self, "max_steps", steps)
        old: dict[str, Any] = {"name": self.dense_optim, "lr": self.dense_lr, "weight_decay": self.weight_decay}
        given = {k: v for k, v in old.items() if v is not None}
        if given:
            object.__setattr__(self, "optim", dataclasses.replace(self.optim, **given))

    def resolved(self, steps_per_epoch: int) -> TrainConfig:
        """The engine config of this run: ``max_steps`` from ``epochs`` and ``eval_every`` per epoch when unset,
        checkpoints at every evaluation, the best checkpoint chosen by validation AUC (``export: best``)."""
        max_steps = self.max_steps or self.epochs * steps_per_epoch
        every = self.eval_every or steps_per_epoch or max_steps
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(TrainConfig)}
        fields.update(
            max_steps=max_steps,
            eval_every=every,
            checkpoint_every=every,
            monitor="auc" if self.export == "best" else None,
            monitor_mode="max",
        )
        return TrainConfig(**fields)


#: deprecated name (one release)
RankTrainConfig = RankingTrainConfig


@dataclass(frozen=True)
class RankingConfig:
    """The whole ranking config (YAML files in ``sa_ranking/configs``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: RankDataConfig = field(default_factory=RankDataConfig)
    train: RankingTrainConfig = field(default_factory=RankingTrainConfig)


def load_ranking_config(
    name_or_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RankingConfig:
    """Loads a bundled config (``hiformer``, ``dcnv2``, ``lr``, ``criteo-hiformer``) or a YAML path, then overrides."""
    return load_bundled_config(RankingConfig, name_or_path, CONFIG_DIR, overrides)
