"""``sa-ranking``: train, evaluate and score Hiformer / DCN-v2 / logistic-regression ranking models.

Examples::

    rank-sample data/rank-sample                                   # MovieLens-100k from recbole, offline
    sa-ranking train --config hiformer train.epochs=2              # run folder: runs/ranking/hiformer
    torchrun --nproc_per_node 2 -m sa_ranking.cli train --config hiformer   # 2 ranks, table-wise sharding
    sa-ranking evaluate --run runs/ranking/hiformer --baseline runs/ranking/lr
    sa-ranking score --run runs/ranking/hiformer data/rank-sample/candidates.jsonl -o scores.jsonl
    sa-ranking validate day_0.gz --schema criteo --on-error skip   # check a data file, report bad rows
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared_attention.cli_support import run_command


def _quiet_torchrec() -> None:
    import logging
    import warnings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("torchrec", "root", "fbgemm_gpu", "torch.distributed"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("sa_ranking").setLevel(logging.INFO)
    warnings.filterwarnings("ignore", module="torchrec")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import load_ranking_config
    from .train import train

    _quiet_torchrec()
    cfg = load_ranking_config(args.config, args.overrides)
    res = train(cfg)
    m = res.last_metrics
    if m and res.run_dir and int(__import__("os").environ.get("RANK", "0") or 0) == 0:
        print(
            f"\nrun {res.run_dir}: step {res.step}, AUC {m['auc']:.4f}, LogLoss {m['logloss']:.4f} "
            f"(best AUC {res.best_auc:.4f} at step {res.best_step})"
        )
    return 0


def evaluate_run(
    run_dir: str | Path, data: str | Path | None = None, on_error: str = "reject", prune: bool | None = None
) -> dict[str, Any]:
    """AUC / LogLoss of a run folder's served weights on ``data`` (default: its validation file)."""
    import time

    from shared_attention.engine import load_config

    from .config import RankingConfig
    from .data import ReadReport, load_table
    from .predictor import RankingPredictor
    from .train import evaluate_model

    pred = RankingPredictor.load(run_dir, prune=prune)
    cfg = load_config(RankingConfig, Path(run_dir) / "config.yaml")
    path = data or cfg.data.valid
    report = ReadReport()
    table = load_table(path, pred.schema, on_error, report)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    res = evaluate_model(pred.model, table, cfg.train.eval_batch_size)
    return {
        "run": str(run_dir),
        "arch": cfg.model.arch,
        "data": str(path),
        "rows": res["rows"],
        "skipped": report.skipped,
        "auc": res["auc"],
        "logloss": res["logloss"],
        "seconds": time.perf_counter() - t0,
    }


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from shared_attention.engine.checkpoint import atomic_write_bytes

    _quiet_torchrec()
    rows = [evaluate_run(args.run, args.data, args.on_error)]
    if args.baseline:
        rows.append(evaluate_run(args.baseline, args.data or rows[0]["data"], args.on_error))
    print(f"{'run':<40} {'model':<9} {'rows':>7} {'AUC':>7} {'LogLoss':>8}")
    for r in rows:
        print(f"{r['run']:<40} {r['arch']:<9} {r['rows']:>7} {r['auc']:>7.4f} {r['logloss']:>8.4f}")
    if len(rows) == 2:
        print(f"AUC gain over {rows[1]['arch']}: {rows[0]['auc'] - rows[1]['auc']:+.4f}")
    base = rows[1] if len(rows) == 2 else None
    summary = {
        "domain": "ranking",
        "metric": "AUC",
        "model": rows[0]["auc"],
        "baseline": base["auc"] if base else 0.5,
        "baseline_name": {"lr": "logistic regression", "dcnv2": "DCN-v2"}.get(base["arch"], base["arch"])
        if base
        else "random",
        "higher_is_better": True,
        "details": {
            "model_arch": rows[0]["arch"],
            "data": rows[0]["data"],
            "rows": rows[0]["rows"],
            "logloss": rows[0]["logloss"],
            "baseline_logloss": base["logloss"] if base else None,
            "baseline_run": base["run"] if base else None,
        },
    }
    atomic_write_bytes(Path(args.run) / "evaluation.json", json.dumps(summary, indent=2).encode())
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    import json

    from .data import ReadReport
    from .predictor import RankingPredictor

    _quiet_torchrec()
    pred = RankingPredictor.load(args.run, prune=not args.no_prune)
    report = ReadReport()
    src = sys.stdin if args.input == "-" else Path(args.input).open(encoding="utf-8")  # noqa: SIM115
    name = "<stdin>" if args.input == "-" else args.input
    out = sys.stdout if args.output in (None, "-") else Path(args.output).open("w", encoding="utf-8")  # noqa: SIM115
    import torch

    from .data import DataError, RowParser, TableBuilder

    parser = RowParser(pred.schema, with_label=False)
    builder = TableBuilder(pred.schema)
    kept_lines: list[int] = []
    n_out = 0

    def flush() -> None:  # scores the buffered rows; each output line carries its input line number
        nonlocal builder, n_out
        if len(builder) == 0:
            return
        with torch.no_grad():
            scores = pred.predict(builder.build().batch())
        for ln, sc in zip(kept_lines, scores.tolist()):
            out.write(json.dumps({"line": ln, "score": sc}) + "\n")
            n_out += 1
        kept_lines.clear()
        builder = TableBuilder(pred.schema)

    try:
        for i, line in enumerate(src, 1):
            if not line.strip():
                continue
            where = f"{name}:{i}"
            try:
                try:
                    obj = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"{where}: invalid JSON: {exc}") from None
                builder.add(*parser.parse_mapping(obj, where))
            except DataError as exc:
                if args.on_error == "reject":
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                report.add_error(str(exc))
                continue
            report.rows += 1
            kept_lines.append(i)
            if len(builder) >= args.batch_size:
                flush()
        flush()
    finally:
        if src is not sys.stdin:
            src.close()
        if out is not sys.stdout:
            out.close()
    print(f"scored {n_out} rows; {report.skipped} bad rows skipped", file=sys.stderr)
    for e in report.errors:
        print(f"  skipped {e}", file=sys.stderr)
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .data import DataError, ReadReport, iter_table
    from .schema import load_schema

    schema = load_schema(args.schema)
    report = ReadReport()
    try:
        for _ in iter_table(args.path, schema, args.on_error, report, with_label=not args.no_label):
            pass
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    for e in report.errors:
        print(f"  {e}")
    return 1 if report.skipped else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sa-ranking``."""
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(
        prog="sa-ranking",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1],
    )
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train with torchrec DMP (resumes automatically from the run folder)")
    t.add_argument("--config", default="hiformer", help="bundled config (hiformer, dcnv2, lr, criteo-hiformer) or YAML")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.epochs=1 model.key_rank=16")
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="AUC / LogLoss of a run (optionally side by side with a baseline run)")
    e.add_argument("--run", required=True, help="run folder written by `sa-ranking train`")
    e.add_argument("--baseline", help="a baseline run folder (e.g. runs/ranking/lr) evaluated on the same data")
    e.add_argument("--data", help="labelled data file (default: the run's validation file)")
    e.add_argument("--on-error", choices=("reject", "skip"), default="reject")
    e.add_argument("--json", help="write the rows as JSON here")
    e.set_defaults(func=_cmd_evaluate)
    s = sub.add_parser("score", help="score candidates: JSON lines in, JSON lines {line, score} out")
    s.add_argument("input", help="JSON-lines file of candidates ('-': stdin)")
    s.add_argument("--run", required=True)
    s.add_argument("-o", "--output", help="output file (default: stdout)")
    s.add_argument(
        "--on-error",
        choices=("reject", "skip"),
        default="reject",
        help="reject: stop at the first bad row; skip: skip bad rows and count them",
    )
    s.add_argument("--batch-size", type=int, default=1024)
    s.add_argument("--no-prune", action="store_true", help="score with the full (unpruned) last layer")
    s.set_defaults(func=_cmd_score)
    v = sub.add_parser("validate", help="read a data file with a schema and report bad rows with line numbers")
    v.add_argument("path")
    v.add_argument("--schema", required=True, help="schema JSON/YAML, or criteo[:table_size]")
    v.add_argument("--on-error", choices=("reject", "skip"), default="skip")
    v.add_argument("--no-label", action="store_true")
    v.set_defaults(func=_cmd_validate)
    return run_command(ap, argv)


if __name__ == "__main__":
    raise SystemExit(main())
