"""Inference precision of a served model: ``fp32`` (default) or ``bf16`` autocast.

``set_model_precision(model, "bf16")`` makes every call of ``model(...)`` run under ``torch.autocast`` with
bfloat16 (matrix products and convolutions in bf16 where autocast allows it: about 2x an fp32 product on
AVX-512-BF16 CPUs, more with AMX and on recent GPUs; ``bench/speed.py`` measures each model) and returns floating
outputs as float32, so the predictor code around the model — tiling, chunking, post-processing, metrics — is
unchanged. The weights stay float32 (``fp32`` again
restores the exact float32 results). One implementation for every domain: predictors expose it as
:meth:`~shared_attention.serving.PredictorBase.set_precision`, the generated ``predict`` / ``evaluate`` CLIs as
``--precision`` and ``sa-serve`` as ``--precision``.

``set_model_compiled(model, True)`` runs the same forward (in either precision) through ``torch.compile``
(inductor): the first call of each input shape compiles (seconds to minutes, ``bench/speed.py --compile``
reports it per model), later calls run the generated kernels. Off by default: it pays only on some models
(forward 1.15-1.36x on HAT-S, the FOD head and Hiformer; 0.85-0.98x on MossFormer and ParaTransCNN, see
BENCHMARKS.md). Predictors expose it as :meth:`~shared_attention.serving.PredictorBase.set_compile`, the
generated CLIs and ``sa-serve`` as ``--compile``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

__all__ = ["PRECISIONS", "Precision", "model_compiled", "model_precision", "set_model_compiled", "set_model_precision"]

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def _as_float32(out: Any) -> Any:
    """Floating tensors of a (nested) output back to float32; everything else as it is."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() and out.dtype != torch.float32 else out
    if isinstance(out, dict):
        return {k: _as_float32(v) for k, v in out.items()}
    if isinstance(out, list):
        return [_as_float32(v) for v in out]
    if isinstance(out, tuple):
        items = [_as_float32(v) for v in out]
        return type(out)(*items) if hasattr(out, "_fields") else tuple(items)  # namedtuples keep their type
    return out


class _AutocastForward:
    """A module's bound ``forward`` run under bf16 autocast, outputs back to float32 (an instance attribute
    that shadows the class's ``forward``; removing it restores the model)."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward  # the bound method: forward.__self__ is the module

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # the device is read at each call, so a model moved after set_precision autocasts where it now lives
        with torch.autocast(_device_type(self.forward.__self__), dtype=torch.bfloat16):
            out = self.forward(*args, **kwargs)
        return _as_float32(out)


class _CompiledForward:
    """A module's forward (plain or :class:`_AutocastForward`) run through ``torch.compile``; ``inner`` is what
    runs uncompiled (an instance attribute like :class:`_AutocastForward`; removing it restores the model)."""

    def __init__(self, inner: Any, backend: str = "inductor") -> None:
        self.inner, self.backend = inner, backend

        def run(*args: Any, **kwargs: Any) -> Any:
            return inner(*args, **kwargs)

        self.compiled = torch.compile(run, backend=backend)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.compiled(*args, **kwargs)


def _device_type(model: nn.Module) -> str:
    for t in model.parameters():
        return t.device.type
    for b in model.buffers():
        return b.device.type
    return "cpu"


def _uncompiled(model: nn.Module) -> Any:
    wrapper = model.__dict__.get("forward")
    return wrapper.inner if isinstance(wrapper, _CompiledForward) else wrapper


def model_precision(model: nn.Module) -> Precision:
    """The precision :func:`set_model_precision` gave ``model`` (``fp32`` when never set)."""
    return "bf16" if isinstance(_uncompiled(model), _AutocastForward) else "fp32"


def model_compiled(model: nn.Module) -> bool:
    """Whether :func:`set_model_compiled` turned compilation on for ``model``."""
    return isinstance(model.__dict__.get("forward"), _CompiledForward)


def _set_forward(model: nn.Module, precision: str, compiled: bool, backend: str = "inductor") -> None:
    model.__dict__.pop("forward", None)  # back to the class's forward
    forward: Any = model.forward
    if precision == "bf16":
        forward = _AutocastForward(forward)
    if compiled:
        forward = _CompiledForward(forward, backend)
    if precision == "bf16" or compiled:
        model.forward = forward


def set_model_precision(model: nn.Module, precision: str) -> nn.Module:
    """Runs ``model``'s forward in ``precision`` (``fp32`` or ``bf16`` autocast); returns the same module.
    A compiled model (:func:`set_model_compiled`) stays compiled (and compiles again for the new precision).

    Raises:
        ValueError: an unknown precision, named with the choices.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    wrapper = model.__dict__.get("forward")
    backend = wrapper.backend if isinstance(wrapper, _CompiledForward) else "inductor"
    if model_precision(model) != precision:
        _set_forward(model, precision, model_compiled(model), backend)
    return model


def set_model_compiled(model: nn.Module, enabled: bool = True, backend: str = "inductor") -> nn.Module:
    """Runs ``model``'s forward through ``torch.compile`` (``enabled``) or eagerly again; keeps its precision.
    Weights and state dict are untouched. ``backend``: ``torch.compile``'s (``eager`` only checks tracing: tests).
    Returns the same module."""
    if model_compiled(model) != enabled or (enabled and model.__dict__["forward"].backend != backend):
        _set_forward(model, model_precision(model), enabled, backend)
    return model
