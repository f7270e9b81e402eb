"""Configs of the ranking package: model, data and trainer settings (frozen dataclasses + YAML)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared_attention.engine import load_bundled_config

from .models import ModelConfig

__all__ = ["RankDataConfig", "RankTrainConfig", "RankingConfig", "CONFIG_DIR", "load_ranking_config"]

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
class RankTrainConfig:
    """Trainer settings (torchrec DistributedModelParallel, table-wise sharding, DCP checkpoints).

    Attributes:
        run_dir: run folder; an existing one resumes from its newest complete checkpoint.
        epochs: passes over the training set (in-memory data). max_steps: overrides ``epochs`` when set
            (needed with ``data.streaming``).
        batch_size: per-rank batch. eval_batch_size: evaluation batch.
        sparse_optim / sparse_lr: optimizer fused into the embedding tables' backward (CPU kernels support
            ``adagrad``, ``rowwise_adagrad`` and ``sgd``).
        dense_optim / dense_lr / weight_decay: optimizer of the dense parameters (``adam`` or ``adagrad``).
        eval_every: evaluate + checkpoint every N steps (0: at the end of each epoch).
        keep_checkpoints: complete DCP checkpoints to keep.
        log_every: log training loss every N steps.
        max_minutes: wall-clock budget of this invocation (checkpoints and stops; resume continues).
        pipeline: use torchrec's ``TrainPipelineSparseDist`` (input distribution overlapped with compute).
        seed / progress: seeding and tqdm on rank 0.
        export: which weights ``model.safetensors`` holds: ``best`` (best validation AUC) or ``last`` (the
            latest evaluation; use it when the validation file is the test split, as in rank-sample).
        num_threads: torch intra-op threads per process (0: torch's default; 1 is fastest for these small
            models on a shared CPU).
    """

    run_dir: str = "runs/ranking/hiformer"
    epochs: int = 2
    max_steps: int | None = None
    batch_size: int = 256
    eval_batch_size: int = 4096
    sparse_optim: Literal["adagrad", "rowwise_adagrad", "sgd"] = "adagrad"
    sparse_lr: float = 0.05
    dense_optim: Literal["adam", "adagrad"] = "adam"
    dense_lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 0
    keep_checkpoints: int = 2
    log_every: int = 50
    max_minutes: float | None = None
    pipeline: bool = False
    seed: int = 0
    progress: bool = True
    num_threads: int = 0
    export: Literal["best", "last"] = "best"


@dataclass(frozen=True)
class RankingConfig:
    """The whole ranking config (YAML files in ``sa_ranking/configs``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: RankDataConfig = field(default_factory=RankDataConfig)
    train: RankTrainConfig = field(default_factory=RankTrainConfig)


def load_ranking_config(
    name_or_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> RankingConfig:
    """Loads a bundled config (``hiformer``, ``dcnv2``, ``lr``, ``criteo-hiformer``) or a YAML path, then overrides."""
    return load_bundled_config(RankingConfig, name_or_path, CONFIG_DIR, overrides)
