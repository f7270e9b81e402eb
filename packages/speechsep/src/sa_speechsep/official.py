"""Load official MossFormer checkpoints (ModelScope ``damo/speech_mossformer_separation_temporal_8k``).

Accepted sources:

* a full state dict of ``modelscope.models.audio.separation.mossformer.MossFormer`` (a mapping or a
  ``.pt``/``.pth``/``.bin``/``.safetensors`` file, optionally under ``state_dict`` / ``model`` and with a
  ``module.`` prefix);
* the hub layout: a folder with ``encoder.bin``, ``decoder.bin`` and ``masknet.bin`` (sub-module state
  dicts without their ``encoder.`` / ``decoder.`` / ``mask_net.`` prefixes, as ``load_check_point`` reads).

Official names are mapped to ours by :data:`RENAME_RULES`; loading is strict and files are read by
:func:`shared_attention.engine.foreign.read_state_dict` (``torch.load(..., weights_only=True)`` only).
Official output is ``(B, T, speakers)``; ours ``(B, speakers, T)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from shared_attention.engine.foreign import ForeignCheckpointError, load_strict, read_state_dict

from .models.mossformer import MossFormer, MossFormerConfig

__all__ = [
    "OfficialCheckpointError",
    "RENAME_RULES",
    "official_to_ours",
    "read_official_state_dict",
    "convert_official",
    "load_official",
    "OFFICIAL_DEFAULTS",
    "HUB_PARTS",
]

#: The official constructor's defaults for MossFormer(L) (hub configuration.json).
OFFICIAL_DEFAULTS: dict[str, Any] = {
    "kernel_size": 16,
    "stride": 8,
    "in_channels": 512,
    "out_channels": 512,
    "bias": False,
    "num_blocks": 24,
    "d_model": 512,
    "attn_dropout": 0.1,
    "group_size": 256,
    "query_key_dim": 128,
    "expansion_factor": 4.0,
    "causal": False,
    "norm": "ln",
    "num_spks": 2,
}

_BLOCK = r"mask_net\.mdl\.att_mdl\.mossformerM\.layers\.(\d+)\."
#: ``(regex, replacement)`` rules applied in order to every official key.
RENAME_RULES: tuple[tuple[str, str], ...] = (
    (r"^module\.", ""),
    (r"^encoder\.conv1d\.", "encoder."),
    (_BLOCK + r"(to_hidden|to_qk|to_out)\.mdl\.0\.g$", r"mask_net.blocks.\1.\2.norm.g"),
    (_BLOCK + r"(to_hidden|to_qk|to_out)\.mdl\.1\.", r"mask_net.blocks.\1.\2.proj."),
    (_BLOCK + r"(to_hidden|to_qk|to_out)\.mdl\.3\.sequential\.1\.conv\.", r"mask_net.blocks.\1.\2.conv.conv."),
    (_BLOCK, r"mask_net.blocks.\1."),
    (r"^mask_net\.mdl\.att_mdl\.norm\.norm\.", "mask_net.blocks_norm."),
    (r"^mask_net\.mdl\.att_norm\.", "mask_net.skip_norm."),
    (r"^mask_net\.conv1d_encoder\.", "mask_net.in_proj."),
    (r"^mask_net\.conv1d_out\.", "mask_net.out_proj."),
    (r"^mask_net\.conv1_decoder\.", "mask_net.mask_proj."),
    (r"^mask_net\.output\.0\.", "mask_net.output."),
    (r"^mask_net\.output_gate\.0\.", "mask_net.output_gate."),
)

#: Kept under the package's old name; the one error of :mod:`shared_attention.engine.foreign`.
OfficialCheckpointError = ForeignCheckpointError

#: Checkpoint keys that may hold the weights; the first present wins.
_WRAPPERS = ("state_dict", "model")
#: The hub layout: ``{file: prefix of its sub-module}`` (``load_check_point`` reads these three files).
HUB_PARTS: dict[str, str] = {"encoder.bin": "encoder.", "decoder.bin": "decoder.", "masknet.bin": "mask_net."}


def official_to_ours(key: str) -> str:
    """Maps one official state-dict key to ours."""
    for pattern, repl in RENAME_RULES:
        key = re.sub(pattern, repl, key)
    return key


def read_official_state_dict(src: str | os.PathLike[str] | Mapping[str, Any]) -> tuple[dict[str, Tensor], str]:
    """Reads an official checkpoint (mapping, file or hub folder) to a state dict with *official* names.

    Args:
        src: a state dict, a ``.pt``/``.pth``/``.bin``/``.safetensors`` file, or a hub folder with
            ``encoder.bin``, ``decoder.bin`` and ``masknet.bin``. Entries that are not tensors are dropped.

    Returns:
        ``(state dict, source description for messages)``.

    Raises:
        OfficialCheckpointError: a missing file or hub part, an unreadable file, or no tensors.
    """
    return read_state_dict(src, wrappers=_WRAPPERS, parts=HUB_PARTS)


def _config_from_official(kwargs: Mapping[str, Any]) -> MossFormerConfig:
    args = {**OFFICIAL_DEFAULTS, **kwargs}
    unknown = sorted(set(args) - set(OFFICIAL_DEFAULTS))
    if unknown:
        raise TypeError(f"unknown MossFormer argument(s) {unknown}; official arguments: {sorted(OFFICIAL_DEFAULTS)}")
    if args.pop("causal"):
        raise NotImplementedError("causal=True (streaming MossFormer) is not implemented; only the non-causal model")
    norm = args.pop("norm")
    if norm != "ln":
        raise NotImplementedError(f"norm={norm!r}: only the official 'ln' (GroupNorm(1, C)) is implemented")
    return MossFormerConfig(**args, rotary_dim=min(32, int(args["query_key_dim"])))


def convert_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Renames an official state dict to ours (shared rotary tables included once per block, as official)."""
    return {official_to_ours(k): v for k, v in state.items()}


def load_official(state_dict_or_path: str | os.PathLike[str] | Mapping[str, Any], **official_kwargs: Any) -> MossFormer:
    """Builds a :class:`MossFormer` with the official constructor arguments and loads official weights strictly.

    Args:
        state_dict_or_path: official state dict, checkpoint file, or hub folder (``encoder.bin`` ...).
        **official_kwargs: arguments of the official ``MossFormer`` constructor (``kernel_size``, ``num_blocks``,
            ``num_spks``, ...); defaults are MossFormer(L).

    Returns:
        The model in eval mode; ``model(x)`` is ``official(x).transpose(1, 2)``.

    Raises:
        OfficialCheckpointError: missing/unexpected keys or shape mismatches (the first few are listed).
    """
    cfg = _config_from_official(official_kwargs)
    official, source = read_official_state_dict(state_dict_or_path)
    state = convert_official(official)
    model = MossFormer(cfg)
    load_strict(model, state, source, what=f"MossFormer({cfg})")
    freqs = [v for k, v in state.items() if k.endswith("rotary_pos_emb.freqs")]
    if any(not torch.equal(f, freqs[0]) for f in freqs[1:]):
        raise OfficialCheckpointError(f"{source}: the rotary 'freqs' tables differ between blocks (one shared table)")
    return model.eval()
