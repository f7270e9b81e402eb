"""HAT: Hybrid Attention Transformer for single-image super-resolution, wired from the shared core.

"Activating More Pixels in Image Super-Resolution Transformer" (Chen et al., CVPR 2023). This module
only wires mechanisms of :mod:`shared_attention`; no attention math lives here:

* HAB (hybrid attention block, sec. 3.2): ``x + WA(LN(x)) + conv_scale * CAB(LN(x))`` then
  ``x + MLP(LN(x))``. ``WA`` is the core :class:`~shared_attention.attention.WindowAttention`
  (relative position bias) applied by the core's
  :func:`~shared_attention.attention.shifted_window_attention` (cyclic shift alternating ``0`` /
  ``window_size // 2``, partition, masked attention, reverse); CAB is
  ``conv3x3(C -> C / compress_ratio) -> GELU -> conv3x3(-> C) ->`` core
  :class:`~shared_attention.attention.ChannelAttention`, computed from the *normed* block input.
* OCAB (sec. 3.3): the core :class:`~shared_attention.attention.OverlappingCrossAttention`.
* RHAG: HABs, one OCAB, ``conv3x3`` (``resi_connection='1conv'``, or the 3-conv bottleneck) on the
  un-embedded map, re-embedded, plus the group input.
* HAT: ``conv_first`` -> patch embed (flatten + LayerNorm) -> RHAGs -> LayerNorm -> un-embed ->
  ``conv_after_body`` + long skip -> ``conv3x3(C -> 64) + LeakyReLU`` -> pixel-shuffle upsampler
  (``log2(s)`` x [conv, shuffle(2)] or one shuffle(3)) -> ``conv_last``.

Official-equivalence notes (XPixelGroup/HAT ``hat_arch.HAT``; facts from the reference manifests):

* State-dict names and shapes are identical to the official ones, including the two top-level long
  buffers ``relative_position_index_SA`` / ``relative_position_index_OCA``. The per-block index
  buffers of the core modules are re-registered as non-persistent aliases of those two tensors, so
  the state dict has no extra keys (``sa_restoration.official`` loads checkpoints with an identity map).
* Mean shift inside the forward: ``x_n = (x - mean) * img_range`` with the DIV2K mean
  ``(0.4488, 0.4371, 0.4040)`` (zeros when ``in_chans != 3``), undone at the end; no clamp. The mean
  is a non-persistent buffer (not in the official state dict either).
* Padding inside the forward: the input is reflect-padded at the bottom/right to a multiple of
  ``window_size`` (the official ``HATModel.pre_process`` does this outside the arch) and the output
  is cropped to ``(H * upscale, W * upscale)``; inputs that are already multiples are not touched, so
  the numerics equal the official forward. Dimensions too small to reflect use replicate padding.
* The shifted-window mask is built once per forward from the padded size, with ``-100`` (not
  ``-inf``) like the official code; the fast path takes it from the core's cache
  (:func:`~shared_attention.attention.shifted_window_mask`), the naive path rebuilds it every call.
* GELU is exact (erf), LayerNorm eps 1e-5, LeakyReLU 0.01 before the upsampler, 0.2 in '3conv'.
* As in the official HAB, if ``min(img_size // patch_size) == window_size`` no block is shifted; a
  smaller resolution is rejected (the official model cannot run it).
* Deviation: the official default ``upsampler=''`` builds no reconstruction head and returns the input
  unchanged; only ``'pixelshuffle'`` (every released model) is supported and it is the default here.
* ``fast=True``: SDPA attention and cached masks; ``fast=False`` (:meth:`HAT.set_fast`): explicit
  softmax attention and masks rebuilt on every forward (a benchmark baseline; same numbers up to
  float rounding).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import Tensor, nn

from shared_attention.attention import (
    ChannelAttention,
    OverlappingCrossAttention,
    WindowAttention,
    overlap_window_size,
    relative_position_index,
    shifted_window_attention,
    shifted_window_mask,
)
from shared_attention.layers import DropPath, Mlp

__all__ = ["CAB", "HAB", "HAT", "HAT_VARIANTS", "RHAG", "AttenBlocks", "PatchEmbed", "Upsample", "build_hat"]

RGB_MEAN = (0.4488, 0.4371, 0.4040)
MASK_FILL = -100.0

NormLayer = Callable[[int], nn.Module]


def shift_mask(H: int, W: int, window_size: int, shift_size: int, device: torch.device, cached: bool = True) -> Tensor:  # noqa: N803
    """Shifted-window mask ``(nW, ws*ws, ws*ws)`` (0 / -100) of the core, cached or freshly built.

    Args:
        H: Padded height (multiple of ``window_size``).
        W: Padded width.
        window_size: Window size.
        shift_size: Shift (``window_size // 2`` in HAT).
        device: Device of the mask.
        cached: Use the core's cache (fast path); ``False`` bypasses it and rebuilds the mask.

    Returns:
        Float32 mask ``(nW, ws*ws, ws*ws)``.
    """
    return shifted_window_mask(H, W, window_size, shift_size, device=device, fill=MASK_FILL, cached=cached)


class CAB(nn.Module):
    """Channel attention block: conv3x3 (C -> C / compress) -> GELU -> conv3x3 (-> C) -> channel attention.

    Args:
        num_feat: Channels ``C``.
        compress_ratio: Hidden width ``C // compress_ratio``.
        squeeze_factor: Channel-attention reduction (hidden ``C // squeeze_factor``).
    """

    def __init__(self, num_feat: int, compress_ratio: int = 3, squeeze_factor: int = 30) -> None:
        super().__init__()
        hidden = num_feat // compress_ratio
        if hidden < 1:
            raise ValueError(f"compress_ratio {compress_ratio} leaves no channel of {num_feat}")
        self.cab = nn.Sequential(
            nn.Conv2d(num_feat, hidden, 3, 1, 1),
            nn.GELU(),
            nn.Conv2d(hidden, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, squeeze_factor),
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return self.cab(x)


class HAB(nn.Module):
    """Hybrid attention block: (shifted) window attention in parallel with a CAB, then the MLP.

    Args:
        dim: Channels ``C``.
        num_heads: Attention heads.
        window_size: Window ``M``.
        shift_size: ``0`` or ``M // 2``.
        compress_ratio: CAB compression.
        squeeze_factor: CAB channel-attention reduction.
        conv_scale: Weight of the CAB branch (0.01).
        mlp_ratio: MLP hidden width over ``C``.
        qkv_bias: Bias in ``qkv``.
        qk_scale: Score scale override.
        drop: Dropout after ``proj`` and in the MLP.
        attn_drop: Dropout on attention probabilities.
        drop_path: Stochastic depth of the attention and MLP branches.
        act_layer: MLP activation.
        norm_layer: Normalisation constructor.
        use_sdpa: Attention kernel path of the core.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int = 7,
        shift_size: int = 0,
        compress_ratio: int = 3,
        squeeze_factor: int = 30,
        conv_scale: float = 0.01,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: NormLayer = nn.LayerNorm,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        if not 0 <= shift_size < window_size:
            raise ValueError(f"shift_size {shift_size} must be in [0, window_size={window_size})")
        self.dim = dim
        self.window_size = window_size
        self.shift_size = shift_size
        self.conv_scale = conv_scale
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(
            dim, window_size, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop,
            proj_drop=drop, use_sdpa=use_sdpa,
        )  # fmt: skip
        self.conv_block = CAB(dim, compress_ratio, squeeze_factor)
        self.channels_last = use_sdpa  # the fast path (HAT.set_fast)
        self.drop_path = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: Tensor, x_size: tuple[int, int], attn_mask: Tensor | None) -> Tensor:
        """Apply the block.

        Args:
            x: Tokens ``(B, H*W, C)``.
            x_size: ``(H, W)``, multiples of the window.
            attn_mask: Shift mask ``(nW, M*M, M*M)`` for the padded size (used only if shifted).

        Returns:
            ``(B, H*W, C)``.
        """
        H, W = x_size
        B, L, C = x.shape
        ws, s = self.window_size, self.shift_size
        shortcut = x
        x = self.norm1(x)  # (B, L, C)
        if self.channels_last:  # the tokens viewed as a channels-last map: no copies, oneDNN's NHWC kernels
            conv_x = self.conv_block(x.view(B, H, W, C).permute(0, 3, 1, 2))  # (B, C, H, W) channels-last
            conv_x = conv_x.permute(0, 2, 3, 1).reshape(B, L, C)  # (B, L, C)
        else:
            conv_x = self.conv_block(x.transpose(1, 2).reshape(B, C, H, W))  # (B, C, H, W)
            conv_x = conv_x.flatten(2).transpose(1, 2)  # (B, L, C)
        xs = shifted_window_attention(x.view(B, H, W, C), self.attn, ws, s, MASK_FILL, attn_mask)  # (B, H, W, C)
        attn_x = xs.reshape(B, L, C)
        x = shortcut + self.drop_path(attn_x) + conv_x * self.conv_scale  # (B, L, C)
        return x + self.drop_path(self.mlp(self.norm2(x)))  # (B, L, C)


class AttenBlocks(nn.Module):
    """The HABs of one group followed by its OCAB (official ``residual_group``: ``blocks``, ``overlap_attn``).

    Args:
        dim: Channels.
        depth: Number of HABs.
        num_heads: Heads of every block.
        window_size: Window ``M``.
        shift: Whether odd blocks are shifted by ``M // 2``.
        compress_ratio, squeeze_factor, conv_scale, mlp_ratio, qkv_bias, qk_scale, drop, attn_drop: As
            in :class:`HAB`.
        overlap_ratio: OCAB overlap ratio.
        drop_path: Per-block stochastic depth rates (length ``depth``).
        norm_layer: Normalisation constructor.
        use_checkpoint: Gradient checkpointing of each HAB while training.
        use_sdpa: Attention kernel path of the core.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        shift: bool,
        compress_ratio: int,
        squeeze_factor: int,
        conv_scale: float,
        overlap_ratio: float,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop: float,
        attn_drop: float,
        drop_path: Sequence[float],
        norm_layer: NormLayer,
        use_checkpoint: bool = False,
        use_sdpa: bool = True,
    ) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            HAB(
                dim, num_heads, window_size, shift_size=(window_size // 2 if shift and i % 2 == 1 else 0),
                compress_ratio=compress_ratio, squeeze_factor=squeeze_factor, conv_scale=conv_scale,
                mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, attn_drop=attn_drop,
                drop_path=drop_path[i], norm_layer=norm_layer, use_sdpa=use_sdpa,
            )
            for i in range(depth)
        )  # fmt: skip
        self.overlap_attn = OverlappingCrossAttention(
            dim, window_size, overlap_ratio, num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, mlp_ratio=mlp_ratio,
            norm_layer=norm_layer, use_sdpa=use_sdpa,
        )  # fmt: skip

    def forward(self, x: Tensor, x_size: tuple[int, int], attn_mask: Tensor | None) -> Tensor:
        """``(B, H*W, C) -> (B, H*W, C)``."""
        for blk in self.blocks:
            if self.use_checkpoint and self.training and torch.is_grad_enabled():
                x = torch.utils.checkpoint.checkpoint(blk, x, x_size, attn_mask, use_reentrant=False)
            else:
                x = blk(x, x_size, attn_mask)
        return self.overlap_attn(x, x_size)


class PatchEmbed(nn.Module):
    """Feature map ``(B, C, H, W)`` -> tokens ``(B, H*W, C)`` (flatten, optional norm; patch size 1)."""

    def __init__(self, embed_dim: int, norm_layer: NormLayer | None = None) -> None:
        super().__init__()
        self.norm = norm_layer(embed_dim) if norm_layer is not None else None

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(2).transpose(1, 2)  # (B, HW, C)
        return self.norm(x) if self.norm is not None else x


def patch_unembed(x: Tensor, x_size: tuple[int, int]) -> Tensor:
    """Tokens ``(B, H*W, C)`` -> feature map ``(B, C, H, W)``."""
    B, _, C = x.shape
    return x.transpose(1, 2).reshape(B, C, x_size[0], x_size[1])


def _resi_conv(dim: int, resi_connection: str) -> nn.Module:
    if resi_connection == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == "3conv":  # bottleneck to save parameters
        return nn.Sequential(
            nn.Conv2d(dim, dim // 4, 3, 1, 1),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Conv2d(dim // 4, dim // 4, 1, 1, 0),
            nn.LeakyReLU(negative_slope=0.2, inplace=True),
            nn.Conv2d(dim // 4, dim, 3, 1, 1),
        )
    raise ValueError(f"resi_connection must be '1conv' or '3conv', got {resi_connection!r}")


class RHAG(nn.Module):
    """Residual hybrid attention group: ``x + embed(conv(unembed(AttenBlocks(x))))``.

    Args: as :class:`AttenBlocks`, plus ``resi_connection`` ('1conv' or '3conv').
    """

    def __init__(self, dim: int, resi_connection: str = "1conv", **blocks_kwargs: Any) -> None:
        super().__init__()
        self.residual_group = AttenBlocks(dim=dim, **blocks_kwargs)
        self.conv = _resi_conv(dim, resi_connection)
        self.patch_embed = PatchEmbed(dim, norm_layer=None)
        self.channels_last = blocks_kwargs.get("use_sdpa", True)  # the fast path (HAT.set_fast)

    def forward(self, x: Tensor, x_size: tuple[int, int], attn_mask: Tensor | None) -> Tensor:
        """``(B, H*W, C) -> (B, H*W, C)``."""
        y = self.residual_group(x, x_size, attn_mask)  # (B, HW, C)
        if self.channels_last:  # fast path: the tokens as a channels-last map and back, without copies
            B, L, C = y.shape
            z = self.conv(y.view(B, x_size[0], x_size[1], C).permute(0, 3, 1, 2))  # (B, C, H, W) channels-last
            return z.permute(0, 2, 3, 1).reshape(B, L, C) + x  # (B, HW, C)
        return self.patch_embed(self.conv(patch_unembed(y, x_size))) + x


class Upsample(nn.Sequential):
    """Pixel-shuffle upsampler: ``log2(scale)`` x [conv3x3(F -> 4F), shuffle(2)] or [conv3x3(F -> 9F), shuffle(3)].

    Args:
        scale: 2^n or 3.
        num_feat: Channels ``F``.
    """

    def __init__(self, scale: int, num_feat: int) -> None:
        layers: list[nn.Module] = []
        if scale >= 2 and (scale & (scale - 1)) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2)]
        elif scale == 3:
            layers += [nn.Conv2d(num_feat, 9 * num_feat, 3, 1, 1), nn.PixelShuffle(3)]
        else:
            raise ValueError(f"upscale {scale} is not supported; use 2^n or 3")
        super().__init__(*layers)


def _pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Pad ``(B, C, H, W)`` at the bottom/right to multiples of ``multiple`` (reflect; replicate if too small)."""
    H, W = x.shape[-2:]
    pad_h = (multiple - H % multiple) % multiple
    pad_w = (multiple - W % multiple) % multiple
    if pad_w:
        x = F.pad(x, (0, pad_w, 0, 0), mode="reflect" if pad_w < W else "replicate")
    if pad_h:
        x = F.pad(x, (0, 0, 0, pad_h), mode="reflect" if pad_h < H else "replicate")
    return x


def _pair(x: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(x, int):
        return (x, x)
    a, b = x
    return (int(a), int(b))


class HAT(nn.Module):
    """Hybrid Attention Transformer for super-resolution (Chen et al. 2023), official-compatible.

    Args use the official names and defaults (``hat_arch.HAT``), except ``upsampler`` (see module doc):

    Args:
        img_size: Training patch size; only sets the patch resolution (HAB shift rule, ``ape``).
        patch_size: Patch size of the (flatten-only) patch embedding; only divides ``img_size``.
        in_chans: Image channels (input and output).
        embed_dim: Feature width ``C``.
        depths: HABs per RHAG.
        num_heads: Heads per RHAG.
        window_size: Window ``M`` of HAB and OCAB queries.
        compress_ratio: CAB compression.
        squeeze_factor: CAB channel-attention reduction.
        conv_scale: Weight of the CAB branch.
        overlap_ratio: OCAB overlap ratio (key window ``int(M * r) + M``).
        mlp_ratio: MLP hidden width over ``C``.
        qkv_bias: Bias in the ``qkv`` projections.
        qk_scale: Score scale override.
        drop_rate: Dropout after ``proj``/MLP and on the embedded tokens.
        attn_drop_rate: Dropout on attention probabilities.
        drop_path_rate: Stochastic depth, linearly increasing over all HABs.
        norm_layer: Normalisation constructor (``nn.LayerNorm``).
        ape: Absolute position embedding (then the padded input must be ``img_size``).
        patch_norm: LayerNorm after the patch embedding.
        use_checkpoint: Gradient checkpointing of the HABs in training.
        upscale: Scale factor (2^n or 3).
        img_range: Multiplier of the mean-shifted input.
        upsampler: ``'pixelshuffle'``.
        resi_connection: ``'1conv'`` or ``'3conv'``.
        fast: SDPA + cached masks (``True``) or explicit softmax + masks rebuilt per forward.
        upsampler_feat: Channels ``F`` of the reconstruction head (the official code fixes 64; small CPU models
            spend most of their convolution time in it).

    Shapes: ``forward((B, in_chans, H, W)) -> (B, in_chans, H * upscale, W * upscale)`` for any ``H, W``.
    """

    relative_position_index_SA: Tensor  # noqa: N815 (official name)
    relative_position_index_OCA: Tensor  # noqa: N815
    mean: Tensor

    def __init__(
        self,
        img_size: int | Sequence[int] = 64,
        patch_size: int | Sequence[int] = 1,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 7,
        compress_ratio: int = 3,
        squeeze_factor: int = 30,
        conv_scale: float = 0.01,
        overlap_ratio: float = 0.5,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_layer: NormLayer = nn.LayerNorm,
        ape: bool = False,
        patch_norm: bool = True,
        use_checkpoint: bool = False,
        upscale: int = 2,
        img_range: float = 1.0,
        upsampler: str = "pixelshuffle",
        resi_connection: str = "1conv",
        fast: bool = True,
        upsampler_feat: int = 64,
    ) -> None:
        super().__init__()
        if upsampler != "pixelshuffle":
            raise ValueError(
                f"upsampler {upsampler!r} is not supported: only 'pixelshuffle' (the official code builds no "
                "reconstruction head for any other value)"
            )
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.window_size = int(window_size)
        self.overlap_ratio = overlap_ratio
        self.upscale = upscale
        self.upsampler = upsampler
        self.img_range = img_range
        self.ape = ape
        self.fast = fast
        num_feat = int(upsampler_feat)
        mean = torch.tensor(RGB_MEAN).view(1, 3, 1, 1) if in_chans == 3 else torch.zeros(1, 1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)

        # relative position indices, stored once (official layout) and aliased into every block
        ws = self.window_size
        ows = overlap_window_size(ws, overlap_ratio)
        self.register_buffer("relative_position_index_SA", relative_position_index(ws), persistent=True)
        self.register_buffer("relative_position_index_OCA", relative_position_index(ws, ows), persistent=True)

        # HAB shift rule of the official code: no shift when the patch resolution is one window
        img_hw, patch_hw = _pair(img_size), _pair(patch_size)
        self.patches_resolution = (img_hw[0] // patch_hw[0], img_hw[1] // patch_hw[1])
        min_res = min(self.patches_resolution)
        if min_res < ws:
            raise ValueError(
                f"img_size // patch_size = {self.patches_resolution} is smaller than window_size {ws}; the official "
                "HAT cannot run this configuration (set img_size >= window_size)"
            )
        self.shift = min_res > ws

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim, norm_layer if patch_norm else None)
        self.absolute_pos_embed: nn.Parameter | None = None
        if ape:
            n = self.patches_resolution[0] * self.patches_resolution[1]
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(drop_rate)

        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        start = 0
        for depth, heads in zip(depths, num_heads, strict=True):
            self.layers.append(
                RHAG(
                    embed_dim, resi_connection=resi_connection, depth=depth, num_heads=heads, window_size=ws,
                    shift=self.shift, compress_ratio=compress_ratio, squeeze_factor=squeeze_factor,
                    conv_scale=conv_scale, overlap_ratio=overlap_ratio, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                    qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate,
                    drop_path=dpr[start : start + depth], norm_layer=norm_layer, use_checkpoint=use_checkpoint,
                    use_sdpa=fast,
                )
            )  # fmt: skip
            start += depth
        self.norm = norm_layer(embed_dim)
        self.conv_after_body = _resi_conv(embed_dim, resi_connection)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(upscale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)

        self.apply(self._init_weights)
        self._alias_indices()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # official init: Linear trunc-normal(0.02) / zero bias, LayerNorm 1 / 0, convs PyTorch default
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _alias_indices(self) -> None:
        """Make every block's index buffer a non-persistent alias of the top-level (official) buffer."""
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.register_buffer("relative_position_index", self.relative_position_index_SA, persistent=False)
            elif isinstance(m, OverlappingCrossAttention):
                m.register_buffer("relative_position_index", self.relative_position_index_OCA, persistent=False)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> HAT:
        # .to() / .cuda() convert every module's buffers separately; restore the aliasing afterwards
        super()._apply(fn, recurse)
        self._alias_indices()
        return self

    def set_fast(self, fast: bool = True) -> HAT:
        """Switch between the fast path (``True``: fused / chunked attention, cached masks, the CAB and group
        convolutions on channels-last views of the tokens) and the reference pattern (explicit softmax, masks
        rebuilt per forward, token <-> NCHW copies around every convolution). Same numbers.

        Returns:
            ``self``.
        """
        self.fast = fast
        for m in self.modules():
            if isinstance(m, WindowAttention | OverlappingCrossAttention):
                m.use_sdpa = fast
            elif isinstance(m, HAB | RHAG):
                m.channels_last = fast
        return self

    def forward_features(self, x: Tensor) -> Tensor:
        """Deep features: ``(B, C, H, W) -> (B, C, H, W)``, ``H, W`` multiples of the window."""
        B, C, H, W = x.shape
        x_size = (H, W)
        mask: Tensor | None = None
        if self.shift:
            ws = self.window_size
            mask = shift_mask(H, W, ws, ws // 2, x.device, cached=self.fast)  # (nW, M*M, M*M)
        t = self.patch_embed(x)  # (B, HW, C)
        if self.absolute_pos_embed is not None:
            if self.absolute_pos_embed.shape[1] != H * W:
                raise ValueError(
                    f"ape=True needs the padded input to be img_size {self.patches_resolution}, got {(H, W)}"
                )
            t = t + self.absolute_pos_embed
        t = self.pos_drop(t)
        for layer in self.layers:
            t = layer(t, x_size, mask)  # (B, HW, C)
        t = self.norm(t)
        return patch_unembed(t, x_size)  # (B, C, H, W)

    def forward(self, x: Tensor) -> Tensor:
        """Super-resolve.

        Args:
            x: Low-resolution images ``(B, in_chans, H, W)``, float in ``[0, 1]``, any ``H, W``.

        Returns:
            ``(B, in_chans, H * upscale, W * upscale)``, not clamped.
        """
        H, W = x.shape[-2:]
        x = _pad_to_multiple(x, self.window_size)  # (B, Cin, Hp, Wp)
        mean = self.mean.to(x)
        x = (x - mean) * self.img_range
        feat = self.conv_first(x)  # (B, C, Hp, Wp)
        feat = self.conv_after_body(self.forward_features(feat)) + feat  # (B, C, Hp, Wp)
        out = self.conv_last(self.upsample(self.conv_before_upsample(feat)))  # (B, Cin, s*Hp, s*Wp)
        out = out / self.img_range + mean
        return out[..., : H * self.upscale, : W * self.upscale]


_DEEP6 = (6, 6, 6, 6, 6, 6)

HAT_VARIANTS: dict[str, dict[str, Any]] = {
    # the paper's models (official option files): window 16, overlap 0.5, mlp 2, conv_scale 0.01
    "hat-s": dict(
        embed_dim=144, depths=_DEEP6, num_heads=_DEEP6, compress_ratio=24, squeeze_factor=24,
        window_size=16, overlap_ratio=0.5, mlp_ratio=2.0, conv_scale=0.01, img_size=64,
    ),
    "hat": dict(
        embed_dim=180, depths=_DEEP6, num_heads=_DEEP6, compress_ratio=3, squeeze_factor=30,
        window_size=16, overlap_ratio=0.5, mlp_ratio=2.0, conv_scale=0.01, img_size=64,
    ),
    "hat-l": dict(
        embed_dim=180, depths=(6,) * 12, num_heads=(6,) * 12, compress_ratio=3, squeeze_factor=30,
        window_size=16, overlap_ratio=0.5, mlp_ratio=2.0, conv_scale=0.01, img_size=64,
    ),
    # small configuration that trains in minutes on a 2-core CPU
    "hat-cpu": dict(
        embed_dim=48, depths=(2, 2), num_heads=(3, 3), compress_ratio=3, squeeze_factor=16,
        window_size=8, overlap_ratio=0.5, mlp_ratio=2.0, conv_scale=0.01, img_size=64, drop_path_rate=0.0,
        upsampler_feat=32,
    ),
}  # fmt: skip


def build_hat(variant: str, upscale: int = 4, **overrides: Any) -> HAT:
    """Build a HAT variant of :data:`HAT_VARIANTS`.

    Args:
        variant: ``'hat-s'``, ``'hat'``, ``'hat-l'`` or ``'hat-cpu'`` (case-insensitive, ``_`` = ``-``).
        upscale: Scale factor (2, 3, 4, 8).
        **overrides: Any :class:`HAT` argument, applied over the variant.

    Returns:
        The model (random init, train mode).
    """
    key = variant.lower().replace("_", "-")
    if key not in HAT_VARIANTS:
        raise ValueError(f"unknown HAT variant {variant!r}; choose from {sorted(HAT_VARIANTS)}")
    kwargs = {**HAT_VARIANTS[key], "upscale": upscale, **overrides}
    return HAT(**kwargs)
