"""MossFormer (Zhao & Ma, ICASSP 2023): conv encoder, masking network of gated attention units, conv decoder.

Only the wiring lives here; the MossFormer block is
:class:`shared_attention.attention.gated.GatedAttentionUnit`. The official model's forward returns
``(B, T, speakers)``; ours returns ``(B, speakers, T)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared_attention.attention.gated import GatedAttentionUnit
from shared_attention.layers.position import RotaryEmbedding, ScaledSinusoidalEmbedding

__all__ = ["MossFormer", "MossFormerConfig", "MOSSFORMER_VARIANTS", "build_mossformer"]


@dataclass(frozen=True)
class MossFormerConfig:
    """MossFormer hyper-parameters; names follow the official constructor.

    Attributes:
        kernel_size / stride: encoder and decoder filter length and hop (the official encoder always uses
            ``kernel_size // 2``; the decoder uses ``stride``).
        in_channels: encoder filters ``N``. out_channels: width of the masking network.
        bias: decoder bias. num_blocks: MossFormer blocks. d_model: block width (= ``out_channels``).
        attn_dropout: dropout in the blocks. group_size: frames per quadratic-attention group.
        query_key_dim: shared query/key width. expansion_factor: hidden width / ``d_model``.
        num_spks: speakers. rotary_dim: rotated query/key features (official: ``min(32, query_key_dim)``).
        kernel_conv: depthwise kernel of the conv-augmented FFN modules.
    """

    kernel_size: int = 16
    stride: int = 8
    in_channels: int = 512
    out_channels: int = 512
    bias: bool = False
    num_blocks: int = 24
    d_model: int = 512
    attn_dropout: float = 0.1
    group_size: int = 256
    query_key_dim: int = 128
    expansion_factor: float = 4.0
    num_spks: int = 2
    rotary_dim: int = 32
    kernel_conv: int = 17


#: Named variants. ``mossformer-l`` is the official MossFormer(L) (42,101,850 parameters);
#: ``mossformer-m`` the paper's medium model; ``cpu-small`` trains on two CPU cores; ``tiny`` for tests.
MOSSFORMER_VARIANTS: dict[str, MossFormerConfig] = {
    "mossformer-l": MossFormerConfig(),
    "mossformer-m": MossFormerConfig(in_channels=384, out_channels=384, d_model=384, num_blocks=24),
    "cpu-small": MossFormerConfig(
        in_channels=128,
        out_channels=128,
        d_model=128,
        num_blocks=4,
        query_key_dim=64,
        expansion_factor=2.0,
        group_size=128,
        attn_dropout=0.0,
    ),
    "tiny": MossFormerConfig(
        in_channels=32,
        out_channels=32,
        d_model=32,
        num_blocks=2,
        query_key_dim=16,
        expansion_factor=2.0,
        group_size=16,
        rotary_dim=8,
        kernel_conv=5,
        attn_dropout=0.0,
    ),
}


def _frozen_parameter_rotary(dim: int) -> RotaryEmbedding:
    """A core :class:`RotaryEmbedding` whose ``freqs`` is a non-trainable *parameter*, as in the official
    model (rotary-embedding-torch), so parameter counts match (the table is counted once)."""
    rope = RotaryEmbedding(dim)
    freqs = rope._buffers.pop("freqs")
    assert freqs is not None
    rope.freqs = nn.Parameter(freqs, requires_grad=False)
    return rope


class MaskNet(nn.Module):
    """MossFormer masking network: norm, 1x1 conv, scaled sinusoidal positions, gated attention units, final
    LayerNorm, GroupNorm + skip, PReLU, per-speaker 1x1 conv, tanh * sigmoid gated output, ReLU masks.

    Args:
        cfg: the model configuration.
    """

    def __init__(self, cfg: MossFormerConfig) -> None:
        super().__init__()
        if cfg.out_channels != cfg.d_model:
            raise ValueError(f"out_channels ({cfg.out_channels}) must equal d_model ({cfg.d_model})")
        n, d = cfg.in_channels, cfg.out_channels
        self.num_spks = cfg.num_spks
        self.norm = nn.GroupNorm(1, n, eps=1e-8)
        self.in_proj = nn.Conv1d(n, d, 1, bias=False)
        self.pos_enc = ScaledSinusoidalEmbedding(d)
        nn.init.ones_(self.pos_enc.scale)  # the official scale starts at 1
        rope = _frozen_parameter_rotary(min(cfg.rotary_dim, cfg.query_key_dim))
        self.blocks = nn.ModuleList(
            GatedAttentionUnit(
                d,
                group_size=cfg.group_size,
                query_key_dim=cfg.query_key_dim,
                expansion_factor=cfg.expansion_factor,
                dropout=cfg.attn_dropout,
                rotary=rope,
                kernel_size=cfg.kernel_conv,
            )
            for _ in range(cfg.num_blocks)
        )
        self.blocks_norm = nn.LayerNorm(d, eps=1e-6)
        self.skip_norm = nn.GroupNorm(1, d, eps=1e-8)
        self.prelu = nn.PReLU()
        self.out_proj = nn.Conv1d(d, n * cfg.num_spks, 1)
        self.output = nn.Conv1d(n, n, 1)
        self.output_gate = nn.Conv1d(n, n, 1)
        self.mask_proj = nn.Conv1d(n, n, 1, bias=False)

    def set_naive(self, naive: bool) -> None:
        """Switch every block between the fast and the naive attention path."""
        for blk in self.blocks:
            blk.naive = naive  # type: ignore[assignment]

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, N, L) encoder output
        b = x.shape[0]
        x = self.in_proj(self.norm(x))  # (B, D, L)
        x = x + self.pos_enc(x.transpose(1, 2)).transpose(0, 1)  # (B, D, L)
        skip = x
        h = x.transpose(1, 2)  # (B, L, D)
        for blk in self.blocks:
            h = blk(h)  # (B, L, D)
        h = self.blocks_norm(h).transpose(1, 2)  # (B, D, L)
        x = self.skip_norm(h) + skip  # (B, D, L)
        x = self.out_proj(self.prelu(x))  # (B, N*spk, L)
        x = x.reshape(b * self.num_spks, -1, x.shape[-1])  # (B*spk, N, L)
        x = torch.tanh(self.output(x)) * torch.sigmoid(self.output_gate(x))  # (B*spk, N, L)
        x = F.relu(self.mask_proj(x))  # (B*spk, N, L)
        return x.reshape(b, self.num_spks, -1, x.shape[-1])  # (B, spk, N, L)


class MossFormer(nn.Module):
    """MossFormer speech separation model.

    Args:
        cfg: hyper-parameters (default: MossFormer(L), 2 speakers).

    Input ``(B, T)`` or ``(B, 1, T)`` mixture waveform of any length; output ``(B, num_spks, T)``.
    """

    def __init__(self, cfg: MossFormerConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or MossFormerConfig()
        self.cfg = cfg
        self.num_spks = cfg.num_spks
        self.kernel_size = cfg.kernel_size
        self.encoder = nn.Conv1d(1, cfg.in_channels, cfg.kernel_size, stride=cfg.kernel_size // 2, bias=False)
        self.mask_net = MaskNet(cfg)
        self.decoder = nn.ConvTranspose1d(cfg.in_channels, 1, cfg.kernel_size, stride=cfg.stride, bias=cfg.bias)

    def set_naive(self, naive: bool) -> None:
        """Use the naive (unfused, equation-by-equation) attention path in every block."""
        self.mask_net.set_naive(naive)

    def forward(self, mix: Tensor) -> Tensor:
        if mix.dim() == 3:
            if mix.shape[1] != 1:
                raise ValueError(f"expected a mono mixture (B, 1, T), got {tuple(mix.shape)}")
            mix = mix[:, 0]
        if mix.dim() != 2:
            raise ValueError(f"expected (B, T) or (B, 1, T), got {tuple(mix.shape)}")
        b, t = mix.shape
        x = mix if t >= self.kernel_size else F.pad(mix, (0, self.kernel_size - t))  # (B, T')
        w = F.relu(self.encoder(x.unsqueeze(1)))  # (B, N, L)
        masks = self.mask_net(w)  # (B, spk, N, L)
        sep = (w.unsqueeze(1) * masks).flatten(0, 1)  # (B*spk, N, L)
        est = self.decoder(sep).reshape(b, self.num_spks, -1)  # (B, spk, T_dec)
        t_dec = est.shape[-1]
        return F.pad(est, (0, t - t_dec)) if t_dec < t else est[..., :t]  # (B, spk, T)


def build_mossformer(variant: str = "mossformer-l", **overrides: object) -> MossFormer:
    """A MossFormer of a named variant with constructor overrides (official argument names)."""
    if variant not in MOSSFORMER_VARIANTS:
        raise ValueError(f"unknown MossFormer variant {variant!r}; choose from {sorted(MOSSFORMER_VARIANTS)}")
    base = asdict(MOSSFORMER_VARIANTS[variant])
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(f"unknown MossFormer arguments {unknown}; valid: {sorted(base)}")
    base.update(overrides)
    return MossFormer(MossFormerConfig(**base))
