"""Helpers every benchmark script shares: median timing and writing results (JSON + a BENCHMARKS.md section)."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "BENCHMARKS.md"


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    """Median wall time of ``repeat`` calls of ``fn`` after one warm-up call, in seconds."""
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def choose(csv: str, choices: Iterable[str], option: str) -> list[str]:
    """The names of a comma-separated option, each checked against ``choices`` (exits naming the unknown ones)."""
    known = list(choices)
    names = [n.strip() for n in csv.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"{option}: unknown {unknown}; choose from {sorted(known)}")
    return names


def write_results(results_path: Path, name: str, title: str, res: dict[str, Any], table: str, doc: Path = DOC) -> None:
    """Writes ``res`` to ``results_path`` and ``table`` between ``<!-- name:begin/end -->`` in ``doc``.

    The section (``## title``) is appended with its markers the first time.
    """
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    results_path.parent.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(res, indent=2) + "\n")
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin not in text:
        text += f"\n## {title}\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    doc.write_text(f"{head}{begin}\n{table}\n{end}{tail}")
    print(f"wrote {results_path}")
