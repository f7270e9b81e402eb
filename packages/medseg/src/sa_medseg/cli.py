"""Deprecated: ``sa_medseg.cli`` is generated from :mod:`sa_medseg.domain` now (kept one release)."""

from __future__ import annotations

from .domain import OFFICIAL_KWARGS, main
from .evaluate import evaluate_volumes

__all__ = ["OFFICIAL_KWARGS", "evaluate_volumes", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
