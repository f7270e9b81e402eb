"""The anomaly predictor: image in, ``{"score", "heatmap_png", "threshold"}`` out; shared by ``sa-anomaly predict``
and the server. ``predict`` works on batches of same-size images; ``postprocess`` answers for one image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch
from torch import nn

from shared_attention.serving import FieldSpec, InputError, IOSpec, PredictorBase, load_run_model

if TYPE_CHECKING:
    from .models.fod import FODAnomalyModel

__all__ = ["AnomalyPredictor", "THRESHOLD_FILE"]

THRESHOLD_FILE = "threshold.json"


class AnomalyPredictor(PredictorBase):
    """FOD anomaly predictor.

    Args:
        model: a :class:`~sa_anomaly.models.fod.FODAnomalyModel` with its reference features.
        threshold: image-score threshold (``None``: unknown; the response then has no verdict).
        resize: shorter side before the centre crop to ``model.image_size`` (default: no margin).
        smooth_sigma: Gaussian smoothing of the map for the image score (4 in FOD).
        device: where to run. max_pixels: refuse larger uploads.
    """

    model: nn.Module
    domain: ClassVar[str] = "anomaly"
    io_spec: ClassVar[IOSpec] = IOSpec(
        inputs=(
            FieldSpec(
                "image",
                "image",
                ("image/png", "image/jpeg", "image/bmp", "image/tiff"),
                "(H, W, 3) RGB",
                "image of the trained category; resized and centre-cropped to the model's input",
                {"max_pixels": 4096 * 4096},
            ),
        ),
        outputs=(
            FieldSpec("score", "json", ("application/json",), "float", "image anomaly score (max of the smoothed map)"),
            FieldSpec("heatmap_png", "image", ("image/png",), "(S, S, 3) uint8", "anomaly heatmap over the image"),
            FieldSpec(
                "threshold",
                "json",
                ("application/json",),
                "float | null",
                "decision threshold chosen on the validation split, if known",
            ),
        ),
    )

    def __init__(
        self,
        model: nn.Module,
        threshold: float | None = None,
        resize: int | None = None,
        smooth_sigma: float = 4.0,
        device: str | torch.device = "cpu",
        max_pixels: int = 4096 * 4096,
    ) -> None:
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.threshold = threshold
        self.image_size = int(cast("FODAnomalyModel", model).image_size)
        self.resize = resize or self.image_size
        self.smooth_sigma = smooth_sigma
        self.max_pixels = max_pixels

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> AnomalyPredictor:
        """From a run folder written by ``sa-anomaly train`` (``threshold.json`` from ``evaluate`` if present)."""
        from .config import AnomalyConfig
        from .models import build_model

        def no_backbone_weights(cfg: Any) -> nn.Module:  # the run holds all weights
            return build_model(cfg, backbone_weights=False)

        run, cfg, model = load_run_model(run_dir, AnomalyConfig, no_backbone_weights, cls.domain)
        threshold = None
        tpath = Path(run_dir) / THRESHOLD_FILE
        if tpath.is_file():
            try:
                threshold = float(json.loads(tpath.read_text())["threshold"])
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f'{tpath}: expected {{"threshold": number}}: {exc}') from exc
        kwargs.setdefault("resize", cfg.data.resize)
        kwargs.setdefault("smooth_sigma", cfg.loss.smooth_sigma)
        pred = cls(model, threshold, device=device, **kwargs)
        pred.run = run
        return pred

    @classmethod
    def from_official(
        cls,
        heads: list[str | Path],
        references: list[Any],
        backbone_weights: str | Path,
        backbone: str = "wide_resnet50_2",
        image_size: int = 256,
        out_indices: tuple[int, ...] = (2, 3),
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> AnomalyPredictor:
        """From official per-level FOD checkpoints, their reference features (``.npy``/``.safetensors``, official
        ``(C, L)``) and the backbone's ImageNet weights file (official: timm ``wide_resnet50_2``)."""
        from .official import assemble_official

        model = assemble_official(heads, references, backbone_weights, backbone, image_size, out_indices)
        return cls(model, None, device=device, **kwargs)

    def preprocess(self, raw: Any) -> torch.Tensor:
        """Bytes, a path or an ``(H, W, 3)`` float array in [0, 1] -> ``(1, 3, S, S)`` tensor."""
        from .data import resize_crop
        from .imageio import decode_image, read_image

        if isinstance(raw, dict):
            if "image" not in raw:
                raise InputError("expected an 'image' entry", "image")
            raw = raw["image"]
        if isinstance(raw, np.ndarray):
            img = raw.astype(np.float32)
            if img.ndim != 3 or img.shape[2] != 3:
                raise InputError(f"expected an (H, W, 3) array, got {img.shape}", "image")
            if not np.isfinite(img).all():
                raise InputError("array contains NaN or Inf", "image")
        else:
            try:
                img = decode_image(bytes(raw), "upload") if isinstance(raw, (bytes, bytearray)) else read_image(raw)
            except (ValueError, TypeError) as exc:
                raise InputError(str(exc), "image") from exc
        if img.shape[0] * img.shape[1] > self.max_pixels:
            raise InputError(f"{img.shape[1]}x{img.shape[0]} exceeds the limit of {self.max_pixels} pixels", "image")
        if min(img.shape[:2]) < 8:
            raise InputError(f"image of {img.shape[1]}x{img.shape[0]} pixels is too small", "image")
        img = resize_crop(img, self.resize, self.image_size)
        return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None].to(self.device)

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """``(B, 3, S, S)`` -> ``{"image", "map" (B, S, S), "score" (B,)}``."""
        from .metrics import image_scores
        from .task import anomaly_maps

        maps = anomaly_maps(self.model, batch.to(self.device)).float().cpu()
        scores = torch.from_numpy(image_scores(maps.numpy(), self.smooth_sigma))
        return {"image": batch.cpu(), "map": maps, "score": scores}

    def postprocess(self, output: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The first item: ``{"score": float, "heatmap_png": bytes, "threshold": float | None}``."""
        from .imageio import encode_png, heatmap_overlay

        img = output["image"][0].permute(1, 2, 0).numpy()
        heat = output["map"][0].numpy()
        vmax = 2 * self.threshold if self.threshold else None
        overlay = heatmap_overlay(img, heat, 0.0, vmax)
        return {"score": float(output["score"][0]), "heatmap_png": encode_png(overlay), "threshold": self.threshold}
