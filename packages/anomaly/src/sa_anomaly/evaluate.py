"""Evaluation of an anomaly run: image / pixel AUROC and AUPRO on the test split against the Gaussian baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared_attention.evaluation import Evaluation

__all__ = ["choose_threshold", "evaluate", "evaluate_run"]


def choose_threshold(scores: Any, labels: Any) -> float:
    """The image-score threshold maximising F1 on labelled (validation) scores."""
    import numpy as np

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    best, best_t = -1.0, float(s.max())
    for t in np.unique(s):
        pred = s >= t
        tp = float((pred & y).sum())
        f1 = 2 * tp / max(pred.sum() + y.sum(), 1)
        if f1 > best:
            best, best_t = f1, float(t)
    return best_t


def _report(d: dict[str, Any]) -> str:
    b = d.get("baseline") or {}
    nan = float("nan")
    lines = [
        f"{'category':<12} {'image AUROC':>12} {'pixel AUROC':>12} {'AUPRO@30%':>10} | {'baseline img':>12} "
        f"{'baseline px':>11}",
        f"{d['category']:<12} {d['image_auroc']:>12.4f} {d['pixel_auroc']:>12.4f} {d['aupro']:>10.4f} | "
        f"{b.get('image_auroc', nan):>12.4f} {b.get('pixel_auroc', nan):>11.4f}",
    ]
    if d.get("threshold") is not None:
        lines.append(
            f"threshold (validation F1): {d['threshold']:.5g}; test accuracy {d['test_accuracy_at_threshold']:.3f}"
        )
    return "\n".join(lines)


def evaluate(
    pred: Any,
    data: str | None = None,
    baseline: str | None = None,
    *,
    category: str | None = None,
    heatmaps: str | None = None,
    no_baseline: bool = False,
    progress: bool = True,
    **_: Any,
) -> Evaluation:
    """Test-split evaluation of a loaded run; writes ``threshold.json`` into the run folder.

    Args:
        pred: an :class:`~sa_anomaly.predictor.AnomalyPredictor` loaded from a run folder.
        data: the dataset root in MVTec layout (default: the run's ``data.root``).
        baseline: unused (the Gaussian-feature baseline is computed on the same backbone).
        category: the category (default: the run's ``data.category``).
        heatmaps: write ``input | ground truth | anomaly map`` panels (titles, a colour bar) of every test image
            here (the evaluation crops: shorter side ``data.resize``, centre crop).
        no_baseline: skip the Gaussian baseline (its AUROC is then reported as chance, 0.5).
        progress: show a progress bar.

    The threshold is chosen on the validation split (held-out normal training images + synthetic defects).
    """
    if pred.run is None:
        raise ValueError("anomaly evaluation needs a run folder (--run): its config names the data and category")
    return evaluate_run(pred.run.path, data, category, not no_baseline, progress, heatmaps, pred=pred)


def evaluate_run(
    run_dir: str | Path,
    data_root: str | None = None,
    category: str | None = None,
    baseline: bool = True,
    progress: bool = True,
    heatmaps: str | Path | None = None,
    pred: Any = None,
) -> Evaluation:
    """Test-split evaluation of a run folder (see :func:`evaluate`); also writes ``threshold.json``."""
    import json

    import numpy as np

    from shared_attention.engine import load_config
    from shared_attention.engine.checkpoint import atomic_write_bytes

    from .baseline import gaussian_baseline
    from .config import AnomalyConfig
    from .data import AnomalyImageDataset, SyntheticValidationDataset, list_samples, split_train_val
    from .imageio import heatmap_overlay, titled_panels, write_png
    from .metrics import per_defect_auroc
    from .predictor import THRESHOLD_FILE, AnomalyPredictor
    from .task import evaluate_dataset

    run = Path(run_dir)
    cfg = load_config(AnomalyConfig, run / "config.yaml")
    root = Path(data_root or cfg.data.root)
    cat = category or cfg.data.category
    pred = pred if pred is not None else AnomalyPredictor.load(run)
    size, resize = cfg.model.image_size, cfg.data.resize
    test = AnomalyImageDataset(list_samples(root / cat, "test"), size, resize, fit=cfg.data.fit)
    res = evaluate_dataset(pred.model, test, sigma=cfg.loss.smooth_sigma, progress=progress)
    train_s, val_s = split_train_val(list_samples(root / cat, "train"), cfg.data.val_fraction, cfg.data.seed)
    threshold = None
    if val_s and cfg.data.val_synthetic > 0:
        val = SyntheticValidationDataset(
            AnomalyImageDataset(val_s, size, resize, fit=cfg.data.fit),
            cfg.data.val_synthetic,
            cfg.data.seed,
            cfg.data.val_defects,
        )
        v = evaluate_dataset(pred.model, val, sigma=cfg.loss.smooth_sigma, with_pro=False, progress=False)
        threshold = choose_threshold(v["scores"], v["labels"])
        atomic_write_bytes(
            run / THRESHOLD_FILE, json.dumps({"threshold": threshold, "source": "validation F1"}).encode()
        )
    summary: dict[str, Any] = {
        "image_auroc": res["image_auroc"],
        "pixel_auroc": res["pixel_auroc"],
        "aupro": res["aupro"],
        "images": len(test),
        "anomalous": int(res["labels"].sum()),
        "per_defect_image_auroc": per_defect_auroc(res["scores"], res["labels"], [s.defect for s in test.samples]),
        "threshold": threshold,
    }
    if threshold is not None:
        summary["test_accuracy_at_threshold"] = float(np.mean((res["scores"] >= threshold) == res["labels"]))
    if baseline:
        summary["baseline"] = gaussian_baseline(
            pred.model, AnomalyImageDataset(train_s, size, resize, fit=cfg.data.fit), test, sigma=cfg.loss.smooth_sigma
        )
    if heatmaps:  # input | ground truth | map, one colour scale for the whole test split
        hi = float(np.quantile(res["maps"], 0.999))
        for i, s in enumerate(test.samples):
            img, mask = test.load(i)
            panel = titled_panels(
                [img, mask, heatmap_overlay(img, res["maps"][i], 0, hi)],
                ["input", "ground truth", f"anomaly map, score {res['scores'][i]:.3g}"],
                legend=(0.0, hi),
                legend_label="map value",
            )
            write_png(Path(heatmaps) / s.defect / f"{s.path.stem}.png", panel)
    details = {"category": cat, "data_root": str(root), **summary}
    return Evaluation(
        domain="anomaly",
        metric=f"image AUROC ({cat})",
        model=res["image_auroc"],
        baseline=summary["baseline"]["image_auroc"] if baseline else 0.5,
        baseline_name="Gaussian features (global Mahalanobis)" if baseline else "chance (baseline skipped)",
        higher_is_better=True,
        details=details,
        report=_report(details),
    )
