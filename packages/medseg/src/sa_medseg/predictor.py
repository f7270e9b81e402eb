"""The medseg predictor: a NIfTI volume in -> a NIfTI label map out (the input's affine kept), or a PNG
slice in -> a PNG label map + an overlay PNG; shared by ``sa-medseg predict`` and the server."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np
import torch
from torch import nn

from shared_attention.serving import FieldSpec, InputError, IOSpec, PredictorBase, load_run_model

__all__ = ["MedsegPredictor", "SegPredictor", "SegInput"]

_MAX_VOXELS = 512 * 512 * 512


def _nifti_error(message: str) -> InputError:
    """The predictor's error for an unreadable NIfTI (with a hint when it is not NIfTI at all)."""
    hint = " (expected a 3D NIfTI .nii/.nii.gz or a PNG slice)" if "NIfTI-1 file" in message else ""
    return InputError(message + hint, "volume")


class SegInput:
    """A validated input: ``image`` ``(S, H, W)`` in [0, 1] plus how to answer (NIfTI affine or PNG)."""

    def __init__(self, image: np.ndarray, kind: str, affine: np.ndarray | None = None) -> None:
        self.image = image
        self.kind = kind
        self.affine = affine


class MedsegPredictor(PredictorBase):
    """Slice-wise 2D segmentation of volumes and single slices.

    Args:
        model: ParaTransCNN or VM-UNet (eval mode). class_names: names, index 0 = background.
        windowing: intensity windowing of NIfTI inputs (``ct``, ``mr`` or ``none``; PNGs are scaled by 255).
        multiple: H/W multiple the network needs. inference: ``slice`` or ``sliding``.
        roi: sliding-window size. batch_size: slices per forward. device: where to run.
        max_voxels: refuse larger volumes.
    """

    model: nn.Module
    domain: ClassVar[str] = "medseg"
    io_spec: ClassVar[IOSpec] = IOSpec(
        inputs=(
            FieldSpec(
                "volume",
                "volume",
                ("application/gzip", "application/octet-stream", "image/png"),
                "NIfTI (X, Y, Z) or PNG (H, W)",
                "3D NIfTI volume (.nii / .nii.gz), or one 2D slice as PNG",
                {"max_voxels": _MAX_VOXELS, "dims": 3},
            ),
        ),
        outputs=(
            FieldSpec(
                "labels_nifti",
                "volume",
                ("application/gzip",),
                "(X, Y, Z) uint8",
                "label map with the input's affine (NIfTI input)",
            ),
            FieldSpec("labels_png", "image", ("image/png",), "(H, W) uint8", "label map (PNG input)"),
            FieldSpec(
                "overlay_png",
                "image",
                ("image/png",),
                "(H, W, 3) uint8",
                "labels over the slice: a PNG input's size and orientation; of a NIfTI the middle slice of its "
                "third axis in radiological display",
            ),
            FieldSpec("classes", "json", ("application/json",), "[str]", "class names by label id"),
        ),
    )

    def __init__(
        self,
        model: nn.Module,
        class_names: list[str] | tuple[str, ...],
        windowing: str = "none",
        multiple: int = 32,
        inference: str = "slice",
        roi: tuple[int, int] = (224, 224),
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        max_voxels: int = _MAX_VOXELS,
    ) -> None:
        self.model = model.eval().to(device)
        self.class_names = list(class_names)
        self.windowing = windowing
        self.multiple = multiple
        self.inference = inference
        self.roi = cast(tuple[int, int], tuple(roi))
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.max_voxels = max_voxels

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu", **kwargs: Any) -> MedsegPredictor:
        """From a run folder written by ``sa-medseg train``."""
        from shared_attention.engine.config import replace

        from .config import MedsegConfig
        from .models import build_model
        from .task import input_multiple

        def no_pretrained(cfg: Any) -> Any:  # the run's weights replace them: do not require the file
            return replace(cfg, **{"model.resnet_weights": None}) if cfg.model.resnet_weights else cfg

        run, cfg, model = load_run_model(run_dir, MedsegConfig, build_model, cls.domain, no_pretrained)
        pred = cls(
            model,
            cfg.data.class_names,
            cfg.data.windowing,
            input_multiple(model),
            cfg.data.inference,
            cfg.data.patch_size,
            device=device,
            **kwargs,
        )
        pred.run = run
        return pred

    @classmethod
    def from_official(
        cls,
        path: str | Path,
        family: str = "vmunet",
        class_names: list[str] | None = None,
        windowing: str = "none",
        device: str | torch.device = "cpu",
        **official_kwargs: Any,
    ) -> MedsegPredictor:
        """From an official ParaTransCNN / VM-UNet checkpoint (official constructor arguments)."""
        from .official import load_official_paratranscnn, load_official_vmunet
        from .task import input_multiple

        if family == "vmunet":
            model: nn.Module = load_official_vmunet(path, **official_kwargs)
        elif family == "paratranscnn":
            model = load_official_paratranscnn(path, **official_kwargs)
        else:
            raise ValueError(f"unknown family {family!r}; use vmunet or paratranscnn")
        n = int(getattr(model, "num_classes", 9))
        names = class_names or ["background"] + [f"class_{i}" for i in range(1, n)]
        return cls(model, names, windowing, input_multiple(model), device=device)

    cost_unit: ClassVar[str] = "voxels"

    def cost(self, meta: Mapping[str, Any]) -> float | None:
        """Work of one request from its header: voxels of a volume (sliding window: linear), pixels of a slice."""
        n = meta.get("voxels") or meta.get("pixels")
        return float(n) if n else None

    def preprocess(self, raw: Any) -> SegInput:
        """NIfTI/PNG bytes, a path, a ``(S, H, W)`` / ``(H, W)`` array or ``{"image": array, "affine": array}``.

        A NIfTI input's header is checked (voxel count against ``max_voxels``, datatype, size) before its
        voxels are decompressed, and only the declared bytes are inflated (see
        :func:`~sa_medseg.data.read_nifti_bytes`); a file path is streamed, not read whole first.
        """
        from .data import DataError, read_nifti_bytes, read_nifti_file

        affine = None
        if isinstance(raw, (str, Path)):
            p = Path(raw)
            if not p.is_file():
                raise InputError(f"{p}: no such file", "volume")
            with p.open("rb") as f:
                magic = f.read(8)
            if not magic:
                raise InputError("empty file", "volume")
            if magic == b"\x89PNG\r\n\x1a\n":
                raw = p.read_bytes()
            else:
                try:
                    vol, affine, _ = read_nifti_file(p, max_voxels=self.max_voxels)
                except DataError as exc:
                    raise _nifti_error(str(exc).removeprefix(f"{p}: ")) from exc
                return self._finish(vol, "nifti", affine)
        if isinstance(raw, dict):
            affine = raw.get("affine")
            raw = raw.get("image")
        if isinstance(raw, (bytes, bytearray, memoryview)):
            data = bytes(raw)
            if not data:
                raise InputError("empty file", "volume")
            if data[:8] == b"\x89PNG\r\n\x1a\n":
                return SegInput(self._read_png(data)[None], "png")
            try:
                vol, affine, _ = read_nifti_bytes(data, max_voxels=self.max_voxels)
            except DataError as exc:
                raise _nifti_error(str(exc)) from exc
            kind = "nifti"
        elif isinstance(raw, np.ndarray):
            if raw.ndim == 2:
                raw = raw[None]
            if raw.ndim != 3:
                raise InputError(f"expected a (S, H, W) or (H, W) array, got shape {raw.shape}", "volume")
            if not np.issubdtype(raw.dtype, np.number) or np.iscomplexobj(raw):
                raise InputError(f"unsupported dtype {raw.dtype}", "volume")
            if not np.all(np.isfinite(raw)):
                raise InputError("array contains NaN or Inf", "volume")
            vol, kind = raw.astype(np.float32), "array"
        else:
            raise InputError(f"unsupported input type {type(raw).__name__}", "volume")
        return self._finish(vol, kind, affine)

    def _finish(self, vol: np.ndarray, kind: str, affine: Any) -> SegInput:
        """Size checks and windowing of a read volume ``(S, H, W)``."""
        from .data import window

        if vol.size > self.max_voxels:
            raise InputError(f"volume of {vol.size:,} voxels exceeds the limit of {self.max_voxels:,}", "volume")
        if min(vol.shape[1:]) < 8:
            raise InputError(f"slices of {vol.shape[1:]} pixels are too small (need at least 8x8)", "volume")
        vol = window(vol, self.windowing)  # type: ignore[arg-type]
        return SegInput(vol, kind, None if affine is None else np.asarray(affine, dtype=np.float64))

    def _read_png(self, data: bytes) -> np.ndarray:
        import cv2

        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise InputError("cannot decode PNG", "volume")
        if arr.ndim == 3:
            arr = cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2GRAY)
        if arr.shape[0] * arr.shape[1] > 4096 * 4096:
            raise InputError(f"PNG of {arr.shape[1]}x{arr.shape[0]} is too large", "volume")
        scale = 65535.0 if arr.dtype == np.uint16 else 255.0
        return arr.astype(np.float32) / scale

    @torch.no_grad()
    def predict(self, batch: SegInput | torch.Tensor) -> dict[str, Any]:
        """Label map(s). A :class:`SegInput` gives ``{"labels": (S, H, W), "input": SegInput}``; a tensor batch
        ``(B, S, H, W)`` of same-shape volumes (or ``(B, 1, H, W)`` slices) gives ``{"labels": (B, S, H, W)}``."""
        from .inference import segment_volume

        def run(vol: torch.Tensor) -> torch.Tensor:
            return segment_volume(
                self.model,
                vol,
                self.batch_size,
                self.multiple,
                self.inference,  # type: ignore[arg-type]
                self.roi,
            )

        if isinstance(batch, SegInput):
            labels = run(torch.from_numpy(np.ascontiguousarray(batch.image)))
            return {"labels": labels.numpy().astype(np.uint8), "input": batch}
        return {"labels": torch.stack([run(v) for v in batch]).numpy().astype(np.uint8)}

    def postprocess(self, output: dict[str, Any]) -> dict[str, Any]:
        """``{"labels_nifti"}`` for volumes, ``{"labels_png", "overlay_png"}`` for slices, plus ``classes``."""
        from .data import nifti_bytes
        from .overlay import encode_png, overlay, to_display

        labels: np.ndarray = output["labels"]
        inp: SegInput | None = output.get("input")
        res: dict[str, Any] = {"classes": list(self.class_names)}
        if inp is not None and inp.kind == "png":
            res["labels_png"] = encode_png(labels[0])
            res["overlay_png"] = encode_png(overlay(inp.image[0], labels[0]))
            return res
        if labels.ndim == 4:  # tensor batch: first item
            labels = labels[0]
        affine = inp.affine if inp is not None and inp.affine is not None else np.eye(4)
        res["labels_nifti"] = nifti_bytes(labels, affine)
        if inp is not None:
            # the middle slice along the NIfTI's third voxel axis (the one segmented slice by slice), shown in
            # the radiological display its affine gives (see overlay.to_display); arrays: as stored
            mid = labels.shape[0] // 2
            res["overlay_png"] = encode_png(to_display(overlay(inp.image[mid], labels[mid]), inp.affine))
        return res


#: deprecated name (one release)
SegPredictor = MedsegPredictor
