"""The ranking domain's declaration: the core builds ``sa-ranking`` and its run folders from it.

Examples::

    sa-ranking sample data/rank-sample                             # MovieLens-100k from recbole, offline
    sa-ranking train train.epochs=2                                # config cpu (Hiformer); runs/ranking/hiformer
    torchrun --nproc_per_node 2 -m sa_ranking.domain train         # 2 ranks, table-wise sharding
    sa-ranking evaluate --run runs/ranking/hiformer --baseline runs/ranking/lr
    sa-ranking predict data/rank-sample/candidates.jsonl --run runs/ranking/hiformer -o scores.jsonl
    sa-ranking validate day_0.gz --schema criteo --on-error skip   # check a data file, report bad rows
    sa-ranking split ../shared/data/frappe/frappe.validation.libfm data/frappe   # seeded 80/10/10 split
    sa-ranking train --config frappe-hiformer                      # Frappe: chosen on valid, tested on test
    sa-ranking evaluate --run runs/ranking/frappe-hiformer --data data/frappe/test.libfm
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from shared_attention.domain import Command, Domain, arg

__all__ = ["DOMAIN", "main"]


#: modules whose warnings every command would print: fbgemm's import-time deprecations, torchrec's planner and API
#: deprecations (``warnings.filterwarnings`` matches the module the warning is attributed to)
QUIET_WARNING_MODULES = r"(torchrec|fbgemm_gpu)(\.|$)"
#: torch warnings that torchrec's use of torch triggers on every run (the one-process DCP export of ``train``)
QUIET_WARNING_MESSAGES = (r"torch\.distributed is disabled, unavailable or uninitialized",)
#: loggers kept to errors: torchrec's planner tables, fbgemm, torch.distributed and torch.fx chatter
QUIET_LOGGERS = ("torchrec", "fbgemm_gpu", "torch.distributed", "torch.fx")


class _DropThirdPartyRootRecords:
    """fbgemm logs through the root logger (``Successfully loaded ...``, ``[TBE=...]`` lines): drop records
    below ERROR that come from its files, whatever the root level."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keeps the record unless fbgemm wrote it below ERROR."""
        return record.levelno >= logging.ERROR or "/fbgemm_gpu/" not in record.pathname.replace("\\", "/")


def quiet_third_party() -> None:
    """The CLI's start (``on_start``): silences the third-party warnings and log lines every ``sa-ranking`` command
    would print, by module, message and logger only: our own INFO lines, our warnings and any other library's
    warnings still show. Called by the CLI, never on import, so library users keep their own settings."""
    import warnings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    root = logging.getLogger()
    root.setLevel(logging.WARNING)
    for handler in root.handlers:
        if not any(isinstance(f, _DropThirdPartyRootRecords) for f in handler.filters):
            handler.addFilter(_DropThirdPartyRootRecords())
    logging.getLogger("sa_ranking").setLevel(logging.INFO)
    logging.getLogger("shared_attention").setLevel(logging.INFO)
    warnings.filterwarnings("ignore", module=QUIET_WARNING_MODULES)
    for message in QUIET_WARNING_MESSAGES:
        warnings.filterwarnings("ignore", message=message)


def build_model(cfg: Any) -> Any:
    """The model of a whole :class:`~sa_ranking.config.RankingConfig` (its schema read from ``data.schema``)."""
    from .models import build_model as build
    from .schema import load_schema

    return build(load_schema(cfg.data.schema), cfg.model)


def load_predictor(ns: argparse.Namespace) -> Any:
    """A predictor from ``--run`` (pruned serving path unless ``--no-prune``)."""
    from .predictor import RankingPredictor

    if not ns.run:
        raise ValueError("give --run RUN_DIR")
    return RankingPredictor.load(ns.run, prune=None if not getattr(ns, "no_prune", False) else False)


def predict_one(pred: Any, path: Path, out: Path | None, options: dict[str, Any]) -> str:
    """Scores a JSON-lines file of candidates (``-``: stdin) into JSON lines ``{"line", "score"}`` (``out`` or
    stdout; standard JSON, never NaN). A bad row (bad JSON, a missing column, a number float32 cannot represent,
    a non-finite score) stops the run with ``on_error=reject`` (one error naming file:line and the field), or
    is skipped and counted with ``skip``; the count goes to stderr."""
    import json

    import torch

    from .data import DataError, ReadReport, RowParser, TableBuilder, plural
    from .predictor import nonfinite_rows

    on_error, batch_size = options.get("on_error", "reject"), int(options.get("batch_size") or 1024)
    if on_error not in ("reject", "skip"):
        raise ValueError(f"--on-error must be reject or skip, got {on_error!r}")
    report = ReadReport()  # rows: rows scored and written; skipped: bad rows
    name = "<stdin>" if str(path) == "-" else str(path)
    src = sys.stdin if str(path) == "-" else path.open(encoding="utf-8")  # noqa: SIM115
    dst = sys.stdout if out is None else out.open("w", encoding="utf-8")  # noqa: SIM115
    parser = RowParser(pred.schema, with_label=False)
    builder = TableBuilder(pred.schema)
    kept_lines: list[int] = []

    def flush() -> None:  # scores the buffered rows; each output line carries its input line number
        nonlocal builder
        if len(builder) == 0:
            return
        with torch.no_grad():
            scores = pred.predict(builder.build().batch())  # (B,)
        bad = set(nonfinite_rows(scores))
        for k, (ln, sc) in enumerate(zip(kept_lines, scores.tolist())):
            if k in bad:
                msg = f"{name}:{ln}: the model's score is not finite (NaN or inf); check the row's feature values"
                if on_error == "reject":
                    raise DataError(msg)
                report.add_error(msg)
                continue
            dst.write(json.dumps({"line": ln, "score": sc}, allow_nan=False) + "\n")
            report.rows += 1
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
                if on_error == "reject":
                    raise
                report.add_error(str(exc))
                continue
            kept_lines.append(i)
            if len(builder) >= batch_size:
                flush()
        flush()
    finally:
        if src is not sys.stdin:
            src.close()
        if dst is not sys.stdout:
            dst.close()
        else:
            dst.flush()
    bad_text = f"skipped {plural(report.skipped, 'bad row')}" if report.skipped else "no bad rows"
    print(f"scored {plural(report.rows, 'row')}, {bad_text}", file=sys.stderr)
    for e in report.errors:
        print(f"  skipped {e}", file=sys.stderr)
    if report.skipped > len(report.errors):
        print(f"  ... and {report.skipped - len(report.errors)} more", file=sys.stderr)
    return ""


def split(ns: argparse.Namespace) -> int:
    """``sa-ranking split``: writes the seeded train / valid / test parts of a data file."""
    from .split import split_rows

    parts = split_rows(ns.path, ns.out, ns.fractions, ns.seed)
    for part, path in parts.items():
        n = sum(1 for line in path.open(encoding="utf-8") if line.strip())
        print(f"{part}: {path} ({n} lines)")
    return 0


def validate(ns: argparse.Namespace) -> int:
    """``sa-ranking validate``: reads a data file with a schema and reports bad rows with line numbers."""
    from .data import ReadReport, iter_table
    from .schema import load_schema

    schema = load_schema(ns.schema)
    report = ReadReport()
    for _ in iter_table(ns.path, schema, ns.on_error, report, with_label=not ns.no_label):
        pass
    print(report.summary())
    for e in report.errors:
        print(f"  {e}")
    return 1 if report.skipped else 0


_ON_ERROR = arg(
    "--on-error",
    choices=("reject", "skip"),
    default="reject",
    help="reject: stop at the first bad row (naming file:line); skip: skip bad rows and count them",
)

DOMAIN = Domain(
    name="ranking",
    summary="Hiformer / DCN-v2 / logistic-regression ranking on torchrec: train, evaluate, score, validate.",
    build_model="sa_ranking.domain:build_model",
    checkpoint="dcp",
    train_runner="sa_ranking.train:run",
    load_predictor="sa_ranking.domain:load_predictor",
    predict_needs_out=False,
    aliases={"score": "predict"},
    arguments={
        "evaluate": (_ON_ERROR,),
        "predict": (
            _ON_ERROR,
            arg("--batch-size", type=int, default=1024, help="rows scored per forward"),
            arg("--no-prune", action="store_true", help="score with the full (unpruned) last layer"),
        ),
    },
    commands={
        "split": Command(
            help="seeded random train / valid / test split of a data file (libfm, CSV, TSV, JSON lines)",
            run="sa_ranking.domain:split",
            arguments=(
                arg("path", help="the data file, e.g. ../shared/data/frappe/frappe.validation.libfm"),
                arg("out", help="output folder (train / valid / test files with the source's suffix)"),
                arg("--fractions", type=float, nargs=3, default=[0.8, 0.1, 0.1], metavar=("TRAIN", "VALID", "TEST")),
                arg("--seed", type=int, default=0),
            ),
        ),
        "validate": Command(
            help="read a data file with a schema and report bad rows with line numbers",
            run="sa_ranking.domain:validate",
            arguments=(
                arg("path"),
                arg("--schema", required=True, help="schema JSON/YAML, or criteo[:table_size]"),
                arg("--on-error", choices=("reject", "skip"), default="skip"),
                arg("--no-label", action="store_true"),
            ),
        ),
    },
    on_start="sa_ranking.domain:quiet_third_party",
    examples=__doc__.split("\n\n", 1)[1] if __doc__ else "",
)


main = DOMAIN.main  #: the ``sa-ranking`` console script


if __name__ == "__main__":
    raise SystemExit(main())
