"""Anomaly models: FOD (``fod``) wired from shared_attention mechanisms, and ``build_model(cfg)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["build_model"]


def build_model(cfg: Any, backbone_weights: str | None | bool = True) -> nn.Module:
    """The :class:`~sa_anomaly.models.fod.FODAnomalyModel` of ``cfg.model`` (``backbone_weights=False``: random
    backbone, for restoring a run folder that holds all weights)."""
    from .fod import FODAnomalyModel

    m = cfg.model
    weights = m.backbone_weights if backbone_weights is True else (backbone_weights or None)
    return FODAnomalyModel(
        m.backbone,
        m.out_indices,
        m.image_size,
        m.d_models,
        m.n_heads,
        m.n_layers,
        m.ffn_scale,
        m.pool_size,
        weights,
        m.use_out_projection,
    )
