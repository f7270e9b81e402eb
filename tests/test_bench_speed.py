"""bench/speed.py helpers: the profiler's top costs and the table (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _speed():  # type: ignore[no-untyped-def]
    sys.path.insert(0, str(BENCH))  # speed.py imports benchlib from its own folder
    spec = importlib.util.spec_from_file_location("bench_speed", BENCH / "speed.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_speed"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_top_costs_names_the_dominant_operator() -> None:
    speed = _speed()
    a = torch.randn(256, 256)

    def work() -> None:
        for _ in range(4):
            a @ a
        a.add(1.0)

    top = speed._top_costs(work, k=2)
    assert len(top) == 2
    assert top[0]["op"] == "aten::mm" and top[0]["calls"] == 4
    assert 0.0 < top[1]["share"] <= top[0]["share"] <= 1.0


def _row(**kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "model": "M",
        "forward_gflop": 2.0,
        "forward_fp32_s": 0.5,
        "forward_bf16_s": 0.25,
        "bf16_max_rel_diff": 1e-3,
        "train_gflop": 6.0,
        "train_fp32_s": 2.0,
        "train_bf16_s": 1.0,
        "peak_memory_mb": 10.0,
        "train_top_costs": [{"op": "aten::bmm", "self_ms": 5.0, "share": 0.5, "calls": 3}],
    }
    row.update(kw)
    return row


def _result(models: dict[str, dict[str, object]]) -> dict[str, object]:
    """A speed.json-shaped result around ``models`` (a 100 / 200 GFLOP/s yardstick)."""
    return {
        "date": "2026-01-01",
        "threads": 2,
        "torch": "x",
        "gemm": {"fp32_gflops": 100.0, "bf16_gflops": 200.0},
        "models": models,
    }


def test_render_ratios_lower_bounds_and_failures() -> None:
    speed = _speed()
    res = _result(
        {
            "a": _row(model="A", naive="n", forward_naive_s=1.0, train_naive_s=3.0),
            "d": _row(model="D", naive="n", forward_naive_s=1.0, train_naive_s=3.0, train_fp32_beside_naive_s=2.4),
            "b": _row(model="B", naive="n", forward_naive_s=1.0, train_naive_s=None, train_naive_over_s=600.0),
            "c": {"model": "C", "error": "boom"},
        }
    )
    table = speed.render(res)
    row_a = next(line for line in table.splitlines() if line.startswith("| A |"))
    assert "2.00x" in row_a and "1.50x" in row_a  # forward naive/fp32 and bf16 speed-up; train 3 / 2
    assert "4 % / 3 %" in row_a  # 2 GFLOP in 0.5 s of a 100 GFLOP/s peak; 6 GFLOP in 2 s
    row_d = next(line for line in table.splitlines() if line.startswith("| D |"))
    assert "1.25x" in row_d  # the naive step over ours timed beside it in the same process (3 / 2.4)
    row_b = next(line for line in table.splitlines() if line.startswith("| B |"))
    assert "> 600 s" in row_b and "> 300x" in row_b  # a lower bound, never a made-up ratio
    assert "| C | failed: boom |" in table
    assert "`aten::bmm` 50 % (3 calls)" in table
    assert "2.00x an fp32 one" in table


def test_flops_of_a_depthwise_convolution_backward_are_twice_its_forward() -> None:
    speed = _speed()
    conv = torch.nn.Conv1d(16, 16, 5, padding=2, groups=16)  # depthwise: torch's own backward formula over-counts
    x = torch.randn(2, 16, 50, requires_grad=True)
    with torch.no_grad():
        forward = speed._flops(lambda: conv(x))
    assert forward == 2 * 2 * 16 * 5 * 50  # multiply-adds x 2: batch x channels x taps x positions
    assert speed._flops(lambda: conv(x).sum().backward()) == 3 * forward  # forward + input and weight gradients


def test_render_compiled_table_ratios_and_failures() -> None:
    speed = _speed()
    compiled = {
        "forward_eager_s": 0.6,
        "forward_compiled_s": 0.4,
        "compiled_max_rel_diff": 2e-6,
        "train_eager_s": 3.0,
        "train_compiled_s": 2.5,
        "compile_forward_s": 41.0,
        "compile_train_s": 95.0,
    }
    res = _result(
        {
            "a": _row(model="A", compiled=compiled),
            "b": _row(model="B", compiled={"error": "RuntimeError: no fake kernel"}),
            "c": _row(model="C"),
            "d": _row(model="D", compiled={**{k: compiled[k] for k in list(compiled)[:3]}, "compile_forward_s": 9.0,
                                           "error": "RuntimeError: int64"}),
        }
    )
    table = speed.render(res)
    row_d = [line for line in table.splitlines() if line.startswith("| D |")][1]
    assert "**1.50x**" in row_d and "training step does not compile: RuntimeError: int64" in row_d
    rows = [line for line in table.splitlines() if line.startswith("| A |")]
    assert len(rows) == 2  # the main table and the compile table
    assert "**1.50x**" in rows[1] and "**1.20x**" in rows[1] and "| 41 / 95 |" in rows[1]
    assert "| B | does not compile: RuntimeError: no fake kernel |" in table
    assert sum(line.startswith("| C |") for line in table.splitlines()) == 1  # not measured: no compile row
    assert "`torch.compile`" not in speed.render({**res, "models": {"c": _row(model="C")}})
