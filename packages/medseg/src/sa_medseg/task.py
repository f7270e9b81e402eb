"""The medseg :class:`~shared_attention.engine.TrainTask`: 2D slice training with MONAI DiceCE (0.5 / 0.5),
3D evaluation volume by volume (Dice, HD95 in mm per class), overlay PNGs in the run folder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from shared_attention.engine import TaskHooks

from .config import SegConfig
from .models import build_model

__all__ = ["MedsegTask", "SegTask", "build_model", "input_multiple"]


def input_multiple(model: nn.Module) -> int:
    """The H/W multiple a network needs (VM-UNet: patch * 8 = 32; ParaTransCNN: 16)."""
    inner = getattr(model, "vmunet", None)
    if inner is not None:
        return int(inner.patch_size * 2 ** (inner.num_layers - 1))
    return 16


class MedsegTask(TaskHooks):
    """Segmentation on the shared engine.

    Args:
        cfg: the medseg config.
    """

    full_precision_eval = True  # PSNR/Dice of the validation pick the best weights: no bf16 rounding there

    name = "medseg"

    def __init__(self, cfg: SegConfig) -> None:
        self.cfg = cfg
        self._loss: nn.Module | None = None
        self._val: Dataset[Any] | None = None
        self._baseline: dict[int, float] | None = None

    def build_model(self) -> nn.Module:
        return build_model(self.cfg)

    def build_datasets(self) -> tuple[Dataset[Any], Dataset[Any] | None]:
        from .data import SliceDataset, VolumeDataset, load_npz_dir, load_volumes, volume_to_slices

        d = self.cfg.data
        if d.train_format == "npz":
            slices = load_npz_dir(d.train_dir)
            if d.skip_empty:
                slices = [s for s in slices if s[1].any()]
        else:
            slices = volume_to_slices(
                load_volumes(d.train_format, d.train_dir, d.windowing, d.train_label_dir), d.skip_empty
            )
        train = SliceDataset(
            slices,
            d.patch_size,
            augment=True,
            rot90_flip=d.rot90_flip,
            rotate_deg=d.rotate_deg,
            zoom=d.zoom,
            repeat=d.repeat,
        )
        vols = load_volumes(d.val_format, d.val_dir, d.windowing, d.val_label_dir, d.max_val_volumes)
        val: Dataset[Any] = VolumeDataset(vols)
        self._val = val
        return train, val

    def _criterion(self) -> nn.Module:
        if self._loss is None:
            from monai.losses import DiceCELoss

            self._loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.5, lambda_ce=0.5)
        return self._loss

    def training_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        logits = model(batch["image"])  # (B, C, H, W)
        loss = self._criterion()(logits.float(), batch["label"][:, None])
        return {"loss": loss}

    def validation_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        from .inference import segment_volume
        from .metrics import multi_otsu_segment, per_class_metrics

        d, C = self.cfg.data, self.cfg.model.num_classes
        out: dict[str, list[float]] = {}
        for i in range(batch["image"].shape[0]):
            image, label = batch["image"][i], batch["label"][i].cpu().numpy()  # (S, H, W)
            spacing = [float(s) for s in batch["spacing"][i]]
            pred = segment_volume(
                model, image, multiple=input_multiple(model), mode=d.inference, roi=d.patch_size
            ).numpy()
            for c, m in per_class_metrics(pred, label, C, spacing).items():
                out.setdefault(f"dice_{c}", []).append(m["dice"])
                out.setdefault(f"hd95_{c}", []).append(m["hd95"])
            if C == 3:  # the intensity baseline (dark -> bright: background/CSF, GM, WM)
                base = per_class_metrics(multi_otsu_segment(image.cpu().numpy(), C), label, C, spacing)
                for c, m in base.items():
                    out.setdefault(f"otsu_dice_{c}", []).append(m["dice"])
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}

    def metrics(self, outputs: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
        keys = sorted({k for o in outputs for k in o})
        res: dict[str, float] = {}
        for k in keys:
            vals = torch.cat([o[k].reshape(-1) for o in outputs if k in o])
            finite = vals[torch.isfinite(vals)]
            res[k] = float(finite.mean()) if finite.numel() else float("nan")
        C = self.cfg.model.num_classes
        res["dice"] = float(np.mean([res[f"dice_{c}"] for c in range(1, C)]))
        hd = [res[f"hd95_{c}"] for c in range(1, C) if np.isfinite(res[f"hd95_{c}"])]
        res["hd95"] = float(np.mean(hd)) if hd else float("nan")
        if f"otsu_dice_{C - 1}" in res:
            res["otsu_dice"] = float(np.mean([res[f"otsu_dice_{c}"] for c in range(1, C)]))
        return res

    @torch.no_grad()
    def on_evaluation_end(self, model: nn.Module, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        """Writes ``samples/step_N_<case>.png``: image | prediction | ground truth on the middle slice."""
        from .inference import segment_volume
        from .overlay import side_by_side, write_png

        val = self._val
        if val is None or self.cfg.overlay_slices <= 0:
            return
        was = model.training
        model.eval()
        item = val[0]
        S = item["image"].shape[0]
        idx = np.linspace(0, S - 1, self.cfg.overlay_slices + 2)[1:-1].round().astype(int)
        sub = item["image"][idx]
        pred = segment_volume(
            model, sub, multiple=input_multiple(model), mode=self.cfg.data.inference, roi=self.cfg.data.patch_size
        ).numpy()
        grid = side_by_side(sub.numpy(), pred, item["label"][idx].numpy(), class_names=self.cfg.data.class_names)
        write_png(Path(run_dir) / "samples" / f"step_{step:08d}.png", grid)
        model.train(was)

    def metadata(self) -> dict[str, Any]:
        from . import __version__

        m, d = self.cfg.model, self.cfg.data
        return {
            "package": {"name": "sa-medseg", "version": __version__},
            "model": {
                "family": m.family,
                "variant": m.variant,
                "in_chans": m.in_chans,
                "num_classes": m.num_classes,
                "overrides": dict(m.overrides),
            },
            "labels": list(d.class_names),
            "io": {"input": "(B, 1 or 3, H, W) slice in [0, 1]", "output": f"(B, {m.num_classes}, H, W) logits"},
            "preprocessing": {"windowing": d.windowing, "inference": d.inference, "patch_size": list(d.patch_size)},
        }


#: deprecated name (one release)
SegTask = MedsegTask
