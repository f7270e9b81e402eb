"""Attention-core benchmark: everything measured side by side in one run on this machine.

Writes ``bench/results/attention.json`` and refreshes the table between the markers in ``BENCHMARKS.md``.

* fp32 GEMM throughput (GFLOP/s of a large ``torch.mm``) — the machine's yardstick;
* window attention (HAT-S-like: 16x16 windows, dim 144, 6 heads, shifted mask) through
  ``scaled_dot_product_attention`` vs the explicit softmax path (ratio, and max difference);
* selective scan, fast chunked pure-PyTorch path vs the sequential reference at B=2, D=192, N=16,
  L=4096 (goal: >= 3x faster at 1e-5 agreement), forward without grad.

Usage: python bench/attention.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "attention.json"
DOC = ROOT / "BENCHMARKS.md"
BEGIN, END = "<!-- attention:begin -->", "<!-- attention:end -->"


def timeit(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> dict[str, float]:
    """Median / min wall time of ``fn`` over ``repeat`` runs after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "repeat": repeat}


def bench_gemm(n: int, repeat: int) -> dict[str, Any]:
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = timeit(lambda: torch.mm(a, b), repeat)
    return {"n": n, **t, "gflops": 2 * n**3 / t["median_s"] / 1e9}


@torch.no_grad()
def bench_window(batch: int, size: int, repeat: int) -> dict[str, Any]:
    from shared_attention.attention.window import WindowAttention, shifted_window_mask, window_partition

    dim, heads, ws = 144, 6, 16
    torch.manual_seed(0)
    attn = WindowAttention(dim, ws, heads).eval()
    x = torch.randn(batch, size, size, dim)
    win = window_partition(torch.roll(x, (-ws // 2, -ws // 2), (1, 2)), ws)  # (B*nW, 256, C)
    mask = shifted_window_mask(size, size, ws, ws // 2, device=x.device)

    def run(sdpa: bool) -> torch.Tensor:
        attn.use_sdpa = sdpa
        return attn(win, mask=mask)

    fused, explicit = run(True), run(False)
    diff = (fused - explicit).abs().max().item()
    t_fused = timeit(lambda: run(True), repeat)
    t_expl = timeit(lambda: run(False), repeat)
    return {
        "shape": f"windows={win.shape[0]} x {ws * ws} tokens, dim {dim}, heads {heads}, shifted mask",
        "sdpa": t_fused,
        "explicit": t_expl,
        "explicit_over_sdpa": t_expl["median_s"] / t_fused["median_s"],
        "max_abs_diff": diff,
    }


@torch.no_grad()
def bench_scan(B: int, D: int, N: int, L: int, repeat: int) -> dict[str, Any]:
    from shared_attention.ssm import selective_scan_chunked, selective_scan_ref

    g = torch.Generator().manual_seed(0)
    u = torch.randn(B, D, L, generator=g)
    delta = torch.randn(B, D, L, generator=g)
    A = -torch.rand(D, N, generator=g) * 4 - 0.5
    Bm = torch.randn(B, N, L, generator=g)
    Cm = torch.randn(B, N, L, generator=g)
    Dv = torch.randn(D, generator=g)
    z = torch.randn(B, D, L, generator=g)
    db = torch.randn(D, generator=g) * 0.1
    kw = dict(D=Dv, z=z, delta_bias=db, delta_softplus=True, return_last_state=True)
    ref_out, ref_state = selective_scan_ref(u, delta, A, Bm, Cm, **kw)
    fast_out, fast_state = selective_scan_chunked(u, delta, A, Bm, Cm, **kw)
    diff = max((ref_out - fast_out).abs().max().item(), (ref_state - fast_state).abs().max().item())
    rel = ((ref_out - fast_out).abs() / (ref_out.abs() + 1e-5)).max().item()
    t_ref = timeit(lambda: selective_scan_ref(u, delta, A, Bm, Cm, **kw), repeat)
    t_fast = timeit(lambda: selective_scan_chunked(u, delta, A, Bm, Cm, **kw), repeat)
    return {
        "shape": {"batch": B, "dim": D, "d_state": N, "length": L, "B_C": "variable (B, N, L)"},
        "reference": t_ref,
        "chunked": t_fast,
        "speedup": t_ref["median_s"] / t_fast["median_s"],
        "max_abs_diff": diff,
        "max_rel_diff": rel,
        "max_abs_output": ref_out.abs().max().item(),
        "agrees_1e-5": bool(
            torch.allclose(fast_out, ref_out, atol=1e-5, rtol=1e-5)
            and torch.allclose(fast_state, ref_state, atol=1e-5, rtol=1e-5)
        ),
    }


def render(res: dict[str, Any]) -> str:
    g, w, s = res["gemm"], res["window_attention"], res["selective_scan"]
    ms = lambda t: f"{t['median_s'] * 1e3:.1f} ms"  # noqa: E731
    lines = [
        f"Measured {res['date']} on {res['machine']} ({res['threads']} torch threads, torch {res['torch']}).",
        "",
        "| measurement | baseline | ours | ratio |",
        "|---|---|---|---|",
        f"| fp32 GEMM {g['n']}x{g['n']} (`torch.mm`) | | {ms(g)} | **{g['gflops']:.1f} GFLOP/s** |",
        f"| window attention ({w['shape']}) | explicit softmax {ms(w['explicit'])} | SDPA {ms(w['sdpa'])} "
        f"| **{w['explicit_over_sdpa']:.2f}x** (max diff {w['max_abs_diff']:.1e}) |",
        f"| selective scan B={s['shape']['batch']} D={s['shape']['dim']} N={s['shape']['d_state']} "
        f"L={s['shape']['length']} | sequential reference {ms(s['reference'])} | chunked {ms(s['chunked'])} "
        f"| **{s['speedup']:.1f}x** (max abs diff {s['max_abs_diff']:.1e} on outputs up to {s['max_abs_output']:.0f}; "
        f"assert_close atol=rtol=1e-5: {s['agrees_1e-5']}) |",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    rep = 2 if args.quick else 5
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print("GEMM ...", flush=True)
    res["gemm"] = bench_gemm(2048, rep)
    print("window attention ...", flush=True)
    res["window_attention"] = bench_window(2, 64, rep)
    print("selective scan ...", flush=True)
    res["selective_scan"] = bench_scan(2, 192, 16, 4096, max(rep // 2, 1) + 1)
    table = render(res)
    print(table)
    if args.no_write:
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=2) + "\n")
    if DOC.exists():
        text = DOC.read_text()
        if BEGIN in text and END in text:
            head, rest = text.split(BEGIN, 1)
            _, tail = rest.split(END, 1)
            DOC.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
