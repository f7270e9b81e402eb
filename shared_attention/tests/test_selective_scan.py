"""Tests for the Mamba selective scan (reference, chunked path and dispatch)."""

from __future__ import annotations

import logging
import math
import sys
import types
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import shared_attention.ssm.selective_scan as ss
from shared_attention.ssm import selective_scan_chunked, selective_scan_fn, selective_scan_ref

ATOL = RTOL = 1e-5


def assert_close(actual: Tensor, expected: Tensor, what: str = "", *, dtype_default: bool = False) -> None:
    """assert_close at 1e-5 (or torch's defaults for the dtype when ``dtype_default``)."""
    tol: dict[str, Any] = {} if dtype_default else {"atol": ATOL, "rtol": RTOL}
    torch.testing.assert_close(actual, expected, msg=(lambda m: f"{what}: {m}") if what else None, **tol)


def make_inputs(
    batch: int = 2,
    dim: int = 4,
    dstate: int = 3,
    L: int = 37,
    groups: int | None = None,
    c_groups: int | None = None,
    seed: int = 0,
    requires_grad: bool = False,
) -> dict[str, Tensor]:
    """Random inputs; ``groups``/``c_groups`` None means variable (batch, N, L) B/C."""
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int, scale: float = 1.0, shift: float = 0.0) -> Tensor:
        return torch.randn(*shape, generator=g) * scale + shift

    def proj(G: int | None) -> Tensor:
        return rnd(batch, dstate, L) if G is None else rnd(batch, G, dstate, L)

    tensors = {
        "u": rnd(batch, dim, L),
        # positive, so that it is a valid step with or without softplus
        "delta": rnd(batch, dim, L, scale=0.5).abs() + 0.05,
        "A": -torch.exp(rnd(dim, dstate, scale=0.5)),
        "B": proj(groups),
        "C": proj(groups if c_groups is None else c_groups),
        "D": rnd(dim),
        "z": rnd(batch, dim, L),
        "delta_bias": rnd(dim, scale=0.1),
    }
    if requires_grad:
        for t in tensors.values():
            t.requires_grad_(True)
    return tensors


def call(
    fn: Callable[..., Any],
    x: dict[str, Tensor],
    *,
    use_D: bool = True,
    use_z: bool = True,
    use_bias: bool = True,
    softplus: bool = True,
    last: bool = True,
    **kwargs: Any,
) -> Any:
    return fn(
        x["u"],
        x["delta"],
        x["A"],
        x["B"],
        x["C"],
        D=x["D"] if use_D else None,
        z=x["z"] if use_z else None,
        delta_bias=x["delta_bias"] if use_bias else None,
        delta_softplus=softplus,
        return_last_state=last,
        **kwargs,
    )


# ------------------------------------------------------------------------------------------
# chunked vs reference
# ------------------------------------------------------------------------------------------

BC_LAYOUTS: dict[str, dict[str, Any]] = {
    "variable": {"groups": None},
    "grouped": {"groups": 2},
    "grouped_per_channel": {"groups": 4},
    "mixed_B_variable_C_grouped": {"groups": None, "c_groups": 2},
}


@pytest.mark.parametrize("layout", list(BC_LAYOUTS))
@pytest.mark.parametrize("use_D", [False, True])
@pytest.mark.parametrize("use_z", [False, True])
@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("softplus", [False, True])
@pytest.mark.parametrize("last", [False, True])
def test_chunked_matches_reference(
    layout: str, use_D: bool, use_z: bool, use_bias: bool, softplus: bool, last: bool
) -> None:
    x = make_inputs(**BC_LAYOUTS[layout])
    opts = {"use_D": use_D, "use_z": use_z, "use_bias": use_bias, "softplus": softplus, "last": last}
    expected = call(selective_scan_ref, x, **opts)
    got = call(selective_scan_chunked, x, chunk_size=8, **opts)
    if last:
        assert isinstance(got, tuple) and isinstance(expected, tuple)
        assert_close(got[0], expected[0])
        assert_close(got[1], expected[1])
        assert got[1].shape == (2, 4, 3)
    else:
        assert isinstance(got, Tensor)
        assert_close(got, expected)
        assert got.shape == (2, 4, 37)


@pytest.mark.parametrize("chunk_size", [1, 3, 5, 8, 36, 37, 38, 64, 1000])
def test_chunk_sizes_including_non_divisors(chunk_size: int) -> None:
    x = make_inputs(L=37, groups=2)
    out_ref, h_ref = call(selective_scan_ref, x)
    out, h = call(selective_scan_chunked, x, chunk_size=chunk_size)
    assert_close(out, out_ref)
    assert_close(h, h_ref)


@pytest.mark.parametrize("layout", ["variable", "grouped"])
def test_length_one(layout: str) -> None:
    x = make_inputs(L=1, **BC_LAYOUTS[layout])
    out_ref, h_ref = call(selective_scan_ref, x)
    out, h = call(selective_scan_chunked, x)
    assert out.shape == (2, 4, 1) and h.shape == (2, 4, 3)
    assert_close(out, out_ref)
    assert_close(h, h_ref)
    # with one step from a zero state: h_1 = delta * B * u
    delta = F.softplus(x["delta"] + x["delta_bias"][:, None])  # (batch, dim, 1)
    B = x["B"].repeat_interleave(4 // x["B"].shape[1], dim=1) if x["B"].ndim == 4 else x["B"][:, None]
    assert_close(h, (delta * x["u"])[..., 0, None] * B[..., 0])


@pytest.mark.parametrize(("batch", "dim", "dstate"), [(0, 4, 3), (2, 0, 3), (2, 4, 0)])
def test_empty_dimensions(batch: int, dim: int, dstate: int) -> None:
    x = make_inputs(batch=batch, dim=dim, dstate=dstate, L=5)
    out_ref, h_ref = call(selective_scan_ref, x, use_D=False, use_bias=False)
    out, h = call(selective_scan_chunked, x, use_D=False, use_bias=False)
    assert out.shape == out_ref.shape == (batch, dim, 5)
    assert h.shape == h_ref.shape == (batch, dim, dstate)
    assert_close(out, out_ref)
    assert_close(h, h_ref)


@pytest.mark.parametrize("limit", ["_STEP_ELEMENTS", "_BLOCK_ELEMENTS"])
def test_several_channel_blocks(monkeypatch: pytest.MonkeyPatch, limit: str) -> None:
    """Forces channel blocks of 2, 2, 1 channels (no-grad path; the grad path too for the memory cap)."""
    x = make_inputs(dim=10, groups=2, L=21)  # 5 channels per group
    out_ref, h_ref = call(selective_scan_ref, x)
    per_channel = 2 * 2 * 3 * 6  # batch * G * N * n_chunks with chunk_size=4 (T=4, 6 chunks)
    if limit == "_BLOCK_ELEMENTS":
        per_channel *= 4  # the block limit counts all T steps
    monkeypatch.setattr(ss, limit, 2 * per_channel)  # blocks of 2, 2, 1 channels
    with torch.no_grad():
        out, h = call(selective_scan_chunked, x, chunk_size=4)
    assert_close(out, out_ref)
    assert_close(h, h_ref)
    x["u"].requires_grad_(True)
    out_g, h_g = call(selective_scan_chunked, x, chunk_size=4)
    assert out_g.requires_grad
    assert_close(out_g, out_ref)
    assert_close(h_g, h_ref)


def test_strong_decay_is_stable() -> None:
    """Large delta * |A| (a cumulative decay far below exp(-88) within a chunk) stays finite."""
    x = make_inputs(L=50)
    x["A"] = x["A"] * 40.0
    x["delta"] = x["delta"] + 4.0
    out_ref, h_ref = call(selective_scan_ref, x)
    out, h = call(selective_scan_chunked, x, chunk_size=16)
    assert torch.isfinite(out).all() and torch.isfinite(h).all()
    assert_close(out, out_ref)
    assert_close(h, h_ref)


def test_long_sequence_slow_decay() -> None:
    """Slow decay: the state accumulates over the whole sequence and many chunk boundaries."""
    x = make_inputs(L=300, groups=2, seed=3)
    x["A"] = x["A"] * 0.01
    out_ref, h_ref = call(selective_scan_ref, x)
    out, h = call(selective_scan_chunked, x, chunk_size=16)
    assert_close(out, out_ref)
    assert_close(h, h_ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_dtype_round_trip(dtype: torch.dtype) -> None:
    x = make_inputs()
    xd = {k: v.to(dtype) for k, v in x.items()}
    out, h = call(selective_scan_chunked, xd)
    out_ref, h_ref = call(selective_scan_ref, xd)
    assert out.dtype == dtype and out_ref.dtype == dtype
    assert h.dtype == torch.float32 and h_ref.dtype == torch.float32
    # float32 results may straddle a 16-bit rounding boundary: allow dtype-default tolerances
    loose = dtype != torch.float64
    assert_close(out, out_ref, dtype_default=loose)
    assert_close(h, h_ref)
    # computed in float32 from the rounded inputs
    out32, h32 = call(selective_scan_ref, {k: v.float() for k, v in xd.items()})
    assert_close(out, out32.to(dtype), dtype_default=loose)
    assert_close(h, h32)


# ------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "use_D", "use_z", "use_bias", "softplus"),
    [
        ("variable", True, True, True, True),
        ("grouped", True, True, True, True),
        ("mixed_B_variable_C_grouped", True, True, True, False),
        ("grouped_per_channel", False, False, False, True),
        ("variable", False, False, False, False),
    ],
)
def test_gradients_match_reference(layout: str, use_D: bool, use_z: bool, use_bias: bool, softplus: bool) -> None:
    opts = {"use_D": use_D, "use_z": use_z, "use_bias": use_bias, "softplus": softplus}
    names = ["u", "delta", "A", "B", "C"] + [
        n for n, on in (("D", use_D), ("z", use_z), ("delta_bias", use_bias)) if on
    ]
    w_out = torch.randn(2, 4, 29, generator=torch.Generator().manual_seed(7))
    w_h = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(8))

    def grads(fn: Callable[..., Any], **kw: Any) -> dict[str, Tensor]:
        x = make_inputs(L=29, requires_grad=True, **BC_LAYOUTS[layout])
        out, h = call(fn, x, **opts, **kw)
        ((out * w_out).sum() + (h * w_h).sum()).backward()
        result = {}
        for n in names:
            grad = x[n].grad
            assert grad is not None, n
            result[n] = grad
        return result

    expected = grads(selective_scan_ref)
    got = grads(selective_scan_chunked, chunk_size=6)
    for n in names:
        assert expected[n].abs().max() > 0, n
        assert_close(got[n], expected[n], f"grad of {n}")


# ------------------------------------------------------------------------------------------
# independent hand-written formula
# ------------------------------------------------------------------------------------------


def test_matches_scalar_python_loop() -> None:
    """dim = N = 1: the recurrence written out with Python floats."""
    L = 23
    g = torch.Generator().manual_seed(11)
    u, delta, z = (torch.randn(1, 1, L, generator=g) for _ in range(3))
    B, C = torch.randn(1, 1, L, generator=g), torch.randn(1, 1, L, generator=g)
    A, D, bias = torch.tensor([[-0.7]]), torch.tensor([0.3]), torch.tensor([0.2])

    h, expected = 0.0, []
    for t in range(L):
        dt = math.log1p(math.exp(float(delta[0, 0, t]) + 0.2))  # softplus(delta + bias)
        h = math.exp(dt * -0.7) * h + dt * float(B[0, 0, t]) * float(u[0, 0, t])
        y = float(C[0, 0, t]) * h + 0.3 * float(u[0, 0, t])
        zt = float(z[0, 0, t])
        expected.append(y * zt / (1.0 + math.exp(-zt)))
    want = torch.tensor(expected).view(1, 1, L)

    for fn in (selective_scan_ref, selective_scan_chunked, selective_scan_fn):
        out, last = fn(u, delta, A, B, C, D, z, bias, True, return_last_state=True)
        assert_close(out, want)
        assert_close(last, torch.tensor([[[h]]]))
    out4 = selective_scan_chunked(u, delta, A, B, C, D, z, bias, True, chunk_size=4)
    assert_close(out4, want)


# ------------------------------------------------------------------------------------------
# dispatch
# ------------------------------------------------------------------------------------------


def test_fn_on_cpu_uses_chunked_path(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[Any, ...]] = []
    real = ss.selective_scan_chunked

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(ss, "selective_scan_chunked", spy)
    monkeypatch.setattr(ss, "_load_cuda_kernel", lambda: pytest.fail("CUDA kernel looked up for CPU"))
    x = make_inputs()
    out, h = call(selective_scan_fn, x)
    assert len(calls) == 1
    out_ref, h_ref = call(selective_scan_ref, x)
    assert_close(out, out_ref)
    assert_close(h, h_ref)


def test_fn_uses_kernel_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    received: dict[str, Any] = {}
    sentinel = torch.zeros(1)

    def fake_kernel(*args: Any, **kwargs: Any) -> Tensor:
        received["args"], received["kwargs"] = args, kwargs
        return sentinel

    seen: list[Tensor] = []

    def fake_kernel_for(u: Tensor) -> Callable[..., Any]:
        seen.append(u)
        return fake_kernel

    monkeypatch.setattr(ss, "_kernel_for", fake_kernel_for)
    monkeypatch.setattr(ss, "selective_scan_chunked", lambda *a, **k: pytest.fail("PyTorch path used"))
    x = make_inputs(groups=2)
    result = call(selective_scan_fn, x, softplus=True, last=False)
    assert result is sentinel
    assert seen == [x["u"]]
    positional = received["args"]
    assert len(positional) == 5
    for got, name in zip(positional, ["u", "delta", "A", "B", "C"], strict=True):
        assert got is x[name]
    assert received["kwargs"]["D"] is x["D"]
    assert received["kwargs"]["z"] is x["z"]
    assert received["kwargs"]["delta_bias"] is x["delta_bias"]
    assert received["kwargs"]["delta_softplus"] is True
    assert received["kwargs"]["return_last_state"] is False


@pytest.fixture
def fresh_kernel_cache() -> Any:
    ss._load_cuda_kernel.cache_clear()
    yield
    ss._load_cuda_kernel.cache_clear()


def _install_fake_mamba(monkeypatch: pytest.MonkeyPatch, kernel: Callable[..., Any]) -> None:
    root, ops, iface = (
        types.ModuleType("mamba_ssm"),
        types.ModuleType("mamba_ssm.ops"),
        types.ModuleType("mamba_ssm.ops.selective_scan_interface"),
    )
    iface.selective_scan_fn = kernel  # type: ignore[attr-defined]
    ops.selective_scan_interface = iface  # type: ignore[attr-defined]
    root.ops = ops  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mamba_ssm", root)
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops", ops)
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", iface)


def test_kernel_for_with_fake_mamba_ssm(monkeypatch: pytest.MonkeyPatch, fresh_kernel_cache: None) -> None:
    def fake_kernel(*args: Any, **kwargs: Any) -> None:
        return None

    _install_fake_mamba(monkeypatch, fake_kernel)
    cuda_like: Any = types.SimpleNamespace(is_cuda=True)
    assert ss._kernel_for(torch.zeros(1)) is None  # CPU tensor: never the kernel
    assert ss._kernel_for(cuda_like) is fake_kernel
    # cached: found again without importing
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", None)
    assert ss._kernel_for(cuda_like) is fake_kernel


def test_kernel_for_without_mamba_ssm(
    monkeypatch: pytest.MonkeyPatch, fresh_kernel_cache: None, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)  # makes the import raise ImportError
    cuda_like: Any = types.SimpleNamespace(is_cuda=True)
    with caplog.at_level(logging.DEBUG, logger=ss.__name__):
        assert ss._kernel_for(cuda_like) is None
    assert any("mamba_ssm" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
    # the failed import is cached: a module appearing later is not picked up
    _install_fake_mamba(monkeypatch, lambda *a, **k: None)
    assert ss._kernel_for(cuda_like) is None


def test_kernel_loader_does_not_swallow_other_errors(monkeypatch: pytest.MonkeyPatch, fresh_kernel_cache: None) -> None:
    broken = types.ModuleType("mamba_ssm.ops.selective_scan_interface")

    def __getattr__(name: str) -> Any:
        raise RuntimeError("broken install")

    broken.__getattr__ = __getattr__  # type: ignore[method-assign]
    monkeypatch.setitem(sys.modules, "mamba_ssm", types.ModuleType("mamba_ssm"))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops", types.ModuleType("mamba_ssm.ops"))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", broken)
    with pytest.raises(RuntimeError, match="broken install"):
        ss._kernel_for(types.SimpleNamespace(is_cuda=True))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------


def _bad(name: str, value: Any) -> dict[str, Any]:
    x: dict[str, Any] = make_inputs(groups=2)
    x[name] = value
    return x


BAD_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "u_2d": ("u", _bad("u", torch.randn(2, 4))),
    "u_empty_L": ("u", _bad("u", torch.randn(2, 4, 0))),
    "u_int": ("u", _bad("u", torch.ones(2, 4, 37, dtype=torch.int64))),
    "delta_shape": ("delta", _bad("delta", torch.randn(2, 4, 36))),
    "A_dim": ("A", _bad("A", torch.randn(5, 3))),
    "A_1d": ("A", _bad("A", torch.randn(4))),
    "A_complex": ("A", _bad("A", torch.randn(4, 3, dtype=torch.complex64))),
    "B_L": ("B", _bad("B", torch.randn(2, 2, 3, 36))),
    "B_N": ("B", _bad("B", torch.randn(2, 3 + 1, 37))),
    "B_batch": ("B", _bad("B", torch.randn(3, 3, 37))),
    "B_groups": ("B", _bad("B", torch.randn(2, 3, 3, 37))),
    "B_constant": ("B", _bad("B", torch.randn(4, 3))),
    "C_N": ("C", _bad("C", torch.randn(2, 2, 5, 37))),
    "C_5d": ("C", _bad("C", torch.randn(2, 2, 1, 3, 37))),
    "D_shape": ("D", _bad("D", torch.randn(5))),
    "z_shape": ("z", _bad("z", torch.randn(2, 4, 36))),
    "delta_bias_shape": ("delta_bias", _bad("delta_bias", torch.randn(4, 1))),
}


@pytest.mark.parametrize("fn", [selective_scan_ref, selective_scan_chunked, selective_scan_fn])
@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_inputs_raise_value_error(fn: Callable[..., Any], case: str) -> None:
    name, x = BAD_CASES[case]
    with pytest.raises(ValueError, match=rf"\b{name}\b") as info:
        call(fn, x)
    if case.startswith("B_groups"):
        assert "divisible" in str(info.value)
    if case == "A_complex":
        assert "complex" in str(info.value)


@pytest.mark.parametrize("chunk_size", [0, -3, 2.5, True])
def test_bad_chunk_size(chunk_size: Any) -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        call(selective_scan_chunked, make_inputs(), chunk_size=chunk_size)


def test_non_tensor_argument_is_rejected() -> None:
    x: dict[str, Any] = make_inputs()
    x["D"] = [1.0, 2.0, 3.0, 4.0]
    with pytest.raises(TypeError, match=r"\bD\b"):
        call(selective_scan_chunked, x)
