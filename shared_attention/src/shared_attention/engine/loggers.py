"""Metric loggers: CSV (long format) and TensorBoard, used by rank 0 only."""

from __future__ import annotations

import csv
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

logger = logging.getLogger(__name__)

__all__ = ["MetricLogger", "CSVLogger", "TensorBoardLogger", "MultiLogger"]


class MetricLogger(Protocol):
    """Anything that records scalar metrics by step."""

    def log(self, step: int, split: str, metrics: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class CSVLogger:
    """Appends ``step,split,metric,value`` rows to ``metrics.csv`` (safe to resume: rows after the resume
    step are dropped when the file is reopened, so a resumed run has no duplicate steps).

    Args:
        path: the CSV file.
        resume_step: on resume, the step of the checkpoint; rows with a larger step are discarded.
    """

    header = ("step", "split", "metric", "value")

    def __init__(self, path: str | Path, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.exists():
            with self.path.open(newline="") as fh:
                rows = [r for r in csv.reader(fh)][1:]
            kept = [r for r in rows if len(r) == 4 and r[0].isdigit() and int(r[0]) <= resume_step]
            with self.path.open("w", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(self.header)
                w.writerows(kept)
        elif not self.path.exists() or resume_step is None:
            with self.path.open("w", newline="") as fh:
                csv.writer(fh).writerow(self.header)
        self._fh = self.path.open("a", newline="")
        self._writer = csv.writer(self._fh)

    def log(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self._writer.writerow((step, split, name, repr(float(value))))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class TensorBoardLogger:
    """Writes scalars to a TensorBoard event folder as ``<split>/<metric>``."""

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            v = float(value)
            if math.isfinite(v):
                self._writer.add_scalar(f"{split}/{name}", v, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MultiLogger:
    """Fans out to several loggers."""

    def __init__(self, loggers: list[Any]) -> None:
        self.loggers = loggers

    def log(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        for lg in self.loggers:
            lg.log(step, split, metrics)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
