"""Ranking predictor: score a list of candidate rows (JSON objects) with a trained run folder.

The same object backs ``sa-ranking predict`` and the server. ``preprocess`` takes the candidates of one
request (a list of dicts, JSON bytes holding a list or JSON lines, or a path to such a file), ``predict``
returns click probabilities ``(N,)``, ``postprocess`` gives ``{"scores": [...]}`` in input order. Hiformer
scores through its pruned serving path (last layer: task token only) unless ``prune=False``.

Errors are :class:`~shared_attention.serving.InputError` (HTTP 422 from the server) naming the row (its index
in the request list, from 0) and the column: a missing column, an id that does not parse, a number float32
cannot represent (``|x| <= 3.4e38``), and a row whose score comes out non-finite (NaN or inf). Scores are never
NaN: the JSON answer is always standard JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, cast

import torch
from torch import nn

from shared_attention.serving import FieldSpec, InputError, IOSpec, PredictorBase, load_run_model

from .schema import Schema

__all__ = ["RankingPredictor", "MAX_CANDIDATES", "nonfinite_rows"]

MAX_CANDIDATES = 10_000


def nonfinite_rows(scores: torch.Tensor) -> list[int]:
    """Indices of the scores ``(N,)`` that are NaN or infinite."""
    return [int(i) for i in torch.nonzero(~torch.isfinite(scores.reshape(-1))).reshape(-1)]


def _rows_text(rows: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(r) for r in rows[:limit]) + (f" (+{len(rows) - limit} more)" if len(rows) > limit else "")
    return f"row {shown}" if len(rows) == 1 else f"rows {shown}"


class _Prunable(Protocol):
    """A model with Hiformer's ``prune`` switch (the default of its pruned serving path)."""

    prune: bool


class RankingPredictor(PredictorBase):
    """Scores candidates with a Hiformer / DCN-v2 / logistic-regression run.

    Args:
        model: the unsharded ranking model. schema: its features. prune: Hiformer's pruned serving path.
        max_candidates: largest request accepted.
    """

    model: nn.Module
    domain: ClassVar[str] = "ranking"
    io_spec: ClassVar[IOSpec] = IOSpec(
        inputs=(
            FieldSpec(
                "candidates",
                "json",
                ("application/json", "application/x-ndjson"),
                "list of N objects",
                "candidate rows: one object per candidate with the schema's feature columns "
                "(multi-hot as a list or a separator-joined string)",
                {"max_candidates": MAX_CANDIDATES},
            ),
        ),
        outputs=(
            FieldSpec(
                "scores",
                "json",
                ("application/json",),
                "(N,) float in [0, 1]",
                "click probability per candidate, in input order",
            ),
        ),
    )

    def __init__(
        self,
        model: nn.Module,
        schema: Schema,
        prune: bool = True,
        max_candidates: int = MAX_CANDIDATES,
        device: str | torch.device = "cpu",
    ) -> None:
        self.model = model.to(device).eval()
        if hasattr(self.model, "prune"):
            prunable = cast(_Prunable, self.model)
            prunable.prune = prune
        self.schema = schema
        self.max_candidates = max_candidates
        self.device = torch.device(device)

    @classmethod
    def load(
        cls, run_dir: str | Path, device: str | torch.device = "cpu", prune: bool | None = None
    ) -> RankingPredictor:
        """Builds the model from ``config.yaml`` + ``schema.json`` and loads ``model.safetensors`` strictly."""
        from .config import RankingConfig
        from .models import build_model

        schema_path = Path(run_dir) / "schema.json"
        try:
            schema = Schema.from_dict(json.loads(schema_path.read_text(encoding="utf-8")), str(schema_path))
        except OSError as exc:
            raise FileNotFoundError(f"{schema_path}: missing (is {run_dir} a ranking run folder?)") from exc
        run, cfg, model = load_run_model(run_dir, RankingConfig, lambda c: build_model(schema, c.model), cls.domain)
        pred = cls(model, schema, cfg.model.prune_serving if prune is None else prune, device=device)
        pred.run = run
        return pred

    cost_unit: ClassVar[str] = "rows"

    def cost(self, meta: Mapping[str, Any]) -> float | None:
        """Work of one request: its candidate rows."""
        rows = meta.get("rows")
        return float(rows) if rows else None

    def info(self) -> dict[str, Any]:
        """The base info plus the feature schema (the web page builds its example candidates from it)."""
        out = super().info()
        out["schema"] = self.schema.to_dict()
        out["max_candidates"] = self.max_candidates
        return out

    def _rows(self, raw: Any) -> list[Any]:
        if isinstance(raw, (str, Path)) and not (isinstance(raw, str) and raw.lstrip().startswith(("[", "{"))):
            p = Path(raw)
            if not p.is_file():
                raise InputError(f"{p}: no such file", "candidates")
            raw = p.read_bytes()
        if isinstance(raw, (bytes, bytearray, str)):
            text = raw.decode("utf-8", errors="replace") if isinstance(raw, (bytes, bytearray)) else raw
            text = text.strip()
            try:
                obj = json.loads(text) if text else []
            except ValueError:
                obj = []
                for i, line in enumerate(text.splitlines(), 1):
                    if line.strip():
                        try:
                            obj.append(json.loads(line))
                        except ValueError as exc:
                            raise InputError(f"line {i}: invalid JSON: {exc}", "candidates") from None
            raw = obj
        if isinstance(raw, Mapping):
            raw = raw.get("candidates", [raw])
        if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
            raise InputError(f"expected a list of candidate objects, got {type(raw).__name__}", "candidates")
        return list(raw)

    def preprocess(self, raw: Any) -> Any:
        """Candidates -> torchrec ``Batch``; :class:`InputError` names the row (its index in the list, from 0) and
        the column, e.g. ``row 3: field 'age_n' = 1e+300 is outside the range float32 can represent``."""
        from .data import DataError, RowParser, TableBuilder

        rows = self._rows(raw)
        if not rows:
            raise InputError("no candidates", "candidates")
        if len(rows) > self.max_candidates:
            raise InputError(f"{len(rows)} candidates, at most {self.max_candidates} per request", "candidates")
        parser, builder = RowParser(self.schema, with_label=False), TableBuilder(self.schema)
        for i, row in enumerate(rows):
            try:
                builder.add(*parser.parse_mapping(row, f"row {i}"))
            except DataError as exc:
                raise InputError(str(exc), "candidates") from None
        return builder.build().batch()

    @torch.no_grad()
    def predict(self, batch: Any) -> torch.Tensor:
        """Click probabilities ``(N,)``; NaN for a row whose logit is not finite (``postprocess`` refuses it, the
        CLI rejects or skips it: see :func:`nonfinite_rows`)."""
        b = batch.to(self.device)
        logits = self.model(b.dense_features, b.sparse_features).float()  # (N,)
        probs = torch.sigmoid(logits)  # (N,); sigmoid(+-inf) is 1 / 0, so mark those rows explicitly
        return torch.where(torch.isfinite(logits), probs, torch.full_like(probs, float("nan"))).cpu()

    def postprocess(self, output: Any) -> dict[str, list[float]]:
        """``{"scores": [...]}`` in input order; :class:`InputError` naming the rows whose score is not finite."""
        scores = torch.as_tensor(output).reshape(-1)  # (N,)
        bad = nonfinite_rows(scores)
        if bad:
            raise InputError(
                f"{_rows_text(bad)}: the model's score is not finite (NaN or inf); check the row's feature values",
                "candidates",
            )
        return {"scores": [float(s) for s in scores]}
