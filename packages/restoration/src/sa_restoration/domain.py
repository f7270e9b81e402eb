"""The restoration domain's declaration: the core builds ``sa-restoration`` and its run folders from it.

Examples::

    sa-restoration sample data/sr-sample                              # offline sample set from scikit-image
    sa-restoration train train.max_steps=2000                         # config cpu; runs/restoration/hat-cpu-x2
    sa-restoration evaluate --run runs/restoration/hat-cpu-x2         # PSNR/SSIM-Y vs bicubic
    sa-restoration predict in.png out.png --run runs/restoration/hat-cpu-x2 --tile 128
    sa-restoration predict in.png out.png --official-weights HAT_SRx4_ImageNet-pretrain.pth \
        --variant hat --scale 4
    sa-restoration convert HAT-S_SRx4.pth --out runs/restoration/hat-s-x4 --variant hat-s --scale 4
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared_attention.domain import Converted, Domain, arg

__all__ = ["DOMAIN", "main"]


def load_predictor(ns: argparse.Namespace) -> Any:
    """A predictor from ``--run`` or ``--official-weights`` with the tiling / ensemble options."""
    from .predictor import RestorationPredictor

    kw = dict(tile=ns.tile, overlap=ns.overlap, ensemble=ns.ensemble, device=ns.device)
    if ns.run:
        return RestorationPredictor.load(ns.run, **kw)
    if ns.official_weights:
        return RestorationPredictor.from_official(ns.official_weights, ns.variant, ns.scale, **kw)
    raise ValueError("give --run RUN_DIR or --official-weights PATH")


def predict_one(pred: Any, path: Path, out: Path | None, options: dict[str, Any]) -> str:
    """Super-resolves one image; ``out`` is the PNG to write, or a folder when several inputs are given."""
    from shared_attention.engine.checkpoint import atomic_write_bytes

    assert out is not None
    dst = out / f"{path.stem}.png" if out.is_dir() or not out.suffix else out
    atomic_write_bytes(dst, pred(path.read_bytes()))
    return f"{path} -> {dst}"


def convert(sources: Sequence[str], variant: str = "hat", scale: int = 4) -> Converted:
    """An official HAT ``.pth`` -> model + config (strict load)."""
    from .config import RestorationConfig, RestorationModelConfig
    from .models.hat import HAT_VARIANTS
    from .official import load_official

    if len(sources) != 1:
        raise ValueError("give one official HAT checkpoint (.pth)")
    if variant not in HAT_VARIANTS:
        raise ValueError(f"--variant {variant!r}: choose from {sorted(HAT_VARIANTS)}")
    model = load_official(sources[0], upscale=scale, **HAT_VARIANTS[variant])
    cfg = RestorationConfig(model=RestorationModelConfig(variant=variant, upscale=scale))
    n = sum(p.numel() for p in model.parameters())
    return Converted(
        model,
        cfg,
        {"source": str(sources[0]), "variant": variant, "upscale": scale},
        summary=f"{sources[0]} ({variant} x{scale}, {n:,} parameters, strict load ok)",
    )


_OFFICIAL = (
    arg("--official-weights", help="official HAT .pth (params_ema / params) instead of --run"),
    arg("--variant", default="hat", help="official variant: hat-s, hat, hat-l (with --official-weights)"),
    arg("--scale", type=int, default=4, help="upscale of the official weights"),
)

DOMAIN = Domain(
    name="restoration",
    summary="HAT super-resolution: train, evaluate, predict, convert official checkpoints, build the sample set.",
    convert="sa_restoration.domain:convert",
    official="sa_restoration.official:load_official",
    load_predictor="sa_restoration.domain:load_predictor",
    predict_suffixes=(".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"),
    arguments={
        "train": (
            arg("--init", dest="init_weights", help="initialise from a run folder, .safetensors or official .pth"),
        ),
        "model": (
            *_OFFICIAL,
            arg("--tile", type=int, default=0, help="LR tile size for tiled inference (0: automatic)"),
            arg("--overlap", type=int, default=32, help="LR overlap between tiles"),
            arg("--ensemble", action="store_true", help="x8 self-ensemble"),
        ),
        "evaluate": (
            arg("--gt", help="ground-truth folder (e.g. data/Set5/GTmod4)"),
            arg("--lq", help="low-resolution folder (e.g. data/Set5/LRbicx4)"),
            arg("--save", help="write the super-resolved images here"),
        ),
        "convert": _OFFICIAL[1:],
    },
    examples=__doc__.split("\n\n", 1)[1] if __doc__ else "",
)


main = DOMAIN.main  #: the ``sa-restoration`` console script


if __name__ == "__main__":
    raise SystemExit(main())
