"""Deprecated: ``sa_speechsep.cli`` is generated from :mod:`sa_speechsep.domain` now (kept one release)."""

from __future__ import annotations

from .domain import main
from .evaluate import evaluate_dataset

__all__ = ["evaluate_dataset", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
