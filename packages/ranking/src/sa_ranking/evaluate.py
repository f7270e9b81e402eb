"""Evaluation of a ranking run: AUC and LogLoss on a labelled file, side by side with a baseline run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shared_attention.evaluation import Evaluation

__all__ = ["BASELINE_NAMES", "evaluate", "evaluate_predictor", "evaluate_run"]

#: how the summary names a baseline run by its architecture
BASELINE_NAMES = {"lr": "logistic regression", "dcnv2": "DCN-v2", "fm": "factorisation machine"}


def evaluate_predictor(pred: Any, data: str | Path | None = None, on_error: str = "reject") -> dict[str, Any]:
    """AUC / LogLoss of a loaded :class:`~sa_ranking.predictor.RankingPredictor` on ``data`` (default: the run's
    validation file); also rows read / skipped and the seconds spent scoring."""
    from shared_attention.engine import load_config

    from .config import RankingConfig
    from .data import ReadReport, load_table
    from .train import evaluate_model

    if pred.run is None:
        raise ValueError("ranking evaluation needs a run folder (--run)")
    cfg = load_config(RankingConfig, pred.run.path / "config.yaml")
    path = data or cfg.data.valid
    report = ReadReport()
    table = load_table(path, pred.schema, on_error, report)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    res = evaluate_model(pred.model, table, cfg.train.eval_batch_size)
    return {
        "run": str(pred.run.path),
        "arch": cfg.model.arch,
        "data": str(path),
        "rows": res["rows"],
        "skipped": report.skipped,
        "auc": res["auc"],
        "logloss": res["logloss"],
        "seconds": time.perf_counter() - t0,
    }


def evaluate_run(
    run_dir: str | Path, data: str | Path | None = None, on_error: str = "reject", prune: bool | None = None
) -> dict[str, Any]:
    """:func:`evaluate_predictor` of a run folder's served weights."""
    from .predictor import RankingPredictor

    return evaluate_predictor(RankingPredictor.load(run_dir, prune=prune), data, on_error)


def evaluate(
    pred: Any, data: str | None = None, baseline: str | None = None, *, on_error: str = "reject", **_: Any
) -> Evaluation:
    """AUC / LogLoss of ``pred`` and of a ``baseline`` run on the same file (random ranking, 0.5, without one).

    Args:
        pred: a :class:`~sa_ranking.predictor.RankingPredictor` loaded from a run folder.
        data: a labelled file readable with the run's schema (default: the run's validation file).
        baseline: a baseline run folder (e.g. logistic regression).
        on_error: ``reject`` (stop at the first bad row, naming file and line) or ``skip`` (skip and count).
    """
    rows = [evaluate_predictor(pred, data, on_error)]
    if baseline:
        rows.append(evaluate_run(baseline, data or rows[0]["data"], on_error))
    lines = [f"{'run':<40} {'model':<9} {'rows':>7} {'skipped':>7} {'AUC':>7} {'LogLoss':>8}"]
    for r in rows:
        lines.append(
            f"{r['run']:<40} {r['arch']:<9} {r['rows']:>7} {r['skipped']:>7} {r['auc']:>7.4f} {r['logloss']:>8.4f}"
        )
    base = rows[1] if len(rows) == 2 else None
    if base is not None:
        lines.append(f"AUC gain over {base['arch']}: {rows[0]['auc'] - base['auc']:+.4f}")
    return Evaluation(
        domain="ranking",
        metric="AUC",
        model=rows[0]["auc"],
        baseline=base["auc"] if base else 0.5,
        baseline_name=BASELINE_NAMES.get(base["arch"], base["arch"]) if base else "random",
        higher_is_better=True,
        details={
            "model_arch": rows[0]["arch"],
            "data": rows[0]["data"],
            "rows": rows[0]["rows"],
            "skipped": rows[0]["skipped"],
            "logloss": rows[0]["logloss"],
            "baseline_logloss": base["logloss"] if base else None,
            "baseline_run": base["run"] if base else None,
        },
        report="\n".join(lines),
    )
