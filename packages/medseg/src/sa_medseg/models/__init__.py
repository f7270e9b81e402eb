"""The two segmentation networks: ParaTransCNN and the Mamba U-Net (VM-UNet), and ``build_model(cfg)``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["build_model"]


def build_model(cfg: Any) -> nn.Module:
    """The network of ``cfg.model`` (random init; ParaTransCNN's ResNet from ``resnet_weights`` when given)."""
    m = cfg.model
    if m.family == "vmunet":
        from .vmunet import build_vmunet

        return build_vmunet(m.variant, in_chans=m.in_chans, num_classes=m.num_classes, **m.overrides)
    from .paratranscnn import build_paratranscnn

    model = build_paratranscnn(m.variant, in_chans=m.in_chans, num_classes=m.num_classes, **m.overrides)
    if m.resnet_weights:
        p = Path(m.resnet_weights)
        if not p.is_file():
            raise FileNotFoundError(f"model.resnet_weights: {p}: no such file")
        state = torch.load(p, map_location="cpu", weights_only=True)
        model.load_resnet_weights(state)
    return model
