"""PIT SI-SNR against a brute-force permutation loop; SI-SDR, BSS-eval SDR and oracle masks."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sa_speechsep.metrics import (
    apply_permutation,
    bss_sdr,
    ideal_ratio_mask,
    pit_loss,
    pit_si_snr,
    separation_scores,
    si_snr,
)


def _si_snr_loop(e: torch.Tensor, s: torch.Tensor) -> float:
    e, s = e - e.mean(), s - s.mean()
    t = (e @ s) / (s @ s) * s
    return float(10 * torch.log10((t @ t) / ((e - t) @ (e - t))))


def _brute_force(est: torch.Tensor, ref: torch.Tensor) -> tuple[list[float], list[tuple[int, ...]]]:
    best_vals, best_perms = [], []
    for b in range(est.shape[0]):
        scores = {}
        for perm in itertools.permutations(range(est.shape[1])):
            scores[perm] = np.mean([_si_snr_loop(est[b, perm[j]], ref[b, j]) for j in range(est.shape[1])])
        p = max(scores, key=scores.get)
        best_vals.append(scores[p])
        best_perms.append(p)
    return best_vals, best_perms


@pytest.mark.parametrize("spk", [1, 2, 3, 4])
def test_pit_matches_brute_force(spk):
    torch.manual_seed(spk)
    ref = torch.randn(5, spk, 200, dtype=torch.float64)
    # shuffled noisy copies so that the best permutation is not the identity
    est = torch.stack([ref[b, torch.randperm(spk)] for b in range(5)]) + 0.7 * torch.randn(
        5, spk, 200, dtype=torch.float64
    )
    vals, perms = _brute_force(est, ref)
    got, perm = pit_si_snr(est, ref)
    np.testing.assert_allclose(got.numpy(), vals, rtol=1e-9, atol=1e-9)
    assert [tuple(p) for p in perm.tolist()] == perms
    # the reordered estimates line up with the references
    np.testing.assert_allclose(si_snr(apply_permutation(est, perm), ref).mean(-1).numpy(), vals, rtol=1e-9)


def test_hungarian_path_equals_exhaustive_search():
    torch.manual_seed(7)
    ref = torch.randn(3, 5, 100, dtype=torch.float64)
    est = ref[:, torch.randperm(5)] + 0.5 * torch.randn(3, 5, 100, dtype=torch.float64)
    a, pa = pit_si_snr(est, ref)
    b, pb = pit_si_snr(est, ref, max_exhaustive=2)
    torch.testing.assert_close(a, b)
    assert torch.equal(pa, pb)


def test_si_snr_scale_invariance_and_loss_gradient():
    torch.manual_seed(0)
    ref = torch.randn(2, 2, 300)
    est = ref.flip(1) * 3.0 + 0.1 * torch.randn(2, 2, 300)
    est.requires_grad_(True)
    val, perm = pit_si_snr(est, ref)
    assert perm.tolist() == [[1, 0], [1, 0]]
    torch.testing.assert_close(val, pit_si_snr(est * 0.01, ref)[0], rtol=1e-4, atol=1e-4)
    loss = pit_loss(est, ref, clamp_db=None)
    loss.backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().sum() > 0
    assert float(pit_loss(ref.clone(), ref, clamp_db=30.0)) == pytest.approx(-30.0)


def test_bss_sdr_equals_least_squares_projection():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(400)
    est = np.convolve(ref, [0.8, 0.3, -0.1])[:400] + 0.2 * rng.standard_normal(400)
    L = 8  # noqa: N806
    # full convolution matrix: column k is the reference delayed by k samples (length n + L - 1)
    A = np.stack([np.concatenate([np.zeros(k), ref, np.zeros(L - 1 - k)]) for k in range(L)], axis=1)  # noqa: N806
    est_pad = np.pad(est, (0, L - 1))
    coef, *_ = np.linalg.lstsq(A, est_pad, rcond=None)
    target = A @ coef
    expected = 10 * np.log10(np.sum(target**2) / np.sum((est_pad - target) ** 2))
    assert bss_sdr(est, ref, filter_len=L) == pytest.approx(expected, abs=1e-6)
    # a filtered copy is distortion-free for SDR (the filter is allowed) but not for SI-SDR
    ref0 = ref.copy()
    ref0[-10:] = 0.0  # so that the truncated convolution is exact
    filtered = np.convolve(ref0, [0.8, 0.3, -0.1])[:400]
    assert bss_sdr(filtered, ref0, filter_len=L) > 60
    assert float(si_snr(torch.tensor(filtered), torch.tensor(ref0))) < 20


def test_separation_scores_and_oracle_mask():
    t = torch.arange(8000, dtype=torch.float64) / 8000
    s1 = torch.sin(2 * torch.pi * 220 * t) * (1 + 0.5 * torch.sin(2 * torch.pi * 3 * t))
    s2 = torch.sin(2 * torch.pi * 1330 * t) * (t > 0.3)
    ref = torch.stack([s1, s2])[None]
    mix = ref.sum(1)
    perfect = separation_scores(ref.flip(1), ref, mix)
    assert perfect["si_sdr"][0] > 60 and perfect["si_sdri"][0] > 55 and perfect["sdri"][0] > 40
    nothing = separation_scores(torch.stack([mix, mix], 1), ref, mix)
    assert abs(nothing["si_sdri"][0]) < 1e-6
    irm = ideal_ratio_mask(mix[0], ref[0])
    assert irm.shape == (2, 8000)
    assert separation_scores(irm[None], ref, mix, with_sdr=False)["si_sdri"][0] > 10
