"""The anomaly :class:`~shared_attention.engine.TrainTask`: FOD trained per category on normal images with the
official two-phase minimax loss; validation (model selection) on held-out normal training images plus
synthetic defects, never on the test set."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence, Sized
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
    """``(B, 3, S, S)`` images in [0, 1] -> ``(B, S, S)`` anomaly maps: FOD's official maps (unsmoothed), or
    PatchCore's (nearest-bank distances, smoothed as in the paper)."""
    return score_images(model, images)[0]


@torch.no_grad()
def score_images(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(B, 3, S, S)`` images -> ``(maps (B, S, S), image scores (B,) or None)``.

    PatchCore gives its own reweighted image scores; for FOD they are ``None`` and the image score is the
    maximum of the sigma-smoothed map (:func:`~sa_anomaly.metrics.image_scores`).
    """
    from .models.patchcore import PatchCoreModel

    if isinstance(model, PatchCoreModel):
        out = model(images)
        return out.anomaly_map[:, 0], out.image_scores
    return cast("FODAnomalyModel", model).anomaly_maps(images), None


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
    maps, masks, labels, given = [], [], [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for batch in tqdm(loader, desc="scoring", leave=False, disable=not progress):
        b_maps, b_scores = score_images(model, batch["image"].to(device))
        maps.append(b_maps.float().cpu().numpy())
        if b_scores is not None:
            given.append(b_scores.float().cpu().numpy())
        masks.append(batch["mask"][:, 0].numpy() > 0.5)
        labels.append(batch["label"].numpy())
    m, k, y = np.concatenate(maps), np.concatenate(masks), np.concatenate(labels)
    scores = np.concatenate(given) if given else image_scores(m, sigma)
    res: dict[str, Any] = {"image_auroc": auroc(scores, y), "pixel_auroc": auroc(m, k)}
    if with_pro:
        res["aupro"] = aupro(m, k)
    res.update(maps=m, scores=scores, labels=y, masks=k)
    return res


def train(cfg: ADConfig, options: Mapping[str, Any] | None = None) -> Any:
    """``sa-anomaly train``: FOD through the engine, or (``model.arch: patchcore``) :func:`fit_patchcore`."""
    if cfg.model.arch == "patchcore":
        return fit_patchcore(cfg)
    if cfg.model.score == "whitened_residual" and cfg.data.val_fraction <= 0:
        raise ValueError(
            "model.score=whitened_residual needs a validation split (data.val_fraction > 0): its residual "
            "statistics are fitted before each evaluation and saved with the selected weights"
        )
    from shared_attention.engine import fit

    return fit(AnomalyTask(cfg, **dict(options or {})), cfg.train, full_config=cfg)


def fit_patchcore(cfg: ADConfig) -> Any:
    """Fits PatchCore's memory bank on the training part (one pass, no gradient steps), scores the validation
    part (held-out normal images + synthetic defects: for information, nothing is selected on it) and writes a
    servable run folder (``model.safetensors`` holds the bank)."""
    import time

    from shared_attention.domain import Converted, write_run_folder
    from shared_attention.engine import FitResult

    from .domain import DOMAIN
    from .models.patchcore import PatchCoreModel

    t0 = time.monotonic()
    task = AnomalyTask(cfg)
    model = cast(PatchCoreModel, build_model(cfg))
    batch = cfg.train.eval_batch_size or 8
    model.fit_images(task._dataset(task.split()[0]), batch_size=batch, progress=cfg.train.progress)
    val = task._val_images()
    metrics: dict[str, float] = {}
    if val is not None:
        v = evaluate_dataset(model, val, batch, cfg.loss.smooth_sigma, with_pro=False, progress=False)
        metrics = {"val_image_auroc": float(v["image_auroc"]), "val_pixel_auroc": float(v["pixel_auroc"])}
    seconds = time.monotonic() - t0
    result = {"step": 0, "train_minutes": round(seconds / 60, 3), "bank_size": model.bank_size, "last_metrics": metrics}
    meta = {"weights": "fitted (PatchCore memory bank)", "result": result, **task.metadata()}
    run = write_run_folder(DOMAIN, cfg.train.run_dir, Converted(model, cfg, meta))
    return FitResult(run, 0, None, None, None, metrics, None, seconds, model)


class FeatureCache:
    """Frozen backbone features of a dataset computed once: per level ``(N * V, C, h, w)`` float32 on the CPU,
    ``V`` flip variants per image (1, or 4 with ``augment``: none, horizontal, vertical, both), plus the items'
    masks / labels when ``keep_items`` (a fixed validation set).

    The backbone is frozen, so training the heads on cached features equals training on the images (for the
    flip variants the features of the flipped image are cached, not flipped features).
    """

    def __init__(self, levels: list[torch.Tensor], images: int, variants: int, items: dict[str, torch.Tensor]) -> None:
        self.levels, self.images, self.variants, self.items = levels, images, variants, items

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        model: nn.Module,
        dataset: Dataset[Any],
        augment: bool,
        batch_size: int = 8,
        keep_items: bool = False,
        progress: bool = True,
    ) -> FeatureCache:
        """Runs the model's frozen extractor once over ``dataset`` (and its flips when ``augment``)."""
        from tqdm.auto import tqdm

        fod = cast("FODAnomalyModel", model)
        device = next(model.parameters()).device
        flips: list[tuple[int, ...]] = [(), (3,), (2,), (2, 3)] if augment else [()]
        per_variant: list[list[list[torch.Tensor]]] = [[] for _ in flips]
        items: dict[str, list[torch.Tensor]] = {"mask": [], "label": [], "index": []}
        count = 0
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
        for batch in tqdm(loader, desc="caching features", leave=False, disable=not progress or len(loader) < 4):
            images = batch["image"].to(device)
            for v, dims in enumerate(flips):
                feats = fod.features(images.flip(dims) if dims else images)
                per_variant[v].append([f.float().cpu() for f in feats])
            if keep_items:
                for k in items:
                    items[k].append(batch[k])
            count += images.shape[0]
        if count == 0:
            raise ValueError("no images to cache features of")
        n_levels = len(per_variant[0][0])
        # image-major order: row i * V + v is image i's variant v
        levels = [
            torch.stack([torch.cat([b[lvl] for b in per_variant[v]]) for v in range(len(flips))], 1).flatten(0, 1)
            for lvl in range(n_levels)
        ]
        return cls(levels, count, len(flips), {k: torch.cat(v) for k, v in items.items() if v})

    def reference_sums(self) -> list[torch.Tensor]:
        """Per level the sum over images of the un-flipped features (FOD's reference is their mean)."""
        return [lvl[:: self.variants].sum(0) for lvl in self.levels]

    def batches(self, batch_size: int = 32, variant: int = 0) -> Iterator[list[torch.Tensor]]:
        """Per level ``(B, C, h, w)`` batches of every image's flip variant ``variant`` (0: un-flipped)."""
        for start in range(0, self.images, batch_size):
            rows = slice(
                (start * self.variants) + variant, min(start + batch_size, self.images) * self.variants, self.variants
            )
            yield [lvl[rows] for lvl in self.levels]

    def features(self, row: int) -> list[torch.Tensor]:
        """Per level ``(C, h, w)`` of cache row ``row``."""
        return [lvl[row] for lvl in self.levels]

    def as_dataset(self) -> Dataset[dict[str, Any]]:
        """A fixed dataset of ``{"features", "mask", "label", "index"}`` items (needs ``keep_items``)."""
        return _CachedItems(self)

    @property
    def nbytes(self) -> int:
        """Memory held by the cached features."""
        return sum(lvl.numel() * lvl.element_size() for lvl in self.levels)


class _CachedItems(Dataset[dict[str, Any]]):
    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def __len__(self) -> int:
        return self.cache.images

    def __getitem__(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {"features": self.cache.features(i)}
        out.update({k: v[i] for k, v in self.cache.items.items()})
        return out


class CachedFeatureDataset(Dataset[dict[str, Any]]):
    """Training items from a :class:`FeatureCache`: image ``i``'s features, a random flip variant each time
    (drawn from torch's generator, which the engine seeds and checkpoints), ``repeat`` passes per epoch."""

    def __init__(self, cache: FeatureCache, repeat: int = 1) -> None:
        self.cache, self.repeat = cache, repeat

    def __len__(self) -> int:
        return self.cache.images * self.repeat

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = i % self.cache.images
        variant = int(torch.randint(self.cache.variants, ())) if self.cache.variants > 1 else 0
        return {"features": self.cache.features(image * self.cache.variants + variant), "index": image}


class AnomalyTask(TaskHooks):
    """FOD on the shared engine, one model per category.

    Args:
        cfg: the anomaly config.
    """

    name = "anomaly"

    def __init__(self, cfg: ADConfig) -> None:
        self.cfg = cfg
        self._split: tuple[list[Any], list[Any]] | None = None
        self._cache: FeatureCache | None = None
        self._model: nn.Module | None = None

    def split(self) -> tuple[list[Any], list[Any]]:
        """``(train samples, validation samples)`` from the category's normal training images."""
        if self._split is None:
            from .data import list_samples, split_train_val

            d = self.cfg.data
            self._split = split_train_val(list_samples(category_dir(self.cfg), "train"), d.val_fraction, d.seed)
        return self._split

    def _dataset(self, samples: list[Any], augment: bool = False, repeat: int = 1) -> Any:
        from .data import AnomalyImageDataset

        d = self.cfg.data
        return AnomalyImageDataset(samples, self.cfg.model.image_size, d.resize, augment, repeat, d.fit)

    def build_model(self) -> nn.Module:
        model = build_model(self.cfg)
        batch = self.cfg.train.eval_batch_size or 8
        if self.cfg.data.cache_features:
            self._cache = FeatureCache.build(
                model, self._dataset(self.split()[0]), self.cfg.data.augment, batch, progress=self.cfg.train.progress
            )
            cast("FODAnomalyModel", model).set_references(self._cache.reference_sums(), self._cache.images)
        else:
            compute_references(model, self._dataset(self.split()[0]), batch)
        self._model = model
        return model

    @torch.no_grad()
    def on_evaluation_start(self, model: nn.Module) -> None:
        """``score: whitened_residual``: refits the residual statistics of the current weights on the training
        images (their cached un-flipped features, or the images themselves) before the validation scores."""
        fod = cast("FODAnomalyModel", model)
        if getattr(fod, "score", "official") != "whitened_residual":
            return
        batch = self.cfg.train.eval_batch_size or 8
        device = next(model.parameters()).device
        if self._cache is not None:  # the cache lives on the CPU
            fod.fit_residuals([f.to(device) for f in b] for b in self._cache.batches(batch))
            return
        loader = DataLoader(self._dataset(self.split()[0]), batch_size=batch, shuffle=False)
        fod.fit_residuals(fod.features(b["image"].to(device)) for b in loader)

    def _val_images(self) -> Dataset[Any] | None:
        """The validation images: held-out normal ones plus their synthetic-defect copies (None: no hold-out)."""
        from .data import SyntheticValidationDataset

        d = self.cfg.data
        val_s = self.split()[1]
        if not val_s:
            return None
        return SyntheticValidationDataset(self._dataset(val_s), d.val_synthetic, d.seed, d.val_defects)

    def build_datasets(self) -> tuple[Dataset[Any], Dataset[Any] | None]:
        d = self.cfg.data
        train_s, _ = self.split()
        val: Dataset[Any] | None = self._val_images()
        if d.cache_features and self._cache is not None and self._model is not None:
            train: Dataset[Any] = CachedFeatureDataset(self._cache, d.repeat)
            if val is not None:
                batch = self.cfg.train.eval_batch_size or 8
                val = FeatureCache.build(
                    self._model, val, False, batch, keep_items=True, progress=self.cfg.train.progress
                ).as_dataset()
            return train, val
        return self._dataset(train_s, d.augment, d.repeat), val

    def training_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        from .losses import fod_loss

        total: dict[str, torch.Tensor] = {}
        jitter = self.cfg.loss.feature_jitter
        if "features" in batch:
            outputs = model(features=batch["features"], jitter=jitter)
        else:
            outputs = model(batch["image"], jitter=jitter)
        for i, (tokens, out) in enumerate(outputs):
            terms = fod_loss(tokens, out, self.cfg.loss.lambda1, self.cfg.loss.lambda2)
            for k, v in terms.items():
                total[k] = total[k] + v if k in total else v
                if k != "loss":
                    total[f"{k}_l{i}"] = v
        return total

    def validation_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        import torch.nn.functional as F

        if "features" in batch:
            maps = cast("FODAnomalyModel", model).anomaly_maps(features=batch["features"])
        else:
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

        val = self._val_images()
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
                "arch": "PatchCore" if m.arch == "patchcore" else "FOD",
                "backbone": m.backbone,
                "out_indices": list(m.out_indices),
                "image_size": m.image_size,
                "d_models": list(m.d_models),
                "score": m.score if m.arch == "fod" else "patchcore",
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
