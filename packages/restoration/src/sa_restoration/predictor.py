"""The restoration predictor: image in, super-resolved PNG out; shared by ``sa-restoration predict`` and the server.

Large images go through :func:`~sa_restoration.tiling.tiled_forward` (bounded memory); ``self_ensemble``
averages the 8 flips/transposes (the "+" results of SR papers).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from shared_attention.serving import FieldSpec, InputError, IOSpec, PredictorBase, load_run_model

__all__ = ["RestorationPredictor", "SRPredictor", "load_weights_any", "self_ensemble"]


def load_weights_any(path: str | Path) -> dict[str, torch.Tensor]:
    """Weights from a run folder, a ``.safetensors`` file or an official ``.pth`` (``params_ema``/``params``)."""
    from shared_attention.engine.checkpoint import load_weights

    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such weights file")
    if p.suffix == ".safetensors":
        return load_weights(p)
    from .official import read_official_state_dict

    return read_official_state_dict(p)[0]


def self_ensemble(fn: Any, x: torch.Tensor) -> torch.Tensor:
    """Mean of ``fn`` over the 8 dihedral transforms of ``x`` (B, C, H, W), each transformed back."""
    outs = []
    for rot in range(4):
        for flip in (False, True):
            t = torch.rot90(x, rot, dims=(2, 3))
            t = t.flip(3) if flip else t
            y = fn(t)
            y = y.flip(3) if flip else y
            outs.append(torch.rot90(y, -rot, dims=(2, 3)))
    return torch.stack(outs).mean(0)


class RestorationPredictor(PredictorBase):
    """HAT super-resolution predictor.

    Args:
        model: the HAT (eval mode).
        upscale: its scale. window_size: its window (tile alignment).
        tile: LR tile size for tiled inference (``0``: whole image unless it exceeds ``max_whole_pixels``).
        overlap: LR overlap between tiles. ensemble: x8 self-ensemble. device: where to run.
        max_pixels: refuse larger inputs (decompression bombs / memory).
    """

    model: nn.Module
    domain: ClassVar[str] = "restoration"
    io_spec: ClassVar[IOSpec] = IOSpec(
        inputs=(
            FieldSpec(
                "image",
                "image",
                ("image/png", "image/jpeg", "image/bmp", "image/tiff", "image/webp"),
                "(H, W, 3) RGB",
                "low-resolution image; grayscale/alpha/16-bit are converted",
                {"max_pixels": 16_000_000},
            ),
        ),
        outputs=(FieldSpec("image", "image", ("image/png",), "(sH, sW, 3) uint8 RGB", "super-resolved image"),),
    )

    def __init__(
        self,
        model: nn.Module,
        upscale: int,
        window_size: int = 16,
        tile: int = 0,
        overlap: int = 32,
        ensemble: bool = False,
        device: str | torch.device = "cpu",
        max_pixels: int = 16_000_000,
        max_whole_pixels: int = 512 * 512,
    ) -> None:
        self.model = model.eval().to(device)
        self.upscale = upscale
        self.window_size = window_size
        self.tile = tile
        self.overlap = overlap
        self.ensemble = ensemble
        self.device = torch.device(device)
        self.max_pixels = max_pixels
        self.max_whole_pixels = max_whole_pixels

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> RestorationPredictor:
        """From a run folder written by ``sa-restoration train``."""
        from .config import RestorationConfig
        from .models import build_model

        run, cfg, model = load_run_model(run_dir, RestorationConfig, build_model, cls.domain)
        ws = int(getattr(model, "window_size", 16))
        pred = cls(model, cfg.model.upscale, ws, device=device, **kwargs)
        pred.run = run
        return pred

    @classmethod
    def from_official(
        cls, path: str | Path, variant: str = "hat", upscale: int = 4, device: str | torch.device = "cpu", **kwargs: Any
    ) -> RestorationPredictor:
        """From an official HAT ``.pth`` with a variant's constructor arguments."""
        from .models.hat import HAT_VARIANTS
        from .official import load_official

        if variant not in HAT_VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; choose from {sorted(HAT_VARIANTS)}")
        model = load_official(path, upscale=upscale, **HAT_VARIANTS[variant])
        return cls(model, upscale, int(getattr(model, "window_size", 16)), device=device, **kwargs)

    def preprocess(self, raw: Any) -> torch.Tensor:
        """Bytes, a path or an ``(H, W, 3)`` float array in [0, 1] -> ``(1, 3, H, W)`` tensor."""
        from .imageio import ImageError, read_image

        if isinstance(raw, np.ndarray):
            img = raw
            if img.ndim != 3 or img.shape[2] != 3:
                raise InputError(f"expected an (H, W, 3) array, got {img.shape}", "image")
            if not np.isfinite(img).all():
                raise InputError("array contains NaN or Inf", "image")
        else:
            try:
                img = read_image(raw, max_pixels=self.max_pixels)
            except ImageError as exc:
                raise InputError(str(exc), "image") from exc
        if img.shape[0] * img.shape[1] > self.max_pixels:
            raise InputError(f"{img.shape[1]}x{img.shape[0]} exceeds the limit of {self.max_pixels} pixels", "image")
        t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
        return t.to(self.device)  # (1, 3, H, W)

    cost_unit: ClassVar[str] = "pixels"

    def _tile_for(self, height: int, width: int) -> int:
        """The LR tile size used for an ``height`` x ``width`` input (0: whole image)."""
        return self.tile or (0 if height * width <= self.max_whole_pixels else 256)

    def cost(self, meta: Mapping[str, Any]) -> float | None:
        """Work of one request in input pixels, counting tile overlaps (x8 with self-ensemble)."""
        w, h = meta.get("width"), meta.get("height")
        if not w or not h:
            return None
        w, h = int(w), int(h)
        tile = self._tile_for(h, w)
        if tile and (h > tile or w > tile):
            from .tiling import tile_starts

            rows = len(tile_starts(h, tile, self.overlap, self.window_size))
            cols = len(tile_starts(w, tile, self.overlap, self.window_size))
            pixels = float(rows * min(tile, h) * cols * min(tile, w))
        else:
            pixels = float(h * w)
        return pixels * (8 if self.ensemble else 1)

    def memory_bytes(self, meta: Mapping[str, Any]) -> int | None:
        """Peak bytes of one request: float32 input, the scaled output and its blend weights, the PNG buffers."""
        w, h = meta.get("width"), meta.get("height")
        if not w or not h:
            return None
        lr = int(w) * int(h)
        sr = lr * self.upscale * self.upscale
        # input (3 floats) + output (3) + tile weights (1) + uint8 RGB copy and PNG encoder buffer (~2 x 3 bytes)
        return lr * 3 * 4 + sr * (3 * 4 + 4 + 6)

    @torch.no_grad()
    def predict(self, batch: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, 3, sH, sW)``, tiled when asked or when the image is large."""
        from .tiling import tiled_forward

        H, W = batch.shape[-2:]
        tile = self._tile_for(H, W)

        def run(x: torch.Tensor) -> torch.Tensor:
            if tile and (x.shape[-2] > tile or x.shape[-1] > tile):
                return tiled_forward(
                    self.model, x, self.upscale, tile=tile, overlap=self.overlap, align=self.window_size
                )
            return self.model(x)

        return self_ensemble(run, batch) if self.ensemble else run(batch)

    def postprocess(self, output: torch.Tensor) -> bytes:
        """The first image of the batch as PNG bytes."""
        from .imageio import encode_png

        img = output[0].float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        return encode_png(img)


#: deprecated name (one release)
SRPredictor = RestorationPredictor
