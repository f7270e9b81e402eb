"""Bad inputs give clear errors or documented handling; the predictor round-trips WAV bytes at any rate."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch
from sa_speechsep.audio import AudioError, read_audio
from sa_speechsep.config import SepConfig, SepModelConfig
from sa_speechsep.models.mossformer import build_mossformer
from sa_speechsep.predictor import SeparationPredictor

from shared_attention.serving import InputError


def _wav(x: np.ndarray, sr: int = 8000, subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype=subtype)
    return buf.getvalue()


def _speechlike(n: int, sr: int = 8000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    return (0.3 * np.sin(2 * np.pi * 200 * t) * (1 + np.sin(2 * np.pi * 2 * t)) + 0.05 * rng.standard_normal(n)).astype(
        np.float32
    )


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="empty upload"):
        read_audio(b"")
    with pytest.raises(AudioError, match="not a readable audio file"):
        read_audio(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="0 samples"):
        read_audio(_wav(np.zeros(0, dtype=np.float32)))
    nan = _speechlike(800)
    nan[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        read_audio(_wav(nan, subtype="FLOAT"))
    with pytest.raises(AudioError, match="silent"):
        read_audio(_wav(np.zeros(800, dtype=np.float32)))
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioError, match="nope.wav: no such file"):
        read_audio(missing)


def test_24_bit_stereo_and_clipping_are_handled():
    x = _speechlike(1600)
    y, info = read_audio(_wav(x, subtype="PCM_24"))
    assert info.subtype == "PCM_24"
    np.testing.assert_allclose(y, x, atol=1e-6)  # 24-bit is read exactly, not rejected
    stereo = np.stack([x, 0.5 * x], axis=1)
    with pytest.warns(UserWarning, match="down-mixed"):
        y, info = read_audio(_wav(stereo))
    np.testing.assert_allclose(y, 0.75 * x, atol=1e-4)
    clipped = np.clip(x * 10, -1, 1)
    with pytest.warns(UserWarning, match="clipped"):
        _, info = read_audio(_wav(clipped))
    assert any("clipped" in w for w in info.warnings)


def _predictor(chunk_seconds: float = 1.0) -> SeparationPredictor:
    torch.manual_seed(0)
    cfg = SepConfig(model=SepModelConfig(variant="tiny"), chunk_seconds=chunk_seconds, overlap_seconds=0.25)
    return SeparationPredictor(build_mossformer("tiny"), cfg)


def test_predictor_round_trip_at_another_rate():
    pred = _predictor()
    raw = _wav(np.stack([_speechlike(16000 * 2, 16000), _speechlike(16000 * 2, 16000, 1)], 1), 16000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = pred.preprocess(raw)
    assert batch["audio"].shape == (1, 16000)  # 2 s resampled to 8 kHz
    assert any("down-mixed" in w for w in pred.last_warnings)
    out = pred.predict(batch)
    assert out["sources"].shape == (1, 2, 16000)
    resp = pred.postprocess({k: v[0] for k, v in out.items()})
    assert resp["sample_rate"] == 16000 and len(resp["sources_wav"]) == 2
    for wav in resp["sources_wav"]:
        data, sr = sf.read(io.BytesIO(wav))
        info = sf.info(io.BytesIO(wav))
        assert sr == 16000 and info.subtype == "PCM_16" and abs(len(data) - 32000) <= 2


def test_predictor_errors_and_array_input():
    pred = _predictor()
    with pytest.raises(InputError, match="audio: .*silent"):
        pred.preprocess(_wav(np.zeros(4000, dtype=np.float32)))
    with pytest.raises(InputError, match="not a readable audio file"):
        pred.preprocess(b"GIF89a" + bytes(100))
    with pytest.raises(InputError, match="sample_rate"):
        pred.preprocess({"audio": _speechlike(100), "sample_rate": "fast"})
    with pytest.raises(InputError, match="NaN"):
        pred.preprocess({"audio": np.full(100, np.nan), "sample_rate": 8000})
    with pytest.raises(InputError, match="unsupported input type"):
        pred.preprocess(12)
    batch = pred.preprocess({"audio": _speechlike(3000), "sample_rate": 8000})
    assert pred.predict(batch)["sources"].shape == (1, 2, 3000)
