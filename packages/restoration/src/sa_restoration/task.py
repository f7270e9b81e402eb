"""The restoration :class:`~shared_attention.engine.TrainTask`: HAT trained with L1 on (LR, HR) patches,
validated by PSNR/SSIM on the Y channel (crop border = scale), with side-by-side PNGs in the run folder."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset

from shared_attention.engine import TaskHooks

from .config import RestorationConfig
from .models import build_model

__all__ = ["RestorationTask", "SRTask", "build_model", "score_pair", "to_numpy_image"]


def _fmt(path: str, scale: int) -> str:
    return path.replace("{scale}", str(scale))


def score_pair(sr: np.ndarray, gt: np.ndarray, crop_border: int) -> tuple[float, float]:
    """(PSNR-Y, SSIM-Y) of an SR result, the papers' convention: 8-bit, BT.601 Y, border = scale.

    Gray ground truths (identical channels, e.g. ``camera``) are scored on their gray values, as the
    MATLAB evaluation scripts do for 1-channel images; the SR output is reduced to gray by its channel mean.
    """
    from .metrics import is_gray, psnr_y, ssim_y

    if is_gray(gt):
        sr, gt = sr.mean(axis=2), gt[..., 0]
    return psnr_y(sr, gt, crop_border=crop_border), ssim_y(sr, gt, crop_border=crop_border)


def to_numpy_image(t: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` tensor in [0, 1] -> ``(H, W, 3)`` float32 array, clamped."""
    return t.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


class RestorationTask(TaskHooks):
    """HAT super-resolution on the shared engine.

    Args:
        cfg: the restoration config.
        init_weights: optional safetensors / official ``.pth`` / run folder to initialise the model from
            (e.g. x2 weights to fine-tune x4, as the paper does).
    """

    full_precision_eval = True  # PSNR/Dice of the validation pick the best weights: no bf16 rounding there

    name = "restoration"

    def __init__(self, cfg: RestorationConfig, init_weights: str | Path | None = None) -> None:
        self.cfg = cfg
        self.init_weights = init_weights

    def build_model(self) -> nn.Module:
        model = build_model(self.cfg)
        if self.init_weights is not None:
            from .predictor import load_weights_any

            state = load_weights_any(self.init_weights)
            missing, unexpected = model.load_state_dict(state, strict=False)
            # the upsampler differs between scales: everything else must match
            bad = [k for k in missing + unexpected if not k.startswith(("upsample", "conv_last"))]
            if bad:
                raise ValueError(f"{self.init_weights}: weights do not fit {self.cfg.model.variant}: {bad[:5]}")
        return model

    def build_datasets(self) -> tuple[Dataset[Any], Dataset[Any] | None]:
        from .data import DegradedImageDataset, PairedImageDataset

        d, s = self.cfg.data, self.cfg.model.upscale
        train: Dataset[Any]
        if d.train_lq_dir:
            train = PairedImageDataset(_fmt(d.train_gt_dir, s), _fmt(d.train_lq_dir, s), s, patch_size=d.patch_size,
                                       augment=True, repeat=d.repeat)
        else:
            train = DegradedImageDataset(_fmt(d.train_gt_dir, s), s, patch_size=d.patch_size, augment=True,
                                         repeat=d.repeat)
        val: Dataset[Any] = PairedImageDataset(_fmt(d.val_gt_dir, s), _fmt(d.val_lq_dir, s), s)
        if d.max_val_images:
            val = Subset(val, range(min(d.max_val_images, len(val))))  # type: ignore[arg-type]
        self._val = val
        return train, val

    def collate_fn(self) -> Any:
        return None

    def training_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        sr = model(batch["lq"])  # (B, 3, h*s, w*s)
        return {"loss": F.l1_loss(sr, batch["gt"])}

    def validation_step(self, model: nn.Module, batch: Any) -> Mapping[str, torch.Tensor]:
        from .resize import bicubic_upscale

        s = self.cfg.model.upscale
        sr = model(batch["lq"])  # (B, 3, H, W)
        out: dict[str, list[float]] = {"psnr_y": [], "ssim_y": [], "bicubic_psnr_y": []}
        for i in range(sr.shape[0]):
            pred, gt, lq = (to_numpy_image(t[i]) for t in (sr, batch["gt"], batch["lq"]))
            p, q = score_pair(pred, gt, s)
            out["psnr_y"].append(p)
            out["ssim_y"].append(q)
            out["bicubic_psnr_y"].append(score_pair(np.clip(bicubic_upscale(lq, s), 0, 1), gt, s)[0])
        return {k: torch.tensor(v, dtype=torch.float64) for k, v in out.items()}

    def metrics(self, outputs: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, float]:
        res = {}
        for key in ("psnr_y", "ssim_y", "bicubic_psnr_y"):
            vals = torch.cat([o[key].reshape(-1) for o in outputs])
            res[key] = float(vals.mean())
        res["gain_db"] = res["psnr_y"] - res["bicubic_psnr_y"]
        return res

    @torch.no_grad()
    def on_evaluation_end(self, model: nn.Module, run_dir: Path, step: int, metrics: Mapping[str, float]) -> None:
        """Writes ``samples/step_N_<name>.png``: bicubic | model | ground truth, titled (pixels kept exactly)."""
        from shared_attention.io import titled_panels

        from .imageio import write_png
        from .resize import bicubic_upscale

        val = getattr(self, "_val", None)
        if val is None:
            return
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        for i in range(min(self.cfg.sample_images, len(val))):
            item = val[i]
            lq = item["lq"][None].to(device)
            sr = to_numpy_image(model(lq)[0])
            gt = to_numpy_image(item["gt"])
            bic = np.clip(bicubic_upscale(to_numpy_image(item["lq"]), self.cfg.model.upscale), 0, 1)
            h = min(gt.shape[0], 384)
            s = self.cfg.model.upscale
            panels = [bic[:h], sr[:h], gt[:h]]
            titles = [f"bicubic x{s}", f"model x{s}, step {step}", "ground truth"]
            row = titled_panels(panels, titles, height=h, min_width=128)
            write_png(Path(run_dir) / "samples" / f"step_{step:08d}_{item['name']}.png", row)
        model.train(was)

    def metadata(self) -> dict[str, Any]:
        from . import __version__

        m = self.cfg.model
        return {
            "package": {"name": "sa-restoration", "version": __version__},
            "model": {"arch": "HAT", "variant": m.variant, "upscale": m.upscale, "overrides": dict(m.overrides)},
            "io": {
                "input": "RGB image, float in [0, 1], (B, 3, H, W), any size",
                "output": f"RGB image, (B, 3, {m.upscale}H, {m.upscale}W), not clamped",
            },
            "preprocessing": "none outside the model (mean shift and img_range inside, as the official HAT)",
        }


#: deprecated name (one release)
SRTask = RestorationTask
