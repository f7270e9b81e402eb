"""Seeded random row splits of a data file (libfm / libsvm, CSV with a header, TSV, JSON lines) into train /
valid / test files with the source's format, lines kept verbatim (a CSV header is repeated in every part).

Used by the Frappe recipe and bench (``sa-ranking split``): every model sees the same parts, and settings are
chosen on ``valid`` only, never on ``test``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shared_attention.engine.checkpoint import atomic_write_text

from .data import _open_text

__all__ = ["PARTS", "split_rows"]

PARTS = ("train", "valid", "test")


def split_rows(
    src: str | Path, out_dir: str | Path, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, Path]:
    """Writes ``out_dir/{train,valid,test}<suffix>`` from a seeded permutation of ``src``'s data lines.

    Args:
        src: the data file; ``.csv`` files keep their header line in every part. Blank lines are dropped.
        out_dir: the output folder (created).
        fractions: train / valid / test shares (must sum to 1); each part gets ``round(share * N)`` rows, the
            last part the rest.
        seed: the permutation's seed (the same seed gives the same parts).

    Returns:
        ``{part: path}``.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such data file")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative shares summing to 1, got {list(fractions)}")
    with _open_text(src) as fh:
        lines = [line if line.endswith("\n") else line + "\n" for line in fh if line.strip()]
    suffixes = [s for s in src.suffixes if s != ".gz"]
    header = ""
    if suffixes and suffixes[-1] == ".csv" and lines:
        header, lines = lines[0], lines[1:]
    if not lines:
        raise ValueError(f"{src}: no data rows")
    n = len(lines)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_valid = int(round(fractions[1] * n))
    cuts = {"train": order[:n_train], "valid": order[n_train : n_train + n_valid], "test": order[n_train + n_valid :]}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    suffix = suffixes[-1] if suffixes else ".txt"  # frappe.validation.libfm -> train.libfm (uncompressed)
    written: dict[str, Path] = {}
    for part in PARTS:
        rows = np.sort(cuts[part])  # the source's order inside each part
        written[part] = atomic_write_text(out / f"{part}{suffix}", header + "".join(lines[i] for i in rows))
    return written
