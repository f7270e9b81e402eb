"""``sa-medseg``: train, evaluate, predict and convert ParaTransCNN / VM-UNet segmentation models.

Examples::

    seg-sample data/seg-sample                                  # offline MNI152 GM/WM sample (nilearn)
    sa-medseg train --config vmunet-cpu train.max_minutes=25    # run folder: runs/medseg/vmunet-cpu
    sa-medseg evaluate --run runs/medseg/vmunet-cpu --dir data/seg-sample/test_vol_h5 --save out/overlays
    sa-medseg predict data/seg-sample/test_nifti/img/img0001.nii.gz out/labels.nii.gz --run runs/medseg/vmunet-cpu
    sa-medseg predict slice.png out/slice_labels.png --run runs/medseg/vmunet-cpu
    sa-medseg convert vmunet_synapse.pth vmunet.safetensors --family vmunet --num-classes 9
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared_attention.cli_support import run_command

#: official constructor arguments used by ``convert`` / ``--official-weights`` (Synapse configs)
OFFICIAL_KWARGS: dict[str, dict[str, Any]] = {
    "vmunet": {"input_channels": 3, "depths": [2, 2, 2, 2], "depths_decoder": [2, 2, 2, 1], "drop_path_rate": 0.2},
    "paratranscnn": {"n_channels": 3, "heads": 8, "dim": 320, "depth": [3, 3, 3], "patch_size": 2},
}


def _predictor(args: argparse.Namespace) -> Any:
    from .predictor import SegPredictor

    if args.run:
        return SegPredictor.load(args.run, device=args.device)
    if args.official_weights:
        kw = dict(OFFICIAL_KWARGS[args.family], num_classes=args.num_classes)
        return SegPredictor.from_official(
            args.official_weights, args.family, windowing=args.windowing, device=args.device, **kw
        )
    raise SystemExit("error: give --run DIR or --official-weights PATH")


def _cmd_train(args: argparse.Namespace) -> int:
    import logging

    from shared_attention.engine import fit

    from .config import load_seg_config
    from .task import SegTask

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_seg_config(args.config, args.overrides)
    res = fit(SegTask(cfg), cfg.train, full_config=cfg)
    m = res.last_metrics
    if m:
        print(
            f"\nrun {res.run_dir}: step {res.step}, validation mean Dice {m['dice']:.4f} "
            f"(multi-Otsu {m.get('otsu_dice', float('nan')):.4f}), HD95 {m['hd95']:.2f} mm"
        )
    return 0


def evaluate_volumes(
    pred: Any, volumes: list[Any], save_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Dice / HD95 (mm) per class of a predictor and of the multi-Otsu baseline, volume by volume."""
    import torch
    from tqdm.auto import tqdm

    from .inference import segment_volume
    from .metrics import multi_otsu_segment, per_class_metrics, summarise
    from .overlay import side_by_side, write_png

    C = len(pred.class_names)
    model_rows, base_rows, cases = [], [], []
    for v in tqdm(volumes, disable=not progress, desc="evaluate"):
        labels = segment_volume(
            pred.model, torch.from_numpy(v.image), pred.batch_size, pred.multiple, pred.inference, pred.roi
        ).numpy()
        m = per_class_metrics(labels, v.label, C, v.spacing)
        model_rows.append(m)
        cases.append({"name": v.name, "per_class": {pred.class_names[c]: x for c, x in m.items()}})
        if C == 3:
            base_rows.append(per_class_metrics(multi_otsu_segment(v.image, C), v.label, C, v.spacing))
        if save_dir:
            mid = v.image.shape[0] // 2
            write_png(Path(save_dir) / f"{v.name}_overlay.png", side_by_side(v.image[mid], labels[mid], v.label[mid]))
    out: dict[str, Any] = {"model": summarise(model_rows, pred.class_names), "cases": cases}
    if base_rows:
        out["baseline"] = summarise(base_rows, pred.class_names)
    out["volumes"] = len(volumes)
    return out


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .data import load_volumes
    from .metrics import format_table

    pred = _predictor(args)
    fmt, root, label_dir = args.format, args.dir, args.label_dir
    if args.run and not root:
        from shared_attention.engine import load_config

        from .config import SegConfig

        cfg = load_config(SegConfig, Path(args.run) / "config.yaml")
        fmt, root, label_dir = cfg.data.val_format, cfg.data.val_dir, cfg.data.val_label_dir
    if not root:
        raise SystemExit("error: give --dir (and --format) of the evaluation volumes")
    vols = load_volumes(fmt or "h5", root, pred.windowing, label_dir)
    res = evaluate_volumes(pred, vols, args.save)
    table = {"model": res["model"]} | ({"multi-Otsu": res["baseline"]} if "baseline" in res else {})
    print(f"{res['volumes']} volume(s) from {root}; Dice and HD95 (mm) per class:")
    print(format_table(table, pred.class_names))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    if args.run:  # the cross-domain summary of `make demo` reads this
        from shared_attention.engine.checkpoint import atomic_write_bytes

        summary = {
            "domain": "medseg",
            "metric": "mean Dice (foreground classes)",
            "model": res["model"]["dice"],
            "baseline": res.get("baseline", {}).get("dice", float("nan")),
            "baseline_name": "multi-Otsu",
            "higher_is_better": True,
            "details": {
                "data": str(root),
                "hd95_mm": res["model"]["hd95"],
                "per_class": res["model"]["per_class"],
                "baseline_per_class": res.get("baseline", {}).get("per_class"),
                "volumes": res["volumes"],
            },
        }
        atomic_write_bytes(Path(args.run) / "evaluation.json", json.dumps(summary, indent=2).encode())
    return 0


def _outputs_for(inp: Path, out: Path) -> tuple[Path, Path]:
    """(labels path, overlay path) for one input written to ``out``."""
    name = inp.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".png")
    is_png = inp.suffix.lower() == ".png"
    if out.suffix or str(out).endswith(".nii.gz"):
        base = out.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".png")
        return out, out.with_name(f"{base}_overlay.png")
    return out / (f"{name}_labels.png" if is_png else f"{name}_labels.nii.gz"), out / f"{name}_overlay.png"


def _cmd_predict(args: argparse.Namespace) -> int:
    from shared_attention.engine.checkpoint import atomic_write_bytes
    from shared_attention.serving import InputError

    pred = _predictor(args)
    src, dst = Path(args.input), Path(args.output)
    if src.is_dir():
        inputs = sorted(p for p in src.iterdir() if p.name.endswith((".nii", ".nii.gz", ".png")))
        pairs = [(p, _outputs_for(p, dst)) for p in inputs]
    else:
        pairs = [(src, _outputs_for(src, dst))]
    failed = 0
    for inp, (lab_path, ov_path) in pairs:
        try:
            res = pred(inp)
        except InputError as exc:
            print(f"error: {inp}: {exc}", file=sys.stderr)
            failed += 1
            continue
        atomic_write_bytes(lab_path, res.get("labels_nifti") or res["labels_png"])
        if "overlay_png" in res:
            atomic_write_bytes(ov_path, res["overlay_png"])
        print(f"{inp} -> {lab_path} (+ {ov_path.name}); classes {res['classes']}")
    return 1 if failed else 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from shared_attention.engine.checkpoint import save_weights

    from .official import load_official_paratranscnn, load_official_vmunet

    kw = dict(OFFICIAL_KWARGS[args.family], num_classes=args.num_classes)
    load = load_official_vmunet if args.family == "vmunet" else load_official_paratranscnn
    model = load(args.official, **kw)
    save_weights(args.output, model.state_dict(), {"family": args.family, "num_classes": str(args.num_classes)})
    n = sum(p.numel() for p in model.parameters())
    print(f"{args.official} -> {args.output} ({args.family}, {n:,} parameters, strict load ok)")
    return 0


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", help="run folder written by `sa-medseg train`")
    p.add_argument("--official-weights", help="official ParaTransCNN / VM-UNet .pth")
    p.add_argument("--family", default="vmunet", choices=("vmunet", "paratranscnn"), help="with --official-weights")
    p.add_argument("--num-classes", type=int, default=9, help="classes of the official weights (Synapse: 9)")
    p.add_argument(
        "--windowing",
        default="none",
        choices=("ct", "mr", "none"),
        help="intensity windowing with --official-weights (runs use their config)",
    )
    p.add_argument("--device", default="cpu")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``sa-medseg``."""
    doc = __doc__ or ""
    ap = argparse.ArgumentParser(
        prog="sa-medseg",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=doc.split("\n\n", 1)[1],
    )
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train (resumes automatically from the run folder)")
    t.add_argument("--config", default="vmunet-cpu", help="bundled config name or YAML path")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=1000")
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="Dice / HD95 (mm) per class vs multi-Otsu on labelled volumes")
    _add_model_args(e)
    e.add_argument("--format", choices=("h5", "nifti", "acdc"), help="volume layout (default h5)")
    e.add_argument("--dir", help="volumes folder (h5: test_vol_h5; nifti: the img folder)")
    e.add_argument("--label-dir", help="label folder for --format nifti")
    e.add_argument("--save", help="write an overlay PNG per volume here")
    e.add_argument("--json", help="write all results as JSON")
    e.set_defaults(func=_cmd_evaluate)
    p = sub.add_parser("predict", help="segment a NIfTI volume, a PNG slice or a folder of them")
    p.add_argument("input")
    p.add_argument("output", help="output file (.nii.gz / .png) or folder")
    _add_model_args(p)
    p.set_defaults(func=_cmd_predict)
    c = sub.add_parser("convert", help="official .pth -> our safetensors (strict load check)")
    c.add_argument("official")
    c.add_argument("output")
    c.add_argument("--family", default="vmunet", choices=("vmunet", "paratranscnn"))
    c.add_argument("--num-classes", type=int, default=9)
    c.set_defaults(func=_cmd_convert)
    return run_command(ap, argv)


if __name__ == "__main__":
    raise SystemExit(main())
