"""Separators: MossFormer and the Conv-TasNet baseline, built from a :class:`~sa_speechsep.config.SepModelConfig`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from ..config import SepModelConfig

__all__ = ["build_model", "build_separator"]


def build_separator(cfg: SepModelConfig) -> nn.Module:
    """MossFormer or Conv-TasNet per ``cfg.arch`` (``(B, T)`` -> ``(B, speakers, T)``)."""
    if cfg.arch == "mossformer":
        from .mossformer import build_mossformer

        return build_mossformer(cfg.variant, **{"num_spks": cfg.num_spks, **cfg.overrides})
    if cfg.arch == "convtasnet":
        from .baseline import build_convtasnet

        return build_convtasnet(cfg.variant, cfg.num_spks, **cfg.overrides)
    raise ValueError(f"model.arch: unknown architecture {cfg.arch!r} (mossformer or convtasnet)")


def build_model(cfg: Any) -> nn.Module:
    """The separator of a whole :class:`~sa_speechsep.config.SpeechsepConfig` (``cfg.model``)."""
    return build_separator(cfg.model)
