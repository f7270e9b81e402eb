"""Evaluation of a segmentation model: Dice and HD95 (mm) per class, volume by volume, against multi-Otsu."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared_attention.evaluation import Evaluation

__all__ = ["evaluate", "evaluate_volumes"]


def evaluate_volumes(
    pred: Any, volumes: list[Any], save_dir: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Dice / HD95 (mm) per class of a predictor and of the multi-Otsu baseline, volume by volume."""
    import torch
    from tqdm.auto import tqdm

    from .inference import segment_volume
    from .metrics import multi_otsu_segment, per_class_metrics, summarise
    from .overlay import side_by_side, to_display, write_png

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
            mid = v.image.shape[0] // 2  # the middle slice, in radiological display when the volume has an affine
            image, pred_mid, true_mid = (to_display(a[mid], v.affine) for a in (v.image, labels, v.label))
            panel = side_by_side(image, pred_mid, true_mid, class_names=pred.class_names)
            write_png(Path(save_dir) / f"{v.name}_overlay.png", panel)
    out: dict[str, Any] = {"model": summarise(model_rows, pred.class_names), "cases": cases}
    if base_rows:
        out["baseline"] = summarise(base_rows, pred.class_names)
    out["volumes"] = len(volumes)
    return out


def evaluate(
    pred: Any,
    data: str | None = None,
    baseline: str | None = None,
    *,
    format: str | None = None,  # noqa: A002 - the CLI flag's name
    label_dir: str | None = None,
    save: str | None = None,
    progress: bool = True,
    **_: Any,
) -> Evaluation:
    """Dice / HD95 of ``pred`` on labelled volumes (default: the run's validation volumes).

    Args:
        pred: a :class:`~sa_medseg.predictor.MedsegPredictor`.
        data: the volumes folder (h5: ``test_vol_h5``; nifti: the image folder).
        baseline: unused (multi-Otsu, for 3-class tissue segmentation, is the baseline).
        format: ``h5``, ``nifti`` or ``acdc`` (default: the run's, else h5).
        label_dir: the label folder for ``nifti``.
        save: write an overlay PNG per volume here (image | prediction | ground truth of the middle slice,
            titled, with a class colour legend).
        progress: show a progress bar.
    """
    from .data import load_volumes
    from .metrics import format_table

    fmt, root = format, data
    if pred.run is not None:
        from shared_attention.engine import load_config

        from .config import MedsegConfig

        cfg = load_config(MedsegConfig, pred.run.path / "config.yaml")
        if not root:
            fmt, root, label_dir = cfg.data.val_format, cfg.data.val_dir, cfg.data.val_label_dir
    if not root:
        raise ValueError("give --data DIR (and --format) of the evaluation volumes")
    vols = load_volumes(fmt or "h5", root, pred.windowing, label_dir)
    res = evaluate_volumes(pred, vols, save, progress=progress)
    table = {"model": res["model"]} | ({"multi-Otsu": res["baseline"]} if "baseline" in res else {})
    report = f"{res['volumes']} volume(s) from {root}; Dice and HD95 (mm) per class:\n" + format_table(
        table, pred.class_names
    )
    has_base = "baseline" in res
    return Evaluation(
        domain="medseg",
        metric="mean Dice (foreground classes)",
        model=res["model"]["dice"],
        baseline=res["baseline"]["dice"] if has_base else 0.0,
        baseline_name="multi-Otsu" if has_base else "none (multi-Otsu needs 3 classes)",
        higher_is_better=True,
        details={
            "data": str(root),
            "hd95_mm": res["model"]["hd95"],
            "per_class": res["model"]["per_class"],
            "baseline_per_class": res["baseline"]["per_class"] if has_base else None,
            "volumes": res["volumes"],
            "cases": res["cases"],
        },
        report=report,
    )
