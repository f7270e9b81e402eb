"""The anomaly domain's declaration: the core builds ``sa-anomaly`` and its run folders from it.

Examples::

    sa-anomaly sample data/ad-sample                                    # offline textures in MVTec layout
    sa-anomaly train data.category=brick                                # config cpu; runs/anomaly/brick
    sa-anomaly evaluate --run runs/anomaly/brick                        # test split: AUROCs, AUPRO vs baseline
    sa-anomaly predict data/ad-sample/brick/test/scratch/000.png out/ --run runs/anomaly/brick
    sa-anomaly convert --heads l0.pth l1.pth --refs l0.npy l1.npy --backbone-weights wrn50.pth \
        --out runs/anomaly/official
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared_attention.domain import Converted, Domain, arg

__all__ = ["DOMAIN", "main", "prepare_config"]


def prepare_config(cfg: Any) -> Any:
    """Fills ``{category}`` in ``train.run_dir``."""
    from shared_attention.engine.config import replace

    return replace(cfg, **{"train.run_dir": cfg.train.run_dir.replace("{category}", cfg.data.category)})


def predict_one(pred: Any, path: Path, out: Path | None, options: dict[str, Any]) -> str:
    """Scores one image: ``<out>/<stem>_heatmap.png`` (the map over the image, the input's size),
    ``<out>/<stem>_panel.png`` (input | map with titles and a colour bar) and its entry in ``<out>/scores.json``."""
    import json

    from shared_attention.engine.checkpoint import atomic_write_bytes, atomic_write_text

    from .imageio import write_png

    assert out is not None
    output = pred.predict(pred.preprocess(path.read_bytes()))
    res = pred.postprocess(output)
    png = out / f"{path.stem}_heatmap.png"
    atomic_write_bytes(png, res["heatmap_png"])
    panel = write_png(out / f"{path.stem}_panel.png", pred.panel(output))
    scores_path = out / "scores.json"
    scores = json.loads(scores_path.read_text(encoding="utf-8")) if scores_path.is_file() else {}
    scores[str(path)] = {
        "score": res["score"],
        "threshold": res["threshold"],
        "heatmap": str(png),
        "heatmap_min": res["heatmap_min"],
        "heatmap_max": res["heatmap_max"],
        "panel": str(panel),
    }
    atomic_write_text(scores_path, json.dumps(scores, indent=2))
    t = res["threshold"]
    verdict = "" if t is None else (" ANOMALOUS" if res["score"] >= t else " normal")
    return f"{path}: score {res['score']:.5g}{verdict} -> {png}"


def convert(
    sources: Sequence[str],
    heads: Sequence[str] = (),
    refs: Sequence[str] = (),
    backbone_weights: str | None = None,
    backbone: str = "wide_resnet50_2",
    out_indices: Sequence[int] = (2, 3),
    image_size: int = 256,
    category: str = "official",
) -> Converted:
    """Official per-level FOD heads + reference features + backbone weights -> model + config (strict loads)."""
    from shared_attention.engine.config import load_config

    from .config import AnomalyConfig
    from .official import assemble_official

    if sources:
        raise ValueError(f"unexpected arguments {list(sources)}: give the checkpoints with --heads / --refs")
    if not heads or not refs or not backbone_weights:
        raise ValueError("give --heads, --refs and --backbone-weights")
    idx = tuple(out_indices)
    model = assemble_official(list(heads), list(refs), backbone_weights, backbone, image_size, idx)
    d_models = [h.d_model for h in model.heads]
    cfg = load_config(
        AnomalyConfig,
        None,
        [
            f"model.backbone={backbone}",
            "model.backbone_weights=null",
            f"model.out_indices={list(idx)}",
            f"model.image_size={image_size}",
            f"model.d_models={d_models}",
            f"model.n_heads={model.heads[0].n_heads}",
            f"model.n_layers={model.heads[0].n_layers}",
            f"data.category={category}",
        ],
    )
    n = sum(p.numel() for h in model.heads for p in h.parameters())
    return Converted(
        model,
        cfg,
        {
            "source": "official FOD checkpoints",
            "heads": [str(h) for h in heads],
            "model": {"arch": "FOD", "backbone": backbone, "d_models": d_models},
        },
        summary=f"official FOD ({len(model.heads)} levels, {n:,} head parameters, strict loads ok)",
    )


DOMAIN = Domain(
    name="anomaly",
    summary="FOD image anomaly detection (one model per category): train, evaluate, predict, convert, sample.",
    convert="sa_anomaly.domain:convert",
    official="sa_anomaly.official:assemble_official",
    prepare_config="sa_anomaly.domain:prepare_config",
    train_runner="sa_anomaly.task:train",
    predict_suffixes=(".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"),
    flag_aliases={"--data": ("--data-root",)},
    arguments={
        "evaluate": (
            arg("--category", help="category (default: the run's data.category)"),
            arg("--heatmaps", help="write titled input / ground truth / map panels with a colour bar here"),
            arg("--no-baseline", action="store_true", help="skip the Gaussian-feature baseline"),
        ),
        "convert": (
            arg("--heads", nargs="+", default=(), help="official FOD state dict per level (.pth/.safetensors)"),
            arg("--refs", nargs="+", default=(), help="reference features per level (.npy/.safetensors, (C, L))"),
            arg("--backbone-weights", help="ImageNet weights of the backbone"),
            arg("--backbone", default="wide_resnet50_2"),
            arg("--out-indices", type=int, nargs="+", default=[2, 3]),
            arg("--image-size", type=int, default=256),
            arg("--category", default="official"),
        ),
    },
    examples=__doc__.split("\n\n", 1)[1] if __doc__ else "",
)


main = DOMAIN.main  #: the ``sa-anomaly`` console script


if __name__ == "__main__":
    raise SystemExit(main())
