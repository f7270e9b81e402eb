"""FOD (Focus the Discrepancy, Yao et al. ICCV 2023): the per-level correlation transformer and the full
anomaly model (frozen feature extractor + one head per level + per-position reference features).

Parameter names of :class:`FODHead` equal the official ``models.model.FOD`` state dict, so official checkpoints
load strictly (see :mod:`sa_anomaly.official`). The I2Correlation attention itself lives in
:mod:`shared_attention.attention.correlation`; this module only wires it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shared_attention.attention.correlation import I2CorrelationAttention
from shared_attention.layers.mlp import Mlp
from shared_attention.layers.position import sinusoidal_1d

from ..features import IMAGENET_MEAN, IMAGENET_STD, LITE0_PACKAGE, FeatureExtractor
from ..losses import symmetric_kl_rows

__all__ = ["SCORES", "FODHead", "FODOutput", "FODAnomalyModel", "fod_position_embedding"]

#: FOD's anomaly scores: the paper's, or the whitened reconstruction residual (see :class:`FODAnomalyModel`)
SCORES = ("official", "whitened_residual")


def fod_position_embedding(h: int, w: int, dim: int, device: torch.device | str | None = None) -> Tensor:
    """FOD's fixed 2D sin-cos positions, ``(h * w, dim)`` row-major: the first half of the channels encodes the
    column, the second half the row, each an interleaved ``[sin, cos, sin, cos, ...]`` 1D encoding of width
    ``dim / 2`` (Vaswani et al. sec. 3.5). Requires ``dim % 4 == 0``."""
    if dim % 4 != 0:
        raise ValueError(f"d_model must be a multiple of 4, got {dim}")
    half = dim // 2
    col = sinusoidal_1d(w, half, device=device, dtype=torch.float32)  # (w, half)
    row = sinusoidal_1d(h, half, device=device, dtype=torch.float32)  # (h, half)
    grid = torch.cat([col[None, :, :].expand(h, w, half), row[:, None, :].expand(h, w, half)], dim=-1)
    return grid.reshape(h * w, dim)


class _Projection(nn.Module):
    def __init__(self, in_channels: int, d_model: int) -> None:
        super().__init__()
        self.project = nn.Conv1d(in_channels, d_model, kernel_size=1)
        nn.init.kaiming_normal_(self.project.weight, mode="fan_in", nonlinearity="leaky_relu")


class TokenEmbedding2D(nn.Module):
    """1x1 Conv1d token projection plus fixed 2D sin-cos positions (official ``Embedding2D``)."""

    def __init__(self, in_channels: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.d_model = d_model
        self.project_embedding = _Projection(in_channels, d_model)
        self.dropout = nn.Dropout(dropout)
        self._pos: dict[tuple[int, int, str], Tensor] = {}

    def positions(self, grid: tuple[int, int], device: torch.device) -> Tensor:
        key = (grid[0], grid[1], str(device))
        if key not in self._pos:
            self._pos[key] = fod_position_embedding(grid[0], grid[1], self.d_model, device)
        return self._pos[key]

    def forward(self, x: Tensor, grid: tuple[int, int]) -> Tensor:
        """``(B, L, C_in)`` -> ``(B, L, d_model)``."""
        y = self.project_embedding.project(x.transpose(1, 2)).transpose(1, 2)  # (B, L, d_model)
        return self.dropout(y + self.positions(grid, x.device))


class I2CorrelationLayer(nn.Module):
    """One FOD encoder layer: intra (self) and inter (cross, against reference tokens) correlation attention,
    fused as ``(x + intra) - (x + inter)``, then LayerNorm -> FFN residual -> LayerNorm."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        with_intra: bool = True,
        with_inter: bool = True,
        use_out_projection: bool = False,
        intra_exclude_radius: int = 0,
    ) -> None:
        super().__init__()
        self.with_intra, self.with_inter = with_intra, with_inter
        self.self_attention = I2CorrelationAttention(d_model, n_heads, use_out_projection, intra_exclude_radius)
        self.cross_attention = I2CorrelationAttention(d_model, n_heads, use_out_projection)
        self.ffn = Mlp(d_model, d_ff, drop=dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self,
        x: Tensor,
        ref: Tensor,
        grid: tuple[int, int],
        intra_maps: bool,
        inter_maps: bool,
        normalize_targets: bool,
        naive_targets: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None]:
        """``x (B, L, d)``, ``ref (1 or B, L, d)`` -> ``(x, intra_attn, intra_target, inter_attn, inter_target)``."""
        ia = it = ca = ct = None
        if self.with_intra:
            a, ia, it = self.self_attention(x, None, grid, intra_maps, normalize_targets, naive_targets)  # a: (B, L, d)
        if self.with_inter:
            c, ca, ct = self.cross_attention(x, ref, grid, inter_maps, normalize_targets, naive_targets)  # c: (B, L, d)
        if self.with_intra and self.with_inter:
            x = (x + a) - (x + c)  # the official fusion; x cancels
        elif self.with_intra:
            x = x + a
        elif self.with_inter:
            x = x + c
        h = self.norm1(x)
        return self.norm2(h + self.ffn(h)), ia, it, ca, ct


class _Encoder(nn.Module):
    def __init__(self, layers: list[I2CorrelationLayer], d_model: int) -> None:
        super().__init__()
        self.encode_layers = nn.ModuleList(layers)
        self.norm = nn.LayerNorm(d_model)


class FODOutput(NamedTuple):
    """``(x_out, intra_corrs, intra_targets, inter_corrs, inter_targets)`` as the official forward; the lists
    hold one ``(B, H, L, L)`` tensor per layer, or ``None`` where a branch/map is off."""

    x_out: Tensor
    intra_corrs: list[Tensor | None]
    intra_targets: list[Tensor | None]
    inter_corrs: list[Tensor | None]
    inter_targets: list[Tensor | None]


class FODHead(nn.Module):
    """FOD's per-level transformer (official ``models.model.FOD``), argument names as the official class.

    Args:
        seq_len: tokens of the default square grid (``h * w``); other grids can be passed to ``forward``.
        in_channels: feature channels. out_channels: reconstructed channels (= ``in_channels``).
        d_model / n_heads / n_layers: transformer width, heads, I2Correlation layers (3 officially).
        d_feed_foward_scale: FFN expansion (official spelling). dropout: dropout rate (0).
        with_intra / with_inter: the two correlation branches (the official ``args.with_intra/with_inter``).
        use_out_projection: apply the attention output projection (``False``: official numerics, see
            :class:`~shared_attention.attention.correlation.I2CorrelationAttention`).
        intra_exclude_radius: hide each token's own ``(2 r + 1)^2`` neighbourhood from its intra (self)
            attention (UniAD's neighbour masking; 0 = official). No parameters: official weights load either way.

    The reference features (per-position mean of normal training features, ``(1, L, in_channels)``) are
    passed to ``forward``; :attr:`reference` (a non-persistent buffer) is used when none is passed.
    """

    def __init__(
        self,
        seq_len: int,
        in_channels: int,
        out_channels: int,
        d_model: int = 256,
        n_heads: int = 8,
        n_layers: int = 3,
        d_feed_foward_scale: int = 4,
        dropout: float = 0.0,
        with_intra: bool = True,
        with_inter: bool = True,
        use_out_projection: bool = False,
        intra_exclude_radius: int = 0,
    ) -> None:
        super().__init__()
        self.seq_len, self.in_channels, self.out_channels = seq_len, in_channels, out_channels
        self.d_model, self.n_heads, self.n_layers = d_model, n_heads, n_layers
        self.with_intra, self.with_inter = with_intra, with_inter
        self.embedding = TokenEmbedding2D(in_channels, d_model, dropout)
        self.ref_embedding = TokenEmbedding2D(in_channels, d_model, dropout)
        layers = [
            I2CorrelationLayer(
                d_model,
                n_heads,
                d_model * d_feed_foward_scale,
                dropout,
                with_intra,
                with_inter,
                use_out_projection,
                intra_exclude_radius,
            )
            for _ in range(n_layers)
        ]
        self.encoder = _Encoder(layers, d_model)
        self.projection = nn.Linear(d_model, out_channels)
        self.register_buffer("reference", None, persistent=False)

    def set_reference(self, ref: Tensor) -> None:
        """Stores default reference features, ``(L, C)``, ``(C, L)`` (official pickle layout) or ``(1, L, C)``."""
        if ref.dim() == 2 and ref.shape[0] == self.in_channels and ref.shape[1] != self.in_channels:
            ref = ref.t()
        if ref.dim() == 2:
            ref = ref[None]
        if ref.dim() != 3 or ref.shape[-1] != self.in_channels:
            raise ValueError(f"reference features must have {self.in_channels} channels, got {tuple(ref.shape)}")
        self.reference = ref.float()

    def forward(
        self,
        x: Tensor,
        ref: Tensor | None = None,
        grid: tuple[int, int] | None = None,
        intra_maps: bool = True,
        inter_maps: bool = True,
        normalize_targets: bool = False,
        naive_targets: bool = False,
    ) -> FODOutput:
        """Reconstructs the feature tokens and returns the correlation maps.

        Args:
            x: ``(B, L, in_channels)`` tokens, row-major over the ``grid``.
            ref: ``(1 or B, L, in_channels)`` reference tokens (default :attr:`reference`).
            grid: ``(h, w)`` (default: square).
            intra_maps / inter_maps: compute the branch's attention maps and targets (scoring needs only inter).
            normalize_targets: row-normalised targets (the distribution the losses use) instead of the
                official un-normalised density.
            naive_targets: build targets the official way (repeated per-head ``L x L`` distance maps; benchmarks).
        """
        b, n, _ = x.shape
        if grid is None:
            side = math.isqrt(n)
            if side * side != n:
                raise ValueError(f"{n} tokens are not a square grid: pass grid=(h, w)")
            grid = (side, side)
        if ref is None:
            ref = self.reference
        if ref is None and self.with_inter:
            raise ValueError("FODHead: no reference features (pass ref= or call set_reference)")
        emb = self.embedding(x, grid)  # (B, L, d)
        ref_emb = self.ref_embedding(ref, grid) if self.with_inter else emb  # (1 or B, L, d)
        lists: tuple[list[Tensor | None], ...] = ([], [], [], [])
        for layer in self.encoder.encode_layers:
            emb, *maps = layer(emb, ref_emb, grid, intra_maps, inter_maps, normalize_targets, naive_targets)
            for store, m in zip(lists, maps):
                store.append(m)
        out = self.projection(self.encoder.norm(emb))  # (B, L, out_channels)
        return FODOutput(out, *lists)


class FODAnomalyModel(nn.Module):
    """The complete detector: ImageNet normalisation -> frozen :class:`FeatureExtractor` -> per level a
    :class:`FODHead` against the level's reference features (persistent buffers ``reference_<i>``, the
    per-position mean of the normal training features at ``image_size``).

    Args:
        backbone / out_indices / backbone_weights / pool_size: see :class:`FeatureExtractor`.
        image_size: square input size the reference features belong to.
        d_models: transformer width per level. n_heads / n_layers / ffn_scale: as :class:`FODHead`.
        use_out_projection / intra_exclude_radius: see :class:`FODHead`.
        score: ``official`` (FOD's ``rec x (max s - s)``, :func:`anomaly_maps_from_outputs`) or
            ``whitened_residual``: the Mahalanobis norm of each token's reconstruction residual ``x - x_hat``
            under the residuals' mean and covariance on the normal training images (persistent buffers
            ``residual_mean_<i>`` / ``residual_precision_<i>``, set by :meth:`fit_residuals`; until then zero
            and identity: the plain residual norm).
    """

    mean: Tensor  # (1, 3, 1, 1) ImageNet mean buffer
    std: Tensor  # (1, 3, 1, 1) ImageNet std buffer

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        out_indices: Sequence[int] = (2, 3),
        image_size: int = 256,
        d_models: Sequence[int] = (128, 256),
        n_heads: int = 8,
        n_layers: int = 3,
        ffn_scale: int = 4,
        pool_size: int = 3,
        backbone_weights: str | Path | None = LITE0_PACKAGE,
        use_out_projection: bool = False,
        intra_exclude_radius: int = 0,
        score: str = "official",
    ) -> None:
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"score must be one of {list(SCORES)}, got {score!r}")
        self.image_size = image_size
        self.score = score
        self.extractor = FeatureExtractor(backbone, out_indices, backbone_weights, pool_size)
        if len(d_models) != len(self.extractor.channels):
            raise ValueError(f"d_models has {len(d_models)} entries for {len(self.extractor.channels)} levels")
        self.grids = [(image_size // r, image_size // r) for r in self.extractor.reductions]
        self.heads = nn.ModuleList(
            FODHead(
                g[0] * g[1],
                c,
                c,
                d,
                n_heads,
                n_layers,
                ffn_scale,
                use_out_projection=use_out_projection,
                intra_exclude_radius=intra_exclude_radius,
            )
            for g, c, d in zip(self.grids, self.extractor.channels, d_models)
        )
        for i, (c, g) in enumerate(zip(self.extractor.channels, self.grids)):
            self.register_buffer(f"reference_{i}", torch.zeros(c, g[0], g[1]))
        if score == "whitened_residual":
            for i, c in enumerate(self.extractor.channels):
                self.register_buffer(f"residual_mean_{i}", torch.zeros(c))
                self.register_buffer(f"residual_precision_{i}", torch.eye(c))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def references(self) -> list[Tensor]:
        """Per level ``(C, h, w)`` reference features."""
        return [getattr(self, f"reference_{i}") for i in range(len(self.heads))]

    def features(self, images: Tensor) -> list[Tensor]:
        """``(B, 3, S, S)`` images in [0, 1] -> per level ``(B, C, h, w)`` frozen pooled features."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected {self.image_size}x{self.image_size} images, got {tuple(images.shape[-2:])}")
        return self.extractor((images - self.mean) / self.std)

    @torch.no_grad()
    def set_references(self, feature_sums: Sequence[Tensor], count: int) -> None:
        """Stores the mean of the normal training features (sums of ``(C, h, w)`` over ``count`` images)."""
        for i, s in enumerate(feature_sums):
            getattr(self, f"reference_{i}").copy_(s / max(count, 1))

    def forward(
        self,
        images: Tensor | None = None,
        intra_maps: bool = True,
        inter_maps: bool = True,
        features: Sequence[Tensor] | None = None,
        jitter: float = 0.0,
    ) -> list[tuple[Tensor, FODOutput]]:
        """Per level ``(tokens (B, L, C), FODOutput)`` with row-normalised targets.

        ``images`` ``(B, 3, S, S)`` in [0, 1], or ``features``: the frozen extractor's per-level ``(B, C, h, w)``
        output computed earlier (training on cached features skips the backbone).

        ``jitter > 0`` (training only): UniAD's feature jitter (You et al. 2022, sec. 3.4): the heads see
        ``tokens + jitter * |tokens| / C * N(0, 1)`` per token while the returned tokens, the reconstruction
        targets, stay clean, so the heads learn to map perturbed features back onto normal ones.
        """
        if features is None:
            if images is None:
                raise ValueError("give images or features")
            features = self.features(images)
        outs = []
        for feat, head, ref, grid in zip(features, self.heads, self.references(), self.grids):
            tokens = feat.flatten(2).transpose(1, 2)  # (B, L, C)
            ref_tokens = ref.flatten(1).t()[None]  # (1, L, C)
            inputs = tokens
            if jitter > 0:
                scale = tokens.norm(dim=-1, keepdim=True) / tokens.shape[-1]  # (B, L, 1)
                inputs = tokens + jitter * scale * torch.randn_like(tokens)  # (B, L, C)
            outs.append((tokens, head(inputs, ref_tokens, grid, intra_maps, inter_maps, normalize_targets=True)))
        return outs

    def residual_whitening(self) -> list[tuple[Tensor, Tensor]] | None:
        """Per level ``(mean (C,), precision (C, C))`` of the residuals (``score: whitened_residual``), else None."""
        if self.score != "whitened_residual":
            return None
        return [
            (getattr(self, f"residual_mean_{i}"), getattr(self, f"residual_precision_{i}"))
            for i in range(len(self.heads))
        ]

    @torch.no_grad()
    def fit_residuals(self, feature_batches: Iterable[Sequence[Tensor]], shrinkage: float = 0.01) -> int:
        """Fits the residual statistics of ``score: whitened_residual`` on normal data.

        Args:
            feature_batches: per batch the frozen extractor's per-level ``(B, C, h, w)`` features of normal
                training images (:meth:`features`, or a feature cache).
            shrinkage: covariance shrinkage towards the scaled identity (as the Gaussian baseline's).

        Returns:
            The number of images used.
        """
        from ..baseline import GaussianFit

        if self.score != "whitened_residual":
            raise ValueError("fit_residuals needs score='whitened_residual'")
        was = self.training
        self.eval()
        residuals: list[list[Tensor]] = [[] for _ in self.heads]
        count = 0
        for feats in feature_batches:
            for i, (tokens, out) in enumerate(self(features=feats, intra_maps=False, inter_maps=False)):
                residuals[i].append((tokens - out.x_out).reshape(-1, tokens.shape[-1]).double().cpu())
            count += feats[0].shape[0]
        if count == 0:
            raise ValueError("fit_residuals: no training features")
        for i, parts in enumerate(residuals):
            fitted = GaussianFit(torch.cat(parts), shrinkage)
            getattr(self, f"residual_mean_{i}").copy_(fitted.mean)
            getattr(self, f"residual_precision_{i}").copy_(fitted.precision)
        self.train(was)
        return count

    def anomaly_maps(self, images: Tensor | None = None, features: Sequence[Tensor] | None = None) -> Tensor:
        """``(B, S, S)`` unsmoothed anomaly maps by the configured :attr:`score` of ``images`` ``(B, 3, S, S)`` or
        of their cached per-level ``features`` (only the correlation maps the score needs are computed)."""
        outputs = self(images, intra_maps=False, inter_maps=self.score == "official", features=features)
        return anomaly_maps_from_outputs(outputs, self.image_size, self.residual_whitening())

    def train(self, mode: bool = True) -> FODAnomalyModel:
        super().train(mode)
        self.extractor.train(False)
        return self


def anomaly_maps_from_outputs(
    outputs: list[tuple[Tensor, FODOutput]], size: int, whitening: Sequence[tuple[Tensor, Tensor]] | None = None
) -> Tensor:
    """Official FOD scoring: per level ``rec x (max(s) - s)`` upsampled bilinearly, averaged over levels.

    ``rec = mean_c (x - x_hat)^2 + 1 - cos(x, x_hat)``; ``s = softmax_L(-mean_layers symKL(P_inter, Q_inter))``.
    The maximum of ``s`` is taken per image (the official code takes it over the whole test batch, which is
    the same for its batch size of 1). Returns ``(B, size, size)``.

    With ``whitening`` (per level the residuals' ``(mean (C,), precision (C, C))``) the score of a token is
    instead the Mahalanobis norm ``sqrt((r - mu)^T P (r - mu))`` of its residual ``r = x - x_hat``
    (``score: whitened_residual``); the correlation maps are not used.
    """
    maps = []
    for level, (tokens, out) in enumerate(outputs):
        b, n, _ = tokens.shape
        side = math.isqrt(n)
        layers = [(p, q) for p, q in zip(out.inter_corrs, out.inter_targets) if p is not None and q is not None]
        if whitening is not None:
            mu, precision = whitening[level]
            r = (tokens - out.x_out).float() - mu  # (B, L, C)
            score = torch.einsum("blc,cd,bld->bl", r, precision.float(), r).clamp_min(0).sqrt()  # (B, L)
        else:
            score = (tokens - out.x_out).square().mean(-1) + 1 - F.cosine_similarity(tokens, out.x_out, dim=-1)
            if layers:  # rec (B, L) x (max s - s)
                corr = cast(Tensor, sum(symmetric_kl_rows(p, q) for p, q in layers)) / len(layers)  # (B, L)
                s = torch.softmax(-corr, dim=-1)
                score = score * (s.amax(dim=-1, keepdim=True) - s)
        score = score.reshape(b, 1, side, n // side)
        maps.append(F.interpolate(score, size=(size, size), mode="bilinear", align_corners=True)[:, 0])
    return torch.stack(maps).mean(0)
