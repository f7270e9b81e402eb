"""The generated CLI of a Domain, end to end on the built-in toy domain: train -> evaluate -> predict ->
convert -> sample through the one code path every package uses, and its errors (one line, exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from shared_attention.domain import build_parser
from shared_attention.evaluation import Evaluation, EvaluationError, read_evaluation
from shared_attention.toy_domain import TOY_DOMAIN

TINY = [
    "train.max_steps=4",
    "train.eval_every=4",
    "train.checkpoint_every=4",
    "train.batch_size=16",
    "data.n_train=64",
    "data.n_val=32",
    "model.dim=16",
    "model.depth=1",
    "model.num_heads=2",
    "train.progress=false",
    "train.tensorboard=false",
]


def test_generated_cli_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    main = TOY_DOMAIN.main
    assert main(["train", f"train.run_dir={run}", *TINY]) == 0
    assert f"run {run}: step 4" in capsys.readouterr().out
    # evaluate: the Evaluation is printed and owns evaluation.json (and --json writes the same object)
    assert main(["evaluate", "--run", str(run), "--json", str(tmp_path / "ev.json")]) == 0
    out = capsys.readouterr().out
    assert "toy: accuracy: model" in out and "chance" in out
    ev = read_evaluation(run / "evaluation.json")
    assert ev.domain == "toy" and ev.baseline == pytest.approx(1 / 8) and 0.0 <= ev.model <= 1.0
    assert json.loads((tmp_path / "ev.json").read_text()) == json.loads((run / "evaluation.json").read_text())
    # sample + predict: a folder of inputs, outputs written per input; the old "IN OUT" form works too
    assert main(["sample", str(tmp_path / "data")]) == 0
    seqs = json.loads((tmp_path / "data" / "sequences.json").read_text())
    assert len(seqs["sequences"]) == 64
    assert main(["predict", str(tmp_path / "data"), "--out", str(tmp_path / "pred"), "--run", str(run)]) == 0
    values = json.loads((tmp_path / "pred" / "sequences.json").read_text())["values"]
    assert len(values) == 64 and all(0 <= v < 8 for v in values)
    assert (
        main(["predict", str(tmp_path / "data" / "sequences.json"), str(tmp_path / "p.json"), "--run", str(run)]) == 0
    )
    assert json.loads((tmp_path / "p.json").read_text())["values"] == values
    # --compile: the same predictions through torch.compile (dynamo captures at least one new graph)
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    assert (
        main(["predict", str(tmp_path / "data" / "sequences.json"), str(tmp_path / "c.json"), "--run", str(run),
              "--compile"]) == 0
    )
    assert json.loads((tmp_path / "c.json").read_text())["values"] == values
    assert counters["stats"]["unique_graphs"] > graphs
    # a bad input is named on stderr, the others still run, exit code 1
    bad = tmp_path / "data" / "bad.json"
    bad.write_text('{"sequences": [[99, 1, 2]]}')
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "data"), "--out", str(tmp_path / "pred2"), "--run", str(run)]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "sequences[0]" in err and (tmp_path / "pred2" / "sequences.json").is_file()
    # convert: a plain state dict -> a servable run folder that predicts exactly like the source weights
    from shared_attention.toy import PointerPredictor

    src = PointerPredictor.load(run)
    torch.save(src.model.state_dict(), tmp_path / "weights.pt")
    conv = tmp_path / "converted"
    assert (
        main(
            ["convert", str(tmp_path / "weights.pt"), "--out", str(conv), "--dim", "16", "--depth", "1", "--heads", "2"]
        )
        == 0
    )
    assert {"config.yaml", "metadata.json", "model.safetensors"} <= {p.name for p in conv.iterdir()}
    assert json.loads((conv / "metadata.json").read_text())["io"]["view"] == "json"
    again = PointerPredictor.load(conv)
    assert again(seqs)["values"] == src(seqs)["values"]


def test_generated_cli_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main = TOY_DOMAIN.main
    assert main(["evaluate", "--run", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err and err.count("\n") == 1
    assert main(["train", "--config", "nope"]) == 2
    assert "not a bundled config ['toy']" in capsys.readouterr().err
    assert main(["train", "model.dim=wide"]) == 2
    assert "model.dim" in capsys.readouterr().err
    assert main(["predict", "only-one-arg", "--run", str(tmp_path)]) == 2
    assert "--out" in capsys.readouterr().err
    # a converted file whose shapes do not fit names the file and the key
    torch.save({"embed.weight": torch.zeros(3, 3)}, tmp_path / "w.pt")
    assert main(["convert", str(tmp_path / "w.pt"), "--out", str(tmp_path / "c")]) == 2
    assert "w.pt" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["frobnicate"])


def test_parser_is_uniform_and_lazy() -> None:
    ap = build_parser(TOY_DOMAIN)
    sub = next(a for a in ap._actions if a.dest == "command")
    assert {"train", "evaluate", "predict", "convert", "sample"} <= set(sub.choices)  # type: ignore[union-attr]
    ev = sub.choices["evaluate"]  # type: ignore[index]
    flags = {f for a in ev._actions for f in a.option_strings}
    assert {"--run", "--data", "--baseline", "--json", "--device"} <= flags


def test_evaluation_refuses_nan_and_round_trips(tmp_path: Path) -> None:
    ev = Evaluation("x", "AUC", 0.7, 0.5, "random", True, {"per": [1.0, float("nan")]})
    path = ev.write(tmp_path)
    back = read_evaluation(path)
    assert back == ev.__class__("x", "AUC", 0.7, 0.5, "random", True, {"per": [1.0, None]})
    assert back.wins and back.delta == pytest.approx(0.2)
    with pytest.raises(EvaluationError, match="'baseline' must be a finite number"):
        Evaluation("x", "AUC", 0.7, float("nan"), "none").to_dict()


def test_run_folder_of_another_domain_is_named(tmp_path: Path) -> None:
    from shared_attention.engine.checkpoint import save_weights
    from shared_attention.engine.config import dump_config
    from shared_attention.serving import load_run_model
    from shared_attention.toy import ToyConfig, build_model

    cfg = ToyConfig()
    save_weights(tmp_path / "model.safetensors", build_model(cfg).state_dict())
    (tmp_path / "config.yaml").write_text(dump_config(cfg))
    (tmp_path / "metadata.json").write_text(json.dumps({"task": "anomaly"}))
    with pytest.raises(ValueError, match="a 'anomaly' run folder, but this is the 'toy' domain"):
        load_run_model(tmp_path, ToyConfig, build_model, "toy")
    (tmp_path / "metadata.json").write_text(json.dumps({"task": "toy-pointer"}))
    run, loaded, model = load_run_model(tmp_path, ToyConfig, build_model, "toy")
    assert loaded == cfg and run.path == tmp_path
    save_weights(tmp_path / "model.safetensors", {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="model.safetensors: does not match its config.yaml"):
        load_run_model(tmp_path, ToyConfig, build_model, "toy")


def test_resume_with_no_usable_checkpoint_stops_unless_restart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared_attention.engine.checkpoint import list_checkpoints

    run = tmp_path / "run"
    main = TOY_DOMAIN.main
    args = [f"train.run_dir={run}", *TINY, "train.checkpoint_every=2", "train.keep_checkpoints=0"]
    assert main(["train", *args]) == 0
    ckpts = list_checkpoints(run)
    assert len(ckpts) == 2
    for ckpt in ckpts:  # every checkpoint truncated
        f = ckpt / "model.safetensors"
        f.write_bytes(f.read_bytes()[:64])
    capsys.readouterr()
    more = [a.replace("train.max_steps=4", "train.max_steps=6") for a in args]
    assert main(["train", *more]) == 2  # stops instead of silently training from step 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of its 2 checkpoint(s) is usable" in err[0] and "--restart" in err[0]
    assert main(["train", "--restart", *more]) == 0
    assert f"run {run}: step 6" in capsys.readouterr().out
