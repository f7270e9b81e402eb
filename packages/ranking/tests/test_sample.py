"""rank-sample from the MovieLens-100k copy inside recbole: fields, label, temporal 80/20 split."""

from __future__ import annotations

import csv
import json

import pytest
from sa_ranking.data import iter_table
from sa_ranking.sample import build_sample, find_ml100k, main
from sa_ranking.schema import load_schema


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    try:
        find_ml100k()
    except FileNotFoundError as exc:  # pragma: no cover - recbole is a locked dependency
        pytest.fail(str(exc))
    out = tmp_path_factory.mktemp("rank-sample")
    assert main([str(out)]) == 0
    return out


def test_counts_label_and_temporal_split(sample) -> None:
    info = json.loads((sample / "info.json").read_text())
    assert (info["rows"], info["train_rows"], info["test_rows"]) == (100000, 80000, 20000)
    assert info["positive_rate"] == pytest.approx(0.55375)
    with (sample / "train.csv").open() as fh:
        train = list(csv.DictReader(fh))
    with (sample / "test.csv").open() as fh:
        test = list(csv.DictReader(fh))
    assert max(int(r["timestamp"]) for r in train) <= min(int(r["timestamp"]) for r in test)
    assert {"user", "item", "age", "gender", "occupation", "zip", "year", "genres"} <= set(train[0])
    assert any("|" in r["genres"] for r in train)  # multi-hot genres


def test_schema_reads_the_sample(sample) -> None:
    schema = load_schema(sample / "schema.json")
    chunk = next(iter_table(sample / "test.csv", schema, chunk_rows=1000))
    assert len(chunk) == 1000
    assert chunk.lengths[schema.sparse_names.index("genres")].max() > 1
    assert (sample / "candidates.jsonl").read_text().count("\n") == 8


def test_bad_source_is_reported(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        build_sample(tmp_path / "out", source=tmp_path)
    with pytest.raises(ValueError, match="test_fraction"):
        build_sample(tmp_path / "out", test_fraction=1.5)
