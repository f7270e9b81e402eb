"""Deprecated: ``sa_restoration.cli`` is generated from :mod:`sa_restoration.domain` now (kept one release)."""

from __future__ import annotations

from .domain import main
from .evaluate import evaluate_folder

__all__ = ["evaluate_folder", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
