"""Chunked separation: equals whole-file separation of a 60 s mixture within 0.5 dB SI-SDR, runs one chunk at a
time (bounded activations) and keeps the speaker order across chunks."""

from __future__ import annotations

import numpy as np
import torch
from sa_speechsep.metrics import si_snr
from sa_speechsep.models.mossformer import build_mossformer
from sa_speechsep.separate import chunk_starts, separate_chunked
from torch import nn

SR = 8000


def _sources(seconds: float, seed: int = 0) -> torch.Tensor:
    """Two different 'talkers': a low harmonic voice and a high one, each with syllable-rate envelopes."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    env1 = np.clip(np.sin(2 * np.pi * 3.1 * t + rng.uniform(0, 6)), 0, None)
    env2 = np.clip(np.sin(2 * np.pi * 4.3 * t + rng.uniform(0, 6)), 0, None)
    v1 = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6)) * env1
    v2 = sum(np.sin(2 * np.pi * 310 * k * t) / k for k in range(1, 5)) * env2
    return torch.tensor(np.stack([v1, v2]) * 0.2, dtype=torch.float32)  # (2, T)


class _Recorder(nn.Module):
    """Wraps a model and records the shape of every input it sees."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.model(x)


def test_chunk_starts_cover_the_file():
    starts = chunk_starts(100, 30, 10)
    assert starts[0] == 0 and starts[-1] == 70
    assert all(b - a <= 20 for a, b in zip(starts, starts[1:], strict=False))
    assert chunk_starts(20, 30, 10) == [0]


def _trained_tiny_model() -> nn.Module:
    """A tiny MossFormer trained for a few seconds on 0.5 s crops of the two synthetic talkers (PIT SI-SNR)."""

    torch.manual_seed(0)
    model = build_mossformer("tiny")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    train = _sources(20.0, seed=5)
    g = torch.Generator().manual_seed(0)
    crop = SR // 2
    with torch.enable_grad():  # the calling test runs under no_grad
        _fit(model, opt, train, crop, g)
    return model.eval()


def _fit(model: nn.Module, opt: torch.optim.Optimizer, train: torch.Tensor, crop: int, g: torch.Generator) -> None:
    from sa_speechsep.metrics import pit_loss

    for _ in range(80):
        starts = torch.randint(0, train.shape[1] - crop, (4,), generator=g).tolist()
        ref = torch.stack([train[:, s : s + crop] for s in starts])  # (4, 2, crop)
        loss = pit_loss(model(ref.sum(1)), ref)
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def test_60s_chunked_matches_whole_file_within_half_a_db():
    model = _trained_tiny_model()
    ref = _sources(60.0)
    mix = ref.sum(0)  # (T,)
    whole = model(mix[None])[0]  # (2, T)
    chunk, overlap = 10 * SR, 2 * SR
    rec = _Recorder(model)
    chunked = separate_chunked(rec, mix, chunk, overlap)
    assert chunked.shape == whole.shape
    # one chunk at a time: batch 1, never longer than a chunk
    assert len(rec.shapes) == len(chunk_starts(mix.shape[0], chunk, overlap)) == 8
    assert all(s[0] == 1 and s[1] <= chunk for s in rec.shapes)

    def best(est: torch.Tensor) -> float:
        direct = si_snr(est, ref).mean()
        swapped = si_snr(est.flip(0), ref).mean()
        return float(torch.maximum(direct, swapped))

    assert best(whole) > 5.0  # the model does separate, so the comparison means something
    assert abs(best(chunked) - best(whole)) <= 0.5


class _Swapper(nn.Module):
    """An oracle 'separator' that returns the true sources of its window, in a different order every call."""

    def __init__(self, ref: torch.Tensor) -> None:
        super().__init__()
        self.ref = ref
        self.calls = 0
        self.pos = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1]
        # find the window position by matching the mixture
        mix = self.ref.sum(0)
        for start in range(0, mix.shape[0] - n + 1, 100):
            if torch.allclose(mix[start : start + n], x[0]):
                break
        out = self.ref[:, start : start + n]
        self.calls += 1
        return (out.flip(0) if self.calls % 2 else out)[None]


def test_speaker_order_is_consistent_across_chunks():
    ref = _sources(12.0, seed=1)
    mix = ref.sum(0)
    out = separate_chunked(_Swapper(ref), mix, 3 * SR, SR // 2)  # 5 chunks, alternating output order
    # without alignment every other chunk would be swapped; with it the output is one consistent permutation
    direct, swapped = float(si_snr(out, ref).mean()), float(si_snr(out.flip(0), ref).mean())
    assert max(direct, swapped) > 40.0
