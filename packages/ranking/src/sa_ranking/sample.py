"""``rank-sample``: a real CTR sample set from MovieLens-100k as it ships inside ``recbole`` (offline).

MovieLens terms forbid redistribution, so the data is read from the installed ``recbole`` package at run
time (``recbole/dataset_example/ml-100k``) and never committed. Each rating becomes one row:

* label = rating >= 4 (55.4 % positive);
* sparse: user, item, age, gender, occupation, zip (hashed), release year, genres (multi-hot, mean pooled);
* dense: age / 100 and (release year - 1900) / 100;
* temporal split: rows sorted by timestamp, the first 80 % train, the last 20 % test.

Writes ``<out>/train.csv``, ``<out>/test.csv``, ``<out>/schema.json``, ``<out>/candidates.jsonl`` (a few
unlabelled test rows for ``sa-ranking score``) and ``<out>/info.json``.

Usage: ``rank-sample data/rank-sample [--source DIR] [--test-fraction 0.2]``
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["find_ml100k", "build_rows", "build_sample", "SCHEMA", "main"]

GENDERS = {"M": 0, "F": 1}
COLUMNS = [
    "label",
    "user",
    "item",
    "age",
    "gender",
    "occupation",
    "zip",
    "year",
    "genres",
    "age_n",
    "year_n",
    "timestamp",
]

SCHEMA: dict[str, Any] = {
    "label": "label",
    "dense": [{"name": "age_n"}, {"name": "year_n"}],
    "sparse": [
        {"name": "user", "num_embeddings": 1000},
        {"name": "item", "num_embeddings": 1700},
        {"name": "age", "num_embeddings": 100},
        {"name": "gender", "num_embeddings": 2},
        {"name": "occupation", "num_embeddings": 32},
        {"name": "zip", "num_embeddings": 2048, "encoding": "hash"},
        {"name": "year", "num_embeddings": 128},
        {"name": "genres", "num_embeddings": 32, "multi_hot": True, "separator": "|", "pooling": "mean"},
    ],
    "extra": {"source": "MovieLens-100k (recbole dataset_example), label = rating >= 4"},
}


def find_ml100k() -> Path:
    """The ``ml-100k`` folder inside the installed ``recbole`` package."""
    import importlib.util

    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("recbole is not installed (pip install recbole==1.2.1 --no-deps); it ships ml-100k")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").is_file():
        raise FileNotFoundError(f"{path}: ml-100k.inter not found in the recbole package")
    return path


def _read_atomic(path: Path) -> list[dict[str, str]]:
    """Reads a RecBole atomic file (tab-separated, header ``name:type``)."""
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = [h.split(":")[0] for h in next(reader)]
        rows = []
        for i, row in enumerate(reader, 2):
            if len(row) != len(header):
                raise ValueError(f"{path}:{i}: {len(row)} columns, expected {len(header)}")
            rows.append(dict(zip(header, row)))
    return rows


def build_rows(source: Path) -> list[dict[str, Any]]:
    """All ratings as CTR rows (see the module doc), sorted by (timestamp, user, item)."""
    users = {r["user_id"]: r for r in _read_atomic(source / "ml-100k.user")}
    items = {r["item_id"]: r for r in _read_atomic(source / "ml-100k.item")}
    occupations = sorted({u["occupation"] for u in users.values()})
    genres = sorted({g for it in items.values() for g in it["class"].split()})
    occ_id = {o: i for i, o in enumerate(occupations)}
    genre_id = {g: i for i, g in enumerate(genres)}
    out = []
    for i, r in enumerate(_read_atomic(source / "ml-100k.inter"), 2):
        u, it = users.get(r["user_id"]), items.get(r["item_id"])
        if u is None or it is None:
            raise ValueError(f"{source / 'ml-100k.inter'}:{i}: unknown user or item")
        year = it["release_year"].strip()
        year = year if year.isdigit() else ""  # one item says "unkonwn"
        out.append(
            {
                "label": int(float(r["rating"]) >= 4),
                "user": int(r["user_id"]),
                "item": int(r["item_id"]),
                "age": int(u["age"]),
                "gender": GENDERS[u["gender"]],
                "occupation": occ_id[u["occupation"]],
                "zip": u["zip_code"],
                "year": int(year) - 1900 if year else "",
                "genres": "|".join(str(genre_id[g]) for g in it["class"].split()),
                "age_n": round(int(u["age"]) / 100, 4),
                "year_n": round((int(year) - 1900) / 100, 4) if year else 0.0,
                "timestamp": int(float(r["timestamp"])),
            }
        )
    out.sort(key=lambda row: (row["timestamp"], row["user"], row["item"]))
    return out


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def build_sample(
    out: str | Path, source: str | Path | None = None, test_fraction: float = 0.2, candidates: int = 8
) -> dict[str, Any]:
    """Writes the sample set to ``out`` and returns its ``info.json`` content."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    src = Path(source) if source else find_ml100k()
    rows = build_rows(src)
    cut = int(round(len(rows) * (1.0 - test_fraction)))
    train, test = rows[:cut], rows[cut:]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "train.csv", train)
    _write_csv(out / "test.csv", test)
    (out / "schema.json").write_text(json.dumps(SCHEMA, indent=2) + "\n", encoding="utf-8")
    with (out / "candidates.jsonl").open("w", encoding="utf-8") as fh:
        for r in test[:candidates]:
            fh.write(json.dumps({k: v for k, v in r.items() if k not in ("label", "timestamp")}) + "\n")
    info = {
        "source": str(src),
        "rows": len(rows),
        "train_rows": len(train),
        "test_rows": len(test),
        "positive_rate": sum(r["label"] for r in rows) / len(rows),
        "split": f"temporal {1 - test_fraction:.0%}/{test_fraction:.0%} by timestamp",
        "train_until": train[-1]["timestamp"],
        "test_from": test[0]["timestamp"],
    }
    (out / "info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``rank-sample``."""
    ap = argparse.ArgumentParser(prog="rank-sample", description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("out", nargs="?", default="data/rank-sample", help="output folder")
    ap.add_argument("--source", help="ml-100k folder (default: the one inside the installed recbole)")
    ap.add_argument("--test-fraction", type=float, default=0.2)
    args = ap.parse_args(argv)
    try:
        info = build_sample(args.out, args.source, args.test_fraction)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    print(
        f"{args.out}: {info['train_rows']} train / {info['test_rows']} test rows "
        f"({info['positive_rate']:.1%} positive, {info['split']})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
