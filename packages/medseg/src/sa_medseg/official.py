"""Official checkpoints of ParaTransCNN and VM-UNet: read, rename, load strictly.

* :func:`load_official_paratranscnn` takes ``ParaTransCNN``'s constructor arguments (``n_channels``,
  ``num_classes``, ``heads``, ``dim``, ``depth``, ``patch_size``) and maps the official transformer keys
  (``vit_k.net.{2i}.fn.fn.qkv`` ...) onto :class:`~shared_attention.layers.blocks.TransformerBlock` names;
  all other keys are the official ones.
* :func:`load_official_vmunet` accepts both spellings of VM-UNet: the ``VMUNet`` wrapper (keys prefixed
  ``vmunet.``, arguments ``num_classes``, ``input_channels``, ``depths``, ``depths_decoder``,
  ``drop_path_rate``, ``load_ckpt_path``) and the bare ``VSSM`` (unprefixed keys, arguments ``in_chans``,
  ``dims``, ``dims_decoder``, ``d_state``, ...). It always returns our :class:`VMUNet` wrapper.

The model is built on the ``meta`` device and the checkpoint tensors are assigned to it (no random
initialisation, no second copy of the weights), then checked to be complete. Files are read by
:func:`shared_attention.engine.foreign.read_state_dict` (``torch.load(weights_only=True)`` or safetensors).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from shared_attention.engine.foreign import ForeignCheckpointError, call_repr, load_strict, read_state_dict

from .models.paratranscnn import ParaTransCNN
from .models.vmunet import VSSM, VMUNet

__all__ = [
    "OfficialCheckpointError",
    "load_official_paratranscnn",
    "load_official_vmunet",
    "paratranscnn_official_to_ours",
    "read_official_state_dict",
]

_WRAPPERS = ("model", "state_dict", "model_state_dict", "net")
_PARA_KWARGS = ("n_channels", "num_classes", "heads", "dim", "depth", "patch_size")
_VMUNET_KWARGS = ("num_classes", "input_channels", "depths", "depths_decoder", "drop_path_rate", "load_ckpt_path")


#: Kept under the package's old name; the one error of :mod:`shared_attention.engine.foreign`.
OfficialCheckpointError = ForeignCheckpointError


def read_official_state_dict(
    state_dict_or_path: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[dict[str, Tensor], str]:
    """Reads a checkpoint (``weights_only``), unwraps ``model``/``state_dict``... and strips ``module.``.

    Args:
        state_dict_or_path: official ``.pth`` (or ``.safetensors``) or a loaded mapping.

    Returns:
        ``(state dict with float tensors in float32, source description for messages)``.

    Raises:
        OfficialCheckpointError: unreadable file, no tensors, or an entry that is not a tensor.
    """
    return read_state_dict(state_dict_or_path, wrappers=_WRAPPERS, drop_non_tensors=False, dtype=torch.float32)


def paratranscnn_official_to_ours(key: str) -> str:
    """One official ParaTransCNN key -> ours (only the transformer stages are renamed)."""
    m = re.match(r"^(vit_\d)\.net\.(\d+)\.fn\.(.*)$", key)
    if not m:
        return key
    stage, idx, rest = m.group(1), int(m.group(2)), m.group(3)
    layer, is_ff = divmod(idx, 2)
    if is_ff:
        rest = rest.replace("norm.", "norm2.", 1) if rest.startswith("norm.") else rest
        rest = re.sub(r"^fn\.net\.0\.", "mlp.fc1.", rest)
        rest = re.sub(r"^fn\.net\.3\.", "mlp.fc2.", rest)
    else:
        rest = rest.replace("norm.", "norm1.", 1) if rest.startswith("norm.") else rest
        rest = re.sub(r"^fn\.", "attn.", rest)
    return f"{stage}.blocks.{layer}.{rest}"


def _check_kwargs(kwargs: Mapping[str, Any], allowed: tuple[str, ...] | set[str], what: str) -> None:
    bad = sorted(set(kwargs) - set(allowed))
    if bad:
        raise TypeError(f"{what}: unknown argument(s) {bad}; the official constructor takes {sorted(allowed)}")


def load_official_paratranscnn(
    state_dict_or_path: str | os.PathLike[str] | Mapping[str, Any], **official_kwargs: Any
) -> ParaTransCNN:
    """Builds ParaTransCNN from an official checkpoint, strictly.

    Args:
        state_dict_or_path: official ``.pth`` (or a loaded state dict).
        **official_kwargs: ``ParaTransCNN`` constructor arguments (``n_channels``, ``num_classes``, ``heads``,
            ``dim``, ``depth``, ``patch_size``); the official signature defaults otherwise.

    Returns:
        The model in eval mode.

    Raises:
        OfficialCheckpointError: unreadable file, missing/unexpected keys or wrong shapes (named).
        TypeError: an argument the official constructor does not have.
    """
    _check_kwargs(official_kwargs, _PARA_KWARGS, "load_official_paratranscnn")
    raw, source = read_official_state_dict(state_dict_or_path)
    state = {paratranscnn_official_to_ours(k): v for k, v in raw.items()}
    with torch.device("meta"):
        model = ParaTransCNN(**official_kwargs)
    load_strict(model, state, source, what=call_repr("ParaTransCNN", official_kwargs), assign=True)
    return model.eval()


def _vssm_params() -> set[str]:
    return {n for n in inspect.signature(VSSM.__init__).parameters if n not in ("self", "scan_impl")}


def load_official_vmunet(
    state_dict_or_path: str | os.PathLike[str] | Mapping[str, Any], **official_kwargs: Any
) -> VMUNet:
    """Builds VM-UNet from an official checkpoint, strictly; both key and argument spellings.

    Args:
        state_dict_or_path: official ``.pth`` of ``VMUNet`` (keys ``vmunet.*``) or of ``VSSM`` (bare keys).
        **official_kwargs: ``VMUNet`` arguments (``num_classes``, ``input_channels``, ``depths``,
            ``depths_decoder``, ``drop_path_rate``, ``load_ckpt_path``) or ``VSSM`` arguments (``in_chans``,
            ``num_classes``, ``depths``, ``depths_decoder``, ``dims``, ``dims_decoder``, ``d_state``,
            ``patch_size``, ...). Mixing the two spellings of the input channels is an error.

    Returns:
        Our :class:`VMUNet` wrapper in eval mode (its state dict uses the ``vmunet.`` prefix).
    """
    vssm_names = _vssm_params()
    if "input_channels" in official_kwargs and "in_chans" in official_kwargs:
        raise TypeError("give either input_channels (VMUNet) or in_chans (VSSM), not both")
    _check_kwargs(official_kwargs, set(_VMUNET_KWARGS) | vssm_names, "load_official_vmunet")
    vssm_spelling = any(k in vssm_names - set(_VMUNET_KWARGS) for k in official_kwargs)
    kw = dict(official_kwargs)
    kw.pop("load_ckpt_path", None)  # only read by the official VMUNet.load_from(); never here
    in_chans = kw.pop("input_channels", kw.pop("in_chans", 3))
    if vssm_spelling:
        kw.setdefault("num_classes", 1000)  # VSSM's own default
        kw.setdefault("depths", [2, 2, 9, 2])
        kw.setdefault("depths_decoder", [2, 9, 2, 2])
        kw.setdefault("drop_path_rate", 0.1)
    else:
        kw.setdefault("num_classes", 1)  # VMUNet's defaults
    raw, source = read_official_state_dict(state_dict_or_path)
    prefixed = any(k.startswith("vmunet.") for k in raw)
    state = raw if prefixed else {f"vmunet.{k}": v for k, v in raw.items()}
    with torch.device("meta"):
        model = VMUNet(input_channels=in_chans, **kw)
    spelled = "VMUNet" if prefixed else "VSSM"
    load_strict(model, state, source, what=call_repr(spelled, official_kwargs), assign=True)
    return model.eval()
