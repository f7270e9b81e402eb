"""The line chart of the media module (learning curves in the benches)."""

from __future__ import annotations

import numpy as np
import pytest

from shared_attention.io import CHART_COLOURS, _ticks, line_chart


def test_line_chart_draws_each_series_in_its_colour() -> None:
    img = line_chart(
        {"a": ([0, 10, 20], [0.0, 2.0, 3.0]), "b": ([0, 10, 20], [1.0, 1.5, 5.0])},
        title="curves",
        x_label="minutes",
        y_label="dB",
        size=(300, 400),
    )
    assert img.shape == (300, 400, 3) and img.dtype == np.uint8
    for colour in CHART_COLOURS[:2]:  # each line (and its legend swatch) is drawn in its own colour
        assert (np.abs(img.astype(int) - np.array(colour)).sum(-1) == 0).sum() > 50
    assert not (np.abs(img.astype(int) - np.array(CHART_COLOURS[2])).sum(-1) == 0).any()


def test_line_chart_rejects_bad_series() -> None:
    with pytest.raises(ValueError, match="no series"):
        line_chart({})
    with pytest.raises(ValueError, match="'a' has 2 x values and 1 y values"):
        line_chart({"a": ([0, 1], [2.0])})
    with pytest.raises(ValueError, match="no finite point"):
        line_chart({"a": ([0.0], [float("nan")])})
    # a single point and a flat line still draw
    assert line_chart({"a": ([3.0], [1.0])}).shape == (480, 720, 3)


def test_ticks_are_round_and_cover_the_range() -> None:
    assert _ticks(-0.3, 6.2) == [0.0, 2.0, 4.0, 6.0]
    assert _ticks(0, 45) == [0.0, 10.0, 20.0, 30.0, 40.0]
    t = _ticks(0.91, 0.955)
    assert t[0] >= 0.91 and t[-1] <= 0.955 and len(t) >= 3
