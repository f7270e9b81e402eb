"""Anomaly models: FOD (``fod``) wired from shared_attention mechanisms, PatchCore (``patchcore``) on the same
frozen features, and ``build_model(cfg)`` choosing by ``cfg.model.arch``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["build_model"]


def build_model(cfg: Any, backbone_weights: str | None | bool = True) -> nn.Module:
    """The model of ``cfg.model``: :class:`~sa_anomaly.models.fod.FODAnomalyModel` or (``arch: patchcore``)
    :class:`~sa_anomaly.models.patchcore.PatchCoreModel` (``backbone_weights=False``: random backbone, for
    restoring a run folder that holds all weights)."""
    m = cfg.model
    weights = m.backbone_weights if backbone_weights is True else (backbone_weights or None)
    if getattr(m, "arch", "fod") == "patchcore":
        from .patchcore import PatchCoreModel

        return PatchCoreModel(
            m.backbone,
            m.out_indices,
            m.image_size,
            target_dim=m.target_dim,
            coreset_ratio=m.coreset_ratio,
            projection_dim=m.projection_dim,
            num_neighbors=m.num_neighbors,
            smooth_sigma=cfg.loss.smooth_sigma,
            pool_size=m.pool_size,
            backbone_weights=weights,
            seed=cfg.data.seed,
        )
    from .fod import FODAnomalyModel

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
        m.intra_exclude_radius,
        m.score,
    )
