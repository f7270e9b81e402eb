"""libfm / libsvm and Frappe CSV readers, the seeded split, the factorisation machine, and the CLI on libfm files."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sa_ranking.data import DataError, ReadReport, load_table
from sa_ranking.domain import main
from sa_ranking.models import FactorizationMachine, ModelConfig
from sa_ranking.schema import Schema, SparseField, frappe_csv_schema, frappe_schema, load_schema
from sa_ranking.split import split_rows

# three fields by index range: a [0, 4), b [4, 7), c [7, 9)
RANGES = Schema(
    "label",
    (),
    (
        SparseField("a", 4, index_range=(0, 4)),
        SparseField("b", 3, index_range=(4, 7)),
        SparseField("c", 2, index_range=(7, 9)),
    ),
)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_libfm_both_label_conventions_and_field_ranges(tmp_path: Path) -> None:
    pm = _write(tmp_path / "pm.libfm", "1 1:1 5:1 8:1\n-1 3:1 4:1 7:1\n\n+1 0:1 6:1 7:1\n")
    zo = _write(tmp_path / "zo.libsvm", "1 1:1 5:1 8:1\n0 3:1 4:1 7:1\n1 0:1 6:1 7:1\n")
    a, b = load_table(pm, RANGES), load_table(zo, RANGES)
    assert a.labels.tolist() == b.labels.tolist() == [1.0, 0.0, 1.0]
    batch = a.batch()
    ids = batch.sparse_features.to_dict()
    assert ids["a"].values().tolist() == [1, 3, 0]  # idx - lo of each field
    assert ids["b"].values().tolist() == [1, 0, 2]
    assert ids["c"].values().tolist() == [1, 0, 0]


def test_libfm_by_position_when_fields_have_no_ranges(tmp_path: Path) -> None:
    schema = Schema("label", (), (SparseField("u", 10), SparseField("v", 4)))
    t = load_table(_write(tmp_path / "p.libfm", "1 3:1 6:1\n-1 12:1 2:1\n"), schema)
    ids = t.batch().sparse_features.to_dict()
    assert ids["u"].values().tolist() == [3, 2]  # ids modulo the table size
    assert ids["v"].values().tolist() == [2, 2]
    with pytest.raises(DataError, match=r"p2.libfm:1: 1 features, the schema has 2 fields"):
        load_table(_write(tmp_path / "p2.libfm", "1 3:1\n"), schema)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("2 1:1 5:1 8:1", "label '2' is not 1, 0 or -1"),
        ("1 1:1 5:0.5 8:1", "only one-hot"),
        ("1 1:1 5:1 9:1", "index 9 lies in no field"),
        ("1 1:1 5:1", "no id for field 'c'"),
        ("1 1:1 2:1 5:1 8:1", "2 ids for the single-valued field 'a'"),
        ("1 x:1 5:1 8:1", "'x:1' is not idx:value"),
    ],
)
def test_libfm_bad_rows_are_named_and_skipped(tmp_path: Path, line: str, message: str) -> None:
    path = _write(tmp_path / "bad.libfm", f"1 1:1 5:1 8:1\n{line}\n-1 0:1 4:1 7:1\n")
    with pytest.raises(DataError, match=rf"bad.libfm:2: .*{message}"):
        load_table(path, RANGES)
    report = ReadReport()
    t = load_table(path, RANGES, "skip", report)
    assert len(t) == 2 and report.rows == 2 and report.skipped == 1 and "bad.libfm:2" in report.errors[0]


def test_frappe_schema_and_original_csv(tmp_path: Path) -> None:
    s = frappe_schema()
    assert [f.index_range for f in s.sparse][:2] == [(0, 957), (957, 5039)]
    assert s.sparse[-1].index_range == (5149, 5382) and load_schema("frappe") == s
    assert Schema.from_dict(json.loads(json.dumps(s.to_dict()))) == s  # the run folder's schema.json round trip
    header = "user\titem\tcnt\tdaytime\tweekday\tisweekend\thomework\tcost\tweather\tcountry\tcity\n"
    rows = [
        "0\t5\t3\tmorning\tsunday\tweekend\tunknown\tfree\tsunny\tSpain\t12\n",
        "1\t7\t0\tnight\tmonday\tworkday\thome\tpaid\tcloudy\tUnited States\t3\n",
        "1\t7\tmany\tnight\tmonday\tworkday\thome\tpaid\tcloudy\tUnited States\t3\n",
    ]
    path = _write(tmp_path / "frappe.csv", header + "".join(rows))
    report = ReadReport()
    t = load_table(path, frappe_csv_schema(), "skip", report)
    assert t.labels.tolist() == [1.0, 0.0]  # cnt > 0 -> 1
    assert report.skipped == 1 and "frappe.csv:4: column 'cnt'" in report.errors[0]
    ids = t.batch().sparse_features.to_dict()
    assert ids["item"].values().tolist() == [5, 7] and all(0 <= v < 1024 for v in ids["country"].values().tolist())


def test_split_is_seeded_disjoint_and_complete(tmp_path: Path) -> None:
    lines = [f"{1 if i % 3 else -1} {i % 4}:1 {4 + i % 3}:1 {7 + i % 2}:1\n" for i in range(50)]
    src = _write(tmp_path / "all.libfm", "".join(lines))
    a = split_rows(src, tmp_path / "a", seed=3)
    b = split_rows(src, tmp_path / "b", seed=3)
    c = split_rows(src, tmp_path / "c", seed=4)
    parts = {k: p.read_text().splitlines(keepends=True) for k, p in a.items()}
    assert [len(parts[k]) for k in ("train", "valid", "test")] == [40, 5, 5]
    assert sorted(itertools.chain(*parts.values())) == sorted(lines)
    assert all(b[k].read_text() == a[k].read_text() for k in a)
    assert c["test"].read_text() != a["test"].read_text()
    csv = _write(tmp_path / "t.csv", "h1,h2\n" + "".join(f"{i},{i}\n" for i in range(10)))
    out = split_rows(csv, tmp_path / "csv", (0.6, 0.2, 0.2), seed=0)
    assert all(p.read_text().startswith("h1,h2\n") for p in out.values())
    with pytest.raises(ValueError, match="summing to 1"):
        split_rows(src, tmp_path / "x", (0.5, 0.2, 0.2))


def test_fm_matches_the_naive_pairwise_formula() -> None:
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    cfg = ModelConfig(arch="fm", embedding_dim=4, embedding_init_scale=0.5)
    model = FactorizationMachine(RANGES, cfg).eval()
    with torch.no_grad():
        model.bias.fill_(0.3)
    ids = [[1, 0], [2, 1], [0, 1]]  # per field, per example
    kjt = KeyedJaggedTensor(
        keys=["a", "b", "c"], values=torch.tensor(sum(ids, [])), lengths=torch.ones(6, dtype=torch.int32)
    )
    got = model(torch.zeros(2, 0), kjt)
    tables = {n: t.weight.detach() for n, t in model.ebc.embedding_bags.items()}
    for e in range(2):
        rows = [tables[f"t_{f}"][ids[k][e]] for k, f in enumerate("abc")]
        w = sum(float(r[:4].sum()) for r in rows)
        pair = sum(float(rows[i][4:] @ rows[j][4:]) for i in range(3) for j in range(i + 1, 3))
        assert float(got[e]) == pytest.approx(0.3 + w + pair, rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="embedding_init_scale > 0"):
        FactorizationMachine(RANGES, ModelConfig(arch="fm", embedding_init_scale=0.0))


def test_cli_trains_fm_and_evaluates_any_libfm_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(600):  # the label is an interaction of fields a and b
        a, b, c = int(rng.integers(4)), int(rng.integers(3)), int(rng.integers(2))
        y = 1 if (a + b) % 2 == 0 else -1
        rows.append(f"{y} {a}:1 {4 + b}:1 {7 + c}:1\n")
    data = tmp_path / "data"
    parts = split_rows(_write(tmp_path / "all.libfm", "".join(rows)), data, seed=0)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(RANGES.to_dict()))
    run = tmp_path / "fm"
    common = [
        f"data.schema={schema}",
        f"data.train={parts['train']}",
        f"data.valid={parts['valid']}",
        "train.progress=false",
        "train.tensorboard=false",
        "train.batch_size=32",
        "train.epochs=4",
    ]
    assert main(["train", "--config", "frappe-fm", f"train.run_dir={run}", "model.embedding_dim=4", *common]) == 0
    bad = _write(tmp_path / "test_bad.libfm", parts["test"].read_text() + "1 99:1 5:1 8:1\n")
    assert main(["evaluate", "--run", str(run), "--data", str(bad)]) == 2  # reject names file:line
    assert main(["evaluate", "--run", str(run), "--data", str(bad), "--on-error", "skip"]) == 0
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["details"]["rows"] == 60 and ev["details"]["skipped"] == 1 and ev["details"]["data"] == str(bad)
    assert ev["model"] > 0.9  # an FM learns a two-field interaction


def test_hiformer_fm_term_adds_first_order_and_pairwise_products() -> None:
    """``model.fm_term``: Hiformer's logit plus sum of first-order id weights plus sum_{i<j} <e_i, e_j> of the very
    embeddings the Hiformer tokens are made of (naive loops), pruned or not."""
    from sa_ranking.models import Hiformer
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    torch.manual_seed(0)
    cfg = ModelConfig(
        arch="hiformer", embedding_dim=8, key_rank=4, value_rank=4, fm_term=True, embedding_init_scale=0.3
    )
    model = Hiformer(RANGES, cfg).eval()
    plain = Hiformer(RANGES, ModelConfig(arch="hiformer", embedding_dim=8, key_rank=4, value_rank=4)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("first_order.")})
    with torch.no_grad():
        for t in model.first_order.embedding_bags.values():  # type: ignore[union-attr]
            t.weight.uniform_(-0.5, 0.5)
    ids = [[1, 0], [2, 1], [0, 1]]
    kjt = KeyedJaggedTensor(
        keys=["a", "b", "c"], values=torch.tensor(sum(ids, [])), lengths=torch.ones(6, dtype=torch.int32)
    )
    emb = {n: t.weight.detach() for n, t in model.ebc.embedding_bags.items()}
    first = {n: t.weight.detach() for n, t in model.first_order.embedding_bags.items()}  # type: ignore[union-attr]
    for prune in (False, True):
        with torch.no_grad():
            got, base = model(torch.zeros(2, 0), kjt, prune=prune), plain(torch.zeros(2, 0), kjt, prune=prune)
        for e in range(2):
            rows = [emb[f"t_{f}"][ids[k][e]] for k, f in enumerate("abc")]
            w = sum(float(first[f"fm_{f}"][ids[k][e]].sum()) for k, f in enumerate("abc"))
            pair = sum(float(rows[i] @ rows[j]) for i in range(3) for j in range(i + 1, 3))
            assert float(got[e]) == pytest.approx(float(base[e]) + w + pair, rel=1e-5, abs=1e-5)
