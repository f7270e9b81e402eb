"""One model-vs-baseline table across domains, from each run folder's ``evaluation.json``.

Every domain's ``evaluate`` command writes ``<run_dir>/evaluation.json``, whose format is owned by
:class:`shared_attention.evaluation.Evaluation` (re-exported here).

``sa-serve summary RUNS_DIR`` reads the ones directly under ``RUNS_DIR/*/`` (and ``RUNS_DIR`` itself) and prints
one row per run: the metric, the model's and the baseline's value, the difference and whether the model wins.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from shared_attention.evaluation import EVALUATION_FILE, Evaluation, EvaluationError, read_evaluation

__all__ = ["Evaluation", "EvaluationError", "find_evaluations", "format_table", "main", "read_evaluation"]


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
    """A plain-text table, one line per run."""
    header = ("domain", "run", "metric", "model", "baseline", "delta", "verdict")
    body = [
        (
            r.domain,
            r.path.parent.name if r.path else "-",
            r.metric + (" (higher is better)" if r.higher_is_better else " (lower is better)"),
            _fmt(r.model),
            f"{_fmt(r.baseline)} ({r.baseline_name})",
            f"{r.delta:+.4g}",
            "model wins" if r.wins else "baseline wins" if r.delta != 0 else "tie",
        )
        for r in rows
    ]
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
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
    return 1 if bad else 0
