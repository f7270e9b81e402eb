"""Speech separation benchmark (MossFormer), measured side by side in one run.

(a) speed: MossFormer(L) (42.1 M parameters, 2 speakers) forward on 4 s at 8 kHz (1 x 32000), no grad —
    fast path (one matmul over [V | U] for the quadratic and the linear attention, in-place relu-square and
    gating, one rotary call for the four query/key streams) vs the naive path (each equation on its own:
    separate einsums for V and U, explicit relu(.)^2, per-stream padding and rotary). Goal: fast/naive
    >= 1.25x. Real-time factor = seconds of compute per second of audio.
(b) quality: the small CPU MossFormer (``cpu-small``) and the Conv-TasNet baseline (``convtasnet-cpu-small``, about
    the same parameter count) trained on the offline speech-sample set for the same ``--minutes`` each, SI-SDRi
    and SDRi on the held-out speaker pair (speaker-disjoint test set); the oracle ideal ratio mask is printed
    as the ceiling of a mask on a 32 ms STFT. Goal: MossFormer >= 6 dB and ahead of Conv-TasNet.
(c) LibriSpeech (the default quality table; real read speech of 251 speakers in ``../shared/data/librispeech-251``,
    or any LibriSpeech-style folder given with ``--librispeech``): MossFormer ``cpu`` and Conv-TasNet
    ``convtasnet-cpu`` (same recipe: dynamic mixing of the training speakers, cosine schedule over the time
    budget), each trained alone for at most ``--librispeech-minutes``; SI-SDRi and SDRi on 200 fixed 4 s mixtures
    of the 25 test speakers (never in training or validation), the oracle ideal ratio mask beside them;
    validation SI-SDRi against training minutes drawn to ``bench/results/speechsep-librispeech.png``.
    Goal: MossFormer >= 6.0 dB and >= Conv-TasNet + 0.5 dB. Skipped, with the reason, when the folder is absent.

Writes bench/results/speechsep.json and the table between the markers in BENCHMARKS.md.
Usage: python bench/speechsep.py [--minutes 45] [--skip-quality] [--data data/speech-sample]
       [--librispeech DIR] [--librispeech-minutes 45] [--skip-librispeech] [--reuse-runs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from benchlib import median_time, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "speechsep.json"
DOC = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- speechsep:begin -->", "<!-- speechsep:end -->"
SR = 8000
LIBRISPEECH = ROOT.parent / "shared" / "data" / "librispeech-251"
CURVE_PNG = ROOT / "bench" / "results" / "speechsep-librispeech.png"
LIBRI_MODELS = (("mossformer", "cpu", "MossFormer cpu"), ("convtasnet", "convtasnet-cpu", "Conv-TasNet (torchaudio)"))


_time = median_time


def bench_speed(repeat: int, seconds: float = 4.0) -> dict[str, Any]:
    from sa_speechsep.models.mossformer import build_mossformer

    torch.manual_seed(0)
    model = build_mossformer("mossformer-l").eval()
    x = torch.randn(1, int(seconds * SR)) * 0.1
    n_params = sum(p.numel() for p in model.parameters())
    res: dict[str, Any] = {
        "model": "MossFormer(L), 2 speakers",
        "parameters": n_params,
        "input": list(x.shape),
        "audio_seconds": seconds,
    }
    with torch.inference_mode():
        model.set_naive(False)
        a = model(x)
        model.set_naive(True)
        b = model(x)
    res["fast_vs_naive_max_abs_diff"] = (a - b).abs().max().item()
    for name, naive in (("naive", True), ("fast", False)):
        model.set_naive(naive)

        def fwd() -> None:
            with torch.inference_mode():
                model(x)

        t = _time(fwd, repeat)
        res[name] = {"forward_s": t, "real_time_factor": t / seconds}
    model.set_naive(False)
    res["forward_speedup"] = res["naive"]["forward_s"] / res["fast"]["forward_s"]
    return res


def _train(config: str, run_dir: Path, data: Path, minutes: float) -> float:
    shutil.rmtree(run_dir, ignore_errors=True)
    t0 = time.time()
    cmd = [
        sys.executable,
        "-m",
        "sa_speechsep.domain",
        "train",
        "--config",
        config,
        f"train.run_dir={run_dir}",
        f"train.max_minutes={minutes}",
        "train.max_steps=1000000",
        "train.progress=false",
        f"data.train={data}/sources",
        f"data.val={data}/cv",
        f"data.test={data}/tt",
    ]
    subprocess.run(cmd, check=True)
    return (time.time() - t0) / 60


def bench_quality(data: Path, minutes: float, runs: Path, max_items: int) -> dict[str, Any]:
    if not (data / "tt" / "mix").is_dir():
        subprocess.run([sys.executable, "-m", "sa_speechsep.sample", str(data)], check=True)
    from sa_speechsep.data import build_dataset
    from sa_speechsep.evaluate import evaluate_dataset
    from sa_speechsep.predictor import SeparationPredictor

    ds = build_dataset(str(data / "tt"), sample_rate=SR)
    mixture_seconds = ds[0]["mix"].shape[-1] / SR
    out: dict[str, Any] = {
        "data": str(data / "tt"),
        "budget_minutes": minutes,
        "mixture_seconds": mixture_seconds,
        "test_speakers": json.loads((data / "manifest.json").read_text())["test_speakers"],
    }
    for key, config in (("mossformer", "cpu-small"), ("convtasnet", "convtasnet-cpu-small")):
        run = runs / f"speechsep-{config}"
        print(f"training {config} for {minutes} min ...", flush=True)
        train_min = _train(config, run, data, minutes)
        pred = SeparationPredictor.load(run)
        meta = json.loads((run / "metadata.json").read_text())
        rows = evaluate_dataset(pred, ds, max_items, with_sdr=True, oracle=key == "mossformer", progress=False)
        n = len(rows)
        out[key] = {
            "config": config,
            "parameters": sum(p.numel() for p in pred.model.parameters()),
            "train_minutes": train_min,
            "steps": meta["result"]["step"],
            "best_step": meta["result"]["best_step"],
            "si_sdri": sum(r["si_sdri"] for r in rows) / n,
            "sdri": sum(r["sdri"] for r in rows) / n,
            "si_sdr": sum(r["si_sdr"] for r in rows) / n,
            "mixtures": n,
        }
        if key == "mossformer":
            out["oracle_irm_si_sdri"] = sum(r["irm_si_sdri"] for r in rows) / n
    out["mossformer_minus_convtasnet_db"] = out["mossformer"]["si_sdri"] - out["convtasnet"]["si_sdri"]
    return out


def _curve(run: Path) -> tuple[list[float], list[float]]:
    """(training minutes, validation SI-SDRi) at each evaluation of a run, from its metrics.csv."""
    import csv

    val: dict[int, float] = {}
    minutes: dict[int, float] = {}
    with (run / "metrics.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] == "val" and row["metric"] == "si_sdri":
                val[int(row["step"])] = float(row["value"])
            elif row["split"] == "time" and row["metric"] == "train_minutes":
                minutes[int(row["step"])] = float(row["value"])
    steps = sorted(set(val) & set(minutes))
    return [minutes[s] for s in steps], [val[s] for s in steps]


def bench_librispeech(root: Path, minutes: float, runs: Path, reuse: bool) -> dict[str, Any]:
    """Trains MossFormer ``cpu`` and Conv-TasNet ``convtasnet-cpu`` on ``root``'s training speakers (one after the
    other, each alone), scores both on the test speakers' fixed mixtures and draws the validation curves."""
    from sa_speechsep.evaluate import evaluate
    from sa_speechsep.predictor import SpeechsepPredictor

    from shared_attention.io import line_chart, write_png

    out: dict[str, Any] = {"data": os.path.relpath(root, ROOT), "budget_minutes": minutes}
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for key, config, name in LIBRI_MODELS:
        run = runs / f"speechsep-librispeech-{config}"
        meta_path = run / "metadata.json"
        if reuse and meta_path.exists():
            print(f"{config}: reusing {run}", flush=True)
            wall = None
        else:
            print(f"training {config} on {root} for at most {minutes} min ...", flush=True)
            shutil.rmtree(run, ignore_errors=True)
            t0 = time.time()
            cmd = [sys.executable, "-m", "sa_speechsep.domain", "train", "--config", config]
            cmd += [f"train.run_dir={run}", f"train.max_minutes={minutes}", "train.progress=false"]
            cmd += [f"data.librispeech_root={root}", f"data.val={root}", f"data.test={root}"]
            subprocess.run(cmd, check=True)
            wall = (time.time() - t0) / 60
        meta = json.loads(meta_path.read_text())
        trained = float(meta["result"].get("train_minutes") or 0.0)
        if trained > minutes + 0.5:
            raise SystemExit(f"{run}: trained {trained:.1f} min, over the {minutes} min budget (retrain it)")
        pred = SpeechsepPredictor.load(run)
        print(f"evaluating {config} on the test speakers ...", flush=True)
        ev = evaluate(pred, str(root), oracle=key == "mossformer", progress=False)
        det = ev.details
        out[key] = {
            "name": name,
            "config": config,
            "parameters": sum(p.numel() for p in pred.model.parameters()),
            "train_minutes": trained,
            "wall_minutes": wall,
            "steps": meta["result"]["step"],
            "best_step": meta["result"]["best_step"],
            "best_val_si_sdri": meta["result"].get("best_value"),
            "si_sdri": ev.model,
            "sdri": det["model_sdri"],
            "mixtures": det["mixtures"],
        }
        out["split"] = det["speech_folder"]
        if key == "mossformer":
            out["oracle_irm_si_sdri"] = det["oracle_irm_si_sdri"]
        curves[name] = _curve(run)
        out[key]["curve"] = {"minutes": curves[name][0], "val_si_sdri": curves[name][1]}
    out["mossformer_minus_convtasnet_db"] = out["mossformer"]["si_sdri"] - out["convtasnet"]["si_sdri"]
    if all(len(c[0]) for c in curves.values()):
        img = line_chart(
            curves,
            title=f"Validation SI-SDRi on unseen LibriSpeech speakers ({root.name})",
            x_label="training minutes (2 CPU cores)",
            y_label="SI-SDRi (dB)",
        )
        write_png(CURVE_PNG, img)
        out["curve_png"] = str(CURVE_PNG.relative_to(ROOT))
    return out


def render(res: dict[str, Any]) -> str:
    lines = [f"Measured {res['date']} on this machine ({res['threads']} torch threads).", ""]
    sp = res.get("speed")
    if sp:
        lines += [
            f"| {sp['model']}, {sp['audio_seconds']:g} s at 8 kHz | naive (per-equation, unfused) "
            "| fast (fused [V,U] attention) | speed-up |",
            "|---|---|---|---|",
            f"| forward (no grad) | {sp['naive']['forward_s']:.2f} s | {sp['fast']['forward_s']:.2f} s "
            f"| **{sp['forward_speedup']:.2f}x** |",
            f"| real-time factor | {sp['naive']['real_time_factor']:.2f} | {sp['fast']['real_time_factor']:.2f} | |",
            "",
            f"Max |fast - naive| = {sp['fast_vs_naive_max_abs_diff']:.1e}; {sp['parameters']:,} parameters.",
            "",
        ]
    lb = res.get("librispeech")
    if lb and "mossformer" in lb:
        sp_ = lb.get("split") or {}
        mf, ct = lb["mossformer"], lb["convtasnet"]
        ok6 = "met" if mf["si_sdri"] >= 6.0 else "NOT met"
        ok5 = "met" if lb["mossformer_minus_convtasnet_db"] >= 0.5 else "NOT met"
        lines += [
            f"Quality on LibriSpeech speakers ({lb['data'].split('/')[-1]}): {mf['mixtures']} fixed mixtures of "
            f"{sp_.get('seconds', 4.0):g} s from the {sp_.get('test_speakers', '?')} test speakers (never in training "
            f"or validation; {sp_.get('val_speakers', '?')} validation speakers, the rest train), each model trained "
            f"alone for at most {lb['budget_minutes']:g} min:",
            "",
            "| model | parameters | steps | train minutes | best val SI-SDRi | test SI-SDRi | test SDRi |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in (mf, ct):
            lines.append(
                f"| {r['name']} | {r['parameters']:,} | {r['steps']} | {r['train_minutes']:.1f} | "
                f"{(r['best_val_si_sdri'] or float('nan')):.2f} dB | **{r['si_sdri']:.2f} dB** | {r['sdri']:.2f} dB |"
            )
        lines += [
            f"| oracle ideal ratio mask | | | | | {lb['oracle_irm_si_sdri']:.2f} dB | |",
            "",
            f"Goals: MossFormer >= 6.0 dB ({ok6}); MossFormer - Conv-TasNet = "
            f"{lb['mossformer_minus_convtasnet_db']:+.2f} dB (>= 0.5: {ok5}).",
            "",
        ]
        if lb.get("curve_png"):
            lines += [f"![validation SI-SDRi against training minutes]({lb['curve_png']})", ""]
    elif lb:
        lines += [f"LibriSpeech quality: skipped ({lb.get('skipped')}).", ""]
    q = res.get("quality")
    if q:
        lines += [
            f"Quality: speech-sample held-out pair {q['test_speakers']} "
            f"({q['mossformer']['mixtures']} mixtures of {q.get('mixture_seconds', 4.0):g} s), "
            f"each model trained for at most {q['budget_minutes']} min:",
            "",
            "| model | parameters | steps | SI-SDRi | SDRi |",
            "|---|---|---|---|---|",
        ]
        for key, name in (("mossformer", "MossFormer cpu-small"), ("convtasnet", "Conv-TasNet (torchaudio)")):
            r = q[key]
            lines.append(
                f"| {name} | {r['parameters']:,} | {r['steps']} | **{r['si_sdri']:.2f} dB** " f"| {r['sdri']:.2f} dB |"
            )
        lines.append(f"| oracle ideal ratio mask | | | {q['oracle_irm_si_sdri']:.2f} dB | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--minutes", type=float, default=45.0, help="training budget of each model")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=4.0, help="audio length of the speed test (the goal uses 4 s)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--max-items", type=int, default=0, help="evaluate at most N test mixtures (0: all)")
    ap.add_argument("--data", default=str(ROOT / "data" / "speech-sample"))
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench"))
    ap.add_argument("--librispeech", default=str(LIBRISPEECH), help="LibriSpeech-style speaker folder")
    ap.add_argument("--librispeech-minutes", type=float, default=45.0, help="training budget of each model")
    ap.add_argument("--skip-librispeech", action="store_true", help="keep the LibriSpeech results of the last run")
    ap.add_argument("--reuse-runs", action="store_true", help="evaluate LibriSpeech runs already trained (in budget)")
    args = ap.parse_args()
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if RESULTS.exists():  # keep the other part when only one is re-measured
        old = json.loads(RESULTS.read_text())
        res.update({k: v for k, v in old.items() if k in ("speed", "quality", "librispeech")})
        if args.skip_speed and args.skip_quality and args.skip_librispeech:
            res["date"] = old.get("date", res["date"])  # only re-rendered: nothing was measured today
    if not args.skip_speed:
        print("speed ...", flush=True)
        res["speed"] = bench_speed(args.repeat, args.seconds)
    if not args.skip_librispeech:
        root = Path(args.librispeech)
        if root.is_dir():
            res["librispeech"] = bench_librispeech(root, args.librispeech_minutes, Path(args.runs), args.reuse_runs)
        else:
            print(f"LibriSpeech quality skipped: {root} is absent (see ../shared/data/README.md)", flush=True)
            res.setdefault("librispeech", {"skipped": f"{root.name} absent"})  # the last results stay
    if not args.skip_quality:
        res["quality"] = bench_quality(Path(args.data), args.minutes, Path(args.runs), args.max_items)
    table = render(res)
    print(table)
    write_results(
        RESULTS, "speechsep", "Speech separation (`bench/speechsep.py` → `bench/results/speechsep.json`)", res, table
    )


if __name__ == "__main__":
    main()
