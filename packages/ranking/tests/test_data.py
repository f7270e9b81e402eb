"""Readers: Criteo TSV (streaming, .gz, hashing, log1p), CSV / Parquet by schema, bad rows with line numbers."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
from sa_ranking.data import DataError, ReadReport, iter_table, load_table
from sa_ranking.metrics import log_loss, roc_auc
from sa_ranking.schema import Schema, criteo_schema, load_schema
from sa_ranking.synthetic import SYNTHETIC_SCHEMA, write_criteo_tsv, write_synthetic_csv


def _criteo_line(label: str = "1", dense: list[str] | None = None, sparse: list[str] | None = None) -> str:
    dense = dense if dense is not None else ["3"] + [""] * 12
    sparse = sparse if sparse is not None else ["68fd1e64"] + [""] * 25
    return "\t".join([label] + dense + sparse)


def test_criteo_parsing_log1p_and_hashing(tmp_path) -> None:
    path = tmp_path / "day.tsv"
    path.write_text(_criteo_line() + "\n" + _criteo_line("0", ["0"] * 13, ["ff"] * 26) + "\n")
    schema = criteo_schema(1000)
    t = load_table(path, schema)
    assert len(t) == 2 and t.labels.tolist() == [1.0, 0.0]
    assert t.dense[0, 0] == pytest.approx(math.log(4.0)) and t.dense[0, 1] == 0.0
    assert t.values[0].tolist() == [0x68FD1E64 % 1000, 255]
    assert t.lengths[1].tolist() == [0, 1]  # empty categorical = missing
    b = t.batch()
    assert b.dense_features.shape == (2, 13) and b.sparse_features.keys() == schema.sparse_names


@pytest.mark.parametrize(
    "line,match",
    [
        ("1\t2\t3", "3 tab-separated columns, expected 40"),
        (_criteo_line(sparse=["zz12"] + [""] * 25), "'C1': 'zz12' is not hexadecimal"),
        (_criteo_line(dense=["nan"] + [""] * 12), "'I1': 'nan' is not finite"),
        (_criteo_line(label="2"), "not 0 or 1"),
    ],
)
def test_bad_criteo_rows_are_reported_with_line_numbers(tmp_path, line: str, match: str) -> None:
    path = tmp_path / "bad.tsv"
    path.write_text(_criteo_line() + "\n" + line + "\n" + _criteo_line() + "\n")
    with pytest.raises(DataError, match=f"bad.tsv:2: .*{match}"):
        load_table(path, criteo_schema(100))
    report = ReadReport()
    t = load_table(path, criteo_schema(100), on_error="skip", report=report)
    assert len(t) == 2 and report.rows == 2 and report.skipped == 1
    assert report.errors[0].startswith(f"{path}:2:")


def test_negative_counts_error_or_clip(tmp_path) -> None:
    path = tmp_path / "neg.tsv"
    path.write_text(_criteo_line(dense=["-1"] + [""] * 12) + "\n")
    with pytest.raises(DataError, match="neg.tsv:1: column 'I1': negative count '-1'"):
        load_table(path, criteo_schema(100, negative="error"))
    assert load_table(path, criteo_schema(100, negative="clip")).dense[0, 0] == 0.0


def test_streaming_gz_in_bounded_chunks(tmp_path) -> None:
    plain = write_criteo_tsv(tmp_path / "day_0", 130, seed=1)
    gz = tmp_path / "day_0.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    chunks = list(iter_table(gz, criteo_schema(5000), chunk_rows=50))
    assert [len(c) for c in chunks] == [50, 50, 30]  # never more than chunk_rows rows held
    whole = load_table(plain, criteo_schema(5000))
    assert np.array_equal(np.concatenate([c.dense for c in chunks]), whole.dense)


def test_csv_and_parquet_give_the_same_table(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    folder = write_synthetic_csv(tmp_path, 120, 10)
    schema = load_schema(folder / "schema.json")
    a = load_table(folder / "train.csv", schema)
    tbl = pcsv.read_csv(
        folder / "train.csv",
        convert_options=pcsv.ConvertOptions(column_types={"tags": pa.string(), "city": pa.string()}),
    )
    pq.write_table(tbl, tmp_path / "train.parquet")
    b = load_table(tmp_path / "train.parquet", schema)
    assert np.array_equal(a.labels, b.labels) and np.allclose(a.dense, b.dense)
    for va, vb in zip(a.values, b.values):
        assert np.array_equal(va, vb)
    assert a.lengths[3].max() > 1  # multi-hot tags
    # gathering a multi-hot batch keeps each row's ids
    y, d, vals, lens = a.take(np.array([5, 2]))
    off = a.offsets[3]
    assert vals[3].tolist() == a.values[3][off[5] : off[6]].tolist() + a.values[3][off[2] : off[3]].tolist()


def test_csv_errors_name_file_and_line(tmp_path) -> None:
    folder = write_synthetic_csv(tmp_path, 5, 2)
    schema = load_schema(folder / "schema.json")
    lines = (folder / "train.csv").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "-4", 1)  # negative user id on line 4
    (folder / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad.csv:4: column 'user': negative id"):
        load_table(folder / "bad.csv", schema)
    (folder / "nohdr.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="header lacks the schema columns"):
        load_table(folder / "nohdr.csv", schema)


def test_schema_validation(tmp_path) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Schema.from_dict({"sparse": [{"name": "a", "num_embeddings": 2}, {"name": "a", "num_embeddings": 2}]})
    with pytest.raises(ValueError, match="unknown encoding"):
        Schema.from_dict({"sparse": [{"name": "a", "num_embeddings": 2, "encoding": "base64"}]})
    s = Schema.from_dict(SYNTHETIC_SCHEMA)
    assert Schema.from_dict(s.to_dict()) == s


def test_auc_and_logloss_against_naive_formulas() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.normal(size=200) + y, 1)  # ties included
    pos, neg = s[y == 1], s[y == 0]
    naive = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert roc_auc(s, y) == pytest.approx(naive, abs=1e-12)
    p = 1 / (1 + np.exp(-s))
    assert log_loss(s, y) == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rel=1e-9)
    with pytest.raises(ValueError, match="both"):
        roc_auc(s, np.ones(200))
