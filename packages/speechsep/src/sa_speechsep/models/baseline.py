"""Peer baseline: torchaudio's Conv-TasNet (Luo & Mesgarani, 2019) behind the MossFormer interface."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

__all__ = ["ConvTasNetSeparator", "CONVTASNET_VARIANTS", "build_convtasnet"]

#: torchaudio ``ConvTasNet`` arguments per size. ``cpu-small`` matches MossFormer ``cpu-small`` in
#: parameters (about 0.36 M each); ``paper`` is the published 5.1 M model.
CONVTASNET_VARIANTS: dict[str, dict[str, Any]] = {
    "paper": {
        "enc_kernel_size": 16,
        "enc_num_feats": 512,
        "msk_kernel_size": 3,
        "msk_num_feats": 128,
        "msk_num_hidden_feats": 512,
        "msk_num_layers": 8,
        "msk_num_stacks": 3,
    },
    "cpu-small": {
        "enc_kernel_size": 16,
        "enc_num_feats": 128,
        "msk_kernel_size": 3,
        "msk_num_feats": 64,
        "msk_num_hidden_feats": 128,
        "msk_num_layers": 7,
        "msk_num_stacks": 2,
    },
    "tiny": {
        "enc_kernel_size": 16,
        "enc_num_feats": 32,
        "msk_kernel_size": 3,
        "msk_num_feats": 16,
        "msk_num_hidden_feats": 32,
        "msk_num_layers": 2,
        "msk_num_stacks": 1,
    },
}


class ConvTasNetSeparator(nn.Module):
    """``torchaudio.models.ConvTasNet`` with MossFormer's I/O: ``(B, T)`` in, ``(B, speakers, T)`` out.

    Args:
        num_spks: speakers. **kwargs: ``ConvTasNet`` arguments.
    """

    def __init__(self, num_spks: int = 2, **kwargs: Any) -> None:
        super().__init__()
        from torchaudio.models import ConvTasNet

        self.num_spks = num_spks
        self.net = ConvTasNet(num_sources=num_spks, **kwargs)

    def forward(self, mix: Tensor) -> Tensor:
        if mix.dim() == 2:
            mix = mix.unsqueeze(1)  # (B, 1, T)
        t = mix.shape[-1]
        return self.net(mix)[..., :t]  # (B, spk, T)


def build_convtasnet(variant: str = "cpu-small", num_spks: int = 2, **overrides: Any) -> ConvTasNetSeparator:
    """A Conv-TasNet of a named size with argument overrides."""
    if variant not in CONVTASNET_VARIANTS:
        raise ValueError(f"unknown ConvTasNet variant {variant!r}; choose from {sorted(CONVTASNET_VARIANTS)}")
    kwargs = {**CONVTASNET_VARIANTS[variant], **overrides}
    return ConvTasNetSeparator(num_spks, **kwargs)
