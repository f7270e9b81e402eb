"""The contract between a domain package and the training engine.

A domain writes one class that satisfies :class:`TrainTask` (the required methods) and may add any of the
optional hooks of :class:`TaskHooks`; :func:`shared_attention.engine.fit` runs it. Subclassing
:class:`TaskHooks` gives the optional hooks' defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = ["TrainTask", "TaskHooks", "mean_metrics", "move_to_device"]


@runtime_checkable
class TrainTask(Protocol):
    """What the engine needs from a domain.

    Attributes:
        name: short domain/task name (``"restoration"``), written to ``metadata.json``.
    """

    name: str

    def build_model(self) -> nn.Module:
        """A fresh model (on CPU; the engine moves it)."""
        ...

    def build_datasets(self) -> tuple[Dataset[Any], Dataset[Any] | None]:
        """``(train, validation)``; validation may be ``None``."""
        ...

    def training_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        """Forward + loss on one batch (already on the device). Must return ``"loss"`` (a scalar with grad);
        other scalar entries are logged."""
        ...

    def validation_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        """Per-batch statistics (tensors); gathered from every rank and passed to :meth:`metrics`."""
        ...

    def metrics(self, outputs: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
        """Aggregates all validation outputs into named scalar metrics."""
        ...


class TaskHooks:
    """Optional hooks with their defaults; subclass it in a task to override some.

    Attributes:
        full_precision_eval: Run validation outside the training autocast (``train.amp``), in the model's own
            float32, so the metrics that pick the best checkpoint (e.g. PSNR, Dice) carry no bf16 rounding.
        checkpoint_strategy: ``"safetensors"`` (rank 0 writes the whole model) or ``"dcp"`` (every rank writes
            its shards with ``torch.distributed.checkpoint``; torchrec's sharded tables), see
            :mod:`shared_attention.engine.strategy`.
    """

    full_precision_eval: bool = False
    checkpoint_strategy: str = "safetensors"

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        """A collate function for both loaders (``None``: torch's default)."""
        return None

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer | None:
        """A custom optimizer (``None``: the engine builds one from ``TrainConfig.optim``). ``model`` is the
        task's wrapped model when :meth:`wrap_model` returned one."""
        return None

    def train_batches(self, epoch: int, start: int, ctx: Any) -> Iterable[Any] | None:
        """This rank's training batches of ``epoch`` from micro-batch ``start`` on (a resumed epoch), for data
        that is not a map-style dataset (streamed files, columnar tables). ``None``: the engine's DataLoader
        over :meth:`build_datasets`' training set. Every rank must yield the same number of batches."""
        return None

    def validation_batches(self, ctx: Any) -> Iterable[Any] | None:
        """This rank's validation batches (``None``: the engine shards the validation set). A sharded model
        needs the same number of batches on every rank."""
        return None

    def export_module(self, model: nn.Module) -> nn.Module:
        """The submodule whose weights are served in ``model.safetensors`` (default: the whole model)."""
        return model

    def extra_files(self) -> dict[str, str]:
        """Extra text files rank 0 writes into the run folder at the start (e.g. a feature schema)."""
        return {}

    def teardown(self) -> None:
        """Called once when :func:`~shared_attention.engine.fit` ends (e.g. to close a process group)."""
        return None

    def wrap_model(self, model: nn.Module, ctx: Any) -> nn.Module | None:
        """Wraps the model for distributed training (e.g. torchrec's DistributedModelParallel).

        ``ctx`` is the engine's :class:`~shared_attention.engine.distributed.DistContext`. ``None`` (the
        default) lets the engine use DDP when more than one process runs, and the bare model otherwise.
        """
        return None

    def metadata(self) -> dict[str, Any]:
        """Extra ``metadata.json`` entries: I/O spec, preprocessing, labels, package version."""
        return {}

    def on_evaluation_start(self, model: nn.Module) -> None:
        """Called on every rank before each evaluation with the model in eval mode (EMA weights applied), e.g. to
        refit statistics that scoring needs from the current weights; whatever it stores in buffers is saved
        with the weights the evaluation selects."""
        return None

    def on_evaluation_end(self, model: nn.Module, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        """Called on rank 0 after each evaluation, e.g. to write PNG side-by-sides."""
        return None


def mean_metrics(outputs: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
    """Averages each key over batches, weighting by the ``"count"`` entry when present."""
    if not outputs:
        return {}
    totals: dict[str, float] = {}
    weight = 0.0
    for out in outputs:
        w = float(out["count"]) if "count" in out else 1.0
        weight += w
        for k, v in out.items():
            if k == "count":
                continue
            totals[k] = totals.get(k, 0.0) + float(torch.as_tensor(v).float().mean()) * w
    return {k: v / weight for k, v in totals.items()}


def move_to_device(batch: Any, device: torch.device) -> Any:
    """Moves tensors inside nested lists/tuples/dicts to ``device`` (non-blocking when pinned)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return type(batch)({k: move_to_device(v, device) for k, v in batch.items()})  # type: ignore[call-arg]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(move_to_device(v, device) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch
