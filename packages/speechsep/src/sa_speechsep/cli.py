"""``sa-speechsep``: train, evaluate, separate and convert MossFormer speech separation models.

Examples::

    speech-sample data/speech-sample                              # offline 8 kHz sample set (asterisk + espeak-ng)
    sa-speechsep train --config cpu-small train.max_minutes=30    # run folder: runs/speechsep/mossformer-cpu
    sa-speechsep train --config convtasnet-cpu                    # the peer baseline
    sa-speechsep evaluate --run runs/speechsep/mossformer-cpu --baseline-run runs/speechsep/convtasnet-cpu
    sa-speechsep separate mixture.wav --out separated/ --run runs/speechsep/mossformer-cpu
    sa-speechsep convert path/to/hub_folder_or_ckpt --out runs/speechsep/mossformer-l-official
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared_attention.cli_support import run_command


def _cmd_train(args: argparse.Namespace) -> int:
    import logging

    from shared_attention.engine import fit

    from .config import load_sep_config
    from .task import SepTask

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_sep_config(args.config, args.overrides)
    res = fit(SepTask(cfg), cfg.train, full_config=cfg)
    m = res.last_metrics
    if m:
        print(
            f"\nrun {res.run_dir}: step {res.step}, validation SI-SDRi {m['si_sdri']:.2f} dB "
            f"(SI-SDR {m['si_sdr']:.2f} dB)"
        )
    return 0


def evaluate_dataset(
    pred: Any, dataset: Any, max_items: int = 0, with_sdr: bool = True, oracle: bool = False, progress: bool = True
) -> list[dict[str, Any]]:
    """Per-mixture SI-SDR(i) and SDR(i) of a predictor on a dataset (optionally also the oracle IRM)."""
    from tqdm.auto import tqdm

    from .metrics import ideal_ratio_mask, separation_scores
    from .separate import separate_chunked

    n = len(dataset) if not max_items else min(max_items, len(dataset))
    rows = []
    for i in tqdm(range(n), disable=not progress, desc="evaluate"):
        item = dataset[i]
        mix, ref = item["mix"], item["sources"]
        est = separate_chunked(pred.model, mix, pred.chunk, pred.overlap, pred.device)  # (S, T)
        s = separation_scores(est[None], ref[None], mix[None], with_sdr=with_sdr)
        row = {"index": i, **{k: v[0] for k, v in s.items()}}
        if oracle:
            irm = ideal_ratio_mask(mix.double(), ref.double())
            row["irm_si_sdri"] = separation_scores(irm[None], ref[None], mix[None], with_sdr=False)["si_sdri"][0]
        rows.append(row)
    return rows


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return sum(vals) / len(vals) if vals else float("nan")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from shared_attention.engine.checkpoint import atomic_write_bytes

    from .data import build_dataset
    from .predictor import SeparationPredictor

    pred = SeparationPredictor.load(args.run, device=args.device)
    data = args.data or pred.cfg.data.test
    ds = build_dataset(data, num_spks=pred.cfg.model.num_spks, sample_rate=pred.sample_rate)
    rows = evaluate_dataset(pred, ds, args.max_items, with_sdr=not args.no_sdr, oracle=args.oracle)
    base_rows: list[dict[str, Any]] | None = None
    base_name = "unprocessed mixture"
    if args.baseline_run:
        bpred = SeparationPredictor.load(args.baseline_run, device=args.device)
        base_rows = evaluate_dataset(bpred, ds, args.max_items, with_sdr=not args.no_sdr)
        base_name = f"{bpred.cfg.model.arch} ({Path(args.baseline_run).name})"
    keys = [k for k in ("si_sdri", "sdri", "si_sdr", "sdr") if k in rows[0]]
    print(f"{'system':<32} " + " ".join(f"{k:>9}" for k in keys))
    print(
        f"{pred.cfg.model.arch + ' (' + Path(args.run).name + ')':<32} "
        + " ".join(f"{_mean(rows, k):>9.2f}" for k in keys)
    )
    if base_rows is not None:
        print(f"{base_name:<32} " + " ".join(f"{_mean(base_rows, k):>9.2f}" for k in keys))
    if args.oracle:
        print(f"{'oracle ideal ratio mask':<32} {_mean(rows, 'irm_si_sdri'):>9.2f}")
    model_v = _mean(rows, "si_sdri")
    base_v = _mean(base_rows, "si_sdri") if base_rows is not None else 0.0
    summary = {
        "domain": "speechsep",
        "metric": "SI-SDRi (dB)",
        "model": model_v,
        "baseline": base_v,
        "baseline_name": base_name,
        "higher_is_better": True,
        "details": {
            "data": str(data),
            "mixtures": len(rows),
            "model_sdri": _mean(rows, "sdri"),
            "baseline_sdri": _mean(base_rows, "sdri") if base_rows is not None else 0.0,
            "oracle_irm_si_sdri": _mean(rows, "irm_si_sdri") if args.oracle else None,
            "per_mixture": rows,
        },
    }
    atomic_write_bytes(Path(args.run) / "evaluation.json", json.dumps(summary, indent=2).encode())
    return 0


def _cmd_separate(args: argparse.Namespace) -> int:
    from shared_attention.serving import InputError

    from .predictor import SeparationPredictor

    if args.run:
        pred = SeparationPredictor.load(args.run, device=args.device)
    elif args.official:
        pred = SeparationPredictor.from_official(args.official, device=args.device)
    else:
        raise SystemExit("error: give --run DIR or --official PATH")
    if args.chunk_seconds:
        pred.chunk = int(round(args.chunk_seconds * pred.sample_rate))
        pred.overlap = int(round(args.overlap_seconds * pred.sample_rate))
    failed = 0
    for inp in args.inputs:
        try:
            outs = pred.separate_file(inp, args.out)
        except InputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(f"{inp} -> " + ", ".join(str(o) for o in outs))
    return 1 if failed else 0


def _cmd_convert(args: argparse.Namespace) -> int:
    import json

    from shared_attention.engine.checkpoint import MODEL_FILE, atomic_write_text, save_weights
    from shared_attention.engine.config import dump_config

    from .config import SepConfig, SepModelConfig
    from .official import load_official

    kwargs = json.loads(args.kwargs) if args.kwargs else {}
    model = load_official(args.official, **kwargs)
    c = model.cfg
    overrides = {
        k: getattr(c, k)
        for k in (
            "kernel_size",
            "stride",
            "in_channels",
            "out_channels",
            "bias",
            "num_blocks",
            "d_model",
            "attn_dropout",
            "group_size",
            "query_key_dim",
            "expansion_factor",
            "rotary_dim",
        )
    }
    cfg = SepConfig(
        model=SepModelConfig(arch="mossformer", variant="mossformer-l", num_spks=c.num_spks, overrides=overrides)
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(out / MODEL_FILE, model.state_dict())
    atomic_write_text(out / "config.yaml", dump_config(cfg))
    meta = {
        "task": "speechsep",
        "source": str(args.official),
        "official_kwargs": kwargs,
        "io": {"input": "mono mixture (B, T) at 8 kHz", "output": f"(B, {c.num_spks}, T)"},
    }
    atomic_write_text(out / "metadata.json", json.dumps(meta, indent=2))
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.official} -> {out} ({n:,} parameters, strict load ok)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sa-speechsep``."""
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(
        prog="sa-speechsep",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1],
    )
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (resumes automatically from the run folder)")
    t.add_argument("--config", default="cpu-small", help="bundled config name or YAML path")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=1000")
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="SI-SDRi / SDRi per mixture; writes <run>/evaluation.json")
    e.add_argument("--run", required=True, help="run folder of the model")
    e.add_argument("--baseline-run", help="run folder of the baseline (e.g. the Conv-TasNet run)")
    e.add_argument("--data", help="WSJ0-mix split folder or LibriMix CSV (default: the config's data.test)")
    e.add_argument("--max-items", type=int, default=0, help="evaluate at most N mixtures (0: all)")
    e.add_argument("--no-sdr", action="store_true", help="skip the BSS-eval SDR (faster)")
    e.add_argument("--oracle", action="store_true", help="also score the oracle ideal ratio mask")
    e.add_argument("--device", default="cpu")
    e.set_defaults(func=_cmd_evaluate)
    s = sub.add_parser("separate", help="separate mixtures into one WAV per speaker")
    s.add_argument("inputs", nargs="+", help="audio files (any rate; stereo is down-mixed)")
    s.add_argument("--out", required=True, help="output folder (<stem>_s1.wav, <stem>_s2.wav, ...)")
    s.add_argument("--run", help="run folder written by `sa-speechsep train` or `convert`")
    s.add_argument("--official", help="official MossFormer(L) checkpoint file or hub folder")
    s.add_argument("--chunk-seconds", type=float, default=0.0, help="chunk length (default: the config's)")
    s.add_argument("--overlap-seconds", type=float, default=2.0, help="chunk overlap with --chunk-seconds")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=_cmd_separate)
    c = sub.add_parser("convert", help="official checkpoint -> run folder (strict load check)")
    c.add_argument("official", help="official state dict file or hub folder (encoder.bin, decoder.bin, masknet.bin)")
    c.add_argument("--out", required=True, help="run folder to write")
    c.add_argument("--kwargs", help="official constructor arguments as JSON, e.g. '{\"num_spks\": 3}'")
    c.set_defaults(func=_cmd_convert)
    return run_command(ap, argv, (FileNotFoundError, ValueError, NotImplementedError))


if __name__ == "__main__":
    raise SystemExit(main())
