"""Small generated data sets in the real layouts, for tests and format checks (no Criteo sample ships
in any package): a Criteo-format TSV and a CSV + schema with a learnable click signal."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_criteo_tsv", "write_synthetic_csv", "SYNTHETIC_SCHEMA"]

SYNTHETIC_SCHEMA: dict[str, Any] = {
    "label": "label",
    "dense": [{"name": "x0"}, {"name": "count", "transform": "log1p"}],
    "sparse": [
        {"name": "user", "num_embeddings": 64},
        {"name": "item", "num_embeddings": 96},
        {"name": "city", "num_embeddings": 32, "encoding": "hash"},
        {"name": "tags", "num_embeddings": 16, "multi_hot": True, "separator": "|", "pooling": "mean"},
    ],
}


def write_criteo_tsv(path: str | Path, rows: int, seed: int = 0, with_label: bool = True) -> Path:
    """Criteo-format rows: label, 13 non-negative integer counts, 26 8-digit hexadecimal ids (some empty)."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(rows):
            dense = [str(int(v)) if rng.random() > 0.1 else "" for v in rng.poisson(3.0, 13)]
            sparse = [f"{int(v):08x}" if rng.random() > 0.05 else "" for v in rng.integers(0, 2**32, 26)]
            cells = ([str(int(rng.random() < 0.25))] if with_label else []) + dense + sparse
            fh.write("\t".join(cells) + "\n")
    return path


def write_synthetic_csv(folder: str | Path, train_rows: int = 2000, valid_rows: int = 500, seed: int = 0) -> Path:
    """``train.csv``, ``valid.csv``, ``schema.json`` and ``candidates.jsonl`` in ``folder``; the label depends
    on user and item biases and a user x tag interaction, so a model can learn AUC well above 0.5."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ub, ib = rng.normal(0, 1.0, 64), rng.normal(0, 1.0, 96)
    taste = rng.normal(0, 1.5, (64, 16))
    cities = ["paris", "rome", "oslo", "lima", "kyiv"]

    def rows(n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            u, i = int(rng.integers(0, 64)), int(rng.integers(0, 96))
            tags = sorted({int(t) for t in rng.integers(0, 16, int(rng.integers(1, 4)))})
            x0 = float(rng.normal())
            z = ub[u] + ib[i] + taste[u, tags].mean() + 0.5 * x0
            out.append(
                {
                    "label": int(rng.random() < 1 / (1 + np.exp(-z))),
                    "user": u,
                    "item": i,
                    "city": cities[u % 5],
                    "tags": "|".join(map(str, tags)),
                    "x0": round(x0, 4),
                    "count": int(rng.poisson(2)),
                }
            )
        return out

    for name, n in (("train.csv", train_rows), ("valid.csv", valid_rows)):
        data = rows(n)
        with (folder / name).open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(data[0]))
            w.writeheader()
            w.writerows(data)
    (folder / "schema.json").write_text(json.dumps(SYNTHETIC_SCHEMA, indent=2))
    with (folder / "candidates.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows(5):
            r.pop("label")
            fh.write(json.dumps(r) + "\n")
    return folder
