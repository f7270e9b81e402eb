"""The medseg domain's declaration: the core builds ``sa-medseg`` and its run folders from it.

Examples::

    sa-medseg sample data/seg-sample                            # offline MNI152 GM/WM sample (nilearn)
    sa-medseg train train.max_minutes=25                        # config cpu (VM-UNet); runs/medseg/vmunet-cpu
    sa-medseg evaluate --run runs/medseg/vmunet-cpu --data data/seg-sample/test_vol_h5 --save out/overlays
    sa-medseg predict data/seg-sample/test_nifti/img/img0001.nii.gz out/labels.nii.gz --run runs/medseg/vmunet-cpu
    sa-medseg predict slice.png out/ --run runs/medseg/vmunet-cpu
    sa-medseg convert vmunet_synapse.pth --out runs/medseg/vmunet-official --family vmunet --num-classes 9
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared_attention.domain import Converted, Domain, arg

__all__ = ["DOMAIN", "OFFICIAL_KWARGS", "PredictInputError", "main", "predict_one"]

#: official constructor arguments used by ``convert`` / ``--official-weights`` (Synapse configs)
OFFICIAL_KWARGS: dict[str, dict[str, Any]] = {
    "vmunet": {"input_channels": 3, "depths": [2, 2, 2, 2], "depths_decoder": [2, 2, 2, 1], "drop_path_rate": 0.2},
    "paratranscnn": {"n_channels": 3, "heads": 8, "dim": 320, "depth": [3, 3, 3], "patch_size": 2},
}
#: our variant holding the same architecture as OFFICIAL_KWARGS
_OFFICIAL_VARIANT = {"vmunet": "vmunet-synapse", "paratranscnn": "paratranscnn"}


def load_predictor(ns: argparse.Namespace) -> Any:
    """A predictor from ``--run`` or ``--official-weights``."""
    from .predictor import MedsegPredictor

    if ns.run:
        return MedsegPredictor.load(ns.run, device=ns.device)
    if ns.official_weights:
        kw = dict(OFFICIAL_KWARGS[ns.family], num_classes=ns.num_classes)
        return MedsegPredictor.from_official(
            ns.official_weights, ns.family, windowing=ns.windowing, device=ns.device, **kw
        )
    raise ValueError("give --run RUN_DIR or --official-weights PATH")


def _outputs_for(inp: Path, out: Path) -> tuple[Path, Path]:
    """(labels path, overlay path) for one input written to ``out`` (a file or a folder)."""
    name = inp.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".png")
    is_png = inp.suffix.lower() == ".png"
    if out.suffix or str(out).endswith(".nii.gz"):
        base = out.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".png")
        return out, out.with_name(f"{base}_overlay.png")
    return out / (f"{name}_labels.png" if is_png else f"{name}_labels.nii.gz"), out / f"{name}_overlay.png"


class PredictInputError(ValueError):
    """An input ``sa-medseg predict`` cannot read: reported as one ``error: <file>: <problem>`` line, exit 2."""


def predict_one(pred: Any, path: Path, out: Path | None, options: dict[str, Any]) -> str:
    """Segments one NIfTI volume or PNG slice: label file + overlay PNG.

    Raises:
        PredictInputError: the input is unreadable or refused (truncated, not NIfTI / PNG, too many voxels in
            its header...); the message names the file, the core prints it as one line and exits with 2.
    """
    from shared_attention.engine.checkpoint import atomic_write_bytes
    from shared_attention.serving import InputError

    assert out is not None
    lab_path, ov_path = _outputs_for(path, out)
    try:
        res = pred(path)
    except InputError as exc:
        msg = str(exc)
        if exc.field and msg.startswith(f"{exc.field}: "):
            msg = msg[len(exc.field) + 2 :]
        msg = msg.removeprefix(f"{path}: ")
        raise PredictInputError(f"{path}: {msg}") from None
    atomic_write_bytes(lab_path, res.get("labels_nifti") or res["labels_png"])
    if "overlay_png" in res:
        atomic_write_bytes(ov_path, res["overlay_png"])
    return f"{path} -> {lab_path} (+ {ov_path.name}); classes {res['classes']}"


def convert(sources: Sequence[str], family: str = "vmunet", num_classes: int = 9) -> Converted:
    """An official ParaTransCNN / VM-UNet ``.pth`` (Synapse constructor arguments) -> model + config."""
    from .config import MedsegConfig, MedsegModelConfig
    from .official import load_official_paratranscnn, load_official_vmunet

    if len(sources) != 1:
        raise ValueError("give one official checkpoint (.pth)")
    kw = dict(OFFICIAL_KWARGS[family], num_classes=num_classes)
    load = load_official_vmunet if family == "vmunet" else load_official_paratranscnn
    model = load(sources[0], **kw)
    names = ("background", *(f"class_{i}" for i in range(1, num_classes)))
    cfg = MedsegConfig(
        model=MedsegModelConfig(family=family, variant=_OFFICIAL_VARIANT[family], num_classes=num_classes)  # type: ignore[arg-type]
    )
    from shared_attention.engine.config import replace

    cfg = replace(cfg, **{"data.class_names": list(names)})
    n = sum(p.numel() for p in model.parameters())
    return Converted(
        model,
        cfg,
        {"source": str(sources[0]), "family": family, "official_kwargs": kw},
        summary=f"{sources[0]} ({family}, {n:,} parameters, strict load ok)",
    )


DOMAIN = Domain(
    name="medseg",
    summary="ParaTransCNN / VM-UNet medical image segmentation: train, evaluate, predict, convert, sample.",
    convert="sa_medseg.domain:convert",
    official="sa_medseg.official:load_official_vmunet",
    load_predictor="sa_medseg.domain:load_predictor",
    predict_suffixes=(".nii", ".nii.gz", ".png"),
    flag_aliases={"--data": ("--dir",)},
    user_errors=("sa_medseg.domain:PredictInputError",),
    arguments={
        "model": (
            arg("--official-weights", help="official ParaTransCNN / VM-UNet .pth instead of --run"),
            arg("--family", default="vmunet", choices=("vmunet", "paratranscnn"), help="with --official-weights"),
            arg("--num-classes", type=int, default=9, help="classes of the official weights (Synapse: 9)"),
            arg(
                "--windowing",
                default="none",
                choices=("ct", "mr", "none"),
                help="intensity windowing with --official-weights (runs use their config)",
            ),
        ),
        "evaluate": (
            arg("--format", choices=("h5", "nifti", "acdc"), help="volume layout (default h5)"),
            arg("--label-dir", help="label folder for --format nifti"),
            arg("--save", help="write an overlay PNG per volume here"),
        ),
        "convert": (
            arg("--family", default="vmunet", choices=("vmunet", "paratranscnn")),
            arg("--num-classes", type=int, default=9),
        ),
    },
    examples=__doc__.split("\n\n", 1)[1] if __doc__ else "",
)


main = DOMAIN.main  #: the ``sa-medseg`` console script


if __name__ == "__main__":
    raise SystemExit(main())
