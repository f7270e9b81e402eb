"""``sa-anomaly``: train, evaluate, predict and convert FOD anomaly detectors (one model per category).

Examples::

    ad-sample data/ad-sample                                            # offline textures in MVTec layout
    sa-anomaly train --config cpu data.category=brick                   # run folder: runs/anomaly/brick
    sa-anomaly evaluate --run runs/anomaly/brick                        # test split: AUROCs, AUPRO vs baseline
    sa-anomaly predict data/ad-sample/brick/test/scratch/000.png out/ --run runs/anomaly/brick
    sa-anomaly convert --heads l0.pth l1.pth --refs l0.npy l1.npy --backbone-weights wrn50.pth out_run/
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared_attention.cli_support import run_command


def _resolve_run_dir(cfg: Any) -> Any:
    from shared_attention.engine.config import replace

    run_dir = cfg.train.run_dir.replace("{category}", cfg.data.category)
    return replace(cfg, **{"train.run_dir": run_dir})


def _cmd_train(args: argparse.Namespace) -> int:
    import logging

    from shared_attention.engine import fit

    from .config import load_ad_config
    from .task import ADTask

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = _resolve_run_dir(load_ad_config(args.config, args.overrides))
    res = fit(ADTask(cfg), cfg.train, full_config=cfg)
    m = res.last_metrics
    if m:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in m.items())
        print(f"\nrun {res.run_dir}: step {res.step} (best step {res.best_step}): {shown}")
    return 0


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


def evaluate_run(
    run_dir: str | Path,
    data_root: str | None = None,
    category: str | None = None,
    baseline: bool = True,
    progress: bool = True,
    heatmaps: str | Path | None = None,
) -> dict[str, Any]:
    """Test-split evaluation of a run folder; writes ``evaluation.json`` and ``threshold.json`` into it.

    The threshold is chosen on the validation split (held-out normal training images + synthetic defects).
    """
    import json

    import numpy as np

    from shared_attention.engine import load_config
    from shared_attention.engine.checkpoint import atomic_write_bytes

    from .baseline import gaussian_baseline
    from .config import ADConfig
    from .data import AnomalyImageDataset, SyntheticValidationDataset, list_samples, split_train_val
    from .imageio import heatmap_overlay, write_png
    from .metrics import per_defect_auroc
    from .predictor import THRESHOLD_FILE, AnomalyPredictor
    from .task import evaluate_dataset

    run = Path(run_dir)
    cfg = load_config(ADConfig, run / "config.yaml")
    root = Path(data_root or cfg.data.root)
    cat = category or cfg.data.category
    pred = AnomalyPredictor.load(run)
    size, resize = cfg.model.image_size, cfg.data.resize
    test = AnomalyImageDataset(list_samples(root / cat, "test"), size, resize)
    res = evaluate_dataset(pred.model, test, sigma=cfg.loss.smooth_sigma, progress=progress)
    train_s, val_s = split_train_val(list_samples(root / cat, "train"), cfg.data.val_fraction, cfg.data.seed)
    threshold = None
    if val_s and cfg.data.val_synthetic > 0:
        val = SyntheticValidationDataset(
            AnomalyImageDataset(val_s, size, resize), cfg.data.val_synthetic, cfg.data.seed
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
            pred.model, AnomalyImageDataset(train_s, size, resize), test, sigma=cfg.loss.smooth_sigma
        )
    if heatmaps:
        hi = float(np.quantile(res["maps"], 0.999))
        for i, s in enumerate(test.samples):
            img = test.load(i)[0]
            write_png(Path(heatmaps) / s.defect / f"{s.path.stem}.png", heatmap_overlay(img, res["maps"][i], 0, hi))
    evaluation = {
        "domain": "anomaly",
        "metric": f"image AUROC ({cat})",
        "model": res["image_auroc"],
        "baseline": summary["baseline"]["image_auroc"] if baseline else float("nan"),
        "baseline_name": "Gaussian features (global Mahalanobis)",
        "higher_is_better": True,
        "details": {"category": cat, "data_root": str(root), **summary},
    }
    atomic_write_bytes(run / "evaluation.json", json.dumps(evaluation, indent=2).encode())
    return evaluation


def _cmd_evaluate(args: argparse.Namespace) -> int:
    ev = evaluate_run(args.run, args.data_root, args.category, baseline=not args.no_baseline, heatmaps=args.heatmaps)
    d = ev["details"]
    b = d.get("baseline", {})
    print(
        f"{'category':<12} {'image AUROC':>12} {'pixel AUROC':>12} {'AUPRO@30%':>10} | {'baseline img':>12} "
        f"{'baseline px':>11}"
    )
    print(
        f"{d['category']:<12} {d['image_auroc']:>12.4f} {d['pixel_auroc']:>12.4f} {d['aupro']:>10.4f} | "
        f"{b.get('image_auroc', float('nan')):>12.4f} {b.get('pixel_auroc', float('nan')):>11.4f}"
    )
    if d.get("threshold") is not None:
        print(f"threshold (validation F1): {d['threshold']:.5g}; test accuracy {d['test_accuracy_at_threshold']:.3f}")
    print(f"wrote {Path(args.run) / 'evaluation.json'}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    import json

    from shared_attention.engine.checkpoint import atomic_write_bytes
    from shared_attention.serving import InputError

    from .imageio import IMAGE_SUFFIXES
    from .predictor import AnomalyPredictor

    pred = AnomalyPredictor.load(args.run, device=args.device)
    src, dst = Path(args.input), Path(args.output)
    inputs = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if src.is_dir() else [src]
    failed = 0
    results = {}
    for inp in inputs:
        if not inp.is_file():
            print(f"error: {inp}: no such file", file=sys.stderr)
            failed += 1
            continue
        try:
            out = pred(inp.read_bytes())
        except InputError as exc:
            print(f"error: {inp}: {exc}", file=sys.stderr)
            failed += 1
            continue
        png = dst / f"{inp.stem}_heatmap.png"
        atomic_write_bytes(png, out["heatmap_png"])
        verdict = "" if out["threshold"] is None else (" ANOMALOUS" if out["score"] >= out["threshold"] else " normal")
        print(f"{inp}: score {out['score']:.5g}{verdict} -> {png}")
        results[str(inp)] = {"score": out["score"], "threshold": out["threshold"], "heatmap": str(png)}
    if results:
        atomic_write_bytes(dst / "scores.json", json.dumps(results, indent=2).encode())
    return 1 if failed else 0


def _cmd_convert(args: argparse.Namespace) -> int:
    import json

    from shared_attention.engine.checkpoint import atomic_write_bytes, save_weights
    from shared_attention.engine.config import dump_config, load_config

    from .config import ADConfig
    from .official import assemble_official

    out_indices = tuple(args.out_indices)
    model = assemble_official(args.heads, args.refs, args.backbone_weights, args.backbone, args.image_size, out_indices)
    d_models = [h.d_model for h in model.heads]
    cfg = load_config(
        ADConfig,
        None,
        [
            f"model.backbone={args.backbone}",
            "model.backbone_weights=null",
            f"model.out_indices={list(out_indices)}",
            f"model.image_size={args.image_size}",
            f"model.d_models={d_models}",
            f"model.n_heads={model.heads[0].n_heads}",
            f"model.n_layers={model.heads[0].n_layers}",
            f"data.category={args.category}",
            f"train.run_dir={args.output}",
        ],
    )
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / "model.safetensors", model.state_dict(), {"source": "official FOD"})
    atomic_write_bytes(out / "config.yaml", dump_config(cfg).encode())
    meta = {
        "task": "anomaly",
        "source": "official FOD checkpoints",
        "heads": [str(h) for h in args.heads],
        "model": {"arch": "FOD", "backbone": args.backbone, "d_models": d_models},
    }
    atomic_write_bytes(out / "metadata.json", json.dumps(meta, indent=2).encode())
    n = sum(p.numel() for h in model.heads for p in h.parameters())
    print(f"official FOD ({len(model.heads)} levels, {n:,} head parameters, strict loads ok) -> run folder {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sa-anomaly``."""
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(
        prog="sa-anomaly",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1],
    )
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one category (resumes automatically from the run folder)")
    t.add_argument("--config", default="cpu", help="bundled config name (cpu, fod-w50) or YAML path")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.category=grass train.max_steps=300")
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="test-split image/pixel AUROC and AUPRO vs the Gaussian baseline")
    e.add_argument("--run", required=True, help="run folder written by `sa-anomaly train`")
    e.add_argument("--data-root", help="dataset root (default: the run's data.root)")
    e.add_argument("--category", help="category (default: the run's data.category)")
    e.add_argument("--heatmaps", help="write heatmap overlays of every test image here")
    e.add_argument("--no-baseline", action="store_true", help="skip the Gaussian-feature baseline")
    e.set_defaults(func=_cmd_evaluate)
    p = sub.add_parser("predict", help="score an image or a folder; writes heatmap PNGs and scores.json")
    p.add_argument("input", help="image file or folder")
    p.add_argument("output", help="output folder")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_cmd_predict)
    c = sub.add_parser("convert", help="official per-level FOD checkpoints -> a run folder (strict loads)")
    c.add_argument("output", help="run folder to write")
    c.add_argument("--heads", nargs="+", required=True, help="official FOD state dict per level (.pth/.safetensors)")
    c.add_argument("--refs", nargs="+", required=True, help="reference features per level (.npy/.safetensors, (C, L))")
    c.add_argument("--backbone-weights", required=True, help="ImageNet weights of the backbone")
    c.add_argument("--backbone", default="wide_resnet50_2")
    c.add_argument("--out-indices", type=int, nargs="+", default=[2, 3])
    c.add_argument("--image-size", type=int, default=256)
    c.add_argument("--category", default="official")
    c.set_defaults(func=_cmd_convert)
    return run_command(ap, argv, prefix="sa-anomaly: error")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
