"""Inputs float32 cannot hold, non-finite scores, strict-JSON CLI output, skip counts, quiet third parties."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from sa_ranking.config import load_ranking_config
from sa_ranking.data import DataError, ReadReport, load_table
from sa_ranking.domain import DOMAIN, main, quiet_third_party
from sa_ranking.models import ModelConfig, build_model
from sa_ranking.predictor import RankingPredictor
from sa_ranking.schema import Schema

from shared_attention.domain import Converted, write_run_folder
from shared_attention.serving import InputError

SCHEMA: dict[str, Any] = {
    "label": "label",
    "dense": [{"name": "age_n"}, {"name": "count", "transform": "log1p"}],
    "sparse": [{"name": "user", "num_embeddings": 16}, {"name": "item", "num_embeddings": 16}],
}
TINY = ModelConfig(
    embedding_dim=8, num_layers=1, num_heads=2, head_dim=4, key_rank=4, value_rank=4, ffn_hidden=16, mlp_dims=(8,)
)


def _row(i: int, **kw: Any) -> dict[str, Any]:
    return {"user": i % 16, "item": (3 * i) % 16, "age_n": 0.1 * i, "count": i, **kw}


def _strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def pred() -> RankingPredictor:
    torch.manual_seed(0)
    schema = Schema.from_dict(SCHEMA)
    return RankingPredictor(build_model(schema, TINY), schema)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A servable run folder with untrained weights (no training needed to test the CLI)."""
    root = tmp_path_factory.mktemp("robust")
    schema_path = root / "schema.json"
    schema_path.write_text(json.dumps(SCHEMA))
    overrides = [f"data.schema={schema_path}"] + [
        f"model.{k}={v}" for k, v in (("embedding_dim", 8), ("num_layers", 1), ("head_dim", 4), ("ffn_hidden", 16))
    ]
    cfg = load_ranking_config("hiformer", [*overrides, "model.key_rank=4", "model.value_rank=4", "model.mlp_dims=[8]"])
    torch.manual_seed(0)
    model = build_model(Schema.from_dict(SCHEMA), cfg.model)
    files = {"schema.json": schema_path.read_bytes()}
    return write_run_folder(DOMAIN, root / "run", Converted(model, cfg, files=files))


def _nan_rows(model: torch.nn.Module, rows: set[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes ``model`` answer NaN (row 0 of ``rows``) and +inf (the others) logits for the given batch rows."""
    original = model.forward

    def forward(dense: torch.Tensor, sparse: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = original(dense, sparse, *args, **kwargs).clone()  # (B,)
        for k, r in enumerate(sorted(rows)):
            if r < out.shape[0]:
                out[r] = float("nan") if k == 0 else float("inf")
        return out

    monkeypatch.setattr(model, "forward", forward)


# ---------------------------------------------------------------------------------------------- predictor


@pytest.mark.parametrize(
    "field,value,shown",
    [
        ("age_n", 1e300, "1e+300"),
        ("age_n", -1e39, "-1e+39"),
        ("age_n", 10**400, "1000000000"),  # an integer beyond float64: no OverflowError (HTTP 500)
        ("count", 1e39, "1e+39"),  # log1p would fit, but the count itself does not
    ],
    ids=["1e300", "-1e39", "int-1e400", "log1p-count-1e39"],
)
def test_preprocess_rejects_values_float32_cannot_represent(pred, field, value, shown) -> None:
    rows = [_row(0), _row(1), _row(2), _row(3, **{field: value})]
    with pytest.raises(InputError) as info:
        pred.preprocess(rows)
    msg = str(info.value)
    assert f"row 3: field '{field}' = {shown}" in msg
    assert "outside the range float32 can represent (|x| <= 3.4e38)" in msg
    assert info.value.field == "candidates" and "\n" not in msg


def test_preprocess_keeps_large_but_representable_values(pred) -> None:
    out = pred([_row(0, age_n=-1e6), _row(1, count=1e30)])
    assert all(0.0 <= s <= 1.0 for s in out["scores"])


def test_nonfinite_model_output_is_an_input_error_naming_the_row(pred, monkeypatch) -> None:
    rows = [_row(i) for i in range(5)]
    _nan_rows(pred.model, {2, 4}, monkeypatch)
    with pytest.raises(InputError, match=r"rows 2, 4: the model's score is not finite") as info:
        pred(rows)
    assert info.value.field == "candidates"
    assert "nan" not in json.dumps(pred([rows[0], rows[1]])).lower()  # the other rows still score


def test_postprocess_never_returns_nan(pred) -> None:
    with pytest.raises(InputError, match="row 1: the model's score is not finite"):
        pred.postprocess(torch.tensor([0.5, float("nan"), 0.25]))


def test_training_readers_reject_values_float32_cannot_represent(tmp_path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("label,user,item,age_n,count\n1,1,2,0.5,3\n0,1,2,1e39,3\n1,1,2,0.5,3\n")
    schema = Schema.from_dict(SCHEMA)
    with pytest.raises(DataError, match=r"rows\.csv:3: field 'age_n' = 1e39 is outside the range float32"):
        load_table(path, schema)
    report = ReadReport()
    table = load_table(path, schema, "skip", report)
    assert len(table) == 2 and report.skipped == 1 and bool(torch.isfinite(torch.from_numpy(table.dense)).all())


def test_read_report_summary_is_phrased_by_count() -> None:
    assert ReadReport(rows=1).summary() == "1 row read, no bad rows"
    one = ReadReport(rows=2)
    one.add_error("f:3: bad")
    assert one.summary() == "2 rows read, 1 bad row skipped (first: f:3: bad)"


# ---------------------------------------------------------------------------------------------- CLI


def _candidates(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_cli_predict_rejects_an_unrepresentable_value_in_one_line(run_dir, tmp_path, capsys) -> None:
    src = _candidates(tmp_path / "cands.jsonl", [json.dumps(_row(0)), json.dumps(_row(1, age_n=1e300))])
    assert main(["predict", str(src), "--run", str(run_dir)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: ")
    assert "cands.jsonl:2: field 'age_n' = 1e+300 is outside the range float32" in err[0]


def test_cli_predict_skip_counts_bad_rows_and_writes_strict_json(run_dir, tmp_path, capsys) -> None:
    lines = [
        json.dumps(_row(0)),
        json.dumps(_row(1, age_n=1e300)),
        json.dumps(_row(2)),
        "{not json",
        json.dumps(_row(4, count=-1e39)),
        json.dumps(_row(5)),
    ]
    src = _candidates(tmp_path / "cands.jsonl", lines)
    capsys.readouterr()
    assert main(["predict", str(src), "--run", str(run_dir), "--on-error", "skip"]) == 0
    cap = capsys.readouterr()
    scored = [_strict_json(x) for x in cap.out.splitlines()]
    assert [s["line"] for s in scored] == [1, 3, 6]
    assert all(isinstance(s["score"], float) and 0.0 <= s["score"] <= 1.0 for s in scored)
    assert "scored 3 rows, skipped 3 bad rows" in cap.err
    assert "cands.jsonl:2: field 'age_n'" in cap.err and "cands.jsonl:5: field 'count'" in cap.err

    clean = _candidates(tmp_path / "clean.jsonl", [json.dumps(_row(0))])
    assert main(["predict", str(clean), "--run", str(run_dir), "--on-error", "skip"]) == 0
    assert "scored 1 row, no bad rows" in capsys.readouterr().err


def test_cli_predict_never_prints_nan(run_dir, tmp_path, capsys, monkeypatch) -> None:
    import sa_ranking.domain as domain

    loaded = domain.load_predictor

    def load_broken(ns: Any) -> RankingPredictor:
        p = loaded(ns)
        _nan_rows(p.model, {1}, monkeypatch)
        return p

    monkeypatch.setattr(domain, "load_predictor", load_broken)
    src = _candidates(tmp_path / "cands.jsonl", [json.dumps(_row(i)) for i in range(3)])
    out = tmp_path / "scores.jsonl"
    assert main(["predict", str(src), "--run", str(run_dir), "--on-error", "skip", "-o", str(out)]) == 0
    scored = [_strict_json(x) for x in out.read_text().splitlines()]
    assert [s["line"] for s in scored] == [1, 3]
    err = capsys.readouterr().err
    assert "scored 2 rows, skipped 1 bad row" in err and "cands.jsonl:2: the model's score is not finite" in err

    assert main(["predict", str(src), "--run", str(run_dir)]) == 2
    cap = capsys.readouterr()
    assert "NaN" not in cap.out and "error: " in cap.err and "cands.jsonl:2: the model's score is not finite" in cap.err
    for line in cap.out.splitlines():
        _strict_json(line)


def test_cli_predict_stderr_has_no_third_party_warnings(run_dir, tmp_path) -> None:
    src = _candidates(tmp_path / "cands.jsonl", [json.dumps(_row(i)) for i in range(3)])
    # PYTHONWARNINGS=default shows every warning once (as `python -X dev` and many CI setups do)
    env = dict(os.environ, PYTHONWARNINGS="default", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    code = "from sa_ranking.domain import main; raise SystemExit(main())"
    args = [sys.executable, "-c", code, "predict", str(src), "--run", str(run_dir)]
    res = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    torch_log = re.compile(r"^(\[rank\d+\]:)?[WI]\d{4} ")  # torch's own log format, e.g. W1205 00:16:41 ...
    noise = [x for x in res.stderr.splitlines() if "Warning" in x or torch_log.match(x) or x.startswith("INFO root")]
    assert noise == []
    assert [_strict_json(x)["line"] for x in res.stdout.splitlines()] == [1, 2, 3]
    assert res.stderr.strip().splitlines() == ["scored 3 rows, no bad rows"], res.stderr[-2000:]


def test_quieting_third_parties_keeps_other_warnings() -> None:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_third_party()
        warnings.warn("a warning of our own", UserWarning, stacklevel=1)
        warnings.warn("a future change of our own", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["a warning of our own", "a future change of our own"]


def test_train_runner_shows_no_progress_bar_without_a_terminal(monkeypatch) -> None:
    import sa_ranking.train as train_mod

    seen: list[Any] = []
    monkeypatch.setattr(train_mod, "train", lambda cfg: seen.append(cfg) or "done")
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False, raising=False)
    cfg = load_ranking_config("hiformer", ["train.progress=true"])
    assert train_mod.run(cfg, {}) == "done"
    assert seen[0].train.progress is False


def test_info_publishes_the_schema_and_cost(pred) -> None:
    """The web page builds its example candidates from the published schema; the server budgets by rows."""
    from sa_ranking.schema import Schema

    info = pred.info()
    assert Schema.from_dict(info["schema"], "info").to_dict() == pred.schema.to_dict()
    assert pred.cost({"rows": 250}) == 250.0 and pred.cost({}) is None
