"""Chunked separation of long recordings with overlap-add and consistent speaker order.

A file longer than ``chunk`` samples is cut into windows of exactly ``chunk`` samples that overlap by at
least ``overlap`` samples (the last window is moved back to end at the file end). Windows run through the
model one at a time, so at most one window's activations exist at any moment; only the ``(S, T)`` output
buffer grows with the file. Each window's speakers are re-ordered to match the previous window on their
shared samples (the permutation with the best mean SI-SNR against the previous estimates), then the windows
are cross-faded with linear ramps over the overlap and normalised by the summed weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from shared_attention.serving.control import check_cancelled

from .metrics import pit_si_snr

__all__ = ["chunk_starts", "separate_chunked"]


def chunk_starts(length: int, chunk: int, overlap: int) -> list[int]:
    """Start samples of the windows covering ``length`` samples (each ``chunk`` long, overlap >= ``overlap``)."""
    if chunk <= 0 or not 0 <= overlap < chunk:
        raise ValueError(f"need chunk > overlap >= 0, got chunk={chunk}, overlap={overlap}")
    if length <= chunk:
        return [0]
    hop = chunk - overlap
    starts = list(range(0, length - chunk, hop))
    starts.append(length - chunk)
    return starts


@torch.inference_mode()
def separate_chunked(
    model: Callable[[Tensor], Tensor],
    mix: Tensor,
    chunk: int,
    overlap: int,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> Tensor:
    """Separates a mono mixture ``(T,)`` into ``(S, T)`` window by window.

    Args:
        model: ``(1, C) -> (1, S, C)`` separator (eval mode).
        mix: mixture ``(T,)`` (any device; the output is on ``mix``'s device).
        chunk: window length in samples. overlap: minimum overlap in samples (cross-fade and alignment).
        device: where the model runs (default: ``mix``'s device).
        progress: show a tqdm bar.

    Returns:
        ``(S, T)`` estimates.
    """
    if mix.dim() != 1:
        raise ValueError(f"expected a mono mixture (T,), got {tuple(mix.shape)}")
    device = torch.device(device) if device is not None else mix.device
    total = mix.shape[0]
    starts = chunk_starts(total, chunk, overlap)
    if len(starts) == 1:
        return model(mix[None].to(device))[0].to(mix.device)  # (S, T)
    out: Tensor | None = None
    weight = torch.zeros(total, dtype=torch.float32, device=mix.device)
    prev: Tensor | None = None  # previous window's estimates (S, chunk)
    prev_start = 0
    iterator = starts
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(starts, desc="separating", unit="chunk")
    for i, start in enumerate(iterator):
        check_cancelled()  # a server request whose client gave up stops here, within one chunk
        est = model(mix[start : start + chunk][None].to(device))[0].to(mix.device).float()  # (S, C)
        if out is None:
            out = torch.zeros(est.shape[0], total, dtype=torch.float32, device=mix.device)
        if prev is not None:
            shared = prev_start + chunk - start  # samples common to both windows
            ref = prev[:, chunk - shared :]  # (S, shared)
            _, perm = pit_si_snr(est[None, :, :shared].double(), ref[None].double())
            est = est[perm[0]]  # (S, C) in the previous window's speaker order
        w = torch.ones(chunk, dtype=torch.float32, device=mix.device)
        if i > 0:
            fade_in = prev_start + chunk - start
            w[:fade_in] = torch.linspace(0.0, 1.0, fade_in + 2, device=mix.device)[1:-1]
        if i + 1 < len(starts):
            fade_out = start + chunk - starts[i + 1]
            w[chunk - fade_out :] *= torch.linspace(1.0, 0.0, fade_out + 2, device=mix.device)[1:-1]
        out[:, start : start + chunk] += est * w
        weight[start : start + chunk] += w
        prev, prev_start = est, start
    assert out is not None
    return out / weight.clamp_min(1e-8)
