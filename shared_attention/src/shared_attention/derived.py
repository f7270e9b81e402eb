"""Tensors derived from parameters and kept on their module until the parameters change.

One mechanism for the core's inference caches (a window block's gathered relative-position bias, a Winograd
layer's transformed filter): the derived tensor lives in a plain attribute of the owning module (not a buffer,
not in the state dict), keyed by each source tensor's identity, storage, version counter and dtype. In-place
updates through autograd-visible ops (an optimizer step, ``load_state_dict``, ``param.copy_`` under ``no_grad``)
bump the version, so a stale result is never returned. Writes through ``param.data`` are invisible to version
counters: call :func:`forget_derived` after them. Inference tensors (made under ``torch.inference_mode``) carry no
version counter and compiled graphs must not hold eager-side state, so both get a fresh result every call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["derived_tensor", "forget_derived"]


def derived_tensor(owner: nn.Module, name: str, sources: Sequence[Tensor], build: Callable[[], Tensor]) -> Tensor:
    """``build()``, kept on ``owner`` as attribute ``name`` and reused while no tensor of ``sources`` changed.

    ``build`` runs without gradients and outside inference mode (so the result can be saved for a backward pass
    later). The returned tensor is shared between calls and must not be modified in place.
    """
    if torch.compiler.is_compiling() or any(t.is_inference() for t in sources):
        return build()
    key = tuple((id(t), t.data_ptr(), t._version, t.dtype) for t in sources)
    kept = owner.__dict__.get(name)
    if kept is None or kept[0] != key:
        with torch.inference_mode(False), torch.no_grad():
            kept = (key, build())
        owner.__dict__[name] = kept
    result: Tensor = kept[1]
    return result


def forget_derived(module: nn.Module, name: str) -> None:
    """Drop the tensor kept as ``name`` by :func:`derived_tensor` in ``module`` and its children."""
    for m in module.modules():
        m.__dict__.pop(name, None)
