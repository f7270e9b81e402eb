"""Training with DMP in one process: DCP checkpoints, bit-exact resume, predictor, CLI train/evaluate/score."""

from __future__ import annotations

import json

import pytest
import torch
from sa_ranking.cli import main
from sa_ranking.config import load_ranking_config
from sa_ranking.predictor import RankingPredictor
from sa_ranking.schema import load_schema
from sa_ranking.synthetic import write_synthetic_csv
from sa_ranking.train import export_checkpoint, train

from shared_attention.serving import InputError

TINY = [
    "model.embedding_dim=8",
    "model.num_layers=2",
    "model.head_dim=4",
    "model.key_rank=4",
    "model.value_rank=4",
    "model.ffn_hidden=16",
    "model.mlp_dims=[16]",
    "train.batch_size=64",
    "train.eval_batch_size=256",
    "train.progress=false",
    "train.num_threads=1",
    "train.log_every=5",
]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_csv(tmp_path_factory.mktemp("synth"), 1280, 400)


def _overrides(data, run_dir, *extra: str) -> list[str]:
    return [
        f"data.schema={data / 'schema.json'}",
        f"data.train={data / 'train.csv'}",
        f"data.valid={data / 'valid.csv'}",
        f"train.run_dir={run_dir}",
        *TINY,
        *extra,
    ]


def test_resume_is_bit_exact_and_checkpoints_are_dcp(data, tmp_path) -> None:
    full = train(
        load_ranking_config("hiformer", _overrides(data, tmp_path / "a", "train.max_steps=12", "train.eval_every=6"))
    )
    assert full.step == 12 and full.resumed_from is None
    ckpt = tmp_path / "a" / "checkpoints" / "step_00000012"
    assert (ckpt / ".metadata").is_file() and (ckpt / "trainer_state.pt").is_file()
    first = train(
        load_ranking_config("hiformer", _overrides(data, tmp_path / "b", "train.max_steps=6", "train.eval_every=6"))
    )
    assert first.step == 6
    resumed = train(
        load_ranking_config("hiformer", _overrides(data, tmp_path / "b", "train.max_steps=12", "train.eval_every=6"))
    )
    assert resumed.resumed_from == 6 and resumed.step == 12
    cfg = load_ranking_config("hiformer", _overrides(data, tmp_path / "a"))
    schema = load_schema(data / "schema.json")
    a = export_checkpoint(ckpt, schema, cfg).state_dict()
    b = export_checkpoint(tmp_path / "b" / "checkpoints" / "step_00000012", schema, cfg).state_dict()
    start = export_checkpoint(tmp_path / "b" / "checkpoints" / "step_00000006", schema, cfg).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["ebc.embedding_bags.t_user.weight"], start["ebc.embedding_bags.t_user.weight"])
    # train.pipeline (torchrec's TrainPipelineSparseDist) is deprecated: accepted, ignored, the same weights
    piped = train(
        load_ranking_config(
            "hiformer",
            _overrides(data, tmp_path / "p", "train.max_steps=12", "train.eval_every=6", "train.pipeline=true"),
        )
    )
    assert piped.step == 12 and piped.last_metrics["auc"] == pytest.approx(full.last_metrics["auc"], abs=1e-4)
    p = export_checkpoint(tmp_path / "p" / "checkpoints" / "step_00000012", schema, cfg).state_dict()
    for k in a:
        torch.testing.assert_close(p[k], a[k], atol=1e-5, rtol=1e-4, msg=k)
    rows = [line.split(",") for line in (tmp_path / "b" / "metrics.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows if r[2] == "auc"] == [6, 12]  # no duplicated steps after resume


def test_cli_train_evaluate_score(data, tmp_path, capsys) -> None:
    run, base = tmp_path / "hiformer", tmp_path / "lr"
    assert main(["train", "--config", "hiformer", *_overrides(data, run, "train.epochs=3")]) == 0
    assert main(["train", "--config", "lr", *_overrides(data, base, "train.epochs=3")]) == 0
    assert main(["evaluate", "--run", str(run), "--baseline", str(base)]) == 0
    summary = json.loads((run / "evaluation.json").read_text())
    assert summary["domain"] == "ranking" and summary["baseline_name"] == "logistic regression"
    assert summary["model"] > 0.6  # the synthetic label is learnable
    assert set(summary) == {"domain", "metric", "model", "baseline", "baseline_name", "higher_is_better", "details"}

    pred = RankingPredictor.load(run)
    rows = [json.loads(x) for x in (data / "candidates.jsonl").read_text().splitlines()]
    out = pred(rows)
    assert len(out["scores"]) == 5 and all(0.0 < s < 1.0 for s in out["scores"])
    # pruned serving gives the full model's scores; the order of the request is kept
    full = RankingPredictor.load(run, prune=False)
    assert out["scores"] == pytest.approx(full(rows)["scores"], abs=1e-5)
    assert pred(rows[::-1])["scores"] == pytest.approx(out["scores"][::-1], abs=1e-6)
    assert pred((data / "candidates.jsonl").read_bytes())["scores"] == pytest.approx(out["scores"])
    with pytest.raises(InputError, match="row 1: column 'user': 'x' is not an integer id"):
        pred([rows[0], dict(rows[1], user="x")])
    with pytest.raises(InputError, match="missing columns"):
        pred([{"user": 1}])
    info = pred.info()
    assert info["domain"] == "ranking" and info["parameters"] > 0

    bad = tmp_path / "cands.jsonl"
    lines = (data / "candidates.jsonl").read_text().splitlines()
    lines.insert(2, json.dumps(dict(rows[0], x0=float("nan"))).replace("NaN", "NaN"))
    lines.insert(3, "{not json")
    bad.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert main(["score", str(bad), "--run", str(run)]) == 2
    assert "cands.jsonl:3: column 'x0'" in capsys.readouterr().err
    out_path = tmp_path / "scores.jsonl"
    assert main(["score", str(bad), "--run", str(run), "--on-error", "skip", "-o", str(out_path)]) == 0
    err = capsys.readouterr().err
    assert "scored 5 rows, skipped 2 bad rows" in err and "cands.jsonl:4: invalid JSON" in err
    scored = [json.loads(x) for x in out_path.read_text().splitlines()]
    assert [s["line"] for s in scored] == [1, 2, 5, 6, 7]
    assert [s["score"] for s in scored] == pytest.approx(out["scores"], abs=1e-6)


def test_config_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a bundled config"):
        load_ranking_config("nope")
    from shared_attention.engine import ConfigError

    with pytest.raises(ConfigError):
        load_ranking_config("hiformer", ["model.arch=transformer"])
    assert main(["validate", str(tmp_path / "missing.tsv"), "--schema", "criteo"]) == 2


def test_compile_is_refused_before_reading_data(tmp_path) -> None:
    """train.compile fails through the sharded embedding bags only at the first backward: refused up front."""
    from sa_ranking.task import RankingTask

    missing = str(tmp_path / "not-read.tsv")
    cfg = load_ranking_config("hiformer", [f"data.train={missing}", f"data.valid={missing}", "train.compile=true"])
    with pytest.raises(ValueError, match="train.compile=true is not supported by the ranking trainer"):
        RankingTask(cfg)
