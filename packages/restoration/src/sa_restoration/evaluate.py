"""Evaluation of a restoration model: PSNR / SSIM on the Y channel (crop border = scale) against bicubic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared_attention.evaluation import Evaluation

__all__ = ["evaluate", "evaluate_folder", "format_rows"]


def evaluate_folder(
    pred: Any, gt_dir: str | Path, lq_dir: str | Path, save_dir: str | Path | None = None, progress: bool = True
) -> list[dict[str, Any]]:
    """PSNR/SSIM-Y (crop border = scale) of a predictor and of bicubic on a paired folder, one row per image."""
    import numpy as np
    from tqdm.auto import tqdm

    from .data import PairedImageDataset
    from .imageio import write_png
    from .resize import bicubic_upscale
    from .task import score_pair, to_numpy_image

    s = pred.upscale
    ds = PairedImageDataset(gt_dir, lq_dir, s)
    rows = []
    for i in tqdm(range(len(ds)), disable=not progress, desc="evaluate"):
        item = ds[i]
        lq = to_numpy_image(item["lq"])  # type: ignore[arg-type]
        gt = to_numpy_image(item["gt"])  # type: ignore[arg-type]
        sr = to_numpy_image(pred.predict(pred.preprocess(lq))[0])
        bic = np.clip(bicubic_upscale(lq, s), 0, 1)
        (p, q), (bp, bq) = score_pair(sr, gt, s), score_pair(bic, gt, s)
        rows.append({"name": item["name"], "psnr_y": p, "ssim_y": q, "bicubic_psnr_y": bp, "bicubic_ssim_y": bq})
        if save_dir:
            write_png(Path(save_dir) / f"{item['name']}.png", sr)
    return rows


_KEYS = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")


def format_rows(rows: list[dict[str, Any]]) -> str:
    """Per-image and mean PSNR/SSIM-Y, model vs bicubic, as a text table."""
    out = [f"{'image':<16} {'bicubic PSNR':>12} {'model PSNR':>11} {'gain':>7} {'bicubic SSIM':>13} {'model SSIM':>11}"]

    def line(name: str, r: dict[str, Any]) -> str:
        return (
            f"{name:<16} {r['bicubic_psnr_y']:>12.2f} {r['psnr_y']:>11.2f} {r['psnr_y'] - r['bicubic_psnr_y']:>+7.2f} "
            f"{r['bicubic_ssim_y']:>13.4f} {r['ssim_y']:>11.4f}"
        )

    out += [line(r["name"], r) for r in rows]
    if rows:
        out.append(line("mean", {k: sum(r[k] for r in rows) / len(rows) for k in _KEYS}))
    return "\n".join(out)


def evaluate(
    pred: Any,
    data: str | None = None,
    baseline: str | None = None,
    *,
    gt: str | None = None,
    lq: str | None = None,
    save: str | None = None,
    progress: bool = True,
    **_: Any,
) -> Evaluation:
    """PSNR/SSIM-Y of ``pred`` vs bicubic on a paired folder.

    Args:
        pred: a :class:`~sa_restoration.predictor.RestorationPredictor`.
        data: a folder holding ``GTmod{s}`` and ``LRbicx{s}`` (e.g. ``data/sr-sample/test``); or give ``gt``/``lq``.
        baseline: unused (bicubic is the baseline).
        gt / lq: the ground-truth and low-resolution folders (default: the run's validation folders).
        save: write the super-resolved images here.
        progress: show a progress bar.
    """
    s = pred.upscale
    if data and not (gt and lq):
        gt, lq = str(Path(data) / f"GTmod{s}"), str(Path(data) / f"LRbicx{s}")
    if not (gt and lq) and pred.run is not None:
        from shared_attention.engine import load_config

        from .config import RestorationConfig

        cfg = load_config(RestorationConfig, pred.run.path / "config.yaml")
        gt, lq = cfg.data.val_gt_dir.replace("{scale}", str(s)), cfg.data.val_lq_dir.replace("{scale}", str(s))
    if not (gt and lq):
        raise ValueError("give --data DIR (with GTmod<s>/ and LRbicx<s>/) or --gt DIR --lq DIR")
    rows = evaluate_folder(pred, gt, lq, save, progress=progress)
    if not rows:
        raise ValueError(f"{gt}: no images to evaluate")
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in _KEYS}
    return Evaluation(
        domain="restoration",
        metric=f"PSNR-Y x{s} (dB)",
        model=mean["psnr_y"],
        baseline=mean["bicubic_psnr_y"],
        baseline_name="bicubic",
        higher_is_better=True,
        details={
            "images": len(rows),
            "gt_dir": str(gt),
            "lq_dir": str(lq),
            "ssim_y": mean["ssim_y"],
            "bicubic_ssim_y": mean["bicubic_ssim_y"],
            "per_image": rows,
        },
        report=format_rows(rows),
    )
