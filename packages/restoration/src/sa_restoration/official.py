"""Load official HAT checkpoints (XPixelGroup/HAT ``.pth``) into :class:`~sa_restoration.models.hat.HAT`.

Official files hold the weights under ``'params_ema'`` (preferred) or ``'params'``. Our state dict
uses the official names and shapes, so the name map is the identity; the only rewrites are a
``module.`` prefix (DataParallel/DDP saves) being stripped. The two long buffers
``relative_position_index_SA`` / ``relative_position_index_OCA`` are checked after loading (the
official OCA index has negative entries that PyTorch indexing wraps; it must equal ours modulo the
table size) and replaced by our canonical non-negative copy.

Files are read by :func:`shared_attention.engine.foreign.read_state_dict`
(``torch.load(..., map_location='cpu', weights_only=True)`` only, or safetensors).
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sa_restoration.models.hat import HAT
from shared_attention.attention import overlap_window_size, relative_position_index
from shared_attention.engine.foreign import (
    ForeignCheckpointError,
    StateMismatch,
    call_repr,
    load_strict,
    read_state_dict,
)

__all__ = [
    "OfficialCheckpointError",
    "RENAME_RULES",
    "convert_official",
    "infer_official_kwargs",
    "load_official",
    "official_defaults",
    "official_to_ours",
    "read_official_state_dict",
]

#: ``(regex, replacement)`` rules applied in order to every official key. Our modules use the official
#: names, so only wrapper prefixes are removed.
RENAME_RULES: tuple[tuple[str, str], ...] = ((r"^module\.", ""),)

#: Checkpoint keys holding the weights, the first present wins (BasicSR saves the EMA weights as ``params_ema``).
_WRAPPERS = ("params_ema", "params")


#: Kept under the package's old name; the one error of :mod:`shared_attention.engine.foreign`.
OfficialCheckpointError = ForeignCheckpointError


def official_to_ours(key: str) -> str:
    """Map one official state-dict key to ours (identity up to a ``module.`` prefix)."""
    for pattern, repl in RENAME_RULES:
        key = re.sub(pattern, repl, key)
    return key


def official_defaults() -> dict[str, Any]:
    """The :class:`HAT` constructor defaults (the official ones, except ``upsampler='pixelshuffle'``)."""
    sig = inspect.signature(HAT.__init__)
    return {n: p.default for n, p in sig.parameters.items() if n != "self" and p.default is not inspect.Parameter.empty}


def read_official_state_dict(
    state_dict_or_path: str | os.PathLike[str] | Mapping[str, Any],
) -> tuple[dict[str, Tensor], str]:
    """Read a checkpoint and pick ``params_ema``, then ``params``, then the mapping itself.

    Args:
        state_dict_or_path: Path of an official ``.pth`` (or ``.safetensors``) or an already loaded mapping.

    Returns:
        ``(state_dict with our names, source description for messages)``.

    Raises:
        OfficialCheckpointError: If the file cannot be read, holds no tensor mapping or a non-tensor entry.
    """
    return read_state_dict(
        state_dict_or_path, wrappers=_WRAPPERS, strip_prefixes=(), rename=RENAME_RULES, drop_non_tensors=False
    )


def infer_official_kwargs(state_dict: Mapping[str, Tensor]) -> dict[str, Any]:
    """Guess the HAT constructor arguments a state dict was made with (best effort, for messages).

    Args:
        state_dict: Official or our state dict.

    Returns:
        The arguments that could be read off the shapes (``embed_dim``, ``in_chans``, ``depths``,
        ``num_heads``, ``window_size``, ``overlap_ratio``, ``compress_ratio``, ``squeeze_factor``,
        ``mlp_ratio``, ``upscale``, ``resi_connection``, ``ape``, ``patch_norm``, ``qkv_bias``).
    """
    sd = state_dict
    kw: dict[str, Any] = {}
    if "conv_first.weight" in sd:
        kw["embed_dim"], kw["in_chans"] = (int(s) for s in sd["conv_first.weight"].shape[:2])
    blocks: dict[int, set[int]] = {}
    for k in sd:
        m = re.match(r"layers\.(\d+)\.residual_group\.blocks\.(\d+)\.", k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    if blocks:
        kw["depths"] = [len(blocks[i]) for i in sorted(blocks)]
        heads = [
            sd.get(f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table") for i in sorted(blocks)
        ]
        if all(h is not None for h in heads):
            kw["num_heads"] = [int(h.shape[1]) for h in heads if h is not None]
    rpi_sa, rpi_oca = sd.get("relative_position_index_SA"), sd.get("relative_position_index_OCA")
    if rpi_sa is not None:
        ws = math.isqrt(int(rpi_sa.shape[0]))
        kw["window_size"] = ws
        if rpi_oca is not None and ws > 0:
            ows = math.isqrt(int(rpi_oca.shape[1]))
            kw["overlap_ratio"] = (ows - ws) / ws
    cab0 = sd.get("layers.0.residual_group.blocks.0.conv_block.cab.0.weight")
    ca1 = sd.get("layers.0.residual_group.blocks.0.conv_block.cab.3.attention.1.weight")
    fc1 = sd.get("layers.0.residual_group.blocks.0.mlp.fc1.weight")
    if "embed_dim" in kw:
        c = kw["embed_dim"]
        if cab0 is not None:
            kw["compress_ratio"] = c // int(cab0.shape[0])
        if ca1 is not None:
            kw["squeeze_factor"] = c // int(ca1.shape[0])
        if fc1 is not None:
            kw["mlp_ratio"] = int(fc1.shape[0]) / c
    ups = sorted(int(m.group(1)) for k in sd if (m := re.match(r"upsample\.(\d+)\.weight$", k)))
    if ups:
        first = sd[f"upsample.{ups[0]}.weight"]
        kw["upscale"] = 3 if int(first.shape[0]) == 9 * int(first.shape[1]) else 2 ** len(ups)
    kw["resi_connection"] = "3conv" if "conv_after_body.0.weight" in sd else "1conv"
    kw["ape"] = "absolute_pos_embed" in sd
    kw["patch_norm"] = "patch_embed.norm.weight" in sd
    kw["qkv_bias"] = "layers.0.residual_group.blocks.0.attn.qkv.bias" in sd
    return kw


_KEY_HINTS: tuple[tuple[str, str], ...] = (
    (r"relative_position_index_SA|blocks\.\d+\.attn\.relative_position_bias_table", "window_size or num_heads"),
    (
        r"relative_position_index_OCA|overlap_attn\.relative_position_bias_table",
        "window_size, overlap_ratio or num_heads",
    ),
    (r"conv_block\.cab\.[02]\.", "compress_ratio (or embed_dim)"),
    (r"conv_block\.cab\.3\.attention", "squeeze_factor (or embed_dim)"),
    (r"mlp\.fc[12]\.", "mlp_ratio (or embed_dim)"),
    (r"^upsample\.", "upscale"),
    (r"^conv_first\.|^conv_last\.", "in_chans or embed_dim"),
    (r"absolute_pos_embed", "img_size / patch_size"),
)


def _hint(key: str) -> str:
    for pattern, hint in _KEY_HINTS:
        if re.search(pattern, key):
            return hint
    return "embed_dim"


def _mismatch_hint(kwargs: Mapping[str, Any], ckpt: Mapping[str, Tensor]) -> Callable[[StateMismatch], str]:
    """The arguments probably wrong for the mismatched keys, and those the checkpoint's shapes suggest."""

    def hint(mismatch: StateMismatch) -> str:
        suspects: dict[str, str] = {}
        for key, _, _ in mismatch.shapes:
            suspects.setdefault(_hint(key), key)
        parts = ["probably wrong: " + ", ".join(f"{h} (see {k!r})" for h, k in suspects.items())] if suspects else []
        guessed = infer_official_kwargs(ckpt)
        given = {**official_defaults(), **kwargs}
        differing = {k: v for k, v in guessed.items() if k in given and _norm(given[k]) != _norm(v)}
        if differing:
            looks = ", ".join(f"{k}={v!r} (given {given[k]!r})" for k, v in differing.items())
            parts.append(f"the checkpoint looks like: {looks}")
        return "; ".join(parts) or "check the HAT variant and upscale"

    return hint


def _norm(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_norm(x) for x in v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def _check_indices(model: HAT, source: str) -> None:
    """Check the loaded relative indices (mod table size) and replace them by our canonical copy."""
    ws, ows = model.window_size, overlap_window_size(model.window_size, model.overlap_ratio)
    expected = {
        "relative_position_index_SA": (relative_position_index(ws), (2 * ws - 1) ** 2),
        "relative_position_index_OCA": (relative_position_index(ws, ows), (ws + ows - 1) ** 2),
    }
    with torch.no_grad():
        for name, (ref, table) in expected.items():
            buf: Tensor = getattr(model, name)
            if not torch.equal(torch.remainder(buf.to(ref.device), table), ref):
                raise OfficialCheckpointError(
                    f"{source}: {name} differs from the index of window_size={ws}, overlap_ratio={model.overlap_ratio}"
                    " (a checkpoint of another window configuration?)"
                )
            buf.copy_(ref)  # canonical, non-negative; aliased by every block


def load_official(state_dict_or_path: str | os.PathLike[str] | Mapping[str, Any], **official_kwargs: Any) -> HAT:
    """Build :class:`HAT` from official constructor arguments and load an official checkpoint strictly.

    Args:
        state_dict_or_path: Path of an official ``.pth`` (read with ``weights_only=True``) or a mapping:
            ``{'params_ema': sd}``, ``{'params': sd}`` or the state dict itself.
        **official_kwargs: Arguments of the official ``HAT`` (e.g. ``network_g`` of the option file; its
            ``type`` entry is ignored). Missing ones take the official defaults.

    Returns:
        The model in eval mode.

    Raises:
        OfficialCheckpointError: Unreadable file, missing/unexpected keys or shape mismatches (the message
            names the file, lists the first offending keys and suggests the probably wrong argument).
    """
    kwargs = {k: v for k, v in official_kwargs.items() if k != "type"}
    ckpt, source = read_official_state_dict(state_dict_or_path)
    model = HAT(**kwargs)
    load_strict(model, ckpt, source, _mismatch_hint(kwargs, ckpt), what=call_repr("HAT", kwargs))
    _check_indices(model, source)
    return model.eval()


def convert_official(
    src_path: str | os.PathLike[str], dst_path: str | os.PathLike[str], **official_kwargs: Any
) -> Path:
    """Convert an official ``.pth`` into our safetensors weights (via ``load_official``).

    Args:
        src_path: Official checkpoint.
        dst_path: Output ``.safetensors`` path (written atomically).
        **official_kwargs: As :func:`load_official`.

    Returns:
        ``dst_path``.
    """
    from shared_attention.engine.checkpoint import save_weights

    model = load_official(src_path, **official_kwargs)
    meta = {"source": str(src_path), "arch": "HAT", "kwargs": repr({k: v for k, v in official_kwargs.items()})}
    return save_weights(Path(dst_path), model.state_dict(), metadata=meta)
