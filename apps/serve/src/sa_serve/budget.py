"""Per-route time budgets: how long a request of a given size takes on *this* machine, measured, not guessed.

A predictor that defines ``cost(meta) -> units`` (pixels, samples, voxels, rows; see
:mod:`shared_attention.serving.control`) gets a :class:`CostMeter`. The server feeds it (units, seconds) pairs:
two synthetic requests of different sizes at warm-up, then every finished request (service time: preprocess +
predict + postprocess, without queueing). The meter fits ``seconds = overhead + rate * units`` by least
squares on the most recent observations (both coefficients kept non-negative) and answers:

* :meth:`CostMeter.estimate`: expected seconds of a request, from its header-only metadata, before any work;
* :meth:`CostMeter.largest`: the most units that fit a time budget (for the 413 message).

Before the first observation the meter knows nothing and admits everything (a predictor without a warm-up
input is measured by its first requests).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

__all__ = ["CostMeter", "Estimate"]


@dataclass(frozen=True)
class Estimate:
    """A request's predicted service time. ``seconds`` is None when the meter has no observation yet."""

    units: float
    seconds: float | None


class CostMeter:
    """Fits ``seconds = overhead + rate * units`` from recent observations.

    Args:
        unit: what a unit is, for messages ("pixels", "samples", ...).
        window: how many recent observations the fit uses.
    """

    def __init__(self, unit: str = "units", window: int = 32) -> None:
        self.unit = unit
        self._obs: deque[tuple[float, float]] = deque(maxlen=window)
        self._lock = threading.Lock()
        self._fit: tuple[float, float] | None = None

    def observe(self, units: float, seconds: float) -> None:
        """Adds one finished request (``units`` > 0, ``seconds`` >= 0); ignored otherwise."""
        if not (units > 0 and seconds >= 0):
            return
        with self._lock:
            self._obs.append((float(units), float(seconds)))
            self._fit = self._solve(list(self._obs))

    @staticmethod
    def _solve(obs: list[tuple[float, float]]) -> tuple[float, float]:
        n = len(obs)
        su = sum(u for u, _ in obs)
        st = sum(t for _, t in obs)
        suu = sum(u * u for u, _ in obs)
        sut = sum(u * t for u, t in obs)
        det = n * suu - su * su
        if n >= 2 and det > 1e-12 * max(suu, 1.0) * n:
            rate = (n * sut - su * st) / det
            overhead = (st - rate * su) / n
            if rate >= 0 and overhead >= 0:
                return overhead, rate
            if rate < 0:  # bigger was not slower (noise): a constant cost
                return st / n, 0.0
        return 0.0, sut / suu if suu > 0 else 0.0  # through the origin: proportional cost

    @property
    def fitted(self) -> tuple[float, float] | None:
        """``(overhead_s, seconds_per_unit)``, or None before the first observation."""
        return self._fit

    @property
    def observations(self) -> int:
        """How many observations the current fit rests on."""
        return len(self._obs)

    def estimate(self, units: float) -> Estimate:
        """Expected service seconds of a request of ``units``."""
        fit = self._fit
        if fit is None:
            return Estimate(units, None)
        return Estimate(units, fit[0] + fit[1] * units)

    def largest(self, seconds: float) -> float | None:
        """The most units that fit in ``seconds`` (None: unbounded or unknown)."""
        fit = self._fit
        if fit is None or fit[1] <= 0:
            return None
        return max((seconds - fit[0]) / fit[1], 0.0)

    def to_dict(self) -> dict[str, float | int | str | None]:
        """For ``/v1/info``."""
        fit = self._fit
        return {
            "unit": self.unit,
            "observations": self.observations,
            "overhead_s": None if fit is None else round(fit[0], 4),
            "seconds_per_unit": None if fit is None else fit[1],
        }
