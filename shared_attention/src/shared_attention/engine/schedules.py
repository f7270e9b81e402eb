"""Learning-rate schedules as pure functions of the optimizer step (plus plateau halving on evaluation).

The learning rate at step ``t`` is ``base_lr * warmup(t) * shape(t) * plateau_factor``. Being a function
of the step, a resumed run gets exactly the same rates; the plateau part keeps a small state that is
checkpointed.

With ``by_time`` the cosine / poly progress is the fraction of a wall-clock budget spent instead of the
fraction of steps: a fixed-time run on a machine whose speed varies still anneals to the floor exactly when
its budget ends (the elapsed training time is checkpointed, so a resumed run continues the curve).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

__all__ = ["ScheduleConfig", "LRSchedule"]


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule.

    Attributes:
        name: ``constant``, ``cosine`` (to ``min_lr_ratio``), ``multistep`` (times ``gamma`` at each
            milestone, e.g. HAT's halving), ``poly`` (``(1 - t/T) ** power``, TransUNet), ``plateau``
            (constant, times ``gamma`` when the monitored metric stalls ``patience`` evaluations: MossFormer).
        warmup_steps: linear warm-up from 0.
        milestones: steps for ``multistep``.
        gamma: multiplier for ``multistep`` and ``plateau``.
        power: exponent for ``poly``.
        min_lr_ratio: floor of ``cosine`` and ``plateau`` relative to the base rate.
        patience: evaluations without improvement before a plateau cut.
        by_time: ``cosine`` / ``poly`` progress = elapsed training time / time budget (the trainer's
            ``max_minutes``, required) instead of steps / ``max_steps``; warm-up stays in steps.
    """

    name: Literal["constant", "cosine", "multistep", "poly", "plateau"] = "constant"
    warmup_steps: int = 0
    milestones: tuple[int, ...] = field(default_factory=tuple)
    gamma: float = 0.5
    power: float = 0.9
    min_lr_ratio: float = 0.0
    patience: int = 2
    by_time: bool = False

    def __post_init__(self) -> None:
        if self.warmup_steps < 0:
            raise ValueError("warmup_steps must be >= 0")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must be increasing, got {self.milestones}")
        if not 0.0 < self.gamma <= 1.0:
            raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")


class LRSchedule:
    """Sets each param group's ``lr`` from its ``initial_lr`` for a given step.

    Args:
        optimizer: the optimizer; its groups' current ``lr`` become the base rates.
        cfg: the schedule.
        total_steps: the run length (for cosine / poly).
        budget_s: the time budget in seconds (required with ``cfg.by_time``).

    Attributes:
        elapsed_s: training time spent so far (set by the trainer; checkpointed), used with ``by_time``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        cfg: ScheduleConfig,
        total_steps: int,
        budget_s: float | None = None,
    ) -> None:
        if cfg.by_time and (budget_s is None or budget_s <= 0):
            raise ValueError("schedule.by_time needs a time budget: set train.max_minutes")
        self.optimizer = optimizer
        self.cfg = cfg
        self.total_steps = max(int(total_steps), 1)
        self.budget_s = budget_s
        self.elapsed_s = 0.0
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.plateau_factor = 1.0
        self._best: float | None = None
        self._bad = 0

    def factor(self, step: int) -> float:
        """The multiplier of the base rate at optimizer step ``step`` (0-based)."""
        c = self.cfg
        f = 1.0
        if c.warmup_steps > 0 and step < c.warmup_steps:
            f *= (step + 1) / c.warmup_steps
        t = min(max(step - c.warmup_steps, 0), self.total_steps)
        span = max(self.total_steps - c.warmup_steps, 1)
        progress = min(t / span, 1.0)
        if c.by_time and self.budget_s:
            progress = min(max(self.elapsed_s / self.budget_s, 0.0), 1.0)
        if c.name == "cosine":
            f *= c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        elif c.name == "multistep":
            f *= c.gamma ** sum(step >= m for m in c.milestones)
        elif c.name == "poly":
            f *= max(1.0 - progress, 0.0) ** c.power
        elif c.name == "plateau":
            f *= max(self.plateau_factor, c.min_lr_ratio)
        return f

    def apply(self, step: int) -> float:
        """Sets the rates for ``step``; returns the first group's rate."""
        f = self.factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * f
        return float(self.optimizer.param_groups[0]["lr"])

    def observe(self, value: float, mode: Literal["min", "max"]) -> bool:
        """Feeds an evaluation result to the plateau rule; returns True when the rate was cut."""
        if self.cfg.name != "plateau" or not math.isfinite(value):
            return False
        better = self._best is None or (value < self._best if mode == "min" else value > self._best)
        if better:
            self._best, self._bad = value, 0
            return False
        self._bad += 1
        if self._bad >= self.cfg.patience:
            self.plateau_factor *= self.cfg.gamma
            self._bad = 0
            return True
        return False

    def state_dict(self) -> dict[str, Any]:
        """Plateau state and elapsed time (the rest is a function of the step)."""
        return {
            "plateau_factor": self.plateau_factor,
            "best": self._best,
            "bad": self._bad,
            "elapsed_s": self.elapsed_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restores :meth:`state_dict`."""
        self.plateau_factor = float(state["plateau_factor"])
        self._best = state["best"]
        self._bad = int(state["bad"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))
