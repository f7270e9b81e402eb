"""Reference scorers on the same frozen features as FOD: a Gaussian baseline and a nearest-neighbour memory bank.

Gaussian baseline (Rippel et al. 2020 style). Image score: Mahalanobis distance of the image's globally averaged
features to a Gaussian fitted on the normal training images. Pixel map: per level, the Mahalanobis distance of
every position's feature to one Gaussian fitted on all positions of the training images (stationary textures),
upsampled and averaged over levels.

Memory bank (PatchCore-style, Roth et al. 2022, without coreset subsampling): every training position's feature
(levels upsampled to the finest grid and concatenated) is kept; a test position scores its Euclidean distance to
the nearest one; image score = max of the sigma-smoothed map. It is a strong, training-free reference that tells
how much the frozen features can separate at all, i.e. a practical ceiling for heads trained on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

if TYPE_CHECKING:
    from .models.fod import FODAnomalyModel

__all__ = [
    "GaussianFit",
    "gaussian_baseline",
    "gaussian_scores",
    "mean_upsampled",
    "nearest_distances",
    "memory_bank_reference",
]


class GaussianFit:
    """Mean and shrunk inverse covariance of ``(N, D)`` samples; :meth:`distance` gives Mahalanobis distances."""

    def __init__(self, x: torch.Tensor, shrinkage: float = 0.01) -> None:
        x = x.double()
        self.mean = x.mean(0)
        xc = x - self.mean
        cov = xc.T @ xc / max(len(x) - 1, 1)
        cov = cov + shrinkage * torch.eye(cov.shape[0], dtype=cov.dtype) * cov.diagonal().mean().clamp_min(1e-12)
        self.precision = torch.linalg.inv(cov)

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` -> ``(...)`` Mahalanobis distances."""
        d = x.double() - self.mean
        return torch.einsum("...i,ij,...j->...", d, self.precision, d).clamp_min(0).sqrt()


@torch.no_grad()
def _features(model: nn.Module, ds: Dataset[Any]) -> tuple[list[torch.Tensor], np.ndarray, np.ndarray]:
    fod = cast("FODAnomalyModel", model)  # nn.Module types the ``features`` attribute as Tensor | Module
    feats: list[list[torch.Tensor]] = []
    labels, masks = [], []
    device = next(model.parameters()).device
    for batch in DataLoader(ds, batch_size=8, shuffle=False):
        f = fod.features(batch["image"].to(device))
        feats.append([x.cpu() for x in f])
        labels.append(batch["label"].numpy())
        masks.append(batch["mask"][:, 0].numpy() > 0.5)
    per_level = [torch.cat([b[i] for b in feats]) for i in range(len(feats[0]))]
    return per_level, np.concatenate(labels), np.concatenate(masks)


def mean_upsampled(level_maps: list[torch.Tensor], size: int) -> np.ndarray:
    """Per level ``(N, h_l, w_l)`` maps -> their mean after bilinear upsampling to ``(N, size, size)``."""
    full = [
        F.interpolate(m[:, None].float(), size=(size, size), mode="bilinear", align_corners=True)[:, 0]
        for m in level_maps
    ]
    return torch.stack(full).mean(0).numpy()


def gaussian_scores(train: list[torch.Tensor], test: list[torch.Tensor]) -> tuple[np.ndarray, list[torch.Tensor]]:
    """The Gaussian baseline on per-level features ``(N, C_l, h_l, w_l)``: image scores ``(N_test,)`` (Mahalanobis
    distance of the globally averaged features) and per level the position maps ``(N_test, h_l, w_l)`` (distance
    to one Gaussian over all training positions of that level)."""
    g_img = GaussianFit(torch.cat([f.mean((2, 3)) for f in train], 1))
    img_scores = g_img.distance(torch.cat([f.mean((2, 3)) for f in test], 1)).numpy()
    maps = []
    for f_tr, f_te in zip(train, test):
        g = GaussianFit(f_tr.permute(0, 2, 3, 1).reshape(-1, f_tr.shape[1]))
        maps.append(g.distance(f_te.permute(0, 2, 3, 1)).float())  # (N, h, w)
    return img_scores, maps


@torch.no_grad()
def gaussian_baseline(
    model: nn.Module, train: Dataset[Any], test: Dataset[Any], sigma: float = 4.0
) -> dict[str, float]:
    """Image and pixel AUROC of the Gaussian-feature baseline on ``test`` (features of ``model.features``)."""
    from .metrics import auroc, image_scores

    tr, _, _ = _features(model, train)
    te, labels, masks = _features(model, test)
    img_scores, level_maps = gaussian_scores(tr, te)
    m = mean_upsampled(level_maps, masks.shape[-1])
    return {
        "image_auroc": auroc(img_scores, labels),
        "pixel_auroc": auroc(m, masks),
        "image_auroc_from_map": auroc(image_scores(m, sigma), labels),
    }


def nearest_distances(queries: torch.Tensor, bank: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """``(Q, D)`` queries, ``(N, D)`` bank -> ``(Q,)`` Euclidean distance of each query to its nearest bank row.

    Processed in chunks of ``chunk`` queries, so memory stays ``O(chunk * N)``. Always in float32, also under a
    bf16 autocast (``--precision bf16``): the expansion ``|q|^2 - 2 q.b + |b|^2`` cancels catastrophically for the
    small distances of normal patches when the product is rounded to bf16.
    """
    if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
        raise ValueError(f"expected (Q, D) and (N, D), got {tuple(queries.shape)} and {tuple(bank.shape)}")
    if len(bank) == 0:
        raise ValueError("the memory bank is empty")
    with torch.autocast(queries.device.type, enabled=False):
        queries, bank = queries.float(), bank.float()
        b2 = bank.square().sum(1)  # (N,)
        out = []
        for q in queries.split(chunk):
            d2 = q.square().sum(1, keepdim=True) - 2 * q @ bank.T + b2  # (chunk, N)
            out.append(d2.amin(1).clamp_min(0).sqrt())
    return torch.cat(out) if out else queries.new_zeros(0)


def _stacked(levels: list[torch.Tensor]) -> torch.Tensor:
    """Per level ``(N, C_l, h_l, w_l)`` -> ``(N, sum C_l, h_0, w_0)`` on the finest grid (bilinear)."""
    size = max(f.shape[-1] for f in levels)
    return torch.cat(
        [
            f if f.shape[-1] == size else F.interpolate(f, size=(size, size), mode="bilinear", align_corners=True)
            for f in levels
        ],
        1,
    )


@torch.no_grad()
def memory_bank_reference(
    model: nn.Module, train: Dataset[Any], test: Dataset[Any], sigma: float = 4.0, defects: list[str] | None = None
) -> dict[str, Any]:
    """Image and pixel AUROC of the nearest-neighbour memory bank on ``test`` (features of ``model.features``).

    ``defects``: the defect type of every test image (``"good"`` for normal ones) to add ``per_defect`` image
    AUROCs (each defect type against all normal images).
    """
    from .metrics import auroc, image_scores, per_defect_auroc

    tr, _, _ = _features(model, train)
    te, labels, masks = _features(model, test)
    f_tr, f_te = _stacked(tr), _stacked(te)  # (N, C, h, w)
    c = f_tr.shape[1]
    bank = f_tr.permute(0, 2, 3, 1).reshape(-1, c)
    d = nearest_distances(f_te.permute(0, 2, 3, 1).reshape(-1, c), bank).reshape(len(f_te), 1, *f_te.shape[-2:])
    size = masks.shape[-1]
    m = F.interpolate(d, size=(size, size), mode="bilinear", align_corners=True)[:, 0].numpy()
    scores = image_scores(m, sigma)
    res: dict[str, Any] = {"image_auroc": auroc(scores, labels), "pixel_auroc": auroc(m, masks)}
    if defects is not None:
        if len(defects) != len(labels):
            raise ValueError(f"{len(defects)} defect names for {len(labels)} test images")
        res["per_defect"] = per_defect_auroc(scores, labels, defects)
    return res
