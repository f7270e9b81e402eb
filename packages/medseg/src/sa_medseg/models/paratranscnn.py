"""ParaTransCNN (Sun et al. 2024): a ResNet-34 branch and a three-stage transformer branch in parallel.

As the official code builds it (``model/ParaTransCNN.py``):

* CNN branch: ResNet stem (7x7 conv stride 2, BN, ReLU; no max-pool) then ``layer1..layer4``
  (``encoder1..4``): features ``e2, e3, e4`` at 1/4, 1/8, 1/16 of the input;
* transformer branch: conv patch embeddings (stride 4, 2, 2) feeding three plain pre-norm ViT stages
  (widths ``dim, 2 dim, 4 dim``; MLP x2; no positional embedding; qkv without bias) -> ``v1, v2, v3``;
* fusion per scale: ``SE(cat[v_k, e_{k+1}])`` (squeeze-excitation, r = 16);
* decoder: ``(conv3x3-BN-ReLU) x 2`` on ``cat[skip, upsampled]``, transposed-conv upsampling (k2, k2, k4)
  and a 1x1 convolution to the class logits.

The transformer layers are :class:`shared_attention.layers.blocks.TransformerBlock` and the fusion is
:class:`shared_attention.attention.channel.SqueezeExcitation`; ``sa_medseg.official`` maps the official
key names onto ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from shared_attention.attention.channel import SqueezeExcitation
from shared_attention.attention.multihead import MultiHeadAttention
from shared_attention.layers.blocks import TransformerBlock
from shared_attention.layers.winograd import set_winograd

__all__ = ["ParaTransCNN", "build_paratranscnn", "PARATRANSCNN_VARIANTS"]


class TransformerStage(nn.Module):
    """``depth`` pre-norm transformer layers on tokens (no final norm)."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, heads, mlp_ratio=mlp_dim / dim, qkv_bias=False, drop=dropout) for _ in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        t = x.permute(0, 2, 3, 1).reshape(B, H * W, C)  # (B, N, C) row-major tokens
        for blk in self.blocks:
            t = blk(t)
        return t.reshape(B, H, W, C).permute(0, 3, 1, 2)  # (B, C, H, W)


class DecoderBottleneckLayer(nn.Module):
    """``(Conv3x3 -> BN -> ReLU) x 2`` at constant width (official names ``conv1/norm1/conv3/norm3``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm3 = nn.BatchNorm2d(channels)
        self.relu3 = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu1(self.norm1(self.conv1(x)))
        return self.relu3(self.norm3(self.conv3(x)))


def _res_layer(in_ch: int, out_ch: int, blocks: int, stride: int) -> nn.Sequential:
    down = None
    if stride != 1 or in_ch != out_ch:
        down = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
    layers = [BasicBlock(in_ch, out_ch, stride, down)] + [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


class ParaTransCNN(nn.Module):
    """ParaTransCNN with the official constructor arguments, plus CNN-width knobs for small configs.

    Args:
        n_channels: input channels (3; grayscale is repeated by the caller or :meth:`forward`).
        num_classes: output classes. heads: attention heads. dim: width of the first transformer stage.
        depth: transformer layers per stage. patch_size: stride of the 2nd/3rd patch embeddings (2).
        resnet_widths: channels of ResNet ``layer1..4`` (ResNet-34: 64, 128, 256, 512).
        resnet_blocks: BasicBlocks per ResNet layer (ResNet-34: 3, 4, 6, 3).
        dropout: transformer dropout (0.1).

    Input ``(B, n_channels, H, W)``, H and W multiples of 16; output ``(B, num_classes, H, W)`` logits.
    """

    def __init__(
        self,
        n_channels: int = 3,
        num_classes: int = 9,
        heads: int = 8,
        dim: int = 320,
        depth: Sequence[int] = (3, 3, 3),
        patch_size: int = 2,
        resnet_widths: Sequence[int] = (64, 128, 256, 512),
        resnet_blocks: Sequence[int] = (3, 4, 6, 3),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.n_channels = n_channels
        self.num_classes = num_classes
        w1, w2, w3, w4 = resnet_widths
        d1, d2, d3 = dim, 2 * dim, 4 * dim
        # transformer branch
        self.patch_embed_1 = nn.Conv2d(n_channels, d1, 2 * patch_size, stride=2 * patch_size)
        self.patch_embed_2 = nn.Conv2d(d1, d2, patch_size, stride=patch_size)
        self.patch_embed_3 = nn.Conv2d(d2, d3, patch_size, stride=patch_size)
        self.vit_1 = TransformerStage(d1, depth[0], heads, 2 * d1, dropout)
        self.vit_2 = TransformerStage(d2, depth[1], heads, 2 * d2, dropout)
        self.vit_3 = TransformerStage(d3, depth[2], heads, 2 * d3, dropout)
        # CNN branch (ResNet without max-pool)
        self.firstconv = nn.Conv2d(n_channels, w1, 7, stride=2, padding=3, bias=False)
        self.firstbn = nn.BatchNorm2d(w1)
        self.firstrelu = nn.ReLU(inplace=True)
        self.encoder1 = _res_layer(w1, w1, resnet_blocks[0], 1)
        self.encoder2 = _res_layer(w1, w2, resnet_blocks[1], 2)
        self.encoder3 = _res_layer(w2, w3, resnet_blocks[2], 2)
        self.encoder4 = _res_layer(w3, w4, resnet_blocks[3], 2)
        # fusion and decoder
        c1, c2, c3 = d3 + w4, d2 + w3, d1 + w2  # fused widths at 1/16, 1/8, 1/4
        self.SE_1 = SqueezeExcitation(c1, 16)
        self.SE_2 = SqueezeExcitation(c2, 16)
        self.SE_3 = SqueezeExcitation(c3, 16)
        self.decoder1 = DecoderBottleneckLayer(c1)
        self.up3_1 = nn.ConvTranspose2d(c1, c2, 2, stride=2)
        self.decoder2 = DecoderBottleneckLayer(2 * c2)
        self.up2_1 = nn.ConvTranspose2d(2 * c2, c2, 2, stride=2)
        self.decoder3 = DecoderBottleneckLayer(c3 + c2)
        self.up1_1 = nn.ConvTranspose2d(c3 + c2, d1, 4, stride=4)
        self.out = nn.Conv2d(d1, num_classes, 1)
        # the decoder's wide 3x3 convolutions (1344-1792 channels at the official size) through Winograd F(2x2, 3x3)
        set_winograd(self, True)

    def set_naive(self, naive: bool) -> None:
        """The official pattern (tests, ``bench/speed.py``): the transformer branch's attention step by step
        (``softmax(q k^T * scale) v``) instead of the fused kernel, and every convolution direct (no Winograd).
        Same result to float rounding."""
        for m in self.modules():
            if isinstance(m, MultiHeadAttention):
                m.explicit = naive
        set_winograd(self, not naive)

    def forward(self, x: Tensor) -> Tensor:
        """Segment.

        Args:
            x: ``(B, n_channels, H, W)`` (1 channel is repeated), H and W multiples of 16.

        Returns:
            ``(B, num_classes, H, W)`` logits.
        """
        if x.shape[1] == 1 and self.n_channels != 1:
            x = x.repeat(1, self.n_channels, 1, 1)
        if x.shape[-2] % 16 or x.shape[-1] % 16:
            raise ValueError(f"ParaTransCNN input H, W must be multiples of 16, got {tuple(x.shape[-2:])}")
        e0 = self.firstrelu(self.firstbn(self.firstconv(x)))  # (B, w1, H/2, W/2)
        e1 = self.encoder1(e0)  # (B, w1, H/2, W/2)
        e2 = self.encoder2(e1)  # (B, w2, H/4, W/4)
        e3 = self.encoder3(e2)  # (B, w3, H/8, W/8)
        e4 = self.encoder4(e3)  # (B, w4, H/16, W/16)
        v1 = self.vit_1(self.patch_embed_1(x))  # (B, d, H/4, W/4)
        v2 = self.vit_2(self.patch_embed_2(v1))  # (B, 2d, H/8, W/8)
        v3 = self.vit_3(self.patch_embed_3(v2))  # (B, 4d, H/16, W/16)
        cat_1 = self.up3_1(self.decoder1(self.SE_1(torch.cat([v3, e4], 1))))  # (B, c2, H/8, W/8)
        cat_2 = self.decoder2(torch.cat([self.SE_2(torch.cat([v2, e3], 1)), cat_1], 1))  # (B, 2 c2, H/8, W/8)
        cat_2 = self.up2_1(cat_2)  # (B, c2, H/4, W/4)
        cat_3 = self.decoder3(torch.cat([self.SE_3(torch.cat([v1, e2], 1)), cat_2], 1))  # (B, c3+c2, H/4, W/4)
        return self.out(self.up1_1(cat_3))  # (B, num_classes, H, W)

    def load_resnet_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Copies a torchvision ResNet-34 state dict (``conv1``, ``bn1``, ``layer1..4``) into the CNN branch."""
        rename = {
            "conv1.": "firstconv.",
            "bn1.": "firstbn.",
            "layer1.": "encoder1.",
            "layer2.": "encoder2.",
            "layer3.": "encoder3.",
            "layer4.": "encoder4.",
        }
        ours = {}
        for k, v in state_dict.items():
            for a, b in rename.items():
                if k.startswith(a):
                    ours[b + k[len(a) :]] = v
        expected = {k for k in self.state_dict() if k.startswith(tuple(rename.values()))}
        missing = sorted(expected - set(ours))
        if missing:
            raise ValueError(
                f"ResNet weights lack {len(missing)} keys of the CNN branch, e.g. {missing[:3]} "
                "(expected a torchvision resnet34 state dict)"
            )
        self.load_state_dict(ours, strict=False)


#: Named configurations: the official default and small CPU ones (our names).
PARATRANSCNN_VARIANTS: dict[str, dict[str, object]] = {
    "paratranscnn": {},
    "paratranscnn-cpu": {
        "dim": 32,
        "heads": 4,
        "depth": [1, 1, 1],
        "resnet_widths": [16, 32, 64, 128],
        "resnet_blocks": [1, 1, 1, 1],
        "dropout": 0.0,
    },
    "paratranscnn-tiny": {
        "dim": 16,
        "heads": 2,
        "depth": [1, 1, 1],
        "resnet_widths": [8, 16, 32, 64],
        "resnet_blocks": [1, 1, 1, 1],
        "dropout": 0.0,
    },
}


def build_paratranscnn(
    variant: str = "paratranscnn", in_chans: int = 3, num_classes: int = 9, **overrides: object
) -> ParaTransCNN:
    """A :class:`ParaTransCNN` of a named variant (``overrides`` use the constructor's argument names)."""
    if variant not in PARATRANSCNN_VARIANTS:
        raise ValueError(f"unknown ParaTransCNN variant {variant!r}; choose from {sorted(PARATRANSCNN_VARIANTS)}")
    kw = {**PARATRANSCNN_VARIANTS[variant], **overrides}
    return ParaTransCNN(n_channels=in_chans, num_classes=num_classes, **kw)  # type: ignore[arg-type]
