"""Selective scan (the S6 layer of Mamba) with a fast pure-PyTorch path.

Reference: A. Gu and T. Dao, "Mamba: Linear-Time Sequence Modeling with Selective State
Spaces", 2023 (arXiv:2312.00752). For every channel ``d`` and state ``n`` the selective SSM
(eq. 2a/2b of the paper) is discretised with a time-varying step ``delta_t``:

* ``A`` with zero-order hold: ``A_bar_t = exp(delta_t * A[d, n])``;
* ``B`` with the simplified Euler rule used by the official kernel: ``B_bar_t = delta_t * B_t[n]``;

which gives the recurrence (eq. 2a, 2b)::

    h_t[n] = exp(delta_t * A[d, n]) * h_{t-1}[n] + delta_t * B_t[n] * u_t
    y_t    = sum_n C_t[n] * h_t[n]            (+ D[d] * u_t, then * silu(z_t) when given)

Three public entry points share mamba-ssm's ``selective_scan_fn`` signature and semantics:

* :func:`selective_scan_ref` is the readable sequential reference (one step per time index);
* :func:`selective_scan_chunked` is the fast pure-PyTorch path (two-level chunked scan);
* :func:`selective_scan_fn` dispatches to mamba-ssm's CUDA kernel when the package is importable
  and the input lives on a CUDA device, and to :func:`selective_scan_chunked` otherwise.

Everything is computed in float32, as mamba-ssm does; ``out`` is cast back to ``u``'s dtype and
``last_state`` is returned in float32 (also as mamba-ssm does).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, overload

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["selective_scan_chunked", "selective_scan_fn", "selective_scan_ref"]

logger = logging.getLogger(__name__)

ScanKernel = Callable[..., Any]

#: The chunked scan processes channels in blocks. Without autograd, a block is sized so that
#: one step updates at most ``_STEP_ELEMENTS`` state entries (batch * G * channels * N * chunks):
#: each step stays cache resident and below ATen's intra-op grain size (32768), so the ~130
#: small per-step ops of a block run single-threaded (no thread wake-up per op, no stalls when
#: another process holds a core) while the few large per-block ops still use every thread.
#: Tuned on a 2-core CPU (batch=2, dim=192, N=16, L=4096).
_STEP_ELEMENTS = 1 << 14
#: Cap (in float32 elements) on each of the two per-block work tensors (decay factors and
#: inputs, shaped (batch, G, channels, T, N, chunks)); the only limit when autograd is recording.
_BLOCK_ELEMENTS = 1 << 22

_LOG2E = math.log2(math.e)


# --------------------------------------------------------------------------------------------
# Validation and shared pre/post-processing
# --------------------------------------------------------------------------------------------


def _shape(x: Tensor) -> str:
    return str(tuple(x.shape))


def _check_bc(name: str, X: Tensor, batch: int, dim: int, dstate: int, L: int) -> None:
    """Checks that ``X`` (B or C) is (batch, N, L) or grouped (batch, G, N, L)."""
    if X.ndim == 3:
        expected = (batch, dstate, L)
        if tuple(X.shape) != expected:
            raise ValueError(
                f"{name} must have shape (batch, N, L) = {expected} to match u {(batch, dim, L)} "
                f"and A {(dim, dstate)}, got {name}.shape={_shape(X)}"
            )
    elif X.ndim == 4:
        groups = X.shape[1]
        if X.shape[0] != batch or X.shape[2] != dstate or X.shape[3] != L:
            raise ValueError(
                f"{name} must have shape (batch, G, N, L) = ({batch}, G, {dstate}, {L}) to match u "
                f"{(batch, dim, L)} and A {(dim, dstate)}, got {name}.shape={_shape(X)}"
            )
        if groups < 1 or dim % groups != 0:
            raise ValueError(f"{name} has G={groups} groups (shape {_shape(X)}) but dim={dim} is not divisible by G")
    else:
        raise ValueError(
            f"{name} must be 3-D (batch, N, L) or 4-D (batch, G, N, L); got {X.ndim}-D "
            f"{name}.shape={_shape(X)} (time-invariant (dim, N) {name} is not supported)"
        )


def _check_inputs(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
) -> None:
    """Raises ``ValueError`` (naming the argument and its shape) for unsupported inputs."""
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    for name, x in named.items():
        if x is None:
            continue
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.is_complex():
            raise ValueError(f"complex {name} is not supported (got dtype {x.dtype}); use a real {name}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating point tensor, got dtype {x.dtype}")
    if u.ndim != 3:
        raise ValueError(f"u must be 3-D (batch, dim, L), got u.shape={_shape(u)}")
    batch, dim, L = u.shape
    if L < 1:
        raise ValueError(f"u must have a sequence length L >= 1, got u.shape={_shape(u)}")
    if delta.shape != u.shape:
        raise ValueError(f"delta must have the shape of u {_shape(u)}, got delta.shape={_shape(delta)}")
    if A.ndim != 2 or A.shape[0] != dim:
        raise ValueError(f"A must have shape (dim, N) with dim={dim}, got A.shape={_shape(A)}")
    dstate = A.shape[1]
    _check_bc("B", B, batch, dim, dstate, L)
    _check_bc("C", C, batch, dim, dstate, L)
    if D is not None and tuple(D.shape) != (dim,):
        raise ValueError(f"D must have shape (dim,) = ({dim},), got D.shape={_shape(D)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must have the shape of u {_shape(u)}, got z.shape={_shape(z)}")
    if delta_bias is not None and tuple(delta_bias.shape) != (dim,):
        raise ValueError(f"delta_bias must have shape (dim,) = ({dim},), got delta_bias.shape={_shape(delta_bias)}")


class _Prepared(NamedTuple):
    """Float32 inputs with the bias/softplus already applied to ``delta``."""

    u: Tensor  # (batch, dim, L)
    delta: Tensor  # (batch, dim, L)
    A: Tensor  # (dim, N)
    B: Tensor  # (batch, G_B, N, L)
    C: Tensor  # (batch, G_C, N, L)


def _prepare(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> _Prepared:
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    B = B.float() if B.ndim == 4 else B.float().unsqueeze(1)  # (batch, G_B, N, L)
    C = C.float() if C.ndim == 4 else C.float().unsqueeze(1)  # (batch, G_C, N, L)
    return _Prepared(u.float(), delta, A.float(), B, C)


def _finish(
    y: Tensor,
    last_state: Tensor,
    u: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    dtype: torch.dtype,
    return_last_state: bool,
) -> Tensor | tuple[Tensor, Tensor]:
    """Applies the D skip and the silu(z) gate in float32, then casts ``out`` to ``dtype``."""
    out = y if D is None else y + u * D.float()[:, None]  # (batch, dim, L)
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(dtype)
    return (out, last_state) if return_last_state else out


# --------------------------------------------------------------------------------------------
# Reference: plain sequential loop
# --------------------------------------------------------------------------------------------


def _per_channel(X: Tensor, dim: int) -> Tensor:
    """(batch, G, N, L) -> (batch, dim, N, L) (channel d uses group d // (dim // G)); G = 1 broadcasts."""
    return X if X.shape[1] == 1 else X.repeat_interleave(dim // X.shape[1], dim=1)


@overload
def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    z: Tensor | None = ...,
    delta_bias: Tensor | None = ...,
    delta_softplus: bool = ...,
    return_last_state: Literal[False] = ...,
) -> Tensor: ...
@overload
def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    z: Tensor | None = ...,
    delta_bias: Tensor | None = ...,
    delta_softplus: bool = ...,
    *,
    return_last_state: Literal[True],
) -> tuple[Tensor, Tensor]: ...
@overload
def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    z: Tensor | None = ...,
    delta_bias: Tensor | None = ...,
    delta_softplus: bool = ...,
    return_last_state: bool = ...,
) -> Tensor | tuple[Tensor, Tensor]: ...
def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Reference selective scan: one sequential step per time index.

    Args:
        u: Input, shape (batch, dim, L).
        delta: Step sizes before ``delta_bias``/softplus, shape (batch, dim, L).
        A: Real state matrix (diagonal per channel), shape (dim, N).
        B: Input projection, shape (batch, N, L) or grouped (batch, G, N, L) with dim % G == 0;
            channel ``d`` uses group ``d // (dim // G)``.
        C: Output projection, same conventions as ``B``.
        D: Optional skip connection, shape (dim,): ``out += u * D``.
        z: Optional gate, shape (batch, dim, L): ``out *= silu(z)``.
        delta_bias: Optional bias added to ``delta``, shape (dim,).
        delta_softplus: Whether to apply softplus to ``delta`` (after the bias).
        return_last_state: Whether to also return the final state.

    Returns:
        ``out`` of shape (batch, dim, L) in ``u``'s dtype, or ``(out, last_state)`` with
        ``last_state`` of shape (batch, dim, N) in float32 when ``return_last_state``.

    Raises:
        ValueError: If a shape or dtype is unsupported.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    p = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    batch, dim, L = p.u.shape
    Bc, Cc = _per_channel(p.B, dim), _per_channel(p.C, dim)  # (batch, dim or 1, N, L)
    deltaA = torch.exp(p.delta[..., None] * p.A[:, None, :])  # (batch, dim, L, N)
    deltaB_u = (p.delta * p.u)[..., None] * Bc.transpose(-1, -2)  # (batch, dim, L, N)
    h = p.u.new_zeros(batch, dim, p.A.shape[1])  # (batch, dim, N)
    ys = []
    for t in range(L):
        h = deltaA[:, :, t] * h + deltaB_u[:, :, t]
        ys.append((h * Cc[..., t]).sum(-1))  # (batch, dim)
    y = torch.stack(ys, dim=-1)  # (batch, dim, L)
    return _finish(y, h, p.u, D, z, u.dtype, return_last_state)


# --------------------------------------------------------------------------------------------
# Fast path: two-level chunked scan
# --------------------------------------------------------------------------------------------


def _regroup(X: Tensor, groups: int) -> Tensor:
    """(batch, G_X, N, L) -> (batch, groups, N, L) for a multiple ``groups`` of G_X."""
    return X if X.shape[1] == groups else X.repeat_interleave(groups // X.shape[1], dim=1)


def _chunk_major(x: Tensor, n_chunks: int, T: int) -> Tensor:
    """(..., n_chunks * T) -> (..., T, n_chunks): time ``c * T + t`` goes to ``[..., t, c]``."""
    return x.reshape(*x.shape[:-1], n_chunks, T).transpose(-1, -2).contiguous()


def _linear_scan_last_dim(a: Tensor, b: Tensor) -> Tensor:
    """Solves ``x[..., c] = a[..., c] * x[..., c - 1] + b[..., c]`` (``x[..., -1] = 0``) for all ``c``.

    Log-depth (Hillis-Steele) scan over the composition of affine maps, using only products
    and multiply-adds (no divisions or logarithms), so it is as well conditioned as the loop.
    """
    size = a.shape[-1]
    shift = 1
    while shift < size:
        b = torch.cat([b[..., :shift], torch.addcmul(b[..., shift:], a[..., shift:], b[..., :-shift])], dim=-1)
        if 2 * shift < size:
            a = torch.cat([a[..., :shift], a[..., shift:] * a[..., :-shift]], dim=-1)
        shift *= 2
    return b


def _scan_chunked(p: _Prepared, chunk_size: int) -> tuple[Tensor, Tensor]:
    """Runs the recurrence on prepared float32 inputs; returns y (batch, dim, L), h_L (batch, dim, N).

    The sequence is cut into ``m`` chunks of ``T`` steps and all chunks are scanned in parallel:

    1. local scan of every chunk from a zero state (T steps over all chunks at once), keeping
       only each chunk's final local state;
    2. carry across chunks: ``h_start[c + 1] = P[c] * h_start[c] + local_end[c]`` with
       ``P[c] = exp(A * sum(delta over chunk c))``, the product of the chunk's decays (a
       log-depth scan over the ``m`` chunks);
    3. the scan of step 1 again, this time from ``h_start``, reading ``y_t`` off each step.

    Every step is the plain multiplicative recurrence (no ``exp(-cumsum)`` rescaling), so the
    result is as well conditioned as the sequential reference. Channels are processed in blocks
    (they are independent) to bound memory.
    """
    u, delta, A, B, C = p
    batch, dim, L = u.shape
    dstate = A.shape[1]
    if dim == 0:
        return u.new_zeros(batch, 0, L), u.new_zeros(batch, 0, dstate)
    G = math.lcm(B.shape[1], C.shape[1])
    dpg = dim // G  # channels per group
    T = min(chunk_size, L)
    m = -(-L // T)  # number of chunks
    pad = m * T - L
    du = delta * u  # (batch, dim, L)
    if pad:
        # delta = 0 gives a decay of exactly 1 and no input: padded steps keep the state unchanged.
        delta, du = F.pad(delta, (0, pad)), F.pad(du, (0, pad))
        B, C = F.pad(B, (0, pad)), F.pad(C, (0, pad))

    def grouped_inputs(x: Tensor) -> Tensor:  # (batch, dim, m*T) -> (batch, G, dpg, T, 1, m)
        return _chunk_major(x, m, T).view(batch, G, dpg, T, 1, m)

    def grouped_proj(X: Tensor) -> Tensor:  # (batch, G_X, N, m*T) -> (batch, G, 1, T, N, m)
        X = _regroup(X, G).reshape(batch, G, dstate, m, T).permute(0, 1, 4, 2, 3).contiguous()
        return X.unsqueeze(2)

    dl = grouped_inputs(delta)
    dlu = grouped_inputs(du)
    Bg, Cg = grouped_proj(B), grouped_proj(C)
    # exp(delta * A) is evaluated as exp2(delta * A * log2(e)): the same value up to float32
    # rounding, and exp2 is markedly cheaper than exp on CPU (this is the largest single cost).
    Ag = (A * _LOG2E).reshape(G, dpg, 1, dstate, 1)  # (G, dpg, 1, N, 1)
    Pc = torch.exp2(dl.sum(3) * Ag.squeeze(2))  # whole-chunk decay (batch, G, dpg, N, m)

    # Without autograd the two big per-block tensors are written into buffers reused by every
    # block (fresh multi-MiB allocations cost page faults on every block) and the per-step size
    # is capped. With autograd, every step is a graph node whose backward is multithreaded, so
    # fewer, larger steps win: only the memory cap applies.
    reuse = not (torch.is_grad_enabled() and any(x.requires_grad for x in p))
    per_channel = batch * G * dstate * m  # elements per channel of one step's state
    block = min(dpg, _BLOCK_ELEMENTS // max(1, per_channel * T))
    if reuse:
        block = min(block, _STEP_ELEMENTS // max(1, per_channel))
    block = max(1, block)
    if reuse:
        dA_buf = u.new_empty(batch, G, block, T, dstate, m)
        X_buf = u.new_empty(batch, G, block, T, dstate, m)
        y_all = u.new_empty(batch, G, dpg, T, m)
    y_blocks: list[Tensor] = []
    h_blocks: list[Tensor] = []
    for j0 in range(0, dpg, block):
        j = slice(j0, j0 + block)
        jb = min(dpg, j0 + block) - j0
        if reuse:
            dA = torch.mul(dl[:, :, j], Ag[:, j], out=dA_buf[:, :, :jb]).exp2_()
            X = torch.mul(dlu[:, :, j], Bg, out=X_buf[:, :, :jb])
        else:
            dA = (dl[:, :, j] * Ag[:, j]).exp2_()  # (batch, G, jb, T, N, m)
            X = dlu[:, :, j] * Bg  # (batch, G, jb, T, N, m)

        Xs, dAs = X.unbind(3), dA.unbind(3)  # T views of (batch, G, jb, N, m)

        # 1. local scan of every chunk from zero; keep the end state (batch, G, jb, N, m)
        if reuse:
            h_loc = Xs[0].clone()
            for t in range(1, T):
                torch.addcmul(Xs[t], dAs[t], h_loc, out=h_loc)
        else:
            h_loc = Xs[0]
            for t in range(1, T):
                h_loc = torch.addcmul(Xs[t], dAs[t], h_loc)

        # 2. carry the state across chunks: true end state of every chunk, then shift by one
        h_end = _linear_scan_last_dim(Pc[:, :, j], h_loc)  # (batch, G, jb, N, m)
        h_blocks.append(h_end[..., -1])
        hc = torch.cat([torch.zeros_like(h_end[..., :1]), h_end[..., :-1]], dim=-1)  # start states

        # 3. rescan from the true chunk start states and contract with C
        if reuse:
            # overwrite X with the states h_t, then contract all of them with C at once
            for t in range(T):
                hc = torch.addcmul(Xs[t], dAs[t], hc, out=Xs[t])
            torch.sum(X.mul_(Cg), dim=-2, out=y_all[:, :, j])  # (batch, G, jb, T, m)
        else:
            ys = []
            for X_t, dA_t, C_t in zip(Xs, dAs, Cg.unbind(3), strict=True):
                hc = torch.addcmul(X_t, dA_t, hc)
                ys.append((hc * C_t).sum(-2))  # (batch, G, jb, m)
            y_blocks.append(torch.stack(ys, dim=3))  # (batch, G, jb, T, m)

    y = y_all if reuse else torch.cat(y_blocks, dim=2)  # (batch, G, dpg, T, m)
    y = y.transpose(-1, -2).reshape(batch, dim, m * T)[..., :L]
    last_state = torch.cat(h_blocks, dim=2).reshape(batch, dim, dstate)
    return y, last_state


@overload
def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    z: Tensor | None = ...,
    delta_bias: Tensor | None = ...,
    delta_softplus: bool = ...,
    return_last_state: Literal[False] = ...,
    *,
    chunk_size: int = ...,
) -> Tensor: ...
@overload
def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    z: Tensor | None = ...,
    delta_bias: Tensor | None = ...,
    delta_softplus: bool = ...,
    *,
    return_last_state: Literal[True],
    chunk_size: int = ...,
) -> tuple[Tensor, Tensor]: ...
@overload
def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    z: Tensor | None = ...,
    delta_bias: Tensor | None = ...,
    delta_softplus: bool = ...,
    return_last_state: bool = ...,
    *,
    chunk_size: int = ...,
) -> Tensor | tuple[Tensor, Tensor]: ...
def selective_scan_chunked(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    chunk_size: int = 64,
) -> Tensor | tuple[Tensor, Tensor]:
    """Fast pure-PyTorch selective scan (two-level chunked scan); differentiable by autograd.

    The sequence is cut into chunks of ``chunk_size`` steps that are scanned in parallel; a
    short sequential pass carries the state from chunk to chunk and a second parallel pass
    produces the outputs. Each step uses the same multiplicative recurrence as the reference,
    so no ``exp(-cumsum)`` rescaling can overflow. The Python-level step count is about
    ``2 * chunk_size + L / chunk_size`` instead of ``L``.

    Args:
        u: Input, shape (batch, dim, L).
        delta: Step sizes before ``delta_bias``/softplus, shape (batch, dim, L).
        A: Real state matrix (diagonal per channel), shape (dim, N).
        B: Input projection, shape (batch, N, L) or grouped (batch, G, N, L) with dim % G == 0;
            channel ``d`` uses group ``d // (dim // G)``.
        C: Output projection, same conventions as ``B``.
        D: Optional skip connection, shape (dim,): ``out += u * D``.
        z: Optional gate, shape (batch, dim, L): ``out *= silu(z)``.
        delta_bias: Optional bias added to ``delta``, shape (dim,).
        delta_softplus: Whether to apply softplus to ``delta`` (after the bias).
        return_last_state: Whether to also return the final state.
        chunk_size: Steps per chunk (>= 1); it need not divide L.

    Returns:
        ``out`` of shape (batch, dim, L) in ``u``'s dtype, or ``(out, last_state)`` with
        ``last_state`` of shape (batch, dim, N) in float32 when ``return_last_state``.

    Raises:
        ValueError: If a shape or dtype is unsupported, or ``chunk_size`` < 1.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got chunk_size={chunk_size!r}")
    p = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    y, last_state = _scan_chunked(p, chunk_size)
    return _finish(y, last_state, p.u, D, z, u.dtype, return_last_state)


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------


@functools.cache
def _load_cuda_kernel() -> ScanKernel | None:
    """Imports mamba-ssm's ``selective_scan_fn`` once; ``None`` (logged at debug) if unavailable."""
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as kernel
    except ImportError as exc:
        logger.debug("mamba_ssm selective scan kernel unavailable, using the PyTorch path: %s", exc)
        return None
    found: ScanKernel = kernel
    return found


def _kernel_for(u: Tensor) -> ScanKernel | None:
    """Returns mamba-ssm's CUDA kernel when it applies to ``u`` (a CUDA tensor), else ``None``."""
    if not u.is_cuda:
        return None
    return _load_cuda_kernel()


@overload
def selective_scan_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    z: Tensor | None = ...,
    delta_bias: Tensor | None = ...,
    delta_softplus: bool = ...,
    return_last_state: Literal[False] = ...,
) -> Tensor: ...
@overload
def selective_scan_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    z: Tensor | None = ...,
    delta_bias: Tensor | None = ...,
    delta_softplus: bool = ...,
    *,
    return_last_state: Literal[True],
) -> tuple[Tensor, Tensor]: ...
@overload
def selective_scan_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = ...,
    z: Tensor | None = ...,
    delta_bias: Tensor | None = ...,
    delta_softplus: bool = ...,
    return_last_state: bool = ...,
) -> Tensor | tuple[Tensor, Tensor]: ...
def selective_scan_fn(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with mamba-ssm's signature and semantics.

    Uses mamba-ssm's CUDA kernel when ``mamba_ssm`` is importable and ``u`` is a CUDA tensor,
    otherwise :func:`selective_scan_chunked`. Inputs are validated in both cases.

    Args:
        u: Input, shape (batch, dim, L).
        delta: Step sizes before ``delta_bias``/softplus, shape (batch, dim, L).
        A: Real state matrix (diagonal per channel), shape (dim, N).
        B: Input projection, shape (batch, N, L) or grouped (batch, G, N, L) with dim % G == 0;
            channel ``d`` uses group ``d // (dim // G)``.
        C: Output projection, same conventions as ``B``.
        D: Optional skip connection, shape (dim,): ``out += u * D``.
        z: Optional gate, shape (batch, dim, L): ``out *= silu(z)``.
        delta_bias: Optional bias added to ``delta``, shape (dim,).
        delta_softplus: Whether to apply softplus to ``delta`` (after the bias).
        return_last_state: Whether to also return the final state.

    Returns:
        ``out`` of shape (batch, dim, L) in ``u``'s dtype, or ``(out, last_state)`` with
        ``last_state`` of shape (batch, dim, N) when ``return_last_state``.

    Raises:
        ValueError: If a shape or dtype is unsupported.
    """
    _check_inputs(u, delta, A, B, C, D, z, delta_bias)
    kernel = _kernel_for(u)
    if kernel is not None:
        result: Tensor | tuple[Tensor, Tensor] = kernel(
            u,
            delta,
            A,
            B,
            C,
            D=D,
            z=z,
            delta_bias=delta_bias,
            delta_softplus=delta_softplus,
            return_last_state=return_last_state,
        )
        return result
    return selective_scan_chunked(
        u,
        delta,
        A,
        B,
        C,
        D,
        z,
        delta_bias,
        delta_softplus,
        return_last_state,
    )
