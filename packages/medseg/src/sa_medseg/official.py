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
initialisation, no second copy of the weights), then checked to be complete. Files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .models.paratranscnn import ParaTransCNN
from .models.vmunet import VSSM, VMUNet

__all__ = [
    "OfficialCheckpointError",
    "load_official_paratranscnn",
    "load_official_vmunet",
    "paratranscnn_official_to_ours",
    "read_official_state_dict",
]

_SHOW = 5
_WRAPPERS = ("model", "state_dict", "model_state_dict", "net")
_PARA_KWARGS = ("n_channels", "num_classes", "heads", "dim", "depth", "patch_size")
_VMUNET_KWARGS = ("num_classes", "input_channels", "depths", "depths_decoder", "drop_path_rate", "load_ckpt_path")


class OfficialCheckpointError(ValueError):
    """An official checkpoint does not fit the requested configuration; the message names the file."""


def read_official_state_dict(
    state_dict_or_path: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[dict[str, Tensor], str]:
    """Reads a checkpoint (``weights_only``), unwraps ``model``/``state_dict`` and strips ``module.``.

    Returns:
        ``(state dict with float tensors in float32, source description for messages)``.
    """
    if isinstance(state_dict_or_path, str | os.PathLike):
        source = str(Path(state_dict_or_path))
        try:
            obj = torch.load(state_dict_or_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # missing file, truncated zip, forbidden pickle globals...
            raise OfficialCheckpointError(f"{source}: cannot read checkpoint: {exc}") from exc
    else:
        source, obj = "<state dict>", state_dict_or_path
    if not isinstance(obj, Mapping):
        raise OfficialCheckpointError(f"{source}: expected a dict of tensors, got {type(obj).__name__}")
    for w in _WRAPPERS:
        if w in obj and isinstance(obj[w], Mapping):
            obj, source = obj[w], f"{source}['{w}']"
            break
    out: dict[str, Tensor] = {}
    for k, v in obj.items():
        if not isinstance(v, Tensor):
            raise OfficialCheckpointError(f"{source}: entry {k!r} is {type(v).__name__}, not a tensor")
        key = re.sub(r"^module\.", "", str(k))
        out[key] = v.float() if v.is_floating_point() else v
    return out, source


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


def _assign_strict(model: nn.Module, state: dict[str, Tensor], source: str, hint: str) -> None:
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(ours[k].shape)}"
        for k in ours
        if k in state and state[k].shape != ours[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:_SHOW]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:_SHOW]}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:_SHOW]}")
        raise OfficialCheckpointError(f"{source} does not fit {hint}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise OfficialCheckpointError(f"{source}: tensors not set by the checkpoint: {left[:_SHOW]}")


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
    _assign_strict(model, state, source, f"ParaTransCNN({_fmt(official_kwargs)})")
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
    _assign_strict(model, state, source, f"{spelled}({_fmt(official_kwargs)})")
    return model.eval()


def _fmt(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
