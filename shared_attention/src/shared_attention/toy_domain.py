"""The built-in toy pointer task declared as a :class:`~shared_attention.domain.Domain`.

It exercises the generated CLI end to end without any domain package (``shared_attention/tests``), and shows
the smallest complete declaration: ``TOY_DOMAIN.main(["train", "train.max_steps=50"])``, ``evaluate``,
``predict`` (JSON files of sequences), ``convert`` (a plain state-dict file -> a run folder), ``sample``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .domain import Converted, Domain, arg
from .evaluation import Evaluation

__all__ = ["TOY_DOMAIN", "convert", "evaluate", "predict_one", "sample_main"]


def evaluate(pred: Any, data: str | None = None, baseline: str | None = None, **_: Any) -> Evaluation:
    """Accuracy on fresh pointer sequences (``data``: a JSON file ``{"sequences", "labels"}``) vs chance."""
    from .toy import make_pointer_data

    d = pred.cfg.data
    if data:
        obj = json.loads(Path(data).read_text(encoding="utf-8"))
        seqs, labels = obj["sequences"], obj["labels"]
    else:
        tokens, y = make_pointer_data(256, d.vocab, d.seq_len, seed=d.seed + 99).tensors
        seqs = [[int(t[0]) - d.vocab, *map(int, t[1:])] for t in tokens]
        labels = y.tolist()
    got = pred({"sequences": seqs})["values"]
    acc = sum(int(g == y) for g, y in zip(got, labels)) / max(len(labels), 1)
    return Evaluation("toy", "accuracy", acc, 1.0 / d.vocab, "chance", True, {"sequences": len(labels)})


def predict_one(pred: Any, path: Path, out: Path | None, options: dict[str, Any]) -> str:
    """A JSON file ``{"sequences": [...]}`` -> ``<out>/<stem>.json`` with the predicted values."""
    from .engine.checkpoint import atomic_write_text
    from .serving import InputError

    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"invalid JSON: {exc}") from None
    result = pred(raw)
    assert out is not None
    dst = out / f"{path.stem}.json" if out.is_dir() or not out.suffix else out
    atomic_write_text(dst, json.dumps(result))
    return f"{path} -> {dst}"


def convert(sources: Sequence[str], dim: int = 64, depth: int = 2, heads: int = 4) -> Converted:
    """A plain state-dict file (``.pt`` / ``.safetensors``) -> model + config, loaded strictly."""
    from .engine.config import load_config
    from .engine.foreign import load_strict, read_state_dict
    from .toy import ToyConfig, build_model

    if len(sources) != 1:
        raise ValueError("give one state-dict file")
    cfg = load_config(ToyConfig, None, [f"model.dim={dim}", f"model.depth={depth}", f"model.num_heads={heads}"])
    model = build_model(cfg)
    state, source = read_state_dict(sources[0])
    load_strict(model, state, source)
    return Converted(model, cfg, {"source": source}, summary=f"{source} (strict load ok)")


def sample_main(argv: Sequence[str]) -> int:
    """``sample OUT [--n N]``: writes ``OUT/sequences.json`` (``{"sequences", "labels"}``)."""
    import argparse

    from .engine.checkpoint import atomic_write_text
    from .toy import ToyDataConfig, make_pointer_data

    ap = argparse.ArgumentParser(prog="sample")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=64)
    ns = ap.parse_args(argv)
    d = ToyDataConfig()
    tokens, y = make_pointer_data(ns.n, d.vocab, d.seq_len, seed=d.seed + 7).tensors
    seqs = [[int(t[0]) - d.vocab, *map(int, t[1:])] for t in tokens]
    atomic_write_text(Path(ns.out) / "sequences.json", json.dumps({"sequences": seqs, "labels": y.tolist()}))
    return 0


TOY_DOMAIN = Domain(
    name="toy",
    summary="The built-in toy pointer task (a tiny transformer must attend to the pointed-at token).",
    package="shared_attention",
    config="shared_attention.toy:ToyConfig",
    build_model="shared_attention.toy:build_model",
    task="shared_attention.toy:PointerTask",
    predictor="shared_attention.toy:PointerPredictor",
    evaluate="shared_attention.toy_domain:evaluate",
    predict="shared_attention.toy_domain:predict_one",
    sample="shared_attention.toy_domain:sample_main",
    convert="shared_attention.toy_domain:convert",
    default_config="toy",
    predict_suffixes=(".json",),
    arguments={
        "convert": (
            arg("--dim", type=int, default=64),
            arg("--depth", type=int, default=2),
            arg("--heads", type=int, default=4),
        )
    },
)
