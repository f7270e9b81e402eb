"""What scores on FOD's frozen features can separate on the magnetic-tile *validation* split (no test image read).

Issue 20 asks FOD to beat the Gaussian-feature baseline by 0.05 AUROC on the same frozen backbone. This measures,
on the split every choice is made on (held-out normal training tiles + their synthetic surface-defect copies, as
the ``magnetic-tile`` config validates), how far simple scores on those features get past the Gaussian:

- ``gaussian``: one Gaussian over all positions of each level (the baseline's pixel map); image score = max of
  the smoothed map (as FOD's), and the baseline's own image score (Gaussian of the globally averaged features);
- ``context rR gapG``: each position's feature predicted linearly (ridge) from its neighbours within ``R``
  positions, the inner ``(2G + 1)^2`` square (itself included) left out, and scored by the Mahalanobis distance of
  the prediction residual (fitted on the training residuals). This is the ceiling of "reconstruct a token from
  its context" on these features, the mechanism a FOD-style head adds to a Gaussian;
- with ``--fod-run``: a trained FOD run (its own score) on the same images, alone and averaged over flips.

Usage: python bench/anomaly_context.py [--data data/magnetic-tile] [--fod-run runs/bench/anomaly/mt-fod]
       [--backbone efficientnet_lite2 --backbone-weights PATH] [--out bench/results/anomaly-context.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def ring(f: torch.Tensor, radius: int, gap: int) -> torch.Tensor:
    """``(N, C, h, w)`` -> ``(N, h, w, K C)``: the features at offsets ``gap < max(|dy|, |dx|) <= radius``
    (edges replicated)."""
    p = F.pad(f, (radius,) * 4, mode="replicate")
    h, w = f.shape[-2:]
    parts = [
        p[:, :, radius + dy : radius + dy + h, radius + dx : radius + dx + w]
        for dy in range(-radius, radius + 1)
        for dx in range(-radius, radius + 1)
        if max(abs(dy), abs(dx)) > gap
    ]
    return torch.cat(parts, 1).permute(0, 2, 3, 1)


def context_maps(
    train: list[torch.Tensor], val: list[torch.Tensor], radius: int, gap: int, ridge: float = 0.1
) -> tuple[list[torch.Tensor], list[float]]:
    """Per level the residual Mahalanobis map ``(N, h, w)`` of the ridge context predictor, and the share of the
    training features' variance its residual keeps."""
    from sa_anomaly.baseline import GaussianFit

    maps, kept = [], []
    for f_tr, f_va in zip(train, val):
        c = f_tr.shape[1]
        x = ring(f_tr, radius, gap).reshape(-1, ring(f_tr[:1], radius, gap).shape[-1]).double()  # (M, K C)
        y = f_tr.permute(0, 2, 3, 1).reshape(-1, c).double()  # (M, C)
        xm, ym = x.mean(0), y.mean(0)
        xc, yc = x - xm, y - ym
        gram = xc.T @ xc
        gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
        w = torch.linalg.solve(gram, xc.T @ yc)  # (K C, C)
        res = yc - xc @ w
        kept.append(float(res.var(0).sum() / yc.var(0).sum()))
        fit = GaussianFit(res.float())
        r_va = (f_va.permute(0, 2, 3, 1).double() - ym) - (ring(f_va, radius, gap).double() - xm) @ w
        maps.append(fit.distance(r_va).float())
    return maps, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "magnetic-tile"), help="converted magnetic-tile set")
    ap.add_argument("--config", default="magnetic-tile")
    ap.add_argument("--fod-run", default=None, help="a trained FOD run folder to score on the same images")
    ap.add_argument("--backbone", default=None, help="timm backbone name (default: the config's)")
    ap.add_argument("--backbone-weights", default=None, help="weights file for --backbone")
    ap.add_argument("--levels", default=None, help="backbone levels, e.g. 2,3 (default: the config's)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "anomaly-context.json"))
    args = ap.parse_args()
    if not (Path(args.data) / "magnetic_tile").is_dir():
        print(
            f"skipped: no converted magnetic-tile set in {args.data} (run bench/anomaly.py, which converts "
            "../shared/data/magnetic-tile, or datasets/anomaly/prepare_magnetic_tile.py)"
        )
        return
    from sa_anomaly.baseline import _features, gaussian_scores, mean_upsampled
    from sa_anomaly.config import load_ad_config
    from sa_anomaly.metrics import auroc, image_scores
    from sa_anomaly.task import AnomalyTask, build_model

    torch.set_num_threads(2)
    overrides = [f"data.root={args.data}"]
    if args.backbone:
        overrides.append(f"model.backbone={args.backbone}")
    if args.levels:
        overrides.append(f"model.out_indices=[{args.levels}]")
    if args.backbone_weights:
        overrides.append(f"model.backbone_weights={args.backbone_weights}")
    cfg = load_ad_config(args.config, overrides)
    task = AnomalyTask(cfg)
    model = build_model(cfg).eval()
    t0 = time.perf_counter()
    train_s, _ = task.split()
    tr, _, _ = _features(model, task._dataset(train_s))
    val = task._val_images()
    if val is None:
        sys.exit("the config holds no validation images out (data.val_fraction)")
    va, labels, masks = _features(model, val)
    size = masks.shape[-1]
    sigma = cfg.loss.smooth_sigma

    rows: dict[str, dict[str, float]] = {}

    def add(name: str, m: np.ndarray, **extra: float) -> None:
        rows[name] = {"image_auroc": auroc(image_scores(m, sigma), labels), "pixel_auroc": auroc(m, masks), **extra}
        r = rows[name]
        print(f"{name:28s} image {r['image_auroc']:.3f}  pixel {r['pixel_auroc']:.3f}", flush=True)

    pooled, gauss = gaussian_scores(tr, va)
    add("gaussian", mean_upsampled(gauss, size), image_auroc_pooled=auroc(pooled, labels))
    for radius, gap in ((1, 0), (2, 1)):
        maps, kept = context_maps(tr, va, radius, gap)
        add(f"context r{radius} gap{gap}", mean_upsampled(maps, size), residual_variance_kept=float(np.mean(kept)))
    if args.fod_run:
        from sa_anomaly.predictor import AnomalyPredictor
        from torch.utils.data import DataLoader

        fod = AnomalyPredictor.load(args.fod_run).model.eval()
        flips: dict[str, list[int]] = {"none": [], "h": [-1], "v": [-2], "hv": [-1, -2]}
        got: dict[str, list[torch.Tensor]] = {k: [] for k in flips}
        with torch.no_grad():
            for b in DataLoader(val, batch_size=8):
                for k, dims in flips.items():
                    m = fod.anomaly_maps(b["image"].flip(dims) if dims else b["image"])  # (B, S, S)
                    got[k].append(m.flip(dims) if dims else m)
        fm = {k: torch.cat(v).float().numpy() for k, v in got.items()}
        add("fod run", fm["none"])
        add("fod run, mean of 4 flips", sum(fm.values()) / 4)
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "split": "validation (held-out normal training tiles + synthetic surface defects)",
        "images": {"normal": int((labels == 0).sum()), "defective": int((labels == 1).sum())},
        "backbone": cfg.model.backbone,
        "levels": list(cfg.model.out_indices),
        "image_size": cfg.model.image_size,
        "fod_run": args.fod_run,
        "seconds": time.perf_counter() - t0,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
