"""Deprecated: ``sa_anomaly.cli`` is generated from :mod:`sa_anomaly.domain` now (kept one release)."""

from __future__ import annotations

from .domain import main
from .evaluate import choose_threshold, evaluate_run

__all__ = ["choose_threshold", "evaluate_run", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
