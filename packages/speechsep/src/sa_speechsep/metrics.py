"""Separation losses and metrics.

* SI-SNR / SI-SDR (Le Roux et al., 2019): zero-mean, ``10 log10(|a s|^2 / |a s - e|^2)`` with the optimal
  scale ``a = <e, s> / |s|^2``.
* Utterance-level permutation-invariant training (Kolbaek et al., 2017): the SI-SNR of the best
  speaker permutation, vectorised over the batch and all permutations (Hungarian assignment for many
  speakers).
* SDR of BSS-eval v3 (Vincent et al., 2006): energy of the projection of the estimate on 512 delayed
  copies of its reference over the energy of the rest (the distortion-filter SDR of mir_eval's
  ``bss_eval_sources``; the permutation is the SI-SNR one).
* SI-SDRi / SDRi: improvement over the unprocessed mixture.
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "si_snr",
    "pairwise_si_snr",
    "pit_si_snr",
    "pit_loss",
    "apply_permutation",
    "bss_sdr",
    "separation_scores",
    "ideal_ratio_mask",
]

_EPS = 1e-8


def si_snr(est: Tensor, ref: Tensor, eps: float = _EPS) -> Tensor:
    """Scale-invariant SNR in dB over the last axis; shapes broadcast, result drops the last axis."""
    est = est - est.mean(-1, keepdim=True)
    ref = ref - ref.mean(-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * ref
    noise = est - target
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


def pairwise_si_snr(est: Tensor, ref: Tensor) -> Tensor:
    """``(B, S, T) x (B, S, T) -> (B, S_est, S_ref)`` SI-SNR of every estimate against every reference."""
    return si_snr(est.unsqueeze(2), ref.unsqueeze(1))  # (B, S, S)


@lru_cache(maxsize=16)
def _permutation_tuples(n: int) -> tuple[tuple[int, ...], ...]:
    return tuple(itertools.permutations(range(n)))


def _permutations(n: int) -> Tensor:
    # a fresh tensor per call: a cached one made under inference_mode could not be saved for backward later
    return torch.tensor(_permutation_tuples(n), dtype=torch.long)  # (n!, n)


def pit_si_snr(est: Tensor, ref: Tensor, max_exhaustive: int = 6) -> tuple[Tensor, Tensor]:
    """Best-permutation SI-SNR per utterance.

    Args:
        est, ref: ``(B, S, T)``.
        max_exhaustive: up to this many speakers all ``S!`` permutations are scored in one vectorised
            gather; above it the Hungarian algorithm (scipy) finds the same optimum per utterance.

    Returns:
        ``(si_snr (B,) mean over speakers of the best permutation, perm (B, S))`` where ``perm[b, j]`` is
        the estimate index assigned to reference ``j``.
    """
    if est.shape != ref.shape or est.dim() != 3:
        raise ValueError(f"expected two (B, S, T) tensors of one shape, got {tuple(est.shape)} {tuple(ref.shape)}")
    b, s, _ = est.shape
    mat = pairwise_si_snr(est, ref)  # (B, S_est, S_ref)
    if s <= max_exhaustive:
        perms = _permutations(s).to(est.device)  # (P, S)
        ref_idx = torch.arange(s, device=est.device)
        scores = mat[:, perms, ref_idx].mean(-1)  # (B, P)
        best, idx = scores.max(dim=1)  # (B,)
        return best, perms[idx]  # (B,), (B, S)
    from scipy.optimize import linear_sum_assignment

    perm = torch.empty(b, s, dtype=torch.long, device=est.device)
    for i, m in enumerate(mat.detach().cpu().numpy()):
        rows, cols = linear_sum_assignment(-m)  # rows = estimates, cols = references
        perm[i, torch.as_tensor(cols)] = torch.as_tensor(rows, device=est.device)
    ref_idx = torch.arange(s, device=est.device)
    best = mat[torch.arange(b, device=est.device)[:, None], perm, ref_idx].mean(-1)  # (B,)
    return best, perm


def pit_loss(est: Tensor, ref: Tensor, clamp_db: float | None = 30.0) -> Tensor:
    """Negative PIT SI-SNR averaged over the batch; per-utterance SI-SNR capped at ``clamp_db`` (SpeechBrain
    recipe: already separated utterances stop dominating the gradient)."""
    best, _ = pit_si_snr(est, ref)
    if clamp_db is not None:
        best = best.clamp(max=clamp_db)
    return -best.mean()


def apply_permutation(est: Tensor, perm: Tensor) -> Tensor:
    """Reorders ``est (B, S, T)`` so that ``out[:, j]`` is the estimate for reference ``j``."""
    idx = perm[:, :, None].expand(-1, -1, est.shape[-1])
    return est.gather(1, idx)


def bss_sdr(est: np.ndarray, ref: np.ndarray, filter_len: int = 512) -> float:
    """BSS-eval v3 SDR (dB) of one estimate ``(T,)`` against its reference ``(T,)``.

    The target is the least-squares projection of the estimate on ``filter_len`` delayed copies of the
    reference (a Toeplitz system solved with scipy); everything else counts as distortion.
    """
    from scipy.linalg import solve_toeplitz

    est = np.asarray(est, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    n = len(ref)
    L = min(filter_len, n)  # noqa: N806
    nfft = 1 << int(np.ceil(np.log2(2 * n + L)))
    R = np.fft.rfft(ref, nfft)  # noqa: N806
    E = np.fft.rfft(est, nfft)  # noqa: N806
    auto = np.fft.irfft(np.abs(R) ** 2, nfft)[:L]  # r_ss[k] = sum_t s[t] s[t+k]
    cross = np.fft.irfft(np.conj(R) * E, nfft)[:L]  # r_se[k] = sum_t s[t] e[t+k]
    auto[0] += 1e-10 * max(auto[0], 1e-12)
    coef = solve_toeplitz(auto, cross)
    target = np.convolve(ref, coef)  # (n + L - 1,): the filtered reference, tail kept as in mir_eval
    distortion = np.pad(est, (0, L - 1)) - target
    return float(10 * np.log10((np.sum(target**2) + 1e-12) / (np.sum(distortion**2) + 1e-12)))


def separation_scores(est: Tensor, ref: Tensor, mix: Tensor, with_sdr: bool = True) -> dict[str, list[float]]:
    """Per-utterance SI-SDR, SI-SDRi and (optionally) SDR, SDRi of a batch.

    Args:
        est: ``(B, S, T)`` estimates. ref: ``(B, S, T)`` references. mix: ``(B, T)`` mixtures.
        with_sdr: also compute the BSS-eval SDR (slower: one Toeplitz solve per source).

    Returns:
        Lists of length ``B`` under ``si_sdr``, ``si_sdri`` (and ``sdr``, ``sdri``), each averaged over speakers.
    """
    est, ref, mix = est.detach().double(), ref.detach().double(), mix.detach().double()
    best, perm = pit_si_snr(est, ref)  # (B,)
    mix_si = si_snr(mix.unsqueeze(1).expand_as(ref), ref).mean(-1)  # (B,)
    out: dict[str, list[float]] = {"si_sdr": best.tolist(), "si_sdri": (best - mix_si).tolist()}
    if with_sdr:
        ordered = apply_permutation(est, perm).cpu().numpy()
        r, m = ref.cpu().numpy(), mix.cpu().numpy()
        sdr, sdri = [], []
        for i in range(r.shape[0]):
            e_s = [bss_sdr(ordered[i, j], r[i, j]) for j in range(r.shape[1])]
            m_s = [bss_sdr(m[i], r[i, j]) for j in range(r.shape[1])]
            sdr.append(float(np.mean(e_s)))
            sdri.append(float(np.mean(e_s) - np.mean(m_s)))
        out["sdr"], out["sdri"] = sdr, sdri
    return out


def ideal_ratio_mask(mix: Tensor, sources: Tensor, n_fft: int = 256, hop: int = 64) -> Tensor:
    """Oracle ideal-ratio-mask separation ``(S, T)`` of ``mix (T,)`` given the true ``sources (S, T)``:
    ``M_j = |S_j| / sum_i |S_i|`` on a Hann STFT (32 ms at 8 kHz), applied to the mixture's STFT."""
    window = torch.hann_window(n_fft, dtype=mix.dtype, device=mix.device)
    spec = torch.stft(sources, n_fft, hop, window=window, return_complex=True)  # (S, F, N)
    mspec = torch.stft(mix, n_fft, hop, window=window, return_complex=True)  # (F, N)
    mag = spec.abs()
    mask = mag / mag.sum(0, keepdim=True).clamp_min(1e-8)  # (S, F, N)
    return torch.istft(mask * mspec, n_fft, hop, window=window, length=mix.shape[-1])  # (S, T)
