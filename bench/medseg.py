"""Medical segmentation benchmark (ParaTransCNN, VM-UNet), measured side by side in one run.

(a) speed: forward (no grad) at 1x3x224x224 of the official-size models: VM-UNet (Synapse config,
    27.4 M parameters) with the fast selective scan (chunked PyTorch path, or mamba-ssm's kernel on CUDA) vs
    the sequential reference scan (goal >= 2x), and ParaTransCNN (245.5 M parameters).
(b) quality: each small CPU config trained on the offline seg-sample (nilearn MNI152, GM / WM) for at most
    ``--minutes`` (default 28), evaluated on the held-out test slab (3D, Dice and HD95 in mm per class) next
    to the multi-Otsu intensity baseline. Goal: mean Dice over GM / WM >= 0.85 for each model.

Writes bench/results/medseg.json and the table between the markers in BENCHMARKS.md.
Usage: python bench/medseg.py [--minutes 28] [--skip-quality] [--models vmunet paratranscnn] [--data data/seg-sample]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from benchlib import median_time, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "medseg.json"
DOC = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- medseg:begin -->", "<!-- medseg:end -->"
CONFIGS = {"vmunet": "vmunet-cpu", "paratranscnn": "paratranscnn-cpu"}


_time = median_time


@torch.no_grad()
def bench_speed(repeat: int) -> dict[str, Any]:
    from sa_medseg.models.paratranscnn import build_paratranscnn
    from sa_medseg.models.vmunet import build_vmunet

    torch.manual_seed(0)
    x = torch.rand(1, 3, 224, 224)
    res: dict[str, Any] = {"input": [1, 3, 224, 224]}
    vm = build_vmunet("vmunet-synapse", num_classes=9).eval()
    fast = vm(x)
    vm.vmunet.set_scan_impl("reference")
    ref = vm(x)
    res["vmunet"] = {
        "parameters": sum(p.numel() for p in vm.parameters()),
        "fast_vs_reference_max_abs_diff": (fast - ref).abs().max().item(),
        "reference_scan_s": _time(lambda: vm(x), max(1, repeat // 2)),
    }
    vm.vmunet.set_scan_impl("fast")
    res["vmunet"]["fast_scan_s"] = _time(lambda: vm(x), repeat)
    res["vmunet"]["speedup"] = res["vmunet"]["reference_scan_s"] / res["vmunet"]["fast_scan_s"]
    pt = build_paratranscnn("paratranscnn", num_classes=9).eval()
    res["paratranscnn"] = {
        "parameters": sum(p.numel() for p in pt.parameters()),
        "forward_s": _time(lambda: pt(x), repeat),
    }
    return res


def bench_quality(model: str, data: Path, minutes: float, run_dir: Path) -> dict[str, Any]:
    if not (data / "test_vol_h5").is_dir():
        subprocess.run([sys.executable, "-m", "sa_medseg.sample", str(data)], check=True)
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.time()
    cmd = [
        sys.executable,
        "-m",
        "sa_medseg.domain",
        "train",
        "--config",
        CONFIGS[model],
        f"train.run_dir={run_dir}",
        f"train.max_minutes={minutes}",
        "train.progress=false",
        f"data.train_dir={data}/train_npz",
        f"data.val_dir={data}/val_vol_h5",
    ]
    subprocess.run(cmd, check=True)
    train_s = time.time() - t0
    meta = json.loads((run_dir / "metadata.json").read_text())
    from sa_medseg.data import load_volumes
    from sa_medseg.evaluate import evaluate_volumes
    from sa_medseg.predictor import SegPredictor

    pred = SegPredictor.load(run_dir)
    vols = load_volumes("h5", data / "test_vol_h5", pred.windowing)  # type: ignore[arg-type]
    ev = evaluate_volumes(pred, vols, run_dir / "test_overlays", progress=False)
    return {
        "config": CONFIGS[model],
        "train_minutes": train_s / 60,
        "budget_minutes": minutes,
        "steps": meta["result"]["step"],
        "best_step": meta["result"]["best_step"],
        "parameters": sum(p.numel() for p in pred.model.parameters()),
        "model": ev["model"],
        "baseline": ev.get("baseline"),
    }


def render(res: dict[str, Any]) -> str:
    lines = [f"Measured {res['date']} on this machine ({res['threads']} torch threads, torch {res['torch']}).", ""]
    sp = res.get("speed")
    if sp:
        v, p = sp["vmunet"], sp["paratranscnn"]
        lines += [
            "| forward, 1x3x224x224, no grad | parameters | time | speed-up |",
            "|---|---|---|---|",
            f"| VM-UNet (Synapse), sequential reference scan | {v['parameters']:,} "
            f"| {v['reference_scan_s']:.2f} s | 1.00x |",
            f"| VM-UNet (Synapse), fast chunked scan | {v['parameters']:,} | {v['fast_scan_s']:.2f} s "
            f"| **{v['speedup']:.2f}x** |",
            f"| ParaTransCNN (official default) | {p['parameters']:,} | {p['forward_s']:.2f} s | |",
            "",
            f"Fast vs reference scan outputs: max abs diff {v['fast_vs_reference_max_abs_diff']:.1e}.",
            "",
        ]
    q = res.get("quality") or {}
    if q:
        lines += [
            "Quality on the seg-sample held-out test slab (MNI152 z 72-95, 1 mm; 3D Dice, HD95 in mm):",
            "",
            "| method | config | params | steps (min) | GM Dice | WM Dice | mean Dice | mean HD95 mm |",
            "|---|---|---|---|---|---|---|---|",
        ]
        base = None
        for name, r in q.items():
            m = r["model"]["per_class"]
            lines.append(
                f"| {name} | {r['config']} | {r['parameters']:,} | {r['steps']} ({r['train_minutes']:.1f}) "
                f"| {m['grey_matter']['dice']:.4f} | {m['white_matter']['dice']:.4f} "
                f"| **{r['model']['dice']:.4f}** | {r['model']['hd95']:.2f} |"
            )
            base = base or r.get("baseline")
        if base:
            b = base["per_class"]
            lines.append(
                f"| multi-Otsu baseline | - | - | - | {b['grey_matter']['dice']:.4f} "
                f"| {b['white_matter']['dice']:.4f} | {base['dice']:.4f} | {base['hd95']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=28.0, help="training budget per model")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--models", nargs="+", default=["vmunet", "paratranscnn"], choices=sorted(CONFIGS))
    ap.add_argument("--data", default=str(ROOT / "data" / "seg-sample"))
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench"))
    args = ap.parse_args()
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if RESULTS.exists():  # keep the parts not re-measured
        old = json.loads(RESULTS.read_text())
        res.update({k: v for k, v in old.items() if k in ("speed", "quality")})
    if not args.skip_speed:
        print("speed ...", flush=True)
        res["speed"] = bench_speed(args.repeat)
    if not args.skip_quality:
        quality = dict(res.get("quality") or {})
        for model in args.models:
            print(f"quality: {model} (training up to {args.minutes} min) ...", flush=True)
            quality[model] = bench_quality(model, Path(args.data), args.minutes, Path(args.runs) / f"medseg-{model}")
        res["quality"] = quality
    table = render(res)
    print(table)
    write_results(
        RESULTS, "medseg", "Medical segmentation (`bench/medseg.py` → `bench/results/medseg.json`)", res, table
    )


if __name__ == "__main__":
    main()
