"""A simple Gaussian-feature baseline on the same frozen features (Rippel et al. 2020 style).

Image score: Mahalanobis distance of the image's globally averaged features to a Gaussian fitted on the normal
training images. Pixel map: per level, the Mahalanobis distance of every position's feature to one Gaussian fitted
on all positions of the training images (stationary textures), upsampled and averaged over levels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["GaussianFit", "gaussian_baseline"]


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
    feats: list[list[torch.Tensor]] = []
    labels, masks = [], []
    device = next(model.parameters()).device
    for batch in DataLoader(ds, batch_size=8, shuffle=False):
        f = model.features(batch["image"].to(device))
        feats.append([x.cpu() for x in f])
        labels.append(batch["label"].numpy())
        masks.append(batch["mask"][:, 0].numpy() > 0.5)
    per_level = [torch.cat([b[i] for b in feats]) for i in range(len(feats[0]))]
    return per_level, np.concatenate(labels), np.concatenate(masks)


@torch.no_grad()
def gaussian_baseline(
    model: nn.Module, train: Dataset[Any], test: Dataset[Any], sigma: float = 4.0
) -> dict[str, float]:
    """Image and pixel AUROC of the Gaussian-feature baseline on ``test`` (features of ``model.features``)."""
    from .metrics import auroc, image_scores

    tr, _, _ = _features(model, train)
    te, labels, masks = _features(model, test)
    g_img = GaussianFit(torch.cat([f.mean((2, 3)) for f in tr], 1))
    img_scores = g_img.distance(torch.cat([f.mean((2, 3)) for f in te], 1)).numpy()
    size = masks.shape[-1]
    maps = []
    for f_tr, f_te in zip(tr, te):
        g = GaussianFit(f_tr.permute(0, 2, 3, 1).reshape(-1, f_tr.shape[1]))
        d = g.distance(f_te.permute(0, 2, 3, 1)).float()  # (N, h, w)
        maps.append(F.interpolate(d[:, None], size=(size, size), mode="bilinear", align_corners=True)[:, 0])
    m = torch.stack(maps).mean(0).numpy()
    return {
        "image_auroc": auroc(img_scores, labels),
        "pixel_auroc": auroc(m, masks),
        "image_auroc_from_map": auroc(image_scores(m, sigma), labels),
    }
