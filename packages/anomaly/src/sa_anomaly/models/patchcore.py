"""PatchCore (Roth et al., CVPR 2022, "Towards Total Recall in Industrial Anomaly Detection") on the same frozen
:class:`~sa_anomaly.features.FeatureExtractor` as FOD.

Training-free: locally aware patch features of the normal training images (per level the extractor's 3x3
neighbourhood average, deeper levels upsampled to the first level's grid and concatenated, optionally averaged
down to ``target_dim`` channels) are subsampled by a greedy k-center coreset into a memory bank (a persistent
buffer, so it is saved with the run and served). A test patch scores its Euclidean distance to the nearest bank
patch; the pixel map is that distance upsampled to the input and Gaussian-smoothed (sigma 4), the image score the
maximal patch distance reweighted by how isolated its nearest bank patch is (paper eq. 7).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..baseline import nearest_distances
from ..features import IMAGENET_MEAN, IMAGENET_STD, LITE0_PACKAGE, FeatureExtractor

__all__ = [
    "PatchCoreModel",
    "PatchCoreOutput",
    "gaussian_blur",
    "greedy_coreset",
    "reweighted_image_scores",
]


class PatchCoreOutput(NamedTuple):
    """``anomaly_map (B, 1, H, W)`` (smoothed pixel map at the input size) and ``image_scores (B,)``."""

    anomaly_map: Tensor
    image_scores: Tensor


def _projected(points: Tensor, projection_dim: int | None, generator: torch.Generator) -> Tensor:
    """``(N, D)`` -> ``(N, p)`` Gaussian Johnson-Lindenstrauss projection (``None`` or ``p >= D``: unchanged)."""
    d = points.shape[1]
    if projection_dim is None or projection_dim >= d:
        return points
    if projection_dim < 1:
        raise ValueError(f"projection_dim must be a positive integer or None, got {projection_dim}")
    matrix = torch.randn(d, projection_dim, generator=generator) / projection_dim**0.5  # (D, p), seeded on CPU
    return points @ matrix.to(points.device, points.dtype)


@torch.no_grad()
def greedy_coreset(points: Tensor, n_select: int, projection_dim: int | None = 128, seed: int = 0) -> Tensor:
    """Greedy k-center coreset (PatchCore's subsampling): starting from a seeded random row, repeatedly adds the
    row farthest (Euclidean) from the rows selected so far.

    Distances are taken in a seeded Gaussian random projection to ``projection_dim`` dimensions (Johnson-
    Lindenstrauss; ``None``, or a dimension not below ``D``, uses the points themselves). Selection stops early
    when every row coincides with a selected one (duplicates), so fewer than ``n_select`` indices can come back.

    Args:
        points: ``(N, D)`` patch features.
        n_select: rows to select, ``1 <= n_select <= N``.
        projection_dim: projection dimension for the distance computations.
        seed: seeds the start row and the projection.

    Returns:
        ``(K,)`` int64 row indices in selection order, ``K <= n_select``, on ``points``' device.
    """
    if points.ndim != 2 or len(points) == 0:
        raise ValueError(f"greedy_coreset: expected non-empty (N, D) points, got {tuple(points.shape)}")
    n = len(points)
    if not 1 <= n_select <= n:
        raise ValueError(f"greedy_coreset: n_select must be in [1, {n}], got {n_select}")
    gen = torch.Generator().manual_seed(seed)
    start = int(torch.randint(n, (1,), generator=gen))
    x = _projected(points, projection_dim, gen)  # (N, p)
    sq = x.square().sum(1)  # (N,)

    def sq_dist_to(i: Tensor) -> Tensor:  # squared distances of all rows to row i (a (1,) index tensor)
        c = x.index_select(0, i)  # (1, p)
        return (sq - 2 * (x @ c[0]) + sq.index_select(0, i)).clamp_min(0)  # (N,)

    selected = torch.empty(n_select, dtype=torch.long, device=x.device)
    selected[0] = start
    nearest = sq_dist_to(selected[:1])  # (N,) squared distance to the selected set
    nearest[start] = 0  # exactly, whatever the rounding of the expansion above
    for t in range(1, n_select):  # no host sync inside the loop (fast on accelerators)
        i = nearest.argmax().view(1)  # first maximum on ties
        selected[t] = i[0]
        nearest = torch.minimum(nearest, sq_dist_to(i))
        nearest.index_fill_(0, i, 0)
    order = selected.tolist()
    unique = list(dict.fromkeys(order))  # a duplicate only appears once every row has distance 0
    if len(unique) < len(order):
        return torch.tensor(unique, dtype=torch.long, device=x.device)
    return selected


def _reflect_index(n: int, radius: int, device: torch.device) -> Tensor:
    """Indices of ``range(-radius, n + radius)`` mirrored into ``[0, n)`` about the pixel edges (scipy 'reflect':
    ``d c b a | a b c d | d c b a``), for any ``radius``."""
    i = torch.arange(-radius, n + radius, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def gaussian_blur(maps: Tensor, sigma: float, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian smoothing of ``(B, 1, H, W)`` maps, the same numbers as
    ``scipy.ndimage.gaussian_filter(m, sigma)`` (kernel radius ``int(truncate * sigma + 0.5)``, 'reflect' border),
    computed in torch on the maps' device. ``sigma <= 0`` returns the maps unchanged."""
    if sigma <= 0:
        return maps
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, device=maps.device, dtype=maps.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()  # (2r + 1,)
    h, w = maps.shape[-2:]
    x = maps.index_select(-1, _reflect_index(w, radius, maps.device))  # (B, 1, H, W + 2r)
    x = F.conv2d(x, k.view(1, 1, 1, -1))  # (B, 1, H, W)
    x = x.index_select(-2, _reflect_index(h, radius, maps.device))  # (B, 1, H + 2r, W)
    return F.conv2d(x, k.view(1, 1, -1, 1))  # (B, 1, H, W)


def _distances_to(point: Tensor, bank: Tensor) -> Tensor:
    """``(D,)``, ``(N, D)`` -> ``(N,)`` Euclidean distances (direct differences: no cancellation)."""
    return (bank - point).norm(dim=1)


@torch.no_grad()
def reweighted_image_scores(patches: Tensor, distances: Tensor, bank: Tensor, num_neighbors: int = 9) -> Tensor:
    """PatchCore's image score (paper eq. 7): the maximal patch distance ``s* = ||m* - m_bank||``, times
    ``w = 1 - exp(||m* - m_bank||) / sum_{m in N_b(m_bank)} exp(||m* - m||)``.

    ``m*`` is the test patch of maximal nearest-neighbour distance, ``m_bank`` its nearest bank patch and
    ``N_b(m_bank)`` the ``b = num_neighbors`` bank patches nearest to ``m_bank`` (``m_bank`` itself included, at
    distance 0, so ``0 <= w < 1``). The ratio is evaluated as ``exp(d - logsumexp(d_N))`` (no overflow).
    ``num_neighbors <= 1`` returns ``s*`` unweighted.

    Args:
        patches: ``(B, L, D)`` test patch features.
        distances: ``(B, L)`` their nearest-bank distances.
        bank: ``(N, D)`` memory bank.
        num_neighbors: ``b``.

    Returns:
        ``(B,)`` image scores.
    """
    s_star, idx = distances.max(dim=1)  # (B,), (B,)
    if num_neighbors <= 1:
        return s_star
    b = min(num_neighbors, len(bank))
    weights = []
    for m_star in patches[torch.arange(len(patches), device=patches.device), idx]:  # (D,) per image
        to_star = _distances_to(m_star, bank)  # (N,)
        j = to_star.argmin()
        support = _distances_to(bank[j], bank).topk(b, largest=False).indices  # (b,) N_b(m_bank)
        d_support = to_star[support]  # (b,) ||m* - m|| for m in N_b(m_bank)
        weights.append(1 - torch.exp(to_star[j] - torch.logsumexp(d_support, 0)))
    return torch.stack(weights) * s_star


class PatchCoreModel(nn.Module):
    """PatchCore: ImageNet normalisation -> frozen :class:`FeatureExtractor` (its ``pool_size`` average is the
    paper's 3x3 local neighbourhood aggregation, applied once) -> locally aware patch features on the first
    level's grid -> nearest-neighbour distances to a coreset memory bank (persistent buffer ``memory_bank``).

    Args:
        backbone / out_indices / backbone_weights / pool_size: see :class:`FeatureExtractor`.
        image_size: square crop size the predictor feeds (the model itself takes any size).
        target_dim: channels after adaptive average pooling over the concatenated channel axis (the official
            implementation's aggregation, e.g. 1024 for wide_resnet50_2); ``None`` keeps all channels
            (Lite0 levels 2 and 3: 40 + 112 = 152).
        coreset_ratio: fraction of the training patches kept in the bank (0.1 / 0.01 in the paper; 1 keeps all).
        projection_dim: Johnson-Lindenstrauss dimension of the coreset distance computations (``None``: exact).
        num_neighbors: ``b`` of the image-score reweighting (9 in the paper; ``<= 1`` disables it).
        smooth_sigma: Gaussian sigma of the pixel map at the input size (4 in the paper; 0 disables).
        seed: seeds the coreset's start row and projection.
        chunk: test patches per nearest-neighbour block (memory ``O(chunk * bank size)``).

    The bank's row count is whatever :meth:`build_memory_bank` kept; ``load_state_dict`` resizes the buffer to
    the stored bank, so a model built from the config alone loads a fitted run strictly.
    """

    mean: Tensor  # (1, 3, 1, 1) ImageNet mean buffer
    std: Tensor  # (1, 3, 1, 1) ImageNet std buffer
    memory_bank: Tensor  # (N_bank, D) coreset of normal patch features

    def __init__(
        self,
        backbone: str = "efficientnet_lite0",
        out_indices: Sequence[int] = (2, 3),
        image_size: int = 256,
        target_dim: int | None = None,
        coreset_ratio: float = 0.1,
        projection_dim: int | None = 128,
        num_neighbors: int = 9,
        smooth_sigma: float = 4.0,
        pool_size: int = 3,
        backbone_weights: str | Path | None = LITE0_PACKAGE,
        seed: int = 0,
        chunk: int = 4096,
    ) -> None:
        super().__init__()
        if not 0 < coreset_ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {coreset_ratio}")
        if target_dim is not None and target_dim < 1:
            raise ValueError(f"target_dim must be a positive integer or None, got {target_dim}")
        self.image_size = image_size
        self.target_dim = target_dim
        self.coreset_ratio = coreset_ratio
        self.projection_dim = projection_dim
        self.num_neighbors = num_neighbors
        self.smooth_sigma = smooth_sigma
        self.seed = seed
        self.chunk = chunk
        self.extractor = FeatureExtractor(backbone, out_indices, backbone_weights, pool_size)
        self.feature_dim = target_dim if target_dim is not None else sum(self.extractor.channels)
        self.register_buffer("memory_bank", torch.zeros(0, self.feature_dim))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def bank_size(self) -> int:
        """Rows of the memory bank (0 before fitting)."""
        return int(self.memory_bank.shape[0])

    def features(self, images: Tensor) -> list[Tensor]:
        """``(B, 3, H, W)`` images in [0, 1] -> per level ``(B, C_l, h_l, w_l)`` frozen, 3x3-averaged features
        (the same contract as FOD's ``features``)."""
        return self.extractor((images - self.mean) / self.std)

    def aggregate(self, levels: Sequence[Tensor]) -> Tensor:
        """Per level ``(B, C_l, h_l, w_l)`` -> ``(B, D, h_0, w_0)`` locally aware patch features: deeper levels
        upsampled bilinearly to the first level's grid, concatenated, then (``target_dim``) averaged down."""
        grid = levels[0].shape[-2:]
        x = torch.cat(
            [
                f if f.shape[-2:] == grid else F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
                for f in levels
            ],
            dim=1,
        )  # (B, sum C_l, h_0, w_0)
        if self.target_dim is None or self.target_dim == x.shape[1]:
            return x
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b * h * w, 1, c)  # (B h w, 1, C)
        rows = F.adaptive_avg_pool1d(rows, self.target_dim)  # (B h w, 1, D)
        return rows.reshape(b, h, w, self.target_dim).permute(0, 3, 1, 2)  # (B, D, h, w)

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` images in [0, 1] -> ``(B, D, h_0, w_0)`` locally aware patch features."""
        return self.aggregate(self.features(images))

    @torch.no_grad()
    def build_memory_bank(
        self,
        patches: Tensor,
        coreset_ratio: float | None = None,
        projection_dim: int | None | str = "default",
        seed: int | None = None,
    ) -> Tensor:
        """Stores a greedy coreset of ``(N, D)`` normal patch features as the memory bank (resizing the buffer).

        Args:
            patches: ``(N, D)`` rows.
            coreset_ratio / seed: default the constructor's values.
            projection_dim: ``"default"`` uses the constructor's value; ``None`` disables the projection.

        Returns:
            ``(K,)`` indices of the kept rows, in selection order.
        """
        ratio = self.coreset_ratio if coreset_ratio is None else coreset_ratio
        if not 0 < ratio <= 1:
            raise ValueError(f"coreset_ratio must be in (0, 1], got {ratio}")
        if patches.ndim != 2 or patches.shape[1] != self.feature_dim or len(patches) == 0:
            raise ValueError(f"expected non-empty (N, {self.feature_dim}) patch features, got {tuple(patches.shape)}")
        proj = self.projection_dim if projection_dim == "default" else projection_dim
        if proj is not None and not isinstance(proj, int):
            raise ValueError(f"projection_dim must be an integer, None or 'default', got {proj!r}")
        patches = patches.to(self.memory_bank.device, torch.float32)
        n_select = min(len(patches), max(1, int(len(patches) * ratio)))
        if n_select == len(patches):
            idx = torch.arange(len(patches), device=patches.device)
        else:
            idx = greedy_coreset(patches, n_select, proj, self.seed if seed is None else seed)
        self.memory_bank = patches[idx].contiguous()  # re-registers the buffer with the new row count
        return idx

    @torch.no_grad()
    def fit_features(self, feature_batches: Iterable[Tensor], **kwargs: Any) -> Tensor:
        """Builds the memory bank from patch features: each item ``(B, D, h, w)`` (:meth:`embed` output) or
        ``(N, D)`` rows. ``kwargs`` go to :meth:`build_memory_bank`; returns its kept indices."""
        rows = []
        for i, f in enumerate(feature_batches):
            if f.ndim == 4:
                f = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1])  # (B h w, D)
            if f.ndim != 2 or f.shape[1] != self.feature_dim:
                raise ValueError(
                    f"feature batch {i}: expected (B, {self.feature_dim}, h, w) or (N, {self.feature_dim}), "
                    f"got {tuple(f.shape)}"
                )
            rows.append(f.to(self.memory_bank.device, torch.float32))
        if not rows:
            raise ValueError("fit: no feature batches (no training images)")
        return self.build_memory_bank(torch.cat(rows), **kwargs)

    @torch.no_grad()
    def fit_images(
        self,
        data: Dataset[Any] | Iterable[Any] | Tensor,
        batch_size: int = 8,
        progress: bool = False,
        num_workers: int = 0,
        **kwargs: Any,
    ) -> Tensor:
        """Builds the memory bank from normal training images, each image's features computed once.

        Args:
            data: a map-style ``Dataset`` of ``(3, H, W)`` images or ``{"image": ...}`` items (batched here), an
                iterable of ``(B, 3, H, W)`` batches or ``{"image": (B, 3, H, W)}`` dicts, or one
                ``(N, 3, H, W)`` tensor; images in [0, 1].
            batch_size / num_workers: batching of a ``Dataset`` or tensor.
            progress: show a tqdm progress bar.
            kwargs: see :meth:`build_memory_bank`.

        Returns:
            Indices of the kept patch rows.
        """
        from tqdm.auto import tqdm

        batches: Iterable[Any]
        if isinstance(data, Tensor):
            if data.ndim != 4:
                raise ValueError(f"fit_images: expected (N, 3, H, W) images, got {tuple(data.shape)}")
            batches = data.split(batch_size)
        elif isinstance(data, Dataset):
            batches = DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        else:
            batches = data
        device = self.memory_bank.device
        was_training = self.training
        self.eval()

        def embedded() -> Iterable[Tensor]:
            for i, batch in enumerate(tqdm(batches, desc="patchcore features", disable=not progress)):
                images = batch["image"] if isinstance(batch, dict) else batch
                if not isinstance(images, Tensor) or images.ndim != 4:
                    raise ValueError(f"fit_images: batch {i} is not a (B, 3, H, W) image tensor")
                yield self.embed(images.to(device))  # (B, D, h, w)

        try:
            return self.fit_features(embedded(), **kwargs)
        finally:
            self.train(was_training)

    def _check_bank(self) -> None:
        if self.bank_size == 0:
            raise RuntimeError("PatchCoreModel: the memory bank is empty; call fit_features / fit_images first")

    @torch.no_grad()
    def patch_distances(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, 3, H, W)`` -> ``(patches (B, L, D), distances (B, h, w))`` nearest-bank distances on the grid."""
        self._check_bank()
        emb = self.embed(images)  # (B, D, h, w)
        b, d, h, w = emb.shape
        patches = emb.permute(0, 2, 3, 1).reshape(b, h * w, d)  # (B, L, D)
        dist = nearest_distances(patches.reshape(-1, d), self.memory_bank, self.chunk)  # (B L,)
        return patches, dist.view(b, h, w)

    @torch.no_grad()
    def forward(self, images: Tensor) -> PatchCoreOutput:
        """``(B, 3, H, W)`` images in [0, 1] -> smoothed ``anomaly_map (B, 1, H, W)`` and ``image_scores (B,)``."""
        patches, dist = self.patch_distances(images)  # (B, L, D), (B, h, w)
        up = F.interpolate(dist[:, None], size=images.shape[-2:], mode="bilinear", align_corners=False)  # (B,1,H,W)
        maps = gaussian_blur(up, self.smooth_sigma)  # (B, 1, H, W)
        scores = reweighted_image_scores(patches, dist.flatten(1), self.memory_bank, self.num_neighbors)  # (B,)
        return PatchCoreOutput(maps, scores)

    @torch.no_grad()
    def anomaly_map(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B, H, W)`` smoothed pixel anomaly map (the contract of ``task.anomaly_maps``)."""
        return self(images).anomaly_map[:, 0]

    @torch.no_grad()
    def image_scores(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` -> ``(B,)`` reweighted image anomaly scores."""
        return self(images).image_scores

    def train(self, mode: bool = True) -> PatchCoreModel:
        super().train(mode)
        self.extractor.train(False)
        return self

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        key = prefix + "memory_bank"
        stored = state_dict.get(key)
        if isinstance(stored, Tensor):
            if stored.ndim != 2 or stored.shape[1] != self.feature_dim:
                error_msgs.append(f"{key}: expected a (N, {self.feature_dim}) memory bank, got {tuple(stored.shape)}")
                return
            self.memory_bank = torch.empty(stored.shape, dtype=self.memory_bank.dtype, device=self.memory_bank.device)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
