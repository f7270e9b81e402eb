"""Restoration models (wiring of shared_attention mechanisms) and ``build_model(cfg)``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import nn

__all__ = ["build_model"]


def build_model(cfg: Any) -> nn.Module:
    """The HAT of ``cfg.model`` (a :class:`~sa_restoration.config.RestorationConfig`)."""
    from .hat import build_hat

    return build_hat(cfg.model.variant, cfg.model.upscale, **cfg.model.overrides)
