"""One training loop for every domain: AMP, accumulation, clipping, schedules, evaluation, best-checkpoint
tracking, early stopping, EMA, automatic resume, DDP under torchrun, CSV + TensorBoard logs, tqdm on rank 0.

Determinism: with ``num_workers=0`` (or datasets whose randomness depends only on the sample index and
epoch) a run that is killed and resumed from a checkpoint ends with weights bit-identical to an
uninterrupted run of the same length on CPU: the sampler order depends only on (seed, epoch), the
learning rate only on the step, and the RNG states of every rank are checkpointed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import checkpoint as ckpt_io
from .config import config_to_dict, dump_config
from .data import ResumableSampler
from .distributed import DistContext, all_gather_objects, barrier, cleanup_distributed, init_distributed
from .loggers import CSVLogger, MultiLogger, TensorBoardLogger
from .schedules import LRSchedule, ScheduleConfig
from .seeding import get_rng_state, seed_everything, set_rng_state
from .strategy import get_strategy
from .task import TrainTask, move_to_device

logger = logging.getLogger(__name__)

# Every elapsed-time reading of the training loop (time budget, by-time schedule, FitResult.seconds) goes
# through this clock: monotonic, so wall-clock adjustments do not bend a budget, and replaceable, so tests
# can drive a time budget with a fake clock instead of depending on the machine's speed.
_clock = time.monotonic

__all__ = [
    "OptimConfig",
    "TrainConfig",
    "FitResult",
    "fit",
    "build_optimizer",
    "ModelEMA",
    "NO_DECAY_NAMES",
    "no_weight_decay",
    "param_groups",
]


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer settings used when the task does not build its own.

    Attributes:
        name: ``adam``, ``adamw``, ``sgd`` or ``adagrad``.
        lr: base learning rate. weight_decay: L2 (adam/sgd/adagrad) or decoupled (adamw) decay; applied to
            weight matrices and convolution kernels only: biases, norm scales, embeddings and position tables
            (see :func:`no_weight_decay`) are not decayed, as in timm, Swin and nanoGPT.
        decay_all: decay every parameter (the behaviour before norms and biases were excluded).
        betas: Adam betas (HAT: 0.9, 0.99). momentum: SGD momentum. eps: Adam/Adagrad epsilon.
    """

    name: Literal["adam", "adamw", "sgd", "adagrad"] = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    eps: float = 1e-8
    decay_all: bool = False


#: name fragments of parameters that are never weight-decayed (besides every 0-D / 1-D tensor)
NO_DECAY_NAMES: tuple[str, ...] = (
    "bias",
    "norm",
    "embedding",
    "pos_embed",
    "absolute_pos",
    "position",
    "relative_position",
    "bias_table",
    "cls_token",
    "task_token",
)


def no_weight_decay(name: str, param: torch.Tensor, extra: frozenset[str] = frozenset()) -> bool:
    """Whether parameter ``name`` is exempt from weight decay: 0-D/1-D tensors (biases, norm scales, gains),
    embeddings and position tables (by name, :data:`NO_DECAY_NAMES`), and names a model lists in its own
    ``no_weight_decay()`` (timm's convention)."""
    if param.ndim <= 1 or name in extra:
        return True
    lowered = name.lower()
    return any(frag in lowered for frag in NO_DECAY_NAMES)


def param_groups(
    named: Iterable[tuple[str, torch.Tensor]],
    weight_decay: float,
    decay_all: bool = False,
    extra: frozenset[str] = frozenset(),
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: ``[{"params": decayed, "weight_decay": wd}, {"params": rest, "weight_decay": 0}]``
    (empty groups dropped; one group when ``decay_all`` or ``weight_decay == 0``)."""
    items = [(n, p) for n, p in named if p.requires_grad]
    if decay_all or weight_decay == 0:
        return [{"params": [p for _, p in items], "weight_decay": weight_decay}] if items else []
    decay = [p for n, p in items if not no_weight_decay(n, p, extra)]
    keep = [p for n, p in items if no_weight_decay(n, p, extra)]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


@dataclass(frozen=True)
class TrainConfig:
    """Engine settings shared by every domain (nested as ``train:`` in domain configs).

    Attributes:
        run_dir: the run folder; an existing one is resumed from its newest complete checkpoint.
        max_steps: optimizer steps in total.
        batch_size: per-rank micro-batch size. eval_batch_size: defaults to ``batch_size``.
        grad_accum_steps: micro-batches per optimizer step.
        grad_clip: max global gradient norm (``None``: no clipping).
        amp: ``off``, ``bf16``, ``fp16`` (CUDA only, with loss scaling) or ``auto`` (bf16 on CUDA when
            supported, off on CPU).
        eval_every: evaluate every N steps (0: only at the end; needs a validation set).
        checkpoint_every: write a resumable checkpoint every N steps (and at the end).
        keep_checkpoints: how many complete checkpoints to keep (0: all).
        log_every: log training scalars every N steps.
        monitor / monitor_mode: validation metric that decides the best checkpoint (``None``: none).
        early_stop_patience: stop after this many evaluations without improvement (0: never).
        max_minutes: wall-clock budget of this invocation; when spent, the run evaluates, checkpoints and stops
            (``None``: no budget). Resuming later continues to ``max_steps``. With ``schedule.by_time`` the budget
            covers all invocations together and the cosine / poly schedule follows the clock.
        ema_decay: exponential moving average of weights (0: off); evaluation and the served weights use it.
        seed / deterministic: see :func:`seed_everything`.
        num_workers: DataLoader workers. drop_last: drop the incomplete last training batch.
        resume: resume from the run folder when it has a checkpoint.
        restart: when the run folder has checkpoints but none is usable (all truncated or corrupted), start
            again from step 0 instead of stopping with an error (the CLIs' ``train --restart``).
        device: ``auto``, ``cpu``, ``cuda``...
        compile: run the training steps through ``torch.compile`` (inductor; the default ``false`` runs eager).
            The first steps compile (seconds to minutes); evaluation, checkpoints and the served weights use the
            uncompiled module, so run folders are the same either way. Measured on 2 CPU cores (BENCHMARKS.md,
            speed table): 1.1-1.2x per training step for HAT-S and MossFormer, and it fails for models whose
            operators lack compile support (torchrec's embedding bags), so it is an option, not the default.
        progress / tensorboard: show tqdm on rank 0 / write TensorBoard events.
        optim / schedule: see :class:`OptimConfig`, :class:`ScheduleConfig`.
    """

    run_dir: str = "runs/default"
    max_steps: int = 1000
    batch_size: int = 8
    eval_batch_size: int | None = None
    grad_accum_steps: int = 1
    grad_clip: float | None = None
    amp: Literal["off", "bf16", "fp16", "auto"] = "auto"
    eval_every: int = 0
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    monitor: str | None = None
    monitor_mode: Literal["min", "max"] = "min"
    early_stop_patience: int = 0
    max_minutes: float | None = None
    ema_decay: float = 0.0
    seed: int = 0
    deterministic: bool = False
    num_workers: int = 0
    drop_last: bool = True
    resume: bool = True
    restart: bool = False
    device: str = "auto"
    compile: bool = False
    progress: bool = True
    tensorboard: bool = True
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum_steps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_every < 0:
            raise ValueError(f"eval_every must be >= 0, got {self.eval_every}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or null, got {self.grad_clip}")


@dataclass
class FitResult:
    """What :func:`fit` returns (on every rank); ``model`` is the trained (unwrapped, non-EMA) module."""

    run_dir: Path
    step: int
    resumed_from: int | None
    best_step: int | None
    best_value: float | None
    last_metrics: dict[str, float]
    train_loss: float | None
    seconds: float
    model: nn.Module | None = None


def _fusable(params: list[torch.Tensor]) -> bool | None:
    """``True`` when every parameter is a plain floating tensor on the CPU or one CUDA device: Adam / AdamW then
    update all of them in one fused kernel instead of a dozen small ops per tensor (the same update; on the CPU the
    default is that per-tensor loop). ``None`` (PyTorch's default) otherwise."""
    if not params:
        return None
    devices = {p.device for p in params}
    plain = all(type(p) is nn.Parameter or type(p) is torch.Tensor for p in params)
    ok = plain and len(devices) == 1 and next(iter(devices)).type in ("cpu", "cuda")
    return True if ok and all(p.is_floating_point() for p in params) else None


def build_optimizer(
    model: nn.Module | Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]], cfg: OptimConfig
) -> torch.optim.Optimizer:
    """Builds the optimizer named in ``cfg`` over trainable parameters, weight decay per :func:`param_groups`.

    Args:
        model: a module, or named parameters (a mapping or ``(name, parameter)`` pairs).
        cfg: the optimizer settings.
    """
    extra: frozenset[str] = frozenset()
    if isinstance(model, nn.Module):
        hook = getattr(model, "no_weight_decay", None)
        extra = frozenset(hook()) if callable(hook) else frozenset()
        named: Iterable[tuple[str, torch.Tensor]] = model.named_parameters()
    elif isinstance(model, Mapping):
        named = model.items()
    else:
        named = model
    groups = param_groups(named, cfg.weight_decay, cfg.decay_all, extra)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    fused = _fusable([p for g in groups for p in g["params"]])
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, fused=fused)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(groups, lr=cfg.lr, eps=cfg.eps)
    raise ValueError(f"optim.name: unknown optimizer {cfg.name!r}")


class ModelEMA:
    """Exponential moving average of a model's floating-point parameters and buffers.

    ``ema = decay * ema + (1 - decay) * current`` after every optimizer step (HAT trains with 0.999).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point():
                s.mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                s.copy_(v)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """Temporarily loads the averaged weights into ``model``."""
        backup = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield
        finally:
            model.load_state_dict(backup)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("shared-attention",):
        with contextlib.suppress(PackageNotFoundError):
            found[dist] = version(dist)
    return found


def _autocast(device: torch.device, amp: str) -> tuple[contextlib.AbstractContextManager[Any], bool]:
    """The autocast context for ``amp`` and whether fp16 loss scaling is needed."""
    if amp == "auto":
        amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
    if amp == "off":
        return contextlib.nullcontext(), False
    if amp == "fp16":
        if device.type != "cuda":
            raise ValueError("train.amp=fp16 needs CUDA; use bf16 or off on CPU")
        return torch.autocast("cuda", dtype=torch.float16), True
    return torch.autocast(device.type, dtype=torch.bfloat16), False


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _detach_cpu(out: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {
        k: (v.detach().float().cpu() if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in out.items()
    }


class _Trainer:
    def __init__(self, task: TrainTask, cfg: TrainConfig, full_config: Any, ctx: DistContext) -> None:
        self.task, self.cfg, self.ctx = task, cfg, ctx
        self.full_config = full_config if full_config is not None else cfg
        self.run_dir = Path(cfg.run_dir)
        self.device = ctx.device

    # ----------------------------------------------------------------- setup
    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.seed, cfg.deterministic)
        self.model = self.task.build_model().to(self.device)
        self.strategy = get_strategy(getattr(self.task, "checkpoint_strategy", None))
        # wrap first (DDP, or the task's own wrapper such as torchrec DMP): a sharded model's optimizer and
        # checkpoints exist only on the wrapped model
        wrap = getattr(self.task, "wrap_model", None)
        wrapped = wrap(self.model, ctx) if callable(wrap) else None
        self.task_wrapped = wrapped is not None
        if wrapped is not None:
            self.train_model: nn.Module = wrapped
        elif ctx.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        else:
            self.train_model = self.model
        # the module training_step calls: compiled with train.compile; state dicts, optimizers, evaluation and
        # exports keep using the eager modules, so checkpoints and run folders are the same either way
        self.step_model = cast(nn.Module, torch.compile(self.train_model)) if cfg.compile else self.train_model
        custom = getattr(self.task, "build_optimizer", None)
        opt = custom(self.train_model if self.task_wrapped else self.model) if callable(custom) else None
        self.optimizer = opt if opt is not None else build_optimizer(self.model, cfg.optim)
        budget = cfg.max_minutes * 60 if cfg.max_minutes is not None else None
        self.schedule = LRSchedule(self.optimizer, cfg.schedule, cfg.max_steps, budget)
        self.autocast, need_scaler = _autocast(self.device, cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda") if need_scaler else None
        self.ema = ModelEMA(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.step, self.epoch, self.micro_in_epoch = 0, 0, 0
        self.best_value: float | None = None
        self.best_step: int | None = None
        self.bad_evals = 0
        self.resumed_from: int | None = None
        self.last_metrics: dict[str, float] = {}

        self.best_pending = False
        found = self.strategy.resume(self.run_dir, self._ckpt_model(), self.optimizer) if cfg.resume else None
        existing = ckpt_io.list_checkpoints(self.run_dir) if cfg.resume else []
        if found is None and existing and not cfg.restart:
            raise ckpt_io.CheckpointError(
                f"{self.run_dir}: none of its {len(existing)} checkpoint(s) is usable (newest: {existing[-1].name}; "
                "truncated or corrupted); give --restart (train.restart=true) to train again from step 0, "
                "or use a new run_dir"
            )
        if found is None and existing:
            logger.warning("%s: no usable checkpoint; restarting from step 0 (train.restart)", self.run_dir)
        if found is not None:
            self._restore(*found)
        else:
            seed_everything(cfg.seed + ctx.rank, cfg.deterministic)
        if ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._check_config_drift()
            ckpt_io.atomic_write_text(self.run_dir / "config.yaml", dump_config(self.full_config))
            files = getattr(self.task, "extra_files", None)
            for name, text in (files() if callable(files) else {}).items():
                ckpt_io.atomic_write_text(self.run_dir / name, text)
            self._write_metadata({})
        barrier(ctx)

        train_ds, val_ds = self.task.build_datasets()
        if len(train_ds) == 0:  # type: ignore[arg-type]
            raise ValueError(f"task {self.task.name!r}: the training set is empty")
        self.train_ds: Dataset[Any] = train_ds
        self.val_ds = val_ds
        self.sampler = ResumableSampler(
            train_ds,  # type: ignore[arg-type]
            shuffle=True,
            seed=cfg.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )
        hook = getattr(self.task, "collate_fn", None)
        self.collate = hook() if callable(hook) else None
        if cfg.drop_last and self.sampler.per_rank < cfg.batch_size:
            raise ValueError(
                f"train.batch_size={cfg.batch_size} exceeds the {self.sampler.per_rank} training samples per rank "
                "(lower the batch size or set train.drop_last=false)"
            )
        self.loggers: MultiLogger | None = None
        if ctx.is_main:
            resume_step = self.step if self.resumed_from is not None else None
            lgs: list[Any] = [CSVLogger(self.run_dir / "metrics.csv", resume_step=resume_step)]
            if cfg.tensorboard:
                lgs.append(TensorBoardLogger(self.run_dir / "tb", purge_step=resume_step))
            self.loggers = MultiLogger(lgs)

    def _check_config_drift(self) -> None:
        path = self.run_dir / "config.yaml"
        if self.resumed_from is None or not path.exists():
            return
        import yaml

        try:
            old = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            return
        new = config_to_dict(self.full_config)

        def flat(d: Any, prefix: str = "") -> dict[str, Any]:
            if not isinstance(d, dict):
                return {prefix: d}
            out: dict[str, Any] = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}.{k}" if prefix else str(k)))
            return out

        fo, fn = flat(old), flat(new)
        changed = sorted(k for k in set(fo) | set(fn) if fo.get(k) != fn.get(k))
        if changed:
            logger.warning("resuming %s with a changed config: %s", self.run_dir, ", ".join(changed))

    def _ckpt_model(self) -> nn.Module:
        """The module whose state a checkpoint holds: the task's wrapper (sharded state), else the bare model."""
        return self.train_model if self.task_wrapped else self.model

    def _restore(self, path: Path, state: dict[str, Any]) -> None:
        """Everything but the model and optimizer (the checkpoint strategy loaded those)."""
        try:
            self.schedule.load_state_dict(state["schedule"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            if self.ema is not None:
                if not state.get("ema"):
                    raise KeyError("ema")
                self.ema.shadow = {k: v.to(self.device) for k, v in state["ema"].items()}
            self.step = int(state["step"])
            self.epoch = int(state["epoch"])
            self.micro_in_epoch = int(state["micro_in_epoch"])
            self.best_value = state.get("best_value")
            self.best_step = state.get("best_step")
            self.bad_evals = int(state.get("bad_evals", 0))
            self.last_metrics = dict(state.get("last_metrics", {}))
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ckpt_io.CheckpointError(
                f"{path}: checkpoint does not match this model/config ({type(exc).__name__}: {exc}); "
                "use a new run_dir or train.resume=false"
            ) from exc
        rngs = state.get("rng", [])
        if len(rngs) == self.ctx.world_size:
            set_rng_state(rngs[self.ctx.rank])
        else:
            logger.warning(
                "checkpoint has RNG states of %d ranks, running %d: reseeding", len(rngs), self.ctx.world_size
            )
            seed_everything(self.cfg.seed + self.ctx.rank + self.step, self.cfg.deterministic)
        self.resumed_from = self.step
        if self.ctx.is_main:
            logger.info("resumed %s from %s (step %d)", self.run_dir, path, self.step)

    def _write_metadata(self, extra: Mapping[str, Any]) -> None:
        hook = getattr(self.task, "metadata", None)
        meta: dict[str, Any] = {
            "task": self.task.name,
            "versions": _versions(),
            "git_commit": _git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "world_size": self.ctx.world_size,
            "weights": "ema" if self.ema is not None else "raw",
        }
        if callable(hook):
            meta.update(hook())
        meta.update(extra)
        ckpt_io.atomic_write_text(self.run_dir / "metadata.json", json.dumps(meta, indent=2, default=str))

    # ------------------------------------------------------------- helpers
    def _loader(self, start_index: int) -> DataLoader[Any]:
        self.sampler.set_epoch(self.epoch, start_index)
        g = torch.Generator()
        g.manual_seed(self.cfg.seed * 7919 + self.epoch * 104729 + self.ctx.rank * 31 + start_index)
        return DataLoader(
            self.train_ds,
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            num_workers=self.cfg.num_workers,
            collate_fn=self.collate,
            drop_last=self.cfg.drop_last,
            generator=g,
            pin_memory=self.device.type == "cuda",
        )

    def _export_prefix(self) -> str:
        """Key prefix of the served submodule (the task's ``export_module`` hook; ``""``: the whole model)."""
        hook = getattr(self.task, "export_module", None)
        if not callable(hook):
            return ""
        target = hook(self.model)
        for name, module in self.model.named_modules():
            if module is target:
                return f"{name}." if name else ""
        raise ValueError(f"task {self.task.name!r}: export_module returned a module outside the model")

    def _exported(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        prefix = self._export_prefix()
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    def _serving_state(self) -> dict[str, torch.Tensor]:
        return self._exported(self.ema.shadow if self.ema is not None else self.model.state_dict())

    def _write_serving(self, ckpt: Path | None = None) -> None:
        """Writes the served ``model.safetensors`` (rank 0): the current weights, or those of checkpoint ``ckpt``
        when the strategy can only export from a checkpoint (sharded models)."""
        if not self.ctx.is_main:
            return
        if self.strategy.exports_from_checkpoint:
            if ckpt is None:
                raise RuntimeError("a sharded model's served weights are exported from a checkpoint")
            state = self._exported(self.strategy.export(ckpt, self.task.build_model))
        else:
            state = self._serving_state()
        ckpt_io.save_weights(self.run_dir / ckpt_io.MODEL_FILE, state, {"step": str(self.step)})

    def _save_checkpoint(self) -> None:
        rngs = all_gather_objects(self.ctx, get_rng_state())
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "micro_in_epoch": self.micro_in_epoch,
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.shadow if self.ema is not None else None,
            "best_value": self.best_value,
            "best_step": self.best_step,
            "bad_evals": self.bad_evals,
            "last_metrics": self.last_metrics,
            "rng": rngs,
            "world_size": self.ctx.world_size,
        }
        path = self.strategy.save(
            self.run_dir,
            self.step,
            self._ckpt_model(),
            self.optimizer,
            state,
            self.cfg.keep_checkpoints,
            self.best_step,
            self.ctx,
        )
        if self.best_pending:
            self._write_serving(path)
            self.best_pending = False
        barrier(self.ctx)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if self.val_ds is None:
            return {}
        model = self._ckpt_model()  # a task's wrapper (sharded tables) evaluates through itself
        was_training = model.training
        model.eval()
        hook = getattr(self.task, "validation_batches", None)
        custom = hook(self.ctx) if callable(hook) else None
        loader: Iterable[Any]
        if custom is not None:
            loader = custom
        else:
            n = len(self.val_ds)  # type: ignore[arg-type]
            shard = list(range(self.ctx.rank, n, self.ctx.world_size))
            loader = DataLoader(
                torch.utils.data.Subset(self.val_ds, shard),
                batch_size=self.cfg.eval_batch_size or self.cfg.batch_size,
                shuffle=False,
                num_workers=self.cfg.num_workers,
                collate_fn=self.collate,
            )
        outputs: list[dict[str, torch.Tensor]] = []
        ctx = self.ema.applied(model) if self.ema is not None else contextlib.nullcontext()
        full = getattr(self.task, "full_precision_eval", False)
        with ctx:
            start = getattr(self.task, "on_evaluation_start", None)
            if callable(start):
                start(model)
            for batch in loader:
                batch = move_to_device(batch, self.device)
                with contextlib.nullcontext() if full else self.autocast:
                    outputs.append(_detach_cpu(self.task.validation_step(model, batch)))
        gathered = [o for part in all_gather_objects(self.ctx, outputs) for o in part]
        metrics = {k: float(v) for k, v in self.task.metrics(gathered).items()}
        model.train(was_training)
        return metrics

    def _after_eval(self, metrics: dict[str, float]) -> bool:
        """Best tracking, plateau schedule, early stop; returns True to stop."""
        cfg = self.cfg
        self.last_metrics = metrics
        if self.loggers is not None:
            self.loggers.log(self.step, "val", metrics)
            # wall-clock training minutes at this evaluation (earlier evaluations included): curves against the clock
            self.loggers.log(self.step, "time", {"train_minutes": self.schedule.elapsed_s / 60.0})
        mon = cfg.monitor
        if mon is None:
            return False
        if mon not in metrics:
            raise KeyError(f"train.monitor={mon!r} is not among the validation metrics {sorted(metrics)}")
        value = metrics[mon]
        self.schedule.observe(value, cfg.monitor_mode)
        improved = math.isfinite(value) and (
            self.best_value is None
            or (value < self.best_value if cfg.monitor_mode == "min" else value > self.best_value)
        )
        if improved:
            self.best_value, self.best_step, self.bad_evals = value, self.step, 0
            if self.strategy.exports_from_checkpoint:
                self.best_pending = True  # written from the checkpoint that follows this evaluation
            else:
                self._write_serving()
        else:
            self.bad_evals += 1
        if self.ctx.is_main:
            hook = getattr(self.task, "on_evaluation_end", None)
            if callable(hook):
                ema_ctx = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
                with ema_ctx:
                    hook(self.model, self.run_dir, self.step, metrics)
        return cfg.early_stop_patience > 0 and self.bad_evals >= cfg.early_stop_patience

    # ---------------------------------------------------------------- loop
    def run(self) -> FitResult:
        cfg, ctx = self.cfg, self.ctx
        t0 = _clock()
        elapsed_before = self.schedule.elapsed_s  # training time of earlier invocations (resume)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.max_steps,
            initial=self.step,
            disable=not (ctx.is_main and cfg.progress),
            desc=f"{self.task.name}",
            unit="step",
            dynamic_ncols=True,
            mininterval=0.2 if sys.stderr.isatty() else 5.0,
        )
        self.train_model.train()
        accum = cfg.grad_accum_steps
        sums: dict[str, torch.Tensor] = {}
        n_logged = 0
        last_loss: float | None = None
        stop = self.step >= cfg.max_steps
        micro = 0
        batches_hook = getattr(self.task, "train_batches", None)
        while not stop:
            custom = batches_hook(self.epoch, self.micro_in_epoch, ctx) if callable(batches_hook) else None
            loader: Iterable[Any] = custom if custom is not None else self._loader(self.micro_in_epoch * cfg.batch_size)
            seen_in_pass = 0
            for batch in loader:
                seen_in_pass += 1
                batch = move_to_device(batch, self.device)
                sync_ctx = (
                    self.train_model.no_sync()
                    if isinstance(self.train_model, nn.parallel.DistributedDataParallel) and micro + 1 < accum
                    else contextlib.nullcontext()
                )
                with sync_ctx:
                    with self.autocast:
                        out = self.task.training_step(self.step_model, batch)
                    if "loss" not in out:
                        raise KeyError(f"task {self.task.name!r}: training_step must return a 'loss' entry")
                    loss = out["loss"] / accum
                    if self.scaler is not None:
                        self.scaler.scale(loss).backward()
                    else:
                        loss.backward()
                for k, v in out.items():
                    v = v.detach().float().mean()
                    sums[k] = sums[k] + v / accum if k in sums else v / accum
                micro += 1
                self.micro_in_epoch += 1
                if micro < accum:
                    continue
                micro = 0
                self.schedule.elapsed_s = elapsed_before + _clock() - t0
                lr = self.schedule.apply(self.step)
                if self.scaler is not None:
                    self.scaler.unscale_(self.optimizer)
                grad_norm = None
                if cfg.grad_clip is not None:
                    grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                if not torch.isfinite(sums["loss"]):
                    raise FloatingPointError(
                        f"task {self.task.name!r}: non-finite loss {float(sums['loss'])} at step {self.step + 1}; "
                        "lower the learning rate, enable grad_clip or check the data"
                    )
                if self.scaler is not None:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step += 1
                if self.ema is not None:
                    self.ema.update(self.model)
                n_logged += 1
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    scalars = {k: float(v) / n_logged for k, v in sums.items()}
                    scalars["lr"] = lr
                    if grad_norm is not None:
                        scalars["grad_norm"] = float(grad_norm)
                    last_loss = scalars["loss"]
                    if self.loggers is not None:
                        self.loggers.log(self.step, "train", scalars)
                    bar.set_postfix(loss=f"{last_loss:.4g}", lr=f"{lr:.3g}")
                    sums, n_logged = {}, 0
                else:
                    # keep running sums over the logging window
                    pass
                bar.update(1)
                if cfg.max_minutes is not None:
                    # every rank takes part, so all ranks stop at the same step
                    spent = _clock() - t0
                    if cfg.schedule.by_time:  # the budget spans every invocation: the schedule ends with it
                        spent += elapsed_before
                    out_of_time = any(all_gather_objects(ctx, spent > cfg.max_minutes * 60))
                    if out_of_time and ctx.is_main:
                        logger.info("time budget of %s min spent at step %d: stopping", cfg.max_minutes, self.step)
                    stop = stop or out_of_time
                do_eval = self.val_ds is not None and (
                    (cfg.eval_every > 0 and self.step % cfg.eval_every == 0) or self.step == cfg.max_steps or stop
                )
                if do_eval:
                    stop = self._after_eval(self.evaluate()) or stop
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps or stop or self.best_pending:
                    self._save_checkpoint()
                if self.step >= cfg.max_steps:
                    stop = True
                if stop:
                    break
            else:
                if seen_in_pass == 0 and self.micro_in_epoch == 0:
                    raise ValueError(f"task {self.task.name!r}: an epoch of the training data yields no batch")
                self.epoch += 1
                self.micro_in_epoch = 0
        bar.close()
        if ctx.is_main:
            if self.best_step is None:
                last = ckpt_io.CHECKPOINT_DIR + f"/step_{self.step:08d}"
                self._write_serving(self.run_dir / last if self.strategy.exports_from_checkpoint else None)
            self._write_metadata(
                {
                    "result": {
                        "step": self.step,
                        "max_steps": cfg.max_steps,
                        "train_minutes": round(self.schedule.elapsed_s / 60.0, 3),
                        "best_step": self.best_step,
                        "best_value": self.best_value,
                        "monitor": cfg.monitor,
                        "last_metrics": self.last_metrics,
                    }
                }
            )
        if self.loggers is not None:
            self.loggers.close()
        barrier(ctx)
        return FitResult(
            run_dir=self.run_dir,
            step=self.step,
            resumed_from=self.resumed_from,
            best_step=self.best_step,
            best_value=self.best_value,
            last_metrics=self.last_metrics,
            train_loss=last_loss,
            seconds=_clock() - t0,
            model=self.model,
        )


def fit(task: TrainTask, cfg: TrainConfig, full_config: Any = None) -> FitResult:
    """Trains ``task`` with ``cfg``; resumes automatically from ``cfg.run_dir`` when it holds a checkpoint.

    Works alone or under ``torchrun`` (DDP; gloo on CPU, nccl on CUDA). Rank 0 writes the run folder.

    Args:
        task: the domain's :class:`TrainTask`.
        cfg: engine settings.
        full_config: the domain's whole config, written to ``config.yaml`` (default: ``cfg``).

    Returns:
        A :class:`FitResult` describing the finished run.
    """
    if not isinstance(task, TrainTask):
        missing = [
            m
            for m in ("name", "build_model", "build_datasets", "training_step", "validation_step", "metrics")
            if not hasattr(task, m)
        ]
        raise TypeError(f"{type(task).__name__} is not a TrainTask: missing {missing}")
    from shared_attention.memory import keep_freed_heap

    # activations of a few MB are freed and re-allocated every step: keep them on the heap instead of paying a
    # page fault per 4 KiB page for each fresh mmap (MossFormer cpu-small step 0.23 s instead of 0.26-0.31 s)
    keep_freed_heap()
    ctx = init_distributed(cfg.device)
    try:
        trainer = _Trainer(task, cfg, full_config, ctx)
        trainer.setup()
        return trainer.run()
    finally:
        teardown = getattr(task, "teardown", None)
        if callable(teardown):
            teardown()
        cleanup_distributed(ctx)
