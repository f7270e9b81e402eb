"""Resampling at any rate stays accurate and bounded in memory (issue 21, finding 2).

Rates whose common factor with the model rate is small (22,051 Hz, 96,001 Hz) used to go through torchaudio's
polyphase table of ``(orig / gcd) x (new / gcd)`` entries: about 2.8 GB for a 3 s file at 22,051 Hz and about
12 GB for 96,001 Hz. These tests pin the memory of the predictor's own preprocess / postprocess (in a fresh
process, so the peak is that of this work alone), the accuracy of the path used for such rates, and the
per-request memory check.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from sa_speechsep.audio import resample, resample_bytes
from sa_speechsep.config import SepConfig, SepModelConfig
from sa_speechsep.models.mossformer import build_mossformer
from sa_speechsep.predictor import SpeechsepPredictor

from shared_attention.serving import InputError

pytest.importorskip("resource")

# Runs preprocess + postprocess (what /v1/speechsep/predict and `sa-speechsep separate` do around the model) on a
# 3 s WAV at argv[1] Hz and prints the peak RSS before and after. The address-space limit (1 GiB above what the
# process has mapped once everything is imported) makes a GB-sized allocation fail at once instead of eating
# the machine.
_SCRIPT = r"""
import io, json, os, resource, sys
import numpy as np, soundfile as sf, torch
import torchaudio.functional  # imported in every case so that the comparison is of the resampling work only
from sa_speechsep.config import SepConfig, SepModelConfig
from sa_speechsep.models.mossformer import build_mossformer
from sa_speechsep.predictor import SpeechsepPredictor

torch.set_num_threads(1)
rate = int(sys.argv[1])
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
pred = SpeechsepPredictor(build_mossformer("tiny"), SepConfig(model=SepModelConfig(variant="tiny")))
t = np.arange(3 * rate) / rate
buf = io.BytesIO()
sf.write(buf, (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
raw = buf.getvalue()
try:
    with open("/proc/self/statm") as fh:
        mapped = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    resource.setrlimit(resource.RLIMIT_AS, (mapped + (1 << 30), resource.getrlimit(resource.RLIMIT_AS)[1]))
except (OSError, ValueError):
    pass  # no /proc or no settable limit: measure without it
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
batch = pred.preprocess(raw)
sources = batch["audio"][0].repeat(2, 1)  # (S, T): two "speakers" at the model rate
out = pred.postprocess({"sources": sources, "sample_rate": batch["sample_rate"], "scale": batch["scale"]})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
data, sr = sf.read(io.BytesIO(out["sources_wav"][0]))
print(json.dumps({"before": before, "peak": peak, "model_samples": int(batch["audio"].shape[1]),
                  "out_rate": sr, "out_samples": len(data)}))
"""


def _measure(rate: int) -> dict[str, int]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(rate)], capture_output=True, text=True, env=env, check=False, timeout=600
    )
    assert (
        res.returncode == 0
    ), f"{rate} Hz: preprocess/postprocess failed under the memory limit:\n{res.stderr[-2000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_preprocess_peak_memory_does_not_depend_on_the_rates_common_factor():
    base = _measure(8000)
    assert base["model_samples"] == 24000
    for rate in (22051, 96001):
        got = _measure(rate)
        extra_mb = (got["peak"] - base["peak"]) / 2**20
        print(f"{rate} Hz: peak RSS {got['peak'] / 2**20:.0f} MB, {extra_mb:+.0f} MB vs the 8 kHz case")
        assert extra_mb < 300, f"{rate} Hz: peak RSS {extra_mb:.0f} MB above the 8 kHz case"
        assert got["model_samples"] == 24000  # ceil(3 * rate * 8000 / rate)
        assert got["out_rate"] == rate and got["out_samples"] == 3 * rate  # back at the input's rate and length


def _snr_db(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((ref - est) ** 2)))


@pytest.mark.parametrize(("orig", "new"), [(22051, 8000), (96001, 8000), (8000, 22051)])
def test_sine_keeps_frequency_and_amplitude(orig, new):
    freq, amp, seconds = 1234.5, 0.6, 0.5
    x = (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * orig)) / orig)).astype(np.float32)
    y = resample(x, orig, new)
    assert y.dtype == np.float32 and y.shape == (-(-len(x) * new // orig),)
    ref = amp * np.sin(2 * np.pi * freq * np.arange(len(y)) / new)
    edge = new // 50  # 20 ms at each end: the zero padding beyond the signal
    snr = _snr_db(ref[edge:-edge], y[edge:-edge])
    assert snr > 40, f"{orig} -> {new} Hz: SNR {snr:.1f} dB"
    peak = float(np.abs(y[edge:-edge]).max())
    assert abs(peak - amp) < 0.01 * amp


def test_bounded_path_matches_torchaudio_where_both_apply():
    import torchaudio.functional as AF  # noqa: N812
    from sa_speechsep.audio import _resample_sinc

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4410)).astype(np.float32)
    for orig, new in [(44100, 8000), (8000, 16000), (16000, 8000), (22050, 8000)]:
        ref = AF.resample(torch.from_numpy(x), orig, new).numpy()
        got = _resample_sinc(x, orig, new)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-4, err_msg=f"{orig} -> {new}")
        # the public function keeps torchaudio's exact path for such friendly ratios
        np.testing.assert_array_equal(resample(x, orig, new), ref)


def test_memory_estimate_is_linear_in_length_whatever_the_rates():
    friendly = resample_bytes(3 * 44100, 44100, 8000)
    for orig in (22051, 96001, 8001):
        need = resample_bytes(3 * orig, orig, 8000)
        assert need < 64 * 2**20, f"{orig} Hz: {need / 2**20:.0f} MB estimated"
        assert resample_bytes(3 * 8000, 8000, orig, channels=2) < 64 * 2**20  # postprocess: back to the input rate
    assert friendly < 64 * 2**20
    assert resample_bytes(8000, 8000, 8000) == 8000 * 4
    long, short = resample_bytes(600 * 96001, 96001, 8000), resample_bytes(60 * 96001, 96001, 8000)
    assert 5 < long / short <= 10  # grows with the length, at most linearly


def _wav(x: np.ndarray, sr: int) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_predictor_refuses_inputs_over_the_memory_bound_before_resampling(monkeypatch):
    pred = SpeechsepPredictor(build_mossformer("tiny"), SepConfig(model=SepModelConfig(variant="tiny")))
    x = (0.5 * np.sin(2 * np.pi * 300.0 * np.arange(3 * 22051) / 22051)).astype(np.float32)
    pred.max_resample_bytes = 1 << 20
    import sa_speechsep.audio as audio

    def boom(*args, **kwargs):
        raise AssertionError("resampled although the estimate is over the bound")

    monkeypatch.setattr(audio, "resample", boom)
    with pytest.raises(InputError, match=r"^audio: .*22051 Hz.*MB.*limit") as info:
        pred.preprocess(_wav(x, 22051))
    assert info.value.field == "audio" and "\n" not in str(info.value)
    with pytest.raises(InputError, match=r"^audio: .*22051 Hz"):
        pred.preprocess({"audio": x, "sample_rate": 22051})
    monkeypatch.undo()
    pred.max_resample_bytes = SpeechsepPredictor.max_resample_bytes
    assert pred.preprocess(_wav(x, 22051))["audio"].shape == (1, 24000)
