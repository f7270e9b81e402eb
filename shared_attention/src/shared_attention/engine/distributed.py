"""torchrun / DDP helpers: read the torchrun environment, start and stop the process group.

Backends: ``gloo`` on CPU, ``nccl`` on CUDA. Outside torchrun (no ``WORLD_SIZE``) everything is a no-op
and :class:`DistContext` describes a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "init_distributed", "cleanup_distributed", "all_gather_objects", "barrier", "resolve_device"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) job.

    Attributes:
        rank: global rank. world_size: number of processes. local_rank: rank on this host.
        device: the device this process computes on. initialized: whether we started a process group.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0 (logs, saves, shows progress)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` picks ``cuda:<local_rank>`` when CUDA is available, else CPU; other names pass through."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))
        return torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from exc


def init_distributed(device: str = "auto", backend: str | None = None) -> DistContext:
    """Reads ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (set by torchrun) and starts the process group.

    Returns a single-process context when ``WORLD_SIZE`` is unset or 1.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    dev = resolve_device(device, local)
    if world <= 1:
        return DistContext(0, 1, 0, dev, False)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = False
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"), rank=rank, world_size=world)
        started = True
    return DistContext(dist.get_rank(), dist.get_world_size(), local, dev, started)


def cleanup_distributed(ctx: DistContext) -> None:
    """Destroys the process group if :func:`init_distributed` created it."""
    if ctx.initialized and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """A barrier across ranks (no-op for one process)."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Gathers one picklable object from every rank (our own in-process values, never user files)."""
    if not (ctx.distributed and dist.is_initialized()):
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out
