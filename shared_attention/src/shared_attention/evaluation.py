"""The one ``evaluation.json`` format: every domain's ``evaluate`` returns an :class:`Evaluation`.

A run folder's ``evaluation.json`` is written by the generated CLI (``sa-<domain> evaluate --run R``) from the
:class:`Evaluation` the domain's evaluate function returns, and read back by ``sa-serve summary``::

    {"domain": str, "metric": str, "model": float, "baseline": float, "baseline_name": str,
     "higher_is_better": bool, "details": {...}}

``model`` and ``baseline`` are the headline numbers (finite floats; ``NaN`` is refused when written, so a
missing baseline must be said with a number that means "none", e.g. 0 dB improvement or 0.5 AUC, and named in
``baseline_name``). ``details`` holds anything else (per-item rows, secondary metrics) as JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EVALUATION_FILE", "Evaluation", "EvaluationError", "read_evaluation"]

EVALUATION_FILE = "evaluation.json"


class EvaluationError(ValueError):
    """An ``evaluation.json`` (or an :class:`Evaluation`) that breaks the format; the message names file and field."""


def _finite(value: Any, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise EvaluationError(f"{where}: field {key!r} must be a finite number, got {value!r}")
    return float(value)


def _json_safe(obj: Any) -> Any:
    """``details`` made strict-JSON: non-finite floats become ``None``, numpy scalars/arrays plain values."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays and scalars, torch tensors
        return _json_safe(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclass(frozen=True)
class Evaluation:
    """One run's evaluation: a headline metric for the model and for a named baseline, plus details.

    Attributes:
        domain: the domain name (``"restoration"``).
        metric: what ``model`` and ``baseline`` measure, with units (``"PSNR-Y x2 (dB)"``).
        model: the model's value.
        baseline: the baseline's value on the same data.
        baseline_name: what the baseline is (``"bicubic"``, ``"logistic regression"``).
        higher_is_better: the metric's direction.
        details: everything else, JSON-serialisable (non-finite floats are written as ``null``).
        report: a human-readable table the CLI prints (not written to the JSON file).
        path: the file it was read from (set by :func:`read_evaluation`).
    """

    domain: str
    metric: str
    model: float
    baseline: float
    baseline_name: str
    higher_is_better: bool = True
    details: dict[str, Any] = field(default_factory=dict)
    report: str = field(default="", compare=False)
    path: Path | None = field(default=None, compare=False)

    @property
    def delta(self) -> float:
        """``model - baseline``."""
        return self.model - self.baseline

    @property
    def wins(self) -> bool:
        """Whether the model beats the baseline in the metric's direction."""
        return self.delta > 0 if self.higher_is_better else self.delta < 0

    def to_dict(self) -> dict[str, Any]:
        """The ``evaluation.json`` object; raises :class:`EvaluationError` for a non-finite headline."""
        where = f"evaluation of {self.domain!r}"
        return {
            "domain": self.domain,
            "metric": self.metric,
            "model": _finite(self.model, "model", where),
            "baseline": _finite(self.baseline, "baseline", where),
            "baseline_name": self.baseline_name,
            "higher_is_better": bool(self.higher_is_better),
            "details": _json_safe(self.details),
        }

    def to_json(self) -> str:
        """Strict JSON text (no ``NaN``)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def write(self, run_dir: str | Path) -> Path:
        """Writes ``<run_dir>/evaluation.json`` atomically and returns its path."""
        from .engine.checkpoint import atomic_write_text

        return atomic_write_text(Path(run_dir) / EVALUATION_FILE, self.to_json() + "\n")

    def headline(self) -> str:
        """One line: the model's and the baseline's value and who wins."""
        verdict = "model wins" if self.wins else ("tie" if self.delta == 0 else "baseline wins")
        return (
            f"{self.domain}: {self.metric}: model {self.model:.4f} vs {self.baseline_name} {self.baseline:.4f} "
            f"({self.delta:+.4f}, {verdict})"
        )


def read_evaluation(path: str | Path) -> Evaluation:
    """Reads and validates one ``evaluation.json``; :class:`EvaluationError` names the file and field."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise EvaluationError(f"{p}: cannot read ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise EvaluationError(f"{p}: invalid JSON ({exc})") from exc
    if not isinstance(d, dict):
        raise EvaluationError(f"{p}: expected a JSON object")
    for key, typ in (("domain", str), ("metric", str), ("baseline_name", str), ("higher_is_better", bool)):
        if not isinstance(d.get(key), typ):
            raise EvaluationError(f"{p}: field {key!r} must be a {typ.__name__}, got {d.get(key)!r}")
    model = _finite(d.get("model"), "model", str(p))
    baseline = _finite(d.get("baseline"), "baseline", str(p))
    details = d.get("details", {})
    if not isinstance(details, dict):
        raise EvaluationError(f"{p}: field 'details' must be an object")
    return Evaluation(
        d["domain"], d["metric"], model, baseline, d["baseline_name"], d["higher_is_better"], details, path=p
    )
