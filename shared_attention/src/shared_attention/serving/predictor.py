"""Predictors: load a run folder (or official weights), preprocess raw input, predict, postprocess.

The same predictor object backs a package's ``predict`` CLI and the HTTP server, so both accept the same
inputs and reject bad ones with the same :class:`InputError` message. ``io_spec`` describes the inputs and
outputs so the server can publish them in ``/v1/info`` and build its upload limits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import torch

from ..engine.checkpoint import MODEL_FILE, CheckpointError, load_weights

__all__ = [
    "FieldSpec",
    "IOSpec",
    "InputError",
    "Predictor",
    "PredictorBase",
    "RunFolder",
    "load_run_model",
    "read_run_folder",
]

Kind = Literal["image", "audio", "volume", "json", "text", "tensor"]


class InputError(ValueError):
    """Raw input a predictor cannot accept; the message says which field and why (HTTP 4xx)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


@dataclass(frozen=True)
class FieldSpec:
    """One input or output of a predictor.

    Attributes:
        name: field name (the multipart / JSON field).
        kind: ``image``, ``audio``, ``volume``, ``json``, ``text`` or ``tensor``.
        media_types: accepted or produced MIME types (``image/png``...).
        shape: human-readable shape, e.g. ``"(H, W, 3) uint8"``.
        description: one line for docs and the web page.
        constraints: e.g. ``{"sample_rate": 8000, "channels": 1, "max_pixels": 4096**2}``.
    """

    name: str
    kind: Kind
    media_types: tuple[str, ...] = ()
    shape: str = ""
    description: str = ""
    constraints: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class IOSpec:
    """Inputs and outputs of a predictor, serialisable to JSON for ``/v1/info``."""

    inputs: tuple[FieldSpec, ...]
    outputs: tuple[FieldSpec, ...]

    @property
    def view(self) -> str:
        """How a user interface should present this predictor, decided from the kinds of its fields only:

        - ``image-to-image``: an image in, an image out (before / after);
        - ``image-heatmap``: an image in, a score and an image map out (overlay on the input);
        - ``volume-segmentation``: a volume (or slice) in, label maps out;
        - ``audio-sources``: audio in, audio tracks out;
        - ``json-scores``: JSON rows in, a ``scores`` list out (a ranked table);
        - ``json``: anything else with JSON input; ``file``: anything else.
        """
        first = self.inputs[0].kind if self.inputs else ""
        out_kinds = {f.kind for f in self.outputs}
        out_names = {f.name for f in self.outputs}
        if first == "audio" and "audio" in out_kinds:
            return "audio-sources"
        if first == "volume":
            return "volume-segmentation"
        if first == "image" and "image" in out_kinds:
            return "image-heatmap" if "json" in out_kinds else "image-to-image"
        if first == "json":
            return "json-scores" if "scores" in out_names else "json"
        return "file"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (with :attr:`view`)."""

        def one(f: FieldSpec) -> dict[str, Any]:
            return {
                "name": f.name,
                "kind": f.kind,
                "media_types": list(f.media_types),
                "shape": f.shape,
                "description": f.description,
                "constraints": dict(f.constraints),
            }

        return {"inputs": [one(f) for f in self.inputs], "outputs": [one(f) for f in self.outputs], "view": self.view}


@runtime_checkable
class Predictor(Protocol):
    """What CLIs and the server call.

    Attributes:
        domain: the domain name (``"restoration"``).
        io_spec: the inputs and outputs.
    """

    domain: ClassVar[str]
    io_spec: ClassVar[IOSpec]

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> Predictor:
        """Builds the predictor from a run folder (``config.yaml``, ``metadata.json``, ``model.safetensors``)."""
        ...

    def preprocess(self, raw: Any) -> Any:
        """Validates and converts raw input (bytes, arrays, dicts) to a model batch; raises :class:`InputError`."""
        ...

    def predict(self, batch: Any) -> Any:
        """Runs the model (no grad, eval mode)."""
        ...

    def postprocess(self, output: Any) -> Any:
        """Converts model output to the response (bytes, arrays, JSON-ready dicts)."""
        ...

    def info(self) -> dict[str, Any]:
        """Model name, version, checkpoint hash and the I/O spec (for ``/v1/info``)."""
        ...


@dataclass(frozen=True)
class RunFolder:
    """The parts of a finished run folder a predictor needs."""

    path: Path
    config: dict[str, Any]
    metadata: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    weights_sha256: str


def read_run_folder(run_dir: str | Path, device: str | torch.device = "cpu") -> RunFolder:
    """Reads ``config.yaml``, ``metadata.json`` and ``model.safetensors`` of a run, with errors naming the file."""
    import yaml

    path = Path(run_dir)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: run folder does not exist")
    cfg_path, meta_path, weights_path = path / "config.yaml", path / "metadata.json", path / MODEL_FILE
    for p in (cfg_path, meta_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing (is {path} a finished run folder?)")
    try:
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{cfg_path}: invalid YAML: {exc}") from exc
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{meta_path}: invalid JSON: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(metadata, dict):
        raise ValueError(f"{path}: config.yaml and metadata.json must each hold a mapping")
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    try:
        state = load_weights(weights_path, device)
    except CheckpointError:
        raise
    return RunFolder(path, config, metadata, state, digest)


def load_run_model(
    run_dir: str | Path,
    config_cls: type[Any],
    build_model: Callable[[Any], torch.nn.Module],
    domain: str | None = None,
    prepare: Callable[[Any], Any] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[RunFolder, Any, torch.nn.Module]:
    """Reads a run folder and rebuilds its model: ``(run, config, model)`` with the weights loaded strictly.

    Args:
        run_dir: the run folder (written by ``train`` or ``convert``).
        config_cls: the domain's config dataclass (``config.yaml`` is loaded into it).
        build_model: ``build_model(cfg) -> nn.Module`` (random init; the run's weights replace it).
        domain: the expected domain; a run folder of another domain is refused in one line naming both.
        prepare: applied to the config before building (e.g. dropping a pretrained-weights path).
        device: where the weights are read to.

    Raises:
        FileNotFoundError / ValueError / CheckpointError: one line naming the file and the problem.
    """
    from ..engine.config import ConfigError, load_config

    run = read_run_folder(run_dir, device)
    found = run.metadata.get("task")
    if domain is not None and found is not None and str(found).split("-")[0] != domain:
        raise ValueError(f"{run.path}: a {found!r} run folder, but this is the {domain!r} domain")
    try:
        cfg = load_config(config_cls, run.path / "config.yaml")
    except ConfigError as exc:
        raise ValueError(f"{exc} (is {run.path} a {domain or config_cls.__name__} run folder?)") from exc
    if prepare is not None:
        cfg = prepare(cfg)
    model = build_model(cfg)
    try:
        model.load_state_dict(run.state_dict, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ValueError(f"{run.path / MODEL_FILE}: does not match its config.yaml: {detail}") from exc
    return run, cfg, model


class PredictorBase:
    """Convenience base: ``__call__`` chains the three stages; ``info`` fills in from the run folder.

    Subclasses set ``domain`` and ``io_spec`` and implement ``load``, ``preprocess``, ``predict`` and
    ``postprocess``. ``run`` (a :class:`RunFolder`) and ``model`` are set by ``load``.
    """

    domain: ClassVar[str] = ""
    io_spec: ClassVar[IOSpec] = IOSpec((), ())
    run: RunFolder | None = None
    model: torch.nn.Module | None = None

    def preprocess(self, raw: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def predict(self, batch: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def postprocess(self, output: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def precision(self) -> str:
        """``fp32`` or ``bf16``: the precision the model runs in (see :meth:`set_precision`)."""
        from .precision import model_precision

        return model_precision(self.model) if self.model is not None else "fp32"

    def set_precision(self, precision: str) -> None:
        """Runs the model in ``precision``: ``fp32`` (default, exact) or ``bf16`` (autocast; matrix products and
        convolutions in bfloat16, outputs back to float32). See :mod:`shared_attention.serving.precision`.

        Raises:
            ValueError: an unknown precision, or a predictor without a model.
        """
        from .precision import set_model_precision

        if self.model is None:
            raise ValueError(f"{type(self).__name__}: no model loaded, cannot set precision {precision!r}")
        set_model_precision(self.model, precision)

    @property
    def compiled(self) -> bool:
        """Whether the model's forward runs through ``torch.compile`` (see :meth:`set_compile`)."""
        from .precision import model_compiled

        return model_compiled(self.model) if self.model is not None else False

    def set_compile(self, enabled: bool = True) -> None:
        """Runs the model's forward through ``torch.compile`` (inductor), or eagerly again: same weights and
        outputs up to float rounding; the first call per input shape compiles. See
        :mod:`shared_attention.serving.precision`.

        Raises:
            ValueError: a predictor without a model.
        """
        from .precision import set_model_compiled

        if self.model is None:
            raise ValueError(f"{type(self).__name__}: no model loaded, cannot compile it")
        set_model_compiled(self.model, enabled)

    def cost(self, meta: Mapping[str, Any]) -> float | None:
        """Work units of one request from header-only ``meta`` (see :mod:`.control`); None: no cost model.

        The server fits seconds per unit on its machine and refuses requests that cannot finish in time.
        """
        return None

    def __call__(self, raw: Any) -> Any:
        """``postprocess(predict(preprocess(raw)))``."""
        return self.postprocess(self.predict(self.preprocess(raw)))

    def info(self) -> dict[str, Any]:
        """Model, versions, checkpoint hash and I/O spec."""
        out: dict[str, Any] = {"domain": self.domain, "io": self.io_spec.to_dict()}
        if self.run is not None:
            out.update(
                run_dir=str(self.run.path),
                task=self.run.metadata.get("task"),
                versions=self.run.metadata.get("versions", {}),
                weights_sha256=self.run.weights_sha256,
                result=self.run.metadata.get("result"),
            )
        if self.model is not None:
            out["parameters"] = sum(p.numel() for p in self.model.parameters())
            out["precision"] = self.precision
            out["compiled"] = self.compiled
        return out
