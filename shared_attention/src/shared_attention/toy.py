"""A tiny built-in task that exercises the whole engine in seconds on a CPU: pointer lookup.

Each sequence starts with a pointer token ``P_p`` followed by ``L - 1`` random value tokens; the label is
the value at position ``p``. Solving it needs content-plus-position attention from the first token, so a
two-layer transformer from the shared core learns it and a bag-of-tokens model cannot (chance = 1/vocab).
Used by ``make demo`` and by the engine's resume and torchrun tests.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from .engine.task import TaskHooks
from .engine.trainer import OptimConfig, TrainConfig
from .layers.blocks import TransformerBlock
from .layers.position import sinusoidal_1d
from .serving.predictor import FieldSpec, InputError, IOSpec, PredictorBase, load_run_model

__all__ = [
    "ToyModelConfig",
    "ToyDataConfig",
    "ToyConfig",
    "PointerTransformer",
    "PointerTask",
    "PointerPredictor",
    "make_pointer_data",
]


@dataclass(frozen=True)
class ToyModelConfig:
    """Width, depth and heads of the toy transformer."""

    dim: int = 64
    depth: int = 2
    num_heads: int = 4
    dropout: float = 0.0


@dataclass(frozen=True)
class ToyDataConfig:
    """Synthetic pointer data.

    Attributes:
        vocab: number of value tokens. seq_len: tokens per sequence (pointer included).
        n_train / n_val: sample counts. seed: data seed (independent of the training seed).
        slow_step_s: sleep this long in every training step (only for tests that must interrupt a run).
    """

    vocab: int = 8
    seq_len: int = 10
    n_train: int = 4096
    n_val: int = 512
    seed: int = 1234
    slow_step_s: float = 0.0


@dataclass(frozen=True)
class ToyConfig:
    """The whole toy config: ``model``, ``data`` and the engine's ``train`` section."""

    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    data: ToyDataConfig = field(default_factory=ToyDataConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(
            run_dir="runs/toy/pointer",
            max_steps=300,
            batch_size=64,
            eval_every=100,
            checkpoint_every=100,
            log_every=20,
            monitor="accuracy",
            monitor_mode="max",
            grad_clip=1.0,
            optim=OptimConfig(name="adamw", lr=2e-3, weight_decay=0.01),
        )
    )


def make_pointer_data(n: int, vocab: int, seq_len: int, seed: int) -> TensorDataset:
    """``n`` pointer sequences ``(n, seq_len)`` (int64) and labels ``(n,)``."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, vocab, (n, seq_len - 1), generator=g)
    ptr = torch.randint(0, seq_len - 1, (n,), generator=g)
    tokens = torch.cat([(vocab + ptr)[:, None], values], dim=1)  # pointer tokens follow the value tokens
    labels = values.gather(1, ptr[:, None]).squeeze(1)
    return TensorDataset(tokens, labels)


class PointerTransformer(nn.Module):
    """Token embedding + fixed sinusoidal positions + pre-norm transformer blocks + a head on token 0.

    Args:
        vocab: value tokens. seq_len: maximum length. dim, depth, num_heads, dropout: see ToyModelConfig.
    """

    def __init__(
        self, vocab: int, seq_len: int, dim: int = 64, depth: int = 2, num_heads: int = 4, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab + seq_len, dim)
        self.pos: torch.Tensor
        self.register_buffer("pos", sinusoidal_1d(seq_len, dim), persistent=False)
        self.blocks = nn.ModuleList(TransformerBlock(dim, num_heads, mlp_ratio=2.0, drop=dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens: (B, L) int64
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]  # (B, L, C)
        for blk in self.blocks:
            x = blk(x)  # (B, L, C)
        return self.head(self.norm(x[:, 0]))  # (B, vocab)


def build_model(cfg: ToyConfig) -> PointerTransformer:
    """The pointer transformer of ``cfg``."""
    m, d = cfg.model, cfg.data
    return PointerTransformer(d.vocab, d.seq_len, m.dim, m.depth, m.num_heads, m.dropout)


class PointerTask(TaskHooks):
    """The toy :class:`~shared_attention.engine.TrainTask`: cross-entropy, accuracy on a held-out set."""

    name = "toy-pointer"

    def __init__(self, cfg: ToyConfig) -> None:
        self.cfg = cfg

    def build_model(self) -> nn.Module:
        return build_model(self.cfg)

    def build_datasets(self) -> tuple[Dataset[Any], Dataset[Any] | None]:
        d = self.cfg.data
        return (
            make_pointer_data(d.n_train, d.vocab, d.seq_len, d.seed),
            make_pointer_data(d.n_val, d.vocab, d.seq_len, d.seed + 1),
        )

    def training_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        tokens, labels = batch
        if self.cfg.data.slow_step_s > 0:
            time.sleep(self.cfg.data.slow_step_s)
        logits = model(tokens)  # (B, vocab)
        loss = F.cross_entropy(logits, labels)
        return {"loss": loss, "accuracy": (logits.argmax(-1) == labels).float().mean()}

    def validation_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        tokens, labels = batch
        logits = model(tokens)
        return {
            "loss_sum": F.cross_entropy(logits.float(), labels, reduction="sum"),
            "correct": (logits.argmax(-1) == labels).sum(),
            "count": torch.tensor(labels.numel()),
        }

    def metrics(self, outputs: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
        n = sum(float(o["count"]) for o in outputs)
        return {
            "loss": sum(float(o["loss_sum"]) for o in outputs) / n,
            "accuracy": sum(float(o["correct"]) for o in outputs) / n,
        }

    def metadata(self) -> dict[str, Any]:
        d = self.cfg.data
        return {"io": {"input": f"(B, {d.seq_len}) int64 tokens", "output": f"(B, {d.vocab}) logits"}}


class PointerPredictor(PredictorBase):
    """Serves a trained toy run: JSON ``{"sequences": [[ptr, v1, v2, ...], ...]}`` -> predicted values.

    Pointers are given as positions ``0 .. seq_len-2`` into the value list (the predictor adds the pointer
    token offset); values must lie in ``0 .. vocab-1``.
    """

    domain: ClassVar[str] = "toy"
    io_spec: ClassVar[IOSpec] = IOSpec(
        inputs=(
            FieldSpec(
                "sequences",
                "json",
                ("application/json",),
                "(B, seq_len) int",
                "pointer position followed by seq_len-1 value tokens",
            ),
        ),
        outputs=(FieldSpec("values", "json", ("application/json",), "(B,) int", "the value each pointer selects"),),
    )

    model: PointerTransformer

    def __init__(self, model: PointerTransformer, cfg: ToyConfig, device: torch.device) -> None:
        self.model = model.eval()
        self.cfg = cfg
        self.device = device

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> PointerPredictor:
        """Reads ``config.yaml`` + ``model.safetensors`` of a toy run."""
        run, cfg, model = load_run_model(run_dir, ToyConfig, build_model, cls.domain)
        pred = cls(cast(PointerTransformer, model.to(device)), cfg, torch.device(device))
        pred.run = run
        return pred

    def preprocess(self, raw: Any) -> torch.Tensor:
        d = self.cfg.data
        if not isinstance(raw, Mapping) or "sequences" not in raw:
            raise InputError("expected a JSON object with a 'sequences' list", "sequences")
        seqs = raw["sequences"]
        if not isinstance(seqs, list) or not seqs:
            raise InputError("must be a non-empty list of sequences", "sequences")
        rows = []
        for i, s in enumerate(seqs):
            where = f"sequences[{i}]"
            if not isinstance(s, list) or len(s) != d.seq_len:
                raise InputError(f"must be a list of {d.seq_len} integers", where)
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in s):
                raise InputError("all entries must be integers", where)
            if not 0 <= s[0] < d.seq_len - 1:
                raise InputError(f"pointer {s[0]} outside 0..{d.seq_len - 2}", where)
            if not all(0 <= t < d.vocab for t in s[1:]):
                raise InputError(f"values must lie in 0..{d.vocab - 1}", where)
            rows.append([d.vocab + s[0], *s[1:]])
        return torch.tensor(rows, dtype=torch.long, device=self.device)  # (B, L)

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model(batch)  # (B, vocab)

    def postprocess(self, output: torch.Tensor) -> dict[str, Any]:
        return {"values": output.argmax(-1).tolist()}
