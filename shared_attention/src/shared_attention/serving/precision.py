"""Inference precision of a served model: ``fp32`` (default) or ``bf16`` autocast.

``set_model_precision(model, "bf16")`` makes every call of ``model(...)`` run under ``torch.autocast`` with
bfloat16 (matrix products and convolutions in bf16 where autocast allows it: about 2x an fp32 product on
AVX-512-BF16 CPUs, more with AMX and on recent GPUs; ``bench/speed.py`` measures each model) and returns floating
outputs as float32, so the predictor code around the model — tiling, chunking, post-processing, metrics — is
unchanged. The weights stay float32 (``fp32`` again
restores the exact float32 results). One implementation for every domain: predictors expose it as
:meth:`~shared_attention.serving.PredictorBase.set_precision`, the generated ``predict`` / ``evaluate`` CLIs as
``--precision`` and ``sa-serve`` as ``--precision``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

__all__ = ["PRECISIONS", "Precision", "model_precision", "set_model_precision"]

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


def _device_type(model: nn.Module) -> str:
    for t in model.parameters():
        return t.device.type
    for b in model.buffers():
        return b.device.type
    return "cpu"


def model_precision(model: nn.Module) -> Precision:
    """The precision :func:`set_model_precision` gave ``model`` (``fp32`` when never set)."""
    return "bf16" if isinstance(model.__dict__.get("forward"), _AutocastForward) else "fp32"


def set_model_precision(model: nn.Module, precision: str) -> nn.Module:
    """Runs ``model``'s forward in ``precision`` (``fp32`` or ``bf16`` autocast); returns the same module.

    Raises:
        ValueError: an unknown precision, named with the choices.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    wrapper = model.__dict__.get("forward")
    if isinstance(wrapper, _AutocastForward):
        del model.__dict__["forward"]  # back to the class's forward
    if precision == "bf16":
        model.forward = _AutocastForward(model.forward)
    return model
