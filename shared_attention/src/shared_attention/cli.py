"""``shared-attention``: the core's command line (the built-in demo task; domain packages have their own).

Usage::

    shared-attention demo [key.sub=value ...]        train the toy pointer task and print a summary
    shared-attention demo --config cfg.yaml train.max_steps=50
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _demo(args: argparse.Namespace) -> int:
    import logging
    import time

    from .engine.config import ConfigError, load_config
    from .engine.trainer import fit
    from .toy import PointerTask, ToyConfig

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(ToyConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    t0 = time.time()
    result = fit(PointerTask(cfg), cfg.train, full_config=cfg)
    if args.quiet:
        return 0
    import os

    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    chance = 1.0 / cfg.data.vocab
    rows = [
        ("task", f"toy pointer lookup (attention needed; chance {chance:.3f})"),
        ("run folder", str(result.run_dir)),
        ("steps", f"{result.step} (resumed from {result.resumed_from})" if result.resumed_from else str(result.step)),
        ("train loss (last window)", f"{result.train_loss:.4f}" if result.train_loss is not None else "-"),
        ("val loss", f"{result.last_metrics.get('loss', float('nan')):.4f}"),
        ("val accuracy", f"{result.last_metrics.get('accuracy', float('nan')):.3f}"),
        (
            "best accuracy (step)",
            f"{result.best_value:.3f} ({result.best_step})" if result.best_value is not None else "-",
        ),
        ("wall time", f"{time.time() - t0:.1f} s"),
    ]
    # serve the fresh run through its Predictor, as a CLI or the server would
    from .toy import PointerPredictor, make_pointer_data

    pred = PointerPredictor.load(result.run_dir)
    tokens, labels = make_pointer_data(64, cfg.data.vocab, cfg.data.seq_len, seed=cfg.data.seed + 99).tensors
    seqs = [[int(t[0]) - cfg.data.vocab, *map(int, t[1:])] for t in tokens]
    got = pred({"sequences": seqs})["values"]
    hits = sum(int(g == y) for g, y in zip(got, labels.tolist()))
    rows.append(("predictor (64 fresh sequences)", f"{hits}/64 correct, e.g. {seqs[0]} -> {got[0]}"))
    width = max(len(k) for k, _ in rows)
    print("\n== shared-attention engine demo ==")
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``shared-attention`` console script."""
    parser = argparse.ArgumentParser(prog="shared-attention", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the built-in toy task end to end and print a summary")
    demo.add_argument("--config", help="YAML file with model/data/train sections")
    demo.add_argument("--quiet", action="store_true", help="no summary table")
    demo.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=100")
    demo.set_defaults(func=_demo)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
