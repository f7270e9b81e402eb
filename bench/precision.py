"""The quality cost of bf16 inference on each domain's offline sample set (``--precision bf16`` vs fp32).

Per domain: the sample set is built (``sa-<domain> sample``), the domain's CPU recipe trains for a short budget
(or ``--reuse-runs`` keeps a run already there), then the same run is evaluated twice through the generated CLI,
``evaluate --precision fp32`` and ``--precision bf16``, and the two headline metrics are printed side by side with
their difference. The runs are short: the numbers measure what bf16 changes in a model that has learned something,
not what each recipe reaches (that is in each domain's own section).

Writes bench/results/precision.json and the table between the markers in BENCHMARKS.md.
Usage: python bench/precision.py [--minutes 3] [--domains restoration,medseg,...] [--reuse-runs]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import choose, write_results

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "precision.json"
BIN = Path(sys.executable).parent


@dataclass
class Recipe:
    """How one domain's sample set is built, trained and evaluated."""

    model: str
    sample: list[str]
    train: list[str]
    evaluate: list[str] = field(default_factory=list)


RECIPES: dict[str, Recipe] = {
    "restoration": Recipe("HAT (cpu, x2)", ["data/sr-sample"], ["--config", "cpu"]),
    "anomaly": Recipe(
        "FOD (cpu, brick)",
        ["data/ad-sample"],
        ["--config", "cpu", "data.root=data/ad-sample", "data.category=brick"],
    ),
    "medseg": Recipe(
        "VM-UNet (vmunet-cpu)",
        ["data/seg-sample"],
        ["--config", "vmunet-cpu"],
        ["--data", "data/seg-sample/test_vol_h5"],
    ),
    "speechsep": Recipe(
        "MossFormer (cpu-small)", ["data/speech-sample"], ["--config", "cpu-small"], ["--max-items", "40"]
    ),
    "ranking": Recipe("Hiformer (rank-sample)", ["data/rank-sample"], ["--config", "hiformer", "train.num_threads=1"]),
}


def _run(cmd: list[str]) -> str:
    print("  $ " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        tail = "\n".join((p.stderr or p.stdout).strip().splitlines()[-5:])
        raise RuntimeError(f"{cmd[0]} {cmd[1]} failed (exit {p.returncode}):\n{tail}")
    return p.stdout


def bench_domain(name: str, minutes: float, runs: Path, reuse: bool) -> dict[str, Any]:
    """Train (or reuse) one short run and evaluate it in fp32 and bf16."""
    r = RECIPES[name]
    cli = str(BIN / f"sa-{name}")
    run = runs / name
    if not (reuse and (run / "model.safetensors").exists()):
        shutil.rmtree(run, ignore_errors=True)  # a fresh run (a folder left there would be resumed)
        _run([cli, "sample", *r.sample])
        _run([cli, "train", *r.train, f"train.run_dir={run}", f"train.max_minutes={minutes}", "train.progress=false"])
    out: dict[str, Any] = {"model": r.model, "run": str(run.relative_to(ROOT) if run.is_relative_to(ROOT) else run)}
    for precision in ("fp32", "bf16"):
        dest = runs / f"{name}.evaluation.{precision}.json"
        t0 = time.perf_counter()
        _run([cli, "evaluate", "--run", str(run), *r.evaluate, "--precision", precision, "--json", str(dest)])
        ev = json.loads(dest.read_text())
        out[precision] = {"value": ev["model"], "evaluate_s": time.perf_counter() - t0}
        out["metric"], out["higher_is_better"] = ev["metric"], ev.get("higher_is_better", True)
    out["delta"] = out["bf16"]["value"] - out["fp32"]["value"]
    out["date"] = time.strftime("%Y-%m-%d")
    return out


def render(res: dict[str, Any]) -> str:
    lines = [
        f"Measured {res['date']} on this machine ({res['threads']} torch threads). Each domain's recipe trained "
        f"{res['minutes']:g} min on its sample set, then the same run evaluated with `--precision fp32` and "
        "`--precision bf16` (bf16 autocast, outputs back to float32):",
        "",
        "| domain | model | metric | fp32 | bf16 | bf16 - fp32 | evaluate fp32 / bf16 (wall, incl. loading) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, d in sorted(res["domains"].items(), key=lambda kv: list(RECIPES).index(kv[0])):
        if "error" in d:
            lines.append(f"| {name} | failed: {d['error']} | | | | | |")
            continue
        f, b = d["fp32"], d["bf16"]
        lines.append(
            f"| {name} | {d['model']} | {d['metric']} | {f['value']:.4f} | {b['value']:.4f} | **{d['delta']:+.4f}** | "
            f"{f['evaluate_s']:.0f} s / {b['evaluate_s']:.0f} s |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--minutes", type=float, default=3.0, help="training budget of each domain's run")
    ap.add_argument("--domains", default=",".join(RECIPES), help=f"comma-separated, from {', '.join(RECIPES)}")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "bench" / "precision"))
    ap.add_argument("--reuse-runs", action="store_true", help="evaluate the runs already there (no training)")
    args = ap.parse_args()
    names = choose(args.domains, RECIPES, "--domains")
    import torch

    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "threads": torch.get_num_threads(),
        "minutes": args.minutes,
        "domains": {},
    }
    if RESULTS.exists():  # the domains not re-measured keep their last results (each carries its date)
        old = json.loads(RESULTS.read_text()).get("domains", {})
        res["domains"] = {n: old[n] for n in RECIPES if n in old and n not in names}
    runs = Path(args.runs).resolve()
    for name in names:
        print(f"{name} ...", flush=True)
        try:
            res["domains"][name] = bench_domain(name, args.minutes, runs, args.reuse_runs)
        except RuntimeError as e:
            print(f"  {e}", flush=True)
            res["domains"][name] = {"error": str(e).splitlines()[0]}
            continue
        print(f"  {res['domains'][name]}", flush=True)
    table = render(res)
    print(table)
    write_results(
        RESULTS,
        "precision",
        "bf16 inference quality (`bench/precision.py` → `bench/results/precision.json`)",
        res,
        table,
    )


if __name__ == "__main__":
    main()
