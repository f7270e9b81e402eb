"""One model-vs-baseline table across domains, from each run folder's ``evaluation.json``.

Every domain's ``evaluate`` command writes ``<run_dir>/evaluation.json``::

    {"domain": str, "metric": str, "model": float, "baseline": float, "baseline_name": str,
     "higher_is_better": bool, "details": {...}}

``sa-serve summary RUNS_DIR`` reads the ones directly under ``RUNS_DIR/*/`` (and ``RUNS_DIR`` itself) and prints
one row per run: the metric, the model's and the baseline's value, the difference and whether the model wins.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Evaluation", "EvaluationError", "find_evaluations", "format_table", "main", "read_evaluation"]

EVALUATION_FILE = "evaluation.json"


class EvaluationError(ValueError):
    """An ``evaluation.json`` that does not follow the contract (the message names the file and field)."""


@dataclass(frozen=True)
class Evaluation:
    """One run's summary."""

    path: Path
    domain: str
    metric: str
    model: float
    baseline: float
    baseline_name: str
    higher_is_better: bool
    details: dict[str, Any]

    @property
    def delta(self) -> float:
        """model - baseline."""
        return self.model - self.baseline

    @property
    def wins(self) -> bool:
        """Whether the model beats the baseline in the metric's direction."""
        return self.delta > 0 if self.higher_is_better else self.delta < 0


def read_evaluation(path: str | Path) -> Evaluation:
    """Reads and validates one ``evaluation.json``."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvaluationError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise EvaluationError(f"{p}: invalid JSON ({exc})") from exc
    if not isinstance(d, dict):
        raise EvaluationError(f"{p}: expected a JSON object")
    for key, typ in (("domain", str), ("metric", str), ("baseline_name", str), ("higher_is_better", bool)):
        if not isinstance(d.get(key), typ):
            raise EvaluationError(f"{p}: field {key!r} must be a {typ.__name__}, got {d.get(key)!r}")
    values = {}
    for key in ("model", "baseline"):
        v = d.get(key)
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise EvaluationError(f"{p}: field {key!r} must be a finite number, got {v!r}")
        values[key] = float(v)
    details = d.get("details", {})
    if not isinstance(details, dict):
        raise EvaluationError(f"{p}: field 'details' must be an object")
    return Evaluation(
        p,
        d["domain"],
        d["metric"],
        values["model"],
        values["baseline"],
        d["baseline_name"],
        d["higher_is_better"],
        details,
    )


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
            r.path.parent.name,
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
                        "run": str(r.path.parent),
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
