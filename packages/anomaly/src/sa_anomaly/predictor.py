"""The anomaly predictor: image in, ``{"score", "heatmap_png", "threshold", "heatmap_min", "heatmap_max"}`` out;
shared by ``sa-anomaly predict`` and the server. ``predict`` works on batches of same-size images; ``postprocess``
answers for one image.

The whole image is scored, by tiling: the image is scaled so that its shorter side is ``resize`` (the scale the
model was trained at, aspect kept), covered by ``image_size`` crops that overlap by half a crop, each crop is
scored as the model scores one image, the crop maps are averaged where they overlap, and the image score is the
maximum of the smoothed stitched map (FOD's single-crop rule). The map is then brought back to the input's
``(H, W)``. Tiling keeps small defects at the training scale (resizing a long image into one crop would shrink
them) at the price of one model pass per crop: :meth:`AnomalyPredictor.cost` estimates the work before decoding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import numpy as np
import torch
from torch import nn

from shared_attention.serving import FieldSpec, InputError, IOSpec, PredictorBase, load_run_model
from shared_attention.serving.control import check_cancelled

if TYPE_CHECKING:
    from .models.fod import FODAnomalyModel

__all__ = ["AnomalyPredictor", "THRESHOLD_FILE"]

THRESHOLD_FILE = "threshold.json"


class AnomalyPredictor(PredictorBase):
    """FOD anomaly predictor over the whole image (tiling; see the module docstring).

    A square image at the training scale is one crop and scores exactly as a single crop did before tiling.
    With ``resize > image_size`` (a margin that training and ``evaluate`` crop away) the margin is scored too.
    The reference features are per crop position: for aligned objects, send images framed like the training
    images; for textures any size works.

    Args:
        model: a :class:`~sa_anomaly.models.fod.FODAnomalyModel` with its reference features.
        threshold: image-score threshold (``None``: unknown; the response then has no verdict).
        resize: the shorter side the image is scaled to before tiling (the training ``data.resize``; default
            ``model.image_size``).
        smooth_sigma: Gaussian smoothing of the (model-scale) map for the image score (4 in FOD).
        device: where to run. max_pixels: refuse larger uploads.
        overlap: share of a crop that neighbouring crops have in common, in ``[0, 1)``.
        tile_batch: most crops per model pass (memory bound).
        pixels_per_crop: input pixels whose decoding, resizing and heatmap encoding cost about one crop pass,
            for :meth:`cost` (``None``: count crops only). The default, 300,000, was measured with the ``cpu``
            config on one CPU thread (one 128 px crop about 75 ms; a 4096 x 4096 upload about 3.9 s of pixel
            work); larger backbones make crops dearer, GPUs make them cheaper.
    """

    model: nn.Module
    domain: ClassVar[str] = "anomaly"
    cost_unit: ClassVar[str] = "crops"
    io_spec: ClassVar[IOSpec] = IOSpec(
        inputs=(
            FieldSpec(
                "image",
                "image",
                ("image/png", "image/jpeg", "image/bmp", "image/tiff"),
                "(H, W, 3) RGB",
                "image of the trained category; scored whole: scaled to the training scale and tiled",
                {"max_pixels": 4096 * 4096},
            ),
        ),
        outputs=(
            FieldSpec("score", "json", ("application/json",), "float", "image anomaly score (max of the smoothed map)"),
            FieldSpec(
                "heatmap_png",
                "image",
                ("image/png",),
                "(H, W, 3) uint8",
                "JET anomaly map blended over the image, the input's size and registered to it",
            ),
            FieldSpec(
                "threshold",
                "json",
                ("application/json",),
                "float | null",
                "decision threshold chosen on the validation split, if known",
            ),
            FieldSpec(
                "heatmap_min", "json", ("application/json",), "float", "map value shown as the coldest colour (blue)"
            ),
            FieldSpec(
                "heatmap_max", "json", ("application/json",), "float", "map value shown as the hottest colour (red)"
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
        overlap: float = 0.5,
        tile_batch: int = 16,
        pixels_per_crop: float | None = 300_000.0,
        fit: str = "crop",
    ) -> None:
        if fit not in ("crop", "resize"):
            raise ValueError(f"fit must be 'crop' or 'resize', got {fit!r}")
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if tile_batch < 1:
            raise ValueError(f"tile_batch must be at least 1, got {tile_batch}")
        if pixels_per_crop is not None and not pixels_per_crop > 0:
            raise ValueError(f"pixels_per_crop must be positive or None, got {pixels_per_crop}")
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.threshold = threshold
        self.image_size = int(cast("FODAnomalyModel", model).image_size)
        self.resize = resize or self.image_size
        self.smooth_sigma = smooth_sigma
        self.max_pixels = max_pixels
        self.overlap = overlap
        self.tile_batch = tile_batch
        self.pixels_per_crop = pixels_per_crop
        self.fit = fit

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
        kwargs.setdefault("fit", cfg.data.fit)
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

    def model_size(self, height: int, width: int) -> tuple[int, int]:
        """``(h, w)`` of an ``height x width`` image at the model's scale (shorter side ``resize``; with
        ``fit="resize"``, as in training on such data, the whole image at ``image_size`` squared: one crop)."""
        from .data import scaled_size

        if self.fit == "resize":
            return self.image_size, self.image_size
        return scaled_size(height, width, self.resize, self.image_size)

    def _scale(self, img: np.ndarray) -> np.ndarray:
        """An ``(H, W, 3)`` image at the model's scale (:meth:`model_size`)."""
        from .data import resize_shorter

        if self.fit == "resize":
            import cv2

            s = self.image_size
            inter = cv2.INTER_AREA if img.shape[0] * img.shape[1] >= s * s else cv2.INTER_LINEAR
            return cv2.resize(img, (s, s), interpolation=inter)
        return resize_shorter(img, self.resize, self.image_size)

    def tiles(self, height: int, width: int) -> list[tuple[int, int]]:
        """``(top, left)`` of the crops that cover an image of ``(height, width)`` at the model's scale."""
        from .data import tile_starts

        ys = tile_starts(height, self.image_size, self.overlap)
        xs = tile_starts(width, self.image_size, self.overlap)
        return [(t, left) for t in ys for left in xs]

    def cost(self, meta: Mapping[str, Any]) -> float | None:
        """Work units of one request from header-only ``meta``, in crop passes: the model crops its image needs
        (:meth:`tiles` at the model's scale) plus ``W * H / pixels_per_crop`` for the pixel work (decoding,
        resizing, the input-sized heatmap PNG), which dominates for large uploads scaled down to few crops.

        Args:
            meta: ``{"width": W, "height": H}`` of the upload (other keys are ignored).

        Returns:
            The crop-pass count, or ``None`` when ``meta`` lacks the width or the height.

        Raises:
            ValueError: naming ``width`` / ``height`` when one is not a positive whole number.
        """
        if "width" not in meta or "height" not in meta:
            return None
        size = []
        for key in ("height", "width"):
            v = meta[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"meta {key}: expected a positive whole number of pixels, got {v!r}")
            size.append(int(v))
        crops = float(len(self.tiles(*self.model_size(size[0], size[1]))))
        pixels = size[0] * size[1] / self.pixels_per_crop if self.pixels_per_crop else 0.0
        return crops + pixels

    def preprocess(self, raw: Any) -> dict[str, torch.Tensor]:
        """Bytes, a path or an ``(H, W, 3)`` float array in [0, 1] -> ``{"image": (1, 3, H, W)`` on the CPU (for
        the overlay), ``"input": (1, 3, h, w)`` at the model's scale on the model's device``}``."""
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
        small = self._scale(img)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))[None],  # (1, 3, H, W)
            "input": torch.from_numpy(np.ascontiguousarray(small.transpose(2, 0, 1)))[None].to(self.device),
        }

    def _model_input(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 3, h, w)`` at the model's scale (the preprocessing resize, per image)."""

        h, w = self.model_size(images.shape[-2], images.shape[-1])
        if (h, w) == tuple(images.shape[-2:]):
            return images
        arr = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
        small = np.stack([self._scale(a) for a in arr])
        return torch.from_numpy(np.ascontiguousarray(small.transpose(0, 3, 1, 2)))

    @torch.no_grad()
    def predict(self, batch: torch.Tensor | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Scores whole images by overlapping crops.

        Args:
            batch: :meth:`preprocess` output (or several concatenated along dim 0), or ``(B, 3, H, W)`` images
                in [0, 1] (resized here).

        Returns:
            ``{"image": (B, 3, H, W), "map": (B, H, W) registered to the input, "score": (B,)}``.
        """
        import torch.nn.functional as F

        from .metrics import image_scores
        from .task import score_images

        if isinstance(batch, Mapping):
            images = batch["image"]
            x = batch["input"] if "input" in batch else self._model_input(images)
        else:
            images = batch
            x = self._model_input(batch)
        x = x.to(self.device)  # (B, 3, h, w)
        b, _, h, w = x.shape
        s = self.image_size
        acc = torch.zeros(b, h, w, device=self.device)
        count = torch.zeros(h, w, device=self.device)
        tiles = self.tiles(h, w)
        per_pass = max(1, self.tile_batch // b)
        crop_scores: list[torch.Tensor] = []  # models that score images themselves (PatchCore): max over crops
        for i in range(0, len(tiles), per_pass):
            check_cancelled()
            chunk = tiles[i : i + per_pass]
            crops = torch.cat([x[:, :, t : t + s, left : left + s] for t, left in chunk])  # (n * B, 3, S, S)
            crop_maps, given = score_images(self.model, crops)
            maps = crop_maps.float().view(len(chunk), b, s, s)
            if given is not None:
                crop_scores.append(given.float().view(len(chunk), b).amax(0).cpu())
            for m, (t, left) in zip(maps, chunk):
                acc[:, t : t + s, left : left + s] += m
                count[t : t + s, left : left + s] += 1
        stitched = (acc / count).cpu()  # (B, h, w): the mean of the crop maps over each pixel
        if crop_scores:
            scores = torch.stack(crop_scores).amax(0)
        else:
            scores = torch.from_numpy(image_scores(stitched.numpy(), self.smooth_sigma))
        full = tuple(images.shape[-2:])
        if (h, w) != full:  # back to the input's pixels (half-pixel centres: registered as the resize was)
            stitched = F.interpolate(stitched[:, None], size=full, mode="bilinear", align_corners=False)[:, 0]
        return {"image": images.cpu(), "map": stitched, "score": scores}

    def heatmap_range(self, heat: np.ndarray) -> tuple[float, float]:
        """The map values at the two ends of the colour scale: 0 and twice the threshold (else the map's max)."""
        hi = 2 * self.threshold if self.threshold else float(np.max(heat))
        return 0.0, float(hi)

    def postprocess(self, output: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The first item: ``{"score", "heatmap_png", "threshold", "heatmap_min", "heatmap_max"}``.

        ``heatmap_png`` is the input's size; ``heatmap_min`` / ``heatmap_max`` are the map values drawn as the
        coldest / hottest JET colour (also stored in the PNG as ``tEXt``), for a legend.
        """
        from .imageio import encode_png, heatmap_overlay

        img = output["image"][0].permute(1, 2, 0).numpy()
        heat = output["map"][0].numpy()
        lo, hi = self.heatmap_range(heat)
        overlay = heatmap_overlay(img, heat, lo, hi)
        text = {"heatmap_min": repr(lo), "heatmap_max": repr(hi), "colormap": "jet", "alpha": "0.5"}
        return {
            "score": float(output["score"][0]),
            "heatmap_png": encode_png(overlay, text=text),
            "threshold": self.threshold,
            "heatmap_min": lo,
            "heatmap_max": hi,
        }

    def panel(self, output: dict[str, torch.Tensor], index: int = 0) -> np.ndarray:
        """A preview of item ``index``: ``input | anomaly map`` with titles and a colour bar, ``(H', W', 3)``
        float RGB (the score, and the verdict when a threshold is known, in the map's title)."""
        from .imageio import heatmap_overlay, titled_panels

        img = output["image"][index].permute(1, 2, 0).numpy()
        heat = output["map"][index].numpy()
        lo, hi = self.heatmap_range(heat)
        score = float(output["score"][index])
        verdict = "" if self.threshold is None else (" ANOMALOUS" if score >= self.threshold else " normal")
        return titled_panels(
            [img, heatmap_overlay(img, heat, lo, hi)],
            ["input", f"anomaly map, score {score:.3g}{verdict}"],
            legend=(lo, hi),
            legend_label="map value",
        )
