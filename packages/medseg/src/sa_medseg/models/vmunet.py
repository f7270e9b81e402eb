"""VM-UNet (Ruan & Xiang 2024): a U-Net of VSS blocks with SS2D, as the official ``VSSM`` builds it.

Encoder: ``PatchEmbed2D`` (4x4 conv, stride 4, LayerNorm) -> 4 stages of VSS blocks, each but the last
followed by ``PatchMerging2D`` (2x2 neighbours concatenated, LayerNorm, Linear 4C -> 2C). Decoder: 4 stages,
each but the first starting with ``PatchExpand2D`` (Linear C -> 2C, pixel-shuffle to 2x with C/2, LayerNorm),
additive skips from the encoder, then ``Final_PatchExpand2D`` (x4) and a 1x1 convolution. All inner
tensors are channels-last ``(B, H, W, C)``. The SS2D operator lives in :mod:`shared_attention.ssm.ss2d`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from shared_attention.ssm.ss2d import ScanImpl, VSSBlock

__all__ = ["VSSM", "VMUNet", "build_vmunet", "VMUNET_VARIANTS"]


class PatchEmbed2D(nn.Module):
    """``Conv2d(k=s=patch)`` then LayerNorm, channels-last output ``(B, H/p, W/p, C)``."""

    def __init__(self, patch_size: int = 4, in_chans: int = 3, embed_dim: int = 96) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, H/p, W/p, C)


class PatchMerging2D(nn.Module):
    """2x2 neighbourhood merge: ``(B, H, W, C) -> (B, H/2, W/2, 2C)`` (norm on 4C, then Linear)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x))  # (B, H/2, W/2, 2C)


class PatchExpand(nn.Module):
    """Linear expansion then pixel shuffle: ``(B, H, W, C_in) -> (B, sH, sW, C_in * e / s^2)``, LayerNorm.

    Args:
        in_dim: input width. scale: upsampling factor ``s``. expand: output width of the Linear = ``expand * in_dim``.
    """

    def __init__(self, in_dim: int, scale: int, expand: int) -> None:
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(in_dim, expand * in_dim, bias=False)
        self.out_dim = expand * in_dim // (scale * scale)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, _ = x.shape
        s, c = self.scale, self.out_dim
        x = self.expand(x).reshape(B, H, W, s, s, c)  # (B, H, W, p1, p2, c)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(B, H * s, W * s, c)  # (B, sH, sW, c)
        return self.norm(x)


class VSSLayer(nn.Module):
    """One encoder stage: VSS blocks, then an optional ``downsample`` (PatchMerging2D)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        drop_path: Sequence[float],
        d_state: int,
        downsample: bool,
        attn_drop_rate: float = 0.0,
        scan_impl: ScanImpl = "fast",
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            VSSBlock(dim, drop_path[i], attn_drop_rate=attn_drop_rate, d_state=d_state, scan_impl=scan_impl)
            for i in range(depth)
        )
        self.downsample = PatchMerging2D(dim) if downsample else None

    def forward(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            x = blk(x)  # (B, H, W, C)
        return self.downsample(x) if self.downsample is not None else x


class VSSLayerUp(nn.Module):
    """One decoder stage: an optional ``upsample`` (PatchExpand2D of ``2 * dim`` -> ``dim``), then VSS blocks."""

    def __init__(
        self,
        dim: int,
        depth: int,
        drop_path: Sequence[float],
        d_state: int,
        upsample: bool,
        attn_drop_rate: float = 0.0,
        scan_impl: ScanImpl = "fast",
    ) -> None:
        super().__init__()
        self.upsample = PatchExpand(2 * dim, scale=2, expand=2) if upsample else None
        self.blocks = nn.ModuleList(
            VSSBlock(dim, drop_path[i], attn_drop_rate=attn_drop_rate, d_state=d_state, scan_impl=scan_impl)
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.upsample is not None:
            x = self.upsample(x)  # (B, 2H, 2W, C/2)
        for blk in self.blocks:
            x = blk(x)
        return x


def _linspace(rate: float, n: int) -> list[float]:
    if n <= 1:
        return [0.0] * n
    return [rate * i / (n - 1) for i in range(n)]  # torch.linspace(0, rate, n) without a tensor (meta-safe)


class VSSM(nn.Module):
    """The VM-UNet network (official class ``VSSM``; argument names as the official constructor).

    Args:
        patch_size: stem patch size (4). in_chans: input channels (3). num_classes: output classes.
        depths: VSS blocks per encoder stage. depths_decoder: VSS blocks per decoder stage.
        dims: encoder widths (an int ``C`` means ``[C, 2C, 4C, 8C]``). dims_decoder: decoder widths.
        d_state: SSM state size. drop_rate: unused (kept for the official signature).
        attn_drop_rate: dropout inside SS2D. drop_path_rate: stochastic depth, linear over blocks.
        patch_norm: kept for the official signature (the stem always has a LayerNorm).
        scan_impl: ``"fast"`` (mamba-ssm kernel or chunked scan) or ``"reference"`` (sequential scan).

    Input ``(B, in_chans, H, W)`` with H, W multiples of ``patch_size * 8``; output logits
    ``(B, num_classes, H, W)``.
    """

    def __init__(
        self,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (2, 2, 9, 2),
        depths_decoder: Sequence[int] = (2, 9, 2, 2),
        dims: int | Sequence[int] = (96, 192, 384, 768),
        dims_decoder: int | Sequence[int] = (768, 384, 192, 96),
        d_state: int = 16,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        patch_norm: bool = True,
        scan_impl: ScanImpl = "fast",
    ) -> None:
        super().__init__()
        n = len(depths)
        if isinstance(dims, int):
            dims = [dims * 2**i for i in range(n)]
        if isinstance(dims_decoder, int):
            dims_decoder = [dims_decoder * 2 ** (n - 1 - i) for i in range(n)]
        dims, dims_decoder = list(dims), list(dims_decoder)
        if len(dims) != n or len(dims_decoder) != n or len(depths_decoder) != n:
            raise ValueError(
                f"depths {list(depths)}, depths_decoder {list(depths_decoder)}, dims {dims} and "
                f"dims_decoder {dims_decoder} must have the same length"
            )
        self.num_classes = num_classes
        self.patch_size = patch_size
        self.num_layers = n
        self.patch_embed = PatchEmbed2D(patch_size, in_chans, dims[0])
        dpr = _linspace(drop_path_rate, sum(depths))
        dpr_dec = _linspace(drop_path_rate, sum(depths_decoder))[::-1]
        self.layers = nn.ModuleList(
            VSSLayer(
                dims[i],
                depths[i],
                dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                d_state,
                i < n - 1,
                attn_drop_rate,
                scan_impl,
            )
            for i in range(n)
        )
        self.layers_up = nn.ModuleList(
            VSSLayerUp(
                dims_decoder[i],
                depths_decoder[i],
                dpr_dec[sum(depths_decoder[:i]) : sum(depths_decoder[: i + 1])],
                d_state,
                i > 0,
                attn_drop_rate,
                scan_impl,
            )
            for i in range(n)
        )
        self.final_up = PatchExpand(dims_decoder[-1], scale=4, expand=4)
        self.final_conv = nn.Conv2d(self.final_up.out_dim, num_classes, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def set_scan_impl(self, impl: ScanImpl) -> None:
        """Switches every SS2D between the fast scan and the sequential reference."""
        for m in self.modules():
            if hasattr(m, "scan_impl"):
                m.scan_impl = impl  # type: ignore[assignment]

    def forward(self, x: Tensor) -> Tensor:
        """Segment.

        Args:
            x: ``(B, in_chans, H, W)``, H and W multiples of ``8 * patch_size``.

        Returns:
            ``(B, num_classes, H, W)`` logits.
        """
        mult = self.patch_size * 2 ** (self.num_layers - 1)
        if x.shape[-2] % mult or x.shape[-1] % mult:
            raise ValueError(f"VM-UNet input H, W must be multiples of {mult}, got {tuple(x.shape[-2:])}")
        x = self.patch_embed(x)  # (B, H/4, W/4, C0)
        skips = []
        for layer in self.layers:
            skips.append(x)
            x = layer(x)  # (B, H/4/2^i, W/4/2^i, C_{i+1})
        for i, layer in enumerate(self.layers_up):
            x = layer(x if i == 0 else x + skips[-i])  # additive skips
        x = self.final_up(x).permute(0, 3, 1, 2)  # (B, C0/4, H, W)
        return self.final_conv(x)  # (B, num_classes, H, W)


class VMUNet(nn.Module):
    """The official ``VMUNet`` wrapper: ``VSSM`` as ``self.vmunet``, 1-channel inputs repeated to 3.

    Args:
        input_channels: input channels of the wrapper (3). num_classes: classes (sigmoid output when 1).
        depths / depths_decoder / drop_path_rate: forwarded to :class:`VSSM`.
        load_ckpt_path: accepted for the official signature; never read here (load weights explicitly).
        vssm_kwargs: further :class:`VSSM` arguments (``dims``, ``d_state``, ``scan_impl``...).
    """

    def __init__(
        self,
        input_channels: int = 3,
        num_classes: int = 1,
        depths: Sequence[int] = (2, 2, 9, 2),
        depths_decoder: Sequence[int] = (2, 9, 2, 2),
        drop_path_rate: float = 0.2,
        load_ckpt_path: str | None = None,
        **vssm_kwargs: object,
    ) -> None:
        super().__init__()
        self.load_ckpt_path = load_ckpt_path
        self.num_classes = num_classes
        self.vmunet = VSSM(
            in_chans=input_channels,
            num_classes=num_classes,
            depths=depths,
            depths_decoder=depths_decoder,
            drop_path_rate=drop_path_rate,
            **vssm_kwargs,  # type: ignore[arg-type]
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> ``(B, num_classes, H, W)`` logits (probabilities when ``num_classes == 1``)."""
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        logits = self.vmunet(x)
        return torch.sigmoid(logits) if self.num_classes == 1 else logits


#: Named configurations: the official Synapse one and small CPU ones (our names).
VMUNET_VARIANTS: dict[str, dict[str, object]] = {
    "vmunet-synapse": {"depths": [2, 2, 2, 2], "depths_decoder": [2, 2, 2, 1], "drop_path_rate": 0.2},
    "vmunet-cpu": {
        "depths": [1, 1, 1, 1],
        "depths_decoder": [1, 1, 1, 1],
        "dims": [24, 48, 96, 192],
        "dims_decoder": [192, 96, 48, 24],
        "d_state": 8,
        "drop_path_rate": 0.0,
    },
    "vmunet-tiny": {
        "depths": [1, 1, 1, 1],
        "depths_decoder": [1, 1, 1, 1],
        "dims": [8, 16, 32, 64],
        "dims_decoder": [64, 32, 16, 8],
        "d_state": 4,
        "drop_path_rate": 0.0,
    },
}


def build_vmunet(
    variant: str = "vmunet-synapse", in_chans: int = 3, num_classes: int = 9, **overrides: object
) -> VMUNet:
    """A :class:`VMUNet` of a named variant (``overrides`` use the official argument names)."""
    if variant not in VMUNET_VARIANTS:
        raise ValueError(f"unknown VM-UNet variant {variant!r}; choose from {sorted(VMUNET_VARIANTS)}")
    kw = {**VMUNET_VARIANTS[variant], **overrides}
    return VMUNet(input_channels=in_chans, num_classes=num_classes, **kw)  # type: ignore[arg-type]
