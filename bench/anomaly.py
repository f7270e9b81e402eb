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

Writes bench/results/anomaly.json and the table between the markers in BENCHMARKS.md.
Usage: python bench/anomaly.py [--minutes 30] [--skip-quality] [--skip-speed] [--skip-ceiling] [--data data/ad-sample]
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
        rows.append(
            {
                "texture": tex,
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
        "baseline_image_auroc",
        "baseline_pixel_auroc",
        "reference_baseline_image_auroc",
    )
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    return {
        "config": config,
        "budget_minutes": minutes,
        "total_minutes": (time.time() - t_all) / 60,
        "per_texture": rows,
        "mean": mean,
    }


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
            f"Quality: config `{q['config']}`, ad-sample test split, training budget {q['budget_minutes']} min in "
            f"total ({q['total_minutes']:.1f} min with evaluation). Baseline: Gaussian features on the same frozen "
            "backbone (global Mahalanobis for images, per-position for pixels); reference: offline-data.md.",
            "",
            "| texture | image AUROC | pixel AUROC | AUPRO@30% | baseline image | baseline pixel | reference baseline "
            "image | steps |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in q["per_texture"]:
            lines.append(
                f"| {r['texture']} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} | "
                f"{r['baseline_image_auroc']:.3f} | {r['baseline_pixel_auroc']:.3f} | "
                f"{r['reference_baseline_image_auroc']:.3f} | {r['steps']} |"
            )
        m = q["mean"]
        lines.append(
            f"| **mean** | **{m['image_auroc']:.3f}** | **{m['pixel_auroc']:.3f}** | {m['aupro']:.3f} | "
            f"{m['baseline_image_auroc']:.3f} | {m['baseline_pixel_auroc']:.3f} | "
            f"{m['reference_baseline_image_auroc']:.3f} | |"
        )
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
    ap.add_argument("--config", default="cpu")
    ap.add_argument("--data", default=str(ROOT / "data" / "ad-sample"))
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "bench" / "anomaly"))
    args = ap.parse_args()
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if RESULTS.exists():  # keep the other part when only one is re-measured
        old = json.loads(RESULTS.read_text())
        res.update({k: v for k, v in old.items() if k in ("speed", "quality", "ceiling", "bank_levels")})
    if not args.skip_speed:
        print("speed ...", flush=True)
        res["speed"] = bench_speed(args.repeat)
    if not args.skip_quality:
        print(f"quality (training up to {args.minutes} min in total) ...", flush=True)
        res["quality"] = bench_quality(Path(args.data), args.minutes, Path(args.run_dir), args.config)
    if not args.skip_ceiling:
        print("ceiling (frozen-feature references at 128 and 256 px) ...", flush=True)
        res["ceiling"] = bench_ceiling(Path(args.data))
    if args.bank_levels:
        levels = tuple(int(v) for v in args.bank_levels.split(","))
        print(f"memory bank on levels {list(levels)} ...", flush=True)
        res["bank_levels"] = bench_ceiling(Path(args.data), (128,), levels, gaussian=False)
    table = render(res)
    print(table)
    write_results(RESULTS, "anomaly", "Anomaly (`bench/anomaly.py` → `bench/results/anomaly.json`)", res, table)


if __name__ == "__main__":
    main()
