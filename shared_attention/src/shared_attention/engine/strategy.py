"""How the engine writes and reads resumable checkpoints: one strategy per kind of model, one loop for all.

- :class:`SafetensorsCheckpoints` (dense models, the default): rank 0 writes ``model.safetensors`` and
  ``trainer_state.pt`` (optimizer included) with a SHA-256 manifest; broken checkpoints are skipped with a warning
  and resume falls back to the previous complete one.
- :class:`DCPCheckpoints` (sharded models, e.g. torchrec embedding tables): every rank writes its shards of the
  model and optimizer with ``torch.distributed.checkpoint`` into a temporary folder that rank 0 renames when
  complete; the served ``model.safetensors`` is exported from a checkpoint by loading it into a fresh,
  unsharded model on rank 0.

A task chooses with its ``checkpoint_strategy`` attribute (``"safetensors"`` or ``"dcp"``, or an object with the
same methods). ``trainer_state.pt`` is read with ``torch.load(weights_only=True)`` only.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from . import checkpoint as ckpt_io
from .distributed import DistContext, barrier

logger = logging.getLogger(__name__)

__all__ = ["CheckpointStrategy", "DCPCheckpoints", "SafetensorsCheckpoints", "get_strategy"]


class CheckpointStrategy(Protocol):
    """What the engine needs to checkpoint and resume a run.

    Attributes:
        exports_from_checkpoint: the served weights can only be produced from a written checkpoint (sharded
            models); the engine then checkpoints whenever a new best evaluation has to be served.
    """

    exports_from_checkpoint: bool

    def save(
        self,
        run_dir: Path,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: Mapping[str, Any],
        keep: int,
        protect_step: int | None,
        ctx: DistContext,
    ) -> Path:
        """Writes ``checkpoints/step_XXXXXXXX`` (every rank calls it); returns its path."""
        ...

    def resume(
        self, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[Path, dict[str, Any]] | None:
        """Loads the newest usable checkpoint into ``model`` and ``optimizer`` (every rank calls it); returns its
        path and trainer state, or ``None`` when there is none. Raises ``CheckpointError`` on a mismatch."""
        ...

    def export(self, ckpt: Path, fresh_model: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
        """The full, unsharded state dict of the model in checkpoint ``ckpt`` (rank 0 only)."""
        ...


def _mismatch(path: Path, exc: BaseException) -> ckpt_io.CheckpointError:
    return ckpt_io.CheckpointError(
        f"{path}: checkpoint does not match this model/config ({type(exc).__name__}: {exc}); "
        "use a new run_dir or train.resume=false"
    )


class SafetensorsCheckpoints:
    """Rank 0 writes the whole model as safetensors and the trainer state (with the optimizer) as a torch file."""

    exports_from_checkpoint = False

    def save(
        self,
        run_dir: Path,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: Mapping[str, Any],
        keep: int,
        protect_step: int | None,
        ctx: DistContext,
    ) -> Path:
        path = Path(run_dir) / ckpt_io.CHECKPOINT_DIR / f"step_{step:08d}"
        if ctx.is_main:
            state = {**trainer_state, "optimizer": optimizer.state_dict()}
            path = ckpt_io.write_checkpoint(run_dir, step, model.state_dict(), state, keep)
        barrier(ctx)
        return path

    def resume(
        self, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[Path, dict[str, Any]] | None:
        found = ckpt_io.find_resumable(run_dir)
        if found is None:
            return None
        path, weights, state = found
        try:
            model.load_state_dict(weights, strict=True)
            optimizer.load_state_dict(state["optimizer"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise _mismatch(path, exc) from exc
        return path, state

    def export(self, ckpt: Path, fresh_model: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
        return ckpt_io.load_weights(ckpt / ckpt_io.MODEL_FILE)


def _sub_optimizers(optimizer: Any) -> list[Any]:
    """The optimizers inside a combined one (torchrec's ``CombinedOptimizer``), else ``[optimizer]``."""
    inner = getattr(optimizer, "optimizers", None)
    if inner is None:
        return [optimizer]
    return [entry[1] if isinstance(entry, tuple) else entry for entry in inner]


class DCPCheckpoints:
    """Every rank writes its shards with ``torch.distributed.checkpoint`` (``{"model", "optim"}``); rank 0 adds
    ``trainer_state.pt`` and renames the folder into place once all ranks are done."""

    exports_from_checkpoint = True

    @staticmethod
    def complete(run_dir: Path) -> list[Path]:
        """Checkpoint folders that were renamed into place (DCP metadata and trainer state present)."""
        return [
            p
            for p in ckpt_io.list_checkpoints(run_dir)
            if (p / ".metadata").is_file() and (p / ckpt_io.STATE_FILE).is_file()
        ]

    def save(
        self,
        run_dir: Path,
        step: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        trainer_state: Mapping[str, Any],
        keep: int,
        protect_step: int | None,
        ctx: DistContext,
    ) -> Path:
        import torch.distributed.checkpoint as dcp

        root = Path(run_dir) / ckpt_io.CHECKPOINT_DIR
        final = root / f"step_{step:08d}"
        tmp = root / f".step_{step:08d}.tmp"
        if ctx.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier(ctx)
        dcp.save({"model": model.state_dict(), "optim": optimizer.state_dict()}, checkpoint_id=str(tmp))
        barrier(ctx)
        if ctx.is_main:
            ckpt_io.save_trainer_state(tmp / ckpt_io.STATE_FILE, dict(trainer_state))
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            if keep > 0:
                protected = root / f"step_{protect_step:08d}" if protect_step is not None else None
                for old in self.complete(run_dir)[:-keep]:
                    if old != protected:
                        shutil.rmtree(old, ignore_errors=True)
        barrier(ctx)
        return final

    def resume(
        self, run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[Path, dict[str, Any]] | None:
        import torch.distributed.checkpoint as dcp

        found = self.complete(run_dir)
        if not found:
            return None
        path = found[-1]
        for opt in _sub_optimizers(optimizer):  # keyed optimizers create their state lazily: load needs it
            init = getattr(opt, "init_state", None)
            if callable(init):
                init()
        state = {"model": model.state_dict(), "optim": optimizer.state_dict()}
        try:
            dcp.load(state, checkpoint_id=str(path))
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optim"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise _mismatch(path, exc) from exc
        return path, ckpt_io.load_trainer_state(path / ckpt_io.STATE_FILE)

    def export(self, ckpt: Path, fresh_model: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
        import torch.distributed.checkpoint as dcp

        model = fresh_model()
        state = {"model": model.state_dict()}
        dcp.load(state, checkpoint_id=str(ckpt), no_dist=True)
        model.load_state_dict(state["model"])
        return model.state_dict()


def get_strategy(spec: Any) -> CheckpointStrategy:
    """``"safetensors"`` (default), ``"dcp"`` or a strategy object."""
    if spec is None or spec == "safetensors":
        return SafetensorsCheckpoints()
    if spec == "dcp":
        return DCPCheckpoints()
    if all(hasattr(spec, m) for m in ("save", "resume", "export")):
        return spec
    raise ValueError(f"checkpoint_strategy: unknown {spec!r} (use 'safetensors', 'dcp' or a strategy object)")
