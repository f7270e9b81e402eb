"""Official FOD checkpoints (xcyao00/FOD): one ``models.model.FOD`` head per feature level.

Official state dicts use the same parameter names as :class:`~sa_anomaly.models.fod.FODHead`, so the mapping is the
identity plus a ``module.`` strip; loading is strict. The official reference features are pickles
(``rfeatures_w50/<class>.pkl``): we never unpickle files, so pass them as an array / tensor / ``.npy`` /
``.safetensors`` (``(C, L)`` as in the pickle, or ``(L, C)``). The official forward discards the attention
output projection; the returned head does the same unless ``use_out_projection=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shared_attention.engine.foreign import call_repr, load_strict, read_state_dict

from .models.fod import FODHead

__all__ = ["load_official", "load_reference_features"]

#: Checkpoint keys that may hold a head's weights; the first present wins.
_WRAPPERS = ("state_dict", "model", "params")
HeadSource = Mapping[str, Tensor] | str | Path


def _read_head(src: HeadSource) -> tuple[dict[str, Tensor], str]:
    """A head's state dict (``module.`` stripped) and its source name, via the core foreign-checkpoint reader."""
    return read_state_dict(src, wrappers=_WRAPPERS, drop_non_tensors=False)


def load_reference_features(ref: str | Path | np.ndarray | Tensor) -> Tensor:
    """Reads reference features from an array/tensor, ``.npy`` (no pickles) or ``.safetensors`` (first tensor)."""
    if isinstance(ref, Tensor):
        return ref.float()
    if isinstance(ref, np.ndarray):
        return torch.from_numpy(np.asarray(ref, dtype=np.float32))
    p = Path(ref)
    if p.suffix == ".npy":
        return torch.from_numpy(np.load(p, allow_pickle=False).astype(np.float32))
    if p.suffix == ".safetensors":
        tensors, _ = read_state_dict(p, wrappers=(), strip_prefixes=(), drop_non_tensors=False)
        if len(tensors) != 1:
            raise ValueError(f"{p}: expected one tensor of reference features, found {sorted(tensors)}")
        return next(iter(tensors.values())).float()
    raise ValueError(f"{p}: reference features must be .npy or .safetensors (official .pkl files: convert with numpy)")


def load_official(
    state_dict_or_path: Mapping[str, Tensor] | str | Path,
    seq_len: int = 1024,
    in_channels: int = 512,
    out_channels: int = 512,
    d_model: int = 256,
    n_heads: int = 8,
    n_layers: int = 3,
    args: Mapping[str, Any] | Any | None = None,
    d_feed_foward_scale: int = 4,
    dropout: float = 0.0,
    ref_features: str | Path | np.ndarray | Tensor | None = None,
    use_out_projection: bool = False,
) -> FODHead:
    """Builds :class:`FODHead` with the official constructor's arguments and loads an official state dict strictly.

    Args:
        state_dict_or_path: the state dict of one level's ``FOD`` (``.pth`` read with ``weights_only=True``,
            or ``.safetensors``).
        seq_len ... dropout: the official ``FOD.__init__`` arguments (defaults: level 0 of wide_resnet50_2).
        args: the official ``args`` namespace or dict; ``with_intra`` / ``with_inter`` are read from it.
        ref_features: optional reference features for this level (see :func:`load_reference_features`).
        use_out_projection: apply the attention output projection (the official code discards it).

    Returns:
        The head in eval mode; ``head(x)`` reproduces the official ``FOD.forward(x, train=False)``.

    Raises:
        shared_attention.engine.foreign.ForeignCheckpointError: an unreadable file, or a state dict that does not
            fit (the source, missing/unexpected keys and shape mismatches are named).
    """
    state, source = _read_head(state_dict_or_path)

    def flag(name: str) -> bool:
        if args is None:
            return True
        value = args.get(name, True) if isinstance(args, Mapping) else getattr(args, name, True)
        return bool(value)

    kwargs: dict[str, Any] = dict(
        seq_len=seq_len,
        in_channels=in_channels,
        out_channels=out_channels,
        d_model=d_model,
        n_heads=n_heads,
        n_layers=n_layers,
        d_feed_foward_scale=d_feed_foward_scale,
        dropout=dropout,
        with_intra=flag("with_intra"),
        with_inter=flag("with_inter"),
    )
    head = FODHead(**kwargs, use_out_projection=use_out_projection)
    load_strict(head, state, source, what=call_repr("FODHead", kwargs))
    if ref_features is not None:
        ref = load_reference_features(ref_features)
        if ref.numel() != seq_len * in_channels:
            raise ValueError(
                f"reference features {tuple(ref.shape)} do not match seq_len={seq_len}, in_channels={in_channels}"
            )
        head.set_reference(ref.reshape(-1, seq_len) if ref.shape[0] == in_channels else ref.reshape(seq_len, -1))
    return head.eval()


def head_kwargs_from_state(state: Mapping[str, Tensor]) -> dict[str, int]:
    """Official constructor arguments (except ``seq_len``) read off a head's state dict shapes."""
    try:
        w = state["embedding.project_embedding.project.weight"]
        d_model, in_channels = int(w.shape[0]), int(w.shape[1])
        n_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.encode_layers."))
        n_heads = int(state["encoder.encode_layers.0.self_attention.sigma_projection.weight"].shape[0]) // 2
        ffn = int(state["encoder.encode_layers.0.ffn.fc1.weight"].shape[0]) // d_model
        out_channels = int(state["projection.weight"].shape[0])
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not an official FOD head state dict: {exc}") from exc
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "d_model": d_model,
        "n_heads": n_heads,
        "n_layers": n_layers,
        "d_feed_foward_scale": ffn,
    }


def assemble_official(
    heads: Sequence[HeadSource],
    references: Sequence[str | Path | np.ndarray | Tensor],
    backbone_weights: str | Path | None,
    backbone: str = "wide_resnet50_2",
    image_size: int = 256,
    out_indices: tuple[int, ...] = (2, 3),
) -> Any:
    """A complete :class:`~sa_anomaly.models.fod.FODAnomalyModel` from official per-level heads (strict loads), their
    reference features and the backbone's ImageNet weights (official: timm wide_resnet50_2, levels 2 and 3)."""
    from .models.fod import FODAnomalyModel

    if len(heads) != len(out_indices) or len(references) != len(out_indices):
        raise ValueError(f"need one head and one reference per level {list(out_indices)}")
    read = [_read_head(h) for h in heads]
    kws = [head_kwargs_from_state(s) for s, _ in read]
    if len({(k["n_heads"], k["n_layers"], k["d_feed_foward_scale"]) for k in kws}) != 1:
        raise ValueError("the official heads differ in n_heads / n_layers / FFN scale")
    model = FODAnomalyModel(
        backbone,
        out_indices,
        image_size,
        [k["d_model"] for k in kws],
        kws[0]["n_heads"],
        kws[0]["n_layers"],
        kws[0]["d_feed_foward_scale"],
        3,
        backbone_weights,
    )
    for i, (head, (state, source), ref, kw) in enumerate(zip(model.heads, read, references, kws)):
        if kw["in_channels"] != model.extractor.channels[i]:
            raise ValueError(
                f"head {i} expects {kw['in_channels']} channels, {backbone} level gives "
                f"{model.extractor.channels[i]}"
            )
        load_strict(head, state, source, what=f"head {i} ({call_repr('FODHead', kw)})")
        r = load_reference_features(ref)
        buf = getattr(model, f"reference_{i}")
        c, h, w = buf.shape
        if r.numel() != c * h * w:
            raise ValueError(
                f"reference {i}: {tuple(r.shape)} does not match ({c}, {h * w}) at image size {image_size}"
            )
        r = r.reshape(c, h * w) if r.shape[0] == c else r.reshape(h * w, c).t()
        buf.copy_(r.reshape(c, h, w))
    return model.eval()
