"""Deprecated: ``sa_ranking.cli`` is generated from :mod:`sa_ranking.domain` now (kept one release)."""

from __future__ import annotations

from .domain import main
from .evaluate import evaluate_run

__all__ = ["evaluate_run", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
