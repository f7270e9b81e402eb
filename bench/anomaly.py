"""Anomaly benchmark (FOD), measured side by side in one run.

(a) speed: the official level-0 FOD head (d_model 256, 8 heads, 3 layers, 32x32 = 1024 tokens, batch 1),
    scoring forward (no grad) and training forward (all maps): fast path (separable RBF targets normalised from
    their factors, fused attention for the intra branch when its maps are not needed) vs the naive official path
    (per-head repeated L x L distance maps, targets normalised by an L x L sum, every map computed).
    Goal: fast/naive >= 2x.
(b) quality: the small CPU config trained per texture of the offline ad-sample set (brick, grass, gravel) for at
    most ``--minutes`` in total; image AUROC, pixel AUROC and AUPRO@30% on the test split, side by side with a
    Gaussian-feature baseline on the same frozen features and the reference numbers of offline-data.md.
    Goal: mean image AUROC >= 0.95 and mean pixel AUROC >= 0.95.
(c) ceiling (no training): what the frozen EfficientNet-Lite0 features can separate at all on ad-sample, at the
    config's 128 px and at 256 px input: the Gaussian baseline and a nearest-neighbour memory bank over every
    training position (PatchCore-style, no coreset), image AUROC per defect type.

(d) magnetic tiles (default when ``--mt-src`` exists, ../shared/data/magnetic-tile): the real defect photos
    converted by datasets/anomaly/prepare_magnetic_tile.py (seeded split by tile), FOD (config
    ``magnetic-tile``, cached features, at most ``--mt-minutes``), PatchCore and the Gaussian baseline on the same
    frozen backbone and input size: image AUROC, pixel AUROC, AUPRO@30 % and image AUROC per defect type, with
    training times; one heatmap panel per defect type (input | mask | FOD | PatchCore) written to
    ``--figures`` (the photos may not be redistributed: the folder is git-ignored). ad-sample gets PatchCore per
    texture beside FOD in (b).

Writes bench/results/anomaly.json and the table between the markers in BENCHMARKS.md.
Usage: python bench/anomaly.py [--minutes 30] [--skip-quality] [--skip-speed] [--skip-ceiling] [--data data/ad-sample]
       [--skip-mt] [--mt-minutes 15] [--mt-src ../shared/data/magnetic-tile]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from benchlib import median_time, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "anomaly.json"
DOC = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- anomaly:begin -->", "<!-- anomaly:end -->"
TEXTURES = ("brick", "grass", "gravel")
REFERENCE_BASELINE = {"brick": 0.963, "grass": 0.508, "gravel": 0.621}  # offline-data.md, image AUROC


_time = median_time


@torch.no_grad()
def bench_speed(repeat: int) -> dict[str, Any]:
    from sa_anomaly.model import FODHead, anomaly_maps_from_outputs

    torch.manual_seed(0)
    head = FODHead(1024, 512, 512, 256, 8, 3).eval()
    x, ref = torch.rand(1, 1024, 512), torch.rand(1, 1024, 512)

    def score(naive: bool) -> torch.Tensor:
        out = head(x, ref, intra_maps=naive, normalize_targets=True, naive_targets=naive)
        return anomaly_maps_from_outputs([(x, out)], 256)

    def train_fwd(naive: bool) -> None:
        head(x, ref, normalize_targets=True, naive_targets=naive)

    diff = (score(True) - score(False)).abs().max().item()
    res: dict[str, Any] = {
        "model": "official FOD level-0 head (1024 tokens, d 256, 8 heads, 3 layers)",
        "batch": 1,
        "anomaly_map_max_abs_diff": diff,
    }
    for name, naive in (("naive", True), ("fast", False)):
        res[name] = {
            "score_forward_s": _time(lambda n=naive: score(n), repeat),
            "train_forward_s": _time(lambda n=naive: train_fwd(n), repeat),
        }
    res["score_speedup"] = res["naive"]["score_forward_s"] / res["fast"]["score_forward_s"]
    res["train_forward_speedup"] = res["naive"]["train_forward_s"] / res["fast"]["train_forward_s"]
    return res


def bench_quality(data: Path, minutes: float, run_root: Path, config: str) -> dict[str, Any]:
    from sa_anomaly.domain import main as cli_main
    from sa_anomaly.evaluate import evaluate_run
    from sa_anomaly.sample import build_sample

    build_sample(data)
    rows = []
    t_all = time.time()
    for tex in TEXTURES:
        run = run_root / tex
        shutil.rmtree(run, ignore_errors=True)
        t0 = time.time()
        rc = cli_main(
            [
                "train",
                "--config",
                config,
                f"data.root={data}",
                f"data.category={tex}",
                f"train.run_dir={run}",
                f"train.max_minutes={minutes / len(TEXTURES)}",
                "train.progress=false",
            ]
        )
        if rc != 0:
            raise RuntimeError(f"training {tex} failed ({rc})")
        train_min = (time.time() - t0) / 60
        ev = evaluate_run(run, progress=False)
        d = ev.details
        meta = json.loads((run / "metadata.json").read_text())
        pc_run = run_root / f"{tex}-patchcore"
        pc_min = _train(config, pc_run, [f"data.root={data}", f"data.category={tex}", "model.arch=patchcore"])
        pc = evaluate_run(pc_run, progress=False, baseline=False).details
        rows.append(
            {
                "texture": tex,
                "patchcore_image_auroc": pc["image_auroc"],
                "patchcore_pixel_auroc": pc["pixel_auroc"],
                "patchcore_minutes": pc_min,
                "image_auroc": d["image_auroc"],
                "pixel_auroc": d["pixel_auroc"],
                "aupro": d["aupro"],
                "baseline_image_auroc": d["baseline"]["image_auroc"],
                "baseline_pixel_auroc": d["baseline"]["pixel_auroc"],
                "reference_baseline_image_auroc": REFERENCE_BASELINE[tex],
                "train_minutes": train_min,
                "steps": meta["result"]["step"],
                "best_step": meta["result"]["best_step"],
            }
        )
    keys = (
        "image_auroc",
        "pixel_auroc",
        "aupro",
        "patchcore_image_auroc",
        "patchcore_pixel_auroc",
        "baseline_image_auroc",
        "baseline_pixel_auroc",
        "reference_baseline_image_auroc",
    )
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    from sa_anomaly.config import load_ad_config

    return {
        "config": config,
        "score": load_ad_config(config).model.score,
        "budget_minutes": minutes,
        "total_minutes": (time.time() - t_all) / 60,
        "per_texture": rows,
        "mean": mean,
    }


def _train(config: str, run: Path, overrides: list[str]) -> float:
    """Trains (FOD) or fits (PatchCore) one run with the package CLI; returns the wall minutes."""
    from sa_anomaly.domain import main as cli_main

    shutil.rmtree(run, ignore_errors=True)
    t0 = time.time()
    rc = cli_main(["train", "--config", config, f"train.run_dir={run}", "train.progress=false", *overrides])
    if rc != 0:
        raise RuntimeError(f"training {run} failed ({rc})")
    return (time.time() - t0) / 60


def _row(run: Path, minutes: float) -> dict[str, Any]:
    from sa_anomaly.evaluate import evaluate_run

    d = evaluate_run(run, progress=False).details
    return {
        "image_auroc": d["image_auroc"],
        "pixel_auroc": d["pixel_auroc"],
        "aupro": d["aupro"],
        "per_defect_image_auroc": d["per_defect_image_auroc"],
        "baseline": d["baseline"],
        "train_minutes": minutes,
        "steps": json.loads((run / "metadata.json").read_text())["result"].get("step"),
    }


def bench_magnetic_tile(src: Path, out: Path, minutes: float, run_root: Path, figures: Path) -> dict[str, Any]:
    """FOD vs PatchCore vs the Gaussian baseline on the converted magnetic-tile set (see the module docstring)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(
        "prepare_mt", ROOT / "datasets" / "anomaly" / "prepare_magnetic_tile.py"
    )
    assert spec is not None and spec.loader is not None
    prep = importlib.util.module_from_spec(spec)
    sys.modules["prepare_mt"] = prep
    spec.loader.exec_module(prep)
    cat = out / "magnetic_tile"
    if not (cat / "split.json").is_file():
        prep.prepare(src, out)
    split = json.loads((cat / "split.json").read_text())
    data = [f"data.root={out}", "data.category=magnetic_tile"]
    res: dict[str, Any] = {"split": split["counts"], "source": str(src)}
    fod_run, pc_run = run_root / "mt-fod", run_root / "mt-patchcore"
    print(f"magnetic tiles: FOD for at most {minutes} min ...", flush=True)
    res["fod"] = _row(fod_run, _train("magnetic-tile", fod_run, [*data, f"train.max_minutes={minutes}"]))
    from sa_anomaly.config import load_ad_config

    fod_cfg = load_ad_config(fod_run / "config.yaml")
    res["fod"]["score"] = fod_cfg.model.score
    res["fod"]["val_defects"] = fod_cfg.data.val_defects
    print("magnetic tiles: PatchCore ...", flush=True)
    res["patchcore"] = _row(pc_run, _train("magnetic-tile", pc_run, [*data, "model.arch=patchcore"]))
    res["gaussian"] = res["fod"]["baseline"]
    _heatmaps(fod_run, pc_run, figures)
    res["figures"] = str(figures.relative_to(ROOT)) if figures.is_relative_to(ROOT) else str(figures)
    return res


@torch.no_grad()
def _heatmaps(fod_run: Path, pc_run: Path, figures: Path) -> None:
    """One panel per defect type (its first test image): input | mask | FOD map | PatchCore map."""
    import numpy as np
    from sa_anomaly.config import AnomalyConfig
    from sa_anomaly.data import AnomalyImageDataset, list_samples
    from sa_anomaly.imageio import heatmap_overlay, titled_panels, write_png
    from sa_anomaly.predictor import AnomalyPredictor
    from sa_anomaly.task import score_images

    from shared_attention.engine import load_config

    cfg = load_config(AnomalyConfig, fod_run / "config.yaml")
    samples = list_samples(Path(cfg.data.root) / cfg.data.category, "test")
    firsts = {s.defect: i for i, s in reversed(list(enumerate(samples))) if s.defect != "good"}
    ds = AnomalyImageDataset(samples, cfg.model.image_size, cfg.data.resize, fit=cfg.data.fit)
    models = [AnomalyPredictor.load(r).model for r in (fod_run, pc_run)]
    figures.mkdir(parents=True, exist_ok=True)
    for defect, i in sorted(firsts.items()):
        item = ds[i]
        img, mask = item["image"].permute(1, 2, 0).numpy(), item["mask"][0].numpy()
        maps = [score_images(m, item["image"][None])[0][0].numpy() for m in models]
        panels = [img, mask] + [heatmap_overlay(img, m, float(m.min()), float(np.quantile(m, 0.999))) for m in maps]
        titles = ["input", "ground truth", "FOD", "PatchCore"]
        write_png(
            figures / f"{defect}.png", titled_panels(panels, titles, legend=(0.0, 1.0), legend_label="low - high")
        )


def bench_ceiling(
    data: Path, sizes: tuple[int, ...] = (128, 256), levels: tuple[int, ...] | None = None, gaussian: bool = True
) -> dict[str, Any]:
    """Training-free references on the frozen features: the Gaussian baseline (``gaussian``) and the memory bank,
    per texture and input size, on the config's backbone levels or on ``levels``."""
    from sa_anomaly.baseline import gaussian_baseline, memory_bank_reference
    from sa_anomaly.config import load_ad_config
    from sa_anomaly.data import AnomalyImageDataset, list_samples
    from sa_anomaly.model import FODAnomalyModel
    from sa_anomaly.sample import build_sample

    build_sample(data)
    m = load_ad_config("cpu").model
    levels = tuple(m.out_indices) if levels is None else levels
    keys = ["memory_bank_image_auroc", "memory_bank_pixel_auroc"]
    if gaussian:
        keys = ["gaussian_image_auroc", "gaussian_pixel_auroc", *keys]
    rows = []
    for size in sizes:
        torch.manual_seed(0)
        model = FODAnomalyModel(
            m.backbone, levels, size, [32] * len(levels), m.n_heads, 1, backbone_weights=m.backbone_weights
        ).eval()
        for tex in TEXTURES:
            train_s, test_s = list_samples(data / tex, "train"), list_samples(data / tex, "test")
            train, test = AnomalyImageDataset(train_s, size), AnomalyImageDataset(test_s, size)
            row: dict[str, Any] = {"image_size": size, "texture": tex}
            if gaussian:
                g = gaussian_baseline(model, train, test)
                row.update(gaussian_image_auroc=g["image_auroc"], gaussian_pixel_auroc=g["pixel_auroc"])
            k = memory_bank_reference(model, train, test, defects=[s.defect for s in test_s])
            row.update(
                memory_bank_image_auroc=k["image_auroc"],
                memory_bank_pixel_auroc=k["pixel_auroc"],
                memory_bank_per_defect=k["per_defect"],
            )
            rows.append(row)
            print(f"ceiling levels {list(levels)} {size}px {tex}: {row}", flush=True)
    mean = {
        str(size): {key: sum(r[key] for r in rows if r["image_size"] == size) / len(TEXTURES) for key in keys}
        for size in sizes
    }
    return {"backbone": f"{m.backbone} levels {list(levels)}", "rows": rows, "mean": mean}


def _ceiling_table(c: dict[str, Any], what: str) -> list[str]:
    """Markdown rows of a :func:`bench_ceiling` result (Gaussian columns show "-" where it was not run)."""

    def val(row: dict[str, Any], key: str, bold: bool = False) -> str:
        v = row.get(key)
        return "-" if v is None else (f"**{v:.3f}**" if bold else f"{v:.3f}")

    defects = sorted({k for r in c["rows"] for k in r["memory_bank_per_defect"]})
    lines = [
        "",
        f"Ceiling (no training): frozen {c['backbone']} features on the ad-sample test split; {what} over every "
        "training position (PatchCore-style, no coreset).",
        "",
        "| input | texture | Gaussian image | Gaussian pixel | memory bank image | memory bank pixel | "
        + " | ".join(f"bank image, {d}" for d in defects)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(defects),
    ]
    cols = ("gaussian_image_auroc", "gaussian_pixel_auroc", "memory_bank_image_auroc", "memory_bank_pixel_auroc")
    for r in c["rows"]:
        lines.append(
            f"| {r['image_size']} px | {r['texture']} | "
            + " | ".join(val(r, k) for k in cols)
            + " | "
            + " | ".join(f"{r['memory_bank_per_defect'].get(d, float('nan')):.3f}" for d in defects)
            + " |"
        )
    for size, mm in c["mean"].items():
        lines.append(
            f"| {size} px | **mean** | "
            + " | ".join(val(mm, k, bold=k.startswith("memory")) for k in cols)
            + " |"
            + " |" * len(defects)
        )
    return lines


def render(res: dict[str, Any]) -> str:
    lines = [f"Measured {res['date']} on this machine ({res['threads']} torch threads).", ""]
    sp = res.get("speed")
    if sp:
        lines += [
            f"| {sp['model']}, batch 1 | naive (official: repeated L x L maps, all maps) | fast (separable targets) "
            "| speed-up |",
            "|---|---|---|---|",
            f"| scoring forward (anomaly map) | {sp['naive']['score_forward_s'] * 1e3:.0f} ms "
            f"| {sp['fast']['score_forward_s'] * 1e3:.0f} ms | **{sp['score_speedup']:.2f}x** |",
            f"| training forward (all maps) | {sp['naive']['train_forward_s'] * 1e3:.0f} ms "
            f"| {sp['fast']['train_forward_s'] * 1e3:.0f} ms | **{sp['train_forward_speedup']:.2f}x** |",
            "",
            f"Anomaly maps of the two paths differ by at most {sp['anomaly_map_max_abs_diff']:.1e}.",
            "",
        ]
    q = res.get("quality")
    if q:
        lines += [
            f"Quality: config `{q['config']}` (FOD score: {q.get('score', 'official').replace('_', ' ')}), "
            f"ad-sample test split, training budget {q['budget_minutes']} min in "
            f"total ({q['total_minutes']:.1f} min with evaluation). Baseline: Gaussian features on the same frozen "
            "backbone (global Mahalanobis for images, per-position for pixels); reference: offline-data.md.",
            "",
            "| texture | image AUROC | pixel AUROC | AUPRO@30% | baseline image | baseline pixel | reference baseline "
            "image | PatchCore image | PatchCore pixel | steps |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        nan = float("nan")
        for r in q["per_texture"]:
            lines.append(
                f"| {r['texture']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | "
                f"{r['baseline_image_auroc']:.3f} | {r['baseline_pixel_auroc']:.3f} | "
                f"{r['reference_baseline_image_auroc']:.3f} | {r.get('patchcore_image_auroc', nan):.3f} | "
                f"{r.get('patchcore_pixel_auroc', nan):.3f} | {r['steps']} |"
            )
        m = q["mean"]
        lines.append(
            f"| **mean** | **{m['image_auroc']:.3f}** | **{m['pixel_auroc']:.3f}** | {m['aupro']:.3f} | "
            f"{m['baseline_image_auroc']:.3f} | {m['baseline_pixel_auroc']:.3f} | "
            f"{m['reference_baseline_image_auroc']:.3f} | {m.get('patchcore_image_auroc', nan):.3f} | "
            f"{m.get('patchcore_pixel_auroc', nan):.3f} | |"
        )
    mt = res.get("magnetic_tile")
    if mt:
        defects = sorted(mt["fod"]["per_defect_image_auroc"])
        lines += [
            "",
            f"Magnetic tiles (real photos, split by tile: {mt['split']}); same frozen backbone and input size for "
            "all three; image AUROC per defect type is each type against all good test images.",
            "",
            "| model | image AUROC | pixel AUROC | AUPRO@30% | " + " | ".join(defects) + " | training |",
            "|---|---|---|---|" + "---|" * len(defects) + "---|",
        ]
        g = mt["gaussian"]
        lines.append(
            f"| Gaussian baseline | {g['image_auroc']:.3f} | {g['pixel_auroc']:.3f} | - | "
            + " | ".join("-" for _ in defects)
            + " | fit |"
        )
        for key, name in (("fod", "FOD"), ("patchcore", "PatchCore")):
            r = mt[key]
            if key == "fod" and r.get("score", "official") != "official":
                name = f"FOD ({r['score'].replace('_', ' ')} score)"
            lines.append(
                f"| {name} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | "
                + " | ".join(f"{r['per_defect_image_auroc'].get(d, float('nan')):.3f}" for d in defects)
                + f" | {r['train_minutes']:.1f} min |"
            )
        lines += [
            "",
            f"Heatmaps (input, mask, FOD, PatchCore) per defect type: `{mt['figures']}/` (not committed: "
            "derived from the photos, which may not be redistributed).",
        ]
    for key, what in (
        ("ceiling", "Gaussian baseline and a nearest-neighbour memory bank"),
        ("bank_levels", "a nearest-neighbour memory bank only"),
    ):
        if res.get(key):
            lines += _ceiling_table(res[key], what)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="training budget for all three textures")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-ceiling", action="store_true")
    ap.add_argument("--bank-levels", default="1,2", help="backbone levels for the extra memory-bank row ('' skips it)")
    ap.add_argument("--config", default="ad-sample")
    ap.add_argument("--data", default=str(ROOT / "data" / "ad-sample"))
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "bench" / "anomaly"))
    ap.add_argument("--skip-mt", action="store_true", help="skip the magnetic-tile section")
    ap.add_argument("--mt-src", default=str(ROOT.parent / "shared" / "data" / "magnetic-tile"))
    ap.add_argument("--mt-data", default=str(ROOT / "data" / "magnetic-tile"), help="converted set (built if absent)")
    ap.add_argument("--mt-minutes", type=float, default=15.0, help="FOD training budget on the magnetic tiles")
    ap.add_argument("--figures", default=str(ROOT / "bench" / "results" / "figures" / "magnetic-tile"))
    args = ap.parse_args()
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if RESULTS.exists():  # keep the other part when only one is re-measured
        old = json.loads(RESULTS.read_text())
        keep = ("speed", "quality", "ceiling", "bank_levels", "magnetic_tile")
        res.update({k: v for k, v in old.items() if k in keep})
    if not args.skip_speed:
        print("speed ...", flush=True)
        res["speed"] = bench_speed(args.repeat)
    if not args.skip_quality:
        print(f"quality (training up to {args.minutes} min in total) ...", flush=True)
        res["quality"] = bench_quality(Path(args.data), args.minutes, Path(args.run_dir), args.config)
    if not args.skip_ceiling:
        print("ceiling (frozen-feature references at 128 and 256 px) ...", flush=True)
        res["ceiling"] = bench_ceiling(Path(args.data))
    if not args.skip_mt:
        if Path(args.mt_src).is_dir():
            res["magnetic_tile"] = bench_magnetic_tile(
                Path(args.mt_src), Path(args.mt_data), args.mt_minutes, Path(args.run_dir), Path(args.figures)
            )
        else:
            print(f"magnetic tiles skipped: {args.mt_src} is absent (see ../shared/data/README.md)", flush=True)
    if args.bank_levels:
        levels = tuple(int(v) for v in args.bank_levels.split(","))
        print(f"memory bank on levels {list(levels)} ...", flush=True)
        res["bank_levels"] = bench_ceiling(Path(args.data), (128,), levels, gaussian=False)
    table = render(res)
    print(table)
    write_results(RESULTS, "anomaly", "Anomaly (`bench/anomaly.py` → `bench/results/anomaly.json`)", res, table)


if __name__ == "__main__":
    main()
