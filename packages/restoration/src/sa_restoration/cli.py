"""``sa-restoration``: train, evaluate, predict and convert HAT super-resolution models.

Examples::

    sr-sample data/sr-sample                                   # offline sample set from scikit-image
    sa-restoration train --config cpu-x2 train.max_steps=2000  # run folder: runs/restoration/hat-cpu-x2
    sa-restoration evaluate --run runs/restoration/hat-cpu-x2
    sa-restoration predict in.png out.png --run runs/restoration/hat-cpu-x2 --tile 128
    sa-restoration predict in.png out.png --official-weights HAT_SRx4_ImageNet-pretrain.pth --variant hat --scale 4
    sa-restoration convert HAT-S_SRx4.pth hat-s-x4.safetensors --variant hat-s --scale 4
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared_attention.cli_support import run_command


def _predictor(args: argparse.Namespace) -> Any:
    from .predictor import SRPredictor

    kw = dict(tile=args.tile, overlap=args.overlap, ensemble=args.ensemble, device=args.device)
    if args.run:
        return SRPredictor.load(args.run, **kw)
    if args.official_weights:
        return SRPredictor.from_official(args.official_weights, args.variant, args.scale, **kw)
    raise SystemExit("error: give --run DIR or --official-weights PATH")


def _cmd_train(args: argparse.Namespace) -> int:
    import logging

    from shared_attention.engine import fit

    from .config import load_sr_config
    from .task import SRTask

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_sr_config(args.config, args.overrides)
    res = fit(SRTask(cfg, init_weights=args.init), cfg.train, full_config=cfg)
    m = res.last_metrics
    if m:
        print(f"\nrun {res.run_dir}: step {res.step}, PSNR-Y {m['psnr_y']:.2f} dB "
              f"(bicubic {m['bicubic_psnr_y']:.2f}, gain {m['gain_db']:+.2f} dB), SSIM-Y {m['ssim_y']:.4f}")
    return 0


def evaluate_folder(pred: Any, gt_dir: str | Path, lq_dir: str | Path, save_dir: str | Path | None = None,
                    progress: bool = True) -> list[dict[str, Any]]:
    """PSNR/SSIM-Y (crop border = scale) of a predictor and of bicubic on a paired folder."""
    import numpy as np
    from tqdm.auto import tqdm

    from .data import PairedImageDataset
    from .imageio import write_png
    from .resize import bicubic_upscale
    from .task import score_pair, to_numpy_image

    s = pred.upscale
    ds = PairedImageDataset(gt_dir, lq_dir, s)
    rows = []
    for i in tqdm(range(len(ds)), disable=not progress, desc="evaluate"):
        item = ds[i]
        lq = to_numpy_image(item["lq"])  # type: ignore[arg-type]
        gt = to_numpy_image(item["gt"])  # type: ignore[arg-type]
        sr = to_numpy_image(pred.predict(pred.preprocess(lq))[0])
        bic = np.clip(bicubic_upscale(lq, s), 0, 1)
        (p, q), (bp, bq) = score_pair(sr, gt, s), score_pair(bic, gt, s)
        rows.append({"name": item["name"], "psnr_y": p, "ssim_y": q, "bicubic_psnr_y": bp, "bicubic_ssim_y": bq})
        if save_dir:
            write_png(Path(save_dir) / f"{item['name']}.png", sr)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """Per-image and mean PSNR/SSIM-Y, model vs bicubic."""
    print(f"{'image':<16} {'bicubic PSNR':>12} {'model PSNR':>11} {'gain':>7} {'bicubic SSIM':>13} {'model SSIM':>11}")
    for r in rows:
        print(f"{r['name']:<16} {r['bicubic_psnr_y']:>12.2f} {r['psnr_y']:>11.2f} "
              f"{r['psnr_y'] - r['bicubic_psnr_y']:>+7.2f} {r['bicubic_ssim_y']:>13.4f} {r['ssim_y']:>11.4f}")
    if rows:
        keys = ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
        gain = mean["psnr_y"] - mean["bicubic_psnr_y"]
        print(f"{'mean':<16} {mean['bicubic_psnr_y']:>12.2f} {mean['psnr_y']:>11.2f} "
              f"{gain:>+7.2f} {mean['bicubic_ssim_y']:>13.4f} {mean['ssim_y']:>11.4f}")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    pred = _predictor(args)
    gt, lq = args.gt, args.lq
    if args.run and not (gt and lq):
        from shared_attention.engine import load_config

        from .config import SRConfig

        cfg = load_config(SRConfig, Path(args.run) / "config.yaml")
        s = str(cfg.model.upscale)
        gt, lq = cfg.data.val_gt_dir.replace("{scale}", s), cfg.data.val_lq_dir.replace("{scale}", s)
    if not (gt and lq):
        raise SystemExit("error: give --gt DIR --lq DIR (or --run with a config that names them)")
    rows = evaluate_folder(pred, gt, lq, args.save)
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    if args.run:  # the cross-domain summary of `make demo` reads this
        from shared_attention.engine.checkpoint import atomic_write_bytes

        keys = ("psnr_y", "bicubic_psnr_y", "ssim_y", "bicubic_ssim_y")
        mean = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
        summary = {
            "domain": "restoration", "metric": f"PSNR-Y x{pred.upscale} (dB)", "model": mean["psnr_y"],
            "baseline": mean["bicubic_psnr_y"], "baseline_name": "bicubic", "higher_is_better": True,
            "details": {"images": len(rows), "gt_dir": str(gt), "lq_dir": str(lq), "ssim_y": mean["ssim_y"],
                        "bicubic_ssim_y": mean["bicubic_ssim_y"], "per_image": rows},
        }
        atomic_write_bytes(Path(args.run) / "evaluation.json", json.dumps(summary, indent=2).encode())
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from shared_attention.engine.checkpoint import atomic_write_bytes
    from shared_attention.serving import InputError

    from .data import find_images

    pred = _predictor(args)
    src, dst = Path(args.input), Path(args.output)
    pairs = [(p, dst / f"{p.stem}.png") for p in find_images(src)] if src.is_dir() else [(src, dst)]
    failed = 0
    for inp, out in pairs:
        try:
            png = pred(inp.read_bytes()) if inp.is_file() else None
        except InputError as exc:
            print(f"error: {inp}: {exc}", file=sys.stderr)
            failed += 1
            continue
        if png is None:
            print(f"error: {inp}: no such file", file=sys.stderr)
            failed += 1
            continue
        atomic_write_bytes(out, png)
        print(f"{inp} -> {out}")
    return 1 if failed else 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from shared_attention.engine.checkpoint import save_weights

    from .models.hat import HAT_VARIANTS
    from .official import load_official

    model = load_official(args.official, upscale=args.scale, **HAT_VARIANTS[args.variant])
    save_weights(args.output, model.state_dict(), {"variant": args.variant, "upscale": str(args.scale)})
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.official} -> {args.output} ({args.variant} x{args.scale}, {n:,} parameters, strict load ok)")
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="run folder written by `sa-restoration train`")
    p.add_argument("--official-weights", help="official HAT .pth (params_ema / params)")
    p.add_argument("--variant", default="hat", help="official variant: hat-s, hat, hat-l (with --official-weights)")
    p.add_argument("--scale", type=int, default=4, help="upscale of the official weights")
    p.add_argument("--tile", type=int, default=0, help="LR tile size for tiled inference (0: automatic)")
    p.add_argument("--overlap", type=int, default=32, help="LR overlap between tiles")
    p.add_argument("--ensemble", action="store_true", help="x8 self-ensemble")
    p.add_argument("--device", default="cpu")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sa-restoration``."""
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(prog="sa-restoration", description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=doc.split("\n\n", 1)[1])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (resumes automatically from the run folder)")
    t.add_argument("--config", default="cpu-x2", help="bundled config name or YAML path")
    t.add_argument("--init", help="initialise from a run folder, .safetensors or official .pth")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=1000")
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="PSNR/SSIM-Y vs bicubic on a paired folder")
    _add_model_args(e)
    e.add_argument("--gt", help="ground-truth folder (e.g. data/Set5/GTmod4)")
    e.add_argument("--lq", help="low-resolution folder (e.g. data/Set5/LRbicx4)")
    e.add_argument("--save", help="write the SR images here")
    e.add_argument("--json", help="write per-image results as JSON")
    e.set_defaults(func=_cmd_evaluate)
    p = sub.add_parser("predict", help="super-resolve an image or a folder")
    p.add_argument("input")
    p.add_argument("output")
    _add_model_args(p)
    p.set_defaults(func=_cmd_predict)
    c = sub.add_parser("convert", help="official .pth -> our safetensors (strict load check)")
    c.add_argument("official")
    c.add_argument("output")
    c.add_argument("--variant", default="hat")
    c.add_argument("--scale", type=int, default=4)
    c.set_defaults(func=_cmd_convert)
    return run_command(ap, argv)


if __name__ == "__main__":
    raise SystemExit(main())
