"""One model-vs-baseline table across domains, from each run folder's ``evaluation.json``.

Every domain's ``evaluate`` command writes ``<run_dir>/evaluation.json``, whose format is owned by
:class:`shared_attention.evaluation.Evaluation` (re-exported here).

``sa-serve summary RUNS_DIR`` reads the ones directly under ``RUNS_DIR/*/`` (and ``RUNS_DIR`` itself) and prints
one row per run: the metric, the model's and the baseline's value, the difference, whether the model wins and
the minutes the run trained (its ``metadata.json``). ``--bench DIR`` adds, per domain, the number a full run
reaches in the benchmarks (``DIR/<domain>.json``, see :data:`BENCH_HEADLINES`) so a short demo run is read
against it; ``--smoke`` says loudly that the runs were smoke tests whose numbers are not results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from shared_attention.evaluation import EVALUATION_FILE, Evaluation, EvaluationError, read_evaluation

__all__ = [
    "BENCH_HEADLINES",
    "Evaluation",
    "EvaluationError",
    "bench_headline",
    "find_evaluations",
    "format_table",
    "main",
    "read_evaluation",
]

#: Per domain: (results file in the bench folder, dotted key of the headline number, its label, dotted key of
#: the minutes that run trained).
BENCH_HEADLINES: dict[str, tuple[str, str, str, str]] = {
    "restoration": ("restoration.json", "quality.psnr_y", "PSNR-Y (dB)", "quality.train_minutes"),
    "anomaly": ("anomaly.json", "quality.mean.image_auroc", "mean image AUROC", "quality.total_minutes"),
    "medseg": ("medseg.json", "quality.vmunet.model.dice", "VM-UNet mean Dice", "quality.vmunet.train_minutes"),
    "speechsep": (
        "speechsep.json",
        "quality.mossformer.si_sdri",
        "MossFormer SI-SDRi (dB)",
        "quality.mossformer.train_minutes",
    ),
    "ranking": ("ranking.json", "quality.models.hiformer.auc", "Hiformer AUC", "quality.models.hiformer.train_minutes"),
}

SMOKE_BANNER = (
    "SMOKE TEST: every model above trained for a few steps (DEMO_BUDGET=tiny) to check that the pipeline runs end "
    "to end.\nThese numbers are not results; run `make demo` with the default budget, or the benchmarks, for those."
)


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def bench_headline(bench_dir: str | Path, domain: str) -> str | None:
    """``"<label> <value> after <m> min (<file>)"`` for ``domain`` from the bench results, or None."""
    spec = BENCH_HEADLINES.get(domain)
    if spec is None:
        return None
    path = Path(bench_dir) / spec[0]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value, minutes = _dig(data, spec[1]), _dig(data, spec[3])
    if not isinstance(value, int | float):
        return None
    after = f" after {minutes:.0f} min" if isinstance(minutes, int | float) else ""
    return f"{spec[2]} {_fmt(float(value))}{after} ({path.name})"


def trained_minutes(evaluation: Evaluation) -> float | None:
    """Minutes of training recorded in the run folder's ``metadata.json`` next to the evaluation (or None)."""
    if evaluation.path is None:
        return None
    try:
        meta = json.loads((evaluation.path.parent / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    minutes = _dig(meta, "result.train_minutes")
    return float(minutes) if isinstance(minutes, int | float) else None


def find_evaluations(root: str | Path) -> list[Path]:
    """``evaluation.json`` files in ``root`` and its direct sub-folders, sorted."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: no such runs folder")
    found = [base / EVALUATION_FILE] if (base / EVALUATION_FILE).is_file() else []
    found += sorted(p for p in base.glob(f"*/{EVALUATION_FILE}") if p.is_file())
    return found


def _fmt(x: float) -> str:
    return f"{x:.4g}" if abs(x) < 1e4 else f"{x:.4e}"


def format_table(rows: list[Evaluation]) -> str:
    """A plain-text table, one line per run (with the minutes it trained where its metadata says)."""
    header = ("domain", "run", "metric", "model", "baseline", "delta", "verdict", "trained")
    body = []
    for r in rows:
        minutes = trained_minutes(r)
        body.append(
            (
                r.domain,
                r.path.parent.name if r.path else "-",
                r.metric + (" (higher is better)" if r.higher_is_better else " (lower is better)"),
                _fmt(r.model),
                f"{_fmt(r.baseline)} ({r.baseline_name})",
                f"{r.delta:+.4g}",
                "model wins" if r.wins else "baseline wins" if r.delta != 0 else "tie",
                "-" if minutes is None else f"{minutes:.1f} min",
            )
        )
    widths = [max(len(str(c)) for c in col) for col in zip(header, *body, strict=True)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(str(c).ljust(w) for c, w in zip(header, widths, strict=True)), line]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in body]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """``sa-serve summary RUNS_DIR [--json OUT]``."""
    import argparse

    ap = argparse.ArgumentParser(prog="sa-serve summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs_dir", help="folder holding run folders (e.g. runs/demo)")
    ap.add_argument("--json", help="also write the rows as JSON to this file")
    ap.add_argument("--bench", help="bench results folder (bench/results): print what a full run reaches per domain")
    ap.add_argument("--smoke", action="store_true", help="the runs were smoke tests: say their numbers are not results")
    args = ap.parse_args(argv)
    try:
        paths = find_evaluations(args.runs_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows, bad = [], 0
    for p in paths:
        try:
            rows.append(read_evaluation(p))
        except EvaluationError as exc:
            print(f"warning: skipping {exc}", file=sys.stderr)
            bad += 1
    if not rows:
        print(
            f"error: no valid {EVALUATION_FILE} under {args.runs_dir} (run each domain's evaluate command)",
            file=sys.stderr,
        )
        return 1
    print(format_table(rows))
    if args.smoke:
        print("\n" + SMOKE_BANNER)
    elif args.bench:
        lines = [f"  {d}: {h}" for d in dict.fromkeys(r.domain for r in rows) if (h := bench_headline(args.bench, d))]
        if lines:
            print("\nThese runs trained for minutes; what a full benchmark run reaches (same recipes, longer):")
            print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "domain": r.domain,
                        "run": str(r.path.parent) if r.path else None,
                        "metric": r.metric,
                        "model": r.model,
                        "baseline": r.baseline,
                        "baseline_name": r.baseline_name,
                        "higher_is_better": r.higher_is_better,
                        "delta": r.delta,
                        "model_wins": r.wins,
                        "train_minutes": trained_minutes(r),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
    return 1 if bad else 0
