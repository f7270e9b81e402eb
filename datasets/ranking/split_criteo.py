#!/usr/bin/env python
"""Splits a Criteo file (Kaggle ``train.txt``, or a 1TB ``day_N(.gz)``) into train / valid TSV files by line
order (the Kaggle file is chronological: the last ``--valid-fraction`` of the lines is the validation set),
streaming with constant memory, and validates every row against the Criteo schema on the way.

Nothing is downloaded. Usage::

    python datasets/ranking/split_criteo.py train.txt data/criteo --valid-fraction 0.1 [--on-error skip]
    # -> data/criteo/train.tsv, data/criteo/valid.tsv; then: sa-ranking train --config criteo-hiformer
"""

from __future__ import annotations

import argparse
import gzip
import io
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from sa_ranking.data import DataError, ReadReport, RowParser
from sa_ranking.schema import criteo_schema


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("input", type=Path)
    ap.add_argument("output", type=Path)
    ap.add_argument("--valid-fraction", type=float, default=0.1)
    ap.add_argument("--on-error", choices=("reject", "skip"), default="skip")
    args = ap.parse_args(argv)
    if not args.input.is_file():
        print(f"error: {args.input}: no such file", file=sys.stderr)
        return 2
    with _open(args.input) as fh:
        total = sum(1 for _ in fh)
    cut = int(total * (1.0 - args.valid_fraction))
    args.output.mkdir(parents=True, exist_ok=True)
    parser = RowParser(criteo_schema(1 << 30, negative="clip"))
    report = ReadReport()
    with (
        _open(args.input) as src,
        (args.output / "train.tsv").open("w") as tr,
        (args.output / "valid.tsv").open("w") as va,
    ):
        for i, line in enumerate(src, 1):
            cells = line.rstrip("\r\n").split("\t")
            where = f"{args.input}:{i}"
            try:
                if len(cells) != 40:
                    raise DataError(f"{where}: {len(cells)} tab-separated columns, expected 40")
                parser.parse_cells(cells[0], cells[1:14], cells[14:], where)
            except DataError as exc:
                if args.on_error == "reject":
                    print(f"error: {exc}", file=sys.stderr)
                    return 2
                report.add_error(str(exc))
                continue
            report.rows += 1
            (tr if i <= cut else va).write(line if line.endswith("\n") else line + "\n")
    print(f"{args.output}: {report.summary()}; lines 1-{cut} -> train.tsv, the rest -> valid.tsv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
