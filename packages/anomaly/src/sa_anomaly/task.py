"""The anomaly :class:`~shared_attention.engine.TrainTask`: FOD trained per category on normal images with the
official two-phase minimax loss; validation (model selection) on held-out normal training images plus
synthetic defects, never on the test set."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from shared_attention.engine import TaskHooks

from .config import ADConfig
from .models import build_model

if TYPE_CHECKING:
    from .models.fod import FODAnomalyModel

__all__ = [
    "AnomalyTask",
    "ADTask",
    "build_model",
    "compute_references",
    "anomaly_maps",
    "evaluate_dataset",
    "category_dir",
]


def category_dir(cfg: ADConfig) -> Path:
    """``<data.root>/<data.category>``."""
    return Path(cfg.data.root) / cfg.data.category


@torch.no_grad()
def compute_references(model: nn.Module, dataset: Dataset[Any], batch_size: int = 8) -> int:
    """Sets the model's reference features to the per-position mean of ``dataset``'s features; returns the count."""
    from tqdm.auto import tqdm

    fod = cast("FODAnomalyModel", model)
    sums: list[torch.Tensor] | None = None
    count = 0
    device = next(model.parameters()).device
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="reference features", leave=False, disable=len(loader) < 4):
        feats = fod.features(batch["image"].to(device))  # per level (B, C, h, w)
        part = [f.sum(0) for f in feats]
        sums = part if sums is None else [a + b for a, b in zip(sums, part)]
        count += batch["image"].shape[0]
    if sums is None:
        raise ValueError("no training images for the reference features")
    fod.set_references(sums, count)
    return count


@torch.no_grad()
def anomaly_maps(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, S, S)`` images in [0, 1] -> ``(B, S, S)`` official FOD anomaly maps (unsmoothed)."""
    from .models.fod import anomaly_maps_from_outputs

    outputs = model(images, intra_maps=False, inter_maps=True)
    return anomaly_maps_from_outputs(outputs, images.shape[-1])


@torch.no_grad()
def evaluate_dataset(
    model: nn.Module,
    dataset: Dataset[Any],
    batch_size: int = 8,
    sigma: float = 4.0,
    with_pro: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Scores a labelled dataset: image AUROC (max of the smoothed map), pixel AUROC and AUPRO@30 %.

    Returns the metrics plus ``maps`` ``(N, S, S)``, ``scores`` ``(N,)``, ``labels`` and ``masks`` arrays.
    """
    from tqdm.auto import tqdm

    from .metrics import aupro, auroc, image_scores

    model.eval()
    device = next(model.parameters()).device
    maps, masks, labels = [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="scoring", leave=False, disable=not progress):
        maps.append(anomaly_maps(model, batch["image"].to(device)).float().cpu().numpy())
        masks.append(batch["mask"][:, 0].numpy() > 0.5)
        labels.append(batch["label"].numpy())
    m, k, y = np.concatenate(maps), np.concatenate(masks), np.concatenate(labels)
    scores = image_scores(m, sigma)
    res: dict[str, Any] = {"image_auroc": auroc(scores, y), "pixel_auroc": auroc(m, k)}
    if with_pro:
        res["aupro"] = aupro(m, k)
    res.update(maps=m, scores=scores, labels=y, masks=k)
    return res


class AnomalyTask(TaskHooks):
    """FOD on the shared engine, one model per category.

    Args:
        cfg: the anomaly config.
    """

    name = "anomaly"

    def __init__(self, cfg: ADConfig) -> None:
        self.cfg = cfg
        self._split: tuple[list[Any], list[Any]] | None = None

    def split(self) -> tuple[list[Any], list[Any]]:
        """``(train samples, validation samples)`` from the category's normal training images."""
        if self._split is None:
            from .data import list_samples, split_train_val

            d = self.cfg.data
            self._split = split_train_val(list_samples(category_dir(self.cfg), "train"), d.val_fraction, d.seed)
        return self._split

    def _dataset(self, samples: list[Any], augment: bool = False, repeat: int = 1) -> Any:
        from .data import AnomalyImageDataset

        return AnomalyImageDataset(samples, self.cfg.model.image_size, self.cfg.data.resize, augment, repeat)

    def build_model(self) -> nn.Module:
        model = build_model(self.cfg)
        compute_references(model, self._dataset(self.split()[0]), self.cfg.train.eval_batch_size or 8)
        return model

    def build_datasets(self) -> tuple[Dataset[Any], Dataset[Any] | None]:
        from .data import SyntheticValidationDataset

        d = self.cfg.data
        train_s, val_s = self.split()
        train = self._dataset(train_s, d.augment, d.repeat)
        val = SyntheticValidationDataset(self._dataset(val_s), d.val_synthetic, d.seed) if val_s else None
        return train, val

    def training_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        from .losses import fod_loss

        total: dict[str, torch.Tensor] = {}
        for i, (tokens, out) in enumerate(model(batch["image"])):
            terms = fod_loss(tokens, out, self.cfg.loss.lambda1, self.cfg.loss.lambda2)
            for k, v in terms.items():
                total[k] = total[k] + v if k in total else v
                if k != "loss":
                    total[f"{k}_l{i}"] = v
        return total

    def validation_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        import torch.nn.functional as F

        maps = anomaly_maps(model, batch["image"])  # (B, S, S)
        small = F.adaptive_avg_pool2d(maps[:, None], 64)[:, 0]  # pixel AUROC on a 64 px grid keeps it light
        mask = F.adaptive_max_pool2d(batch["mask"], 64)[:, 0]
        from .metrics import image_scores

        scores = torch.from_numpy(image_scores(maps.float().cpu().numpy(), self.cfg.loss.smooth_sigma))
        return {"score": scores, "label": batch["label"].cpu(), "map": small.cpu(), "mask": mask.cpu()}

    def metrics(self, outputs: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
        from .metrics import auroc

        scores = torch.cat([o["score"] for o in outputs]).numpy()
        labels = torch.cat([o["label"] for o in outputs]).numpy()
        maps = torch.cat([o["map"] for o in outputs]).numpy()
        masks = torch.cat([o["mask"] for o in outputs]).numpy() > 0.5
        normal = labels == 0
        res = {"val_normal_score": float(np.mean(scores[normal])) if normal.any() else float("nan")}
        if (labels == 1).any() and normal.any():
            res["val_image_auroc"] = auroc(scores, labels)
            res["val_pixel_auroc"] = auroc(maps, masks)
            res["val_auroc"] = 0.5 * (res["val_image_auroc"] + res["val_pixel_auroc"])
        else:  # no synthetic anomalies: a smaller normal score is better; negate so "max" still works
            res["val_auroc"] = -res["val_normal_score"]
        return res

    @torch.no_grad()
    def on_evaluation_end(self, model: nn.Module, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        """Writes ``samples/step_N.png``: a few validation images with their heatmap overlays."""
        from .imageio import heatmap_overlay, write_png

        train, val = self.build_datasets()
        n_val = 0 if val is None else len(cast(Sized, val))  # SyntheticValidationDataset defines __len__
        if val is None or n_val == 0:
            return
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        idx = [0, n_val - 1] if n_val > 1 else [0]
        items = [val[i] for i in idx]
        images = torch.stack([it["image"] for it in items]).to(device)
        maps = anomaly_maps(model, images).cpu().numpy()
        hi = float(maps.max())
        rows = [heatmap_overlay(it["image"].permute(1, 2, 0).numpy(), m, 0.0, hi) for it, m in zip(items, maps)]
        write_png(Path(run_dir) / "samples" / f"step_{step:08d}.png", np.concatenate(rows, axis=1))
        model.train(was)

    def metadata(self) -> dict[str, Any]:
        from . import __version__

        m = self.cfg.model
        return {
            "package": {"name": "sa-anomaly", "version": __version__},
            "model": {
                "arch": "FOD",
                "backbone": m.backbone,
                "out_indices": list(m.out_indices),
                "image_size": m.image_size,
                "d_models": list(m.d_models),
            },
            "category": self.cfg.data.category,
            "io": {
                "input": f"RGB image, float in [0, 1], (B, 3, {m.image_size}, {m.image_size})",
                "output": "anomaly map (B, S, S); image score = max of the sigma-4 smoothed map",
            },
            "preprocessing": "resize shorter side + centre crop to image_size; ImageNet normalisation inside the model",
        }


#: deprecated name (one release)
ADTask = AnomalyTask
