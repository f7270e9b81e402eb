"""speech-sample on a fake Asterisk tree: held-out pair only in tt, WSJ0-mix layout, sources for dynamic mixing."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf
from sa_speechsep.data import DynamicMixDataset, Wsj0MixDataset
from sa_speechsep.sample import build_speech_sample


def _fake_sounds(root, names):
    rng = np.random.default_rng(0)
    for k, name in enumerate(names):
        d = root / name / "digits"
        d.mkdir(parents=True)
        for i in range(6):
            t = np.arange(8000) / 8000
            x = 0.3 * np.sin(2 * np.pi * (120 + 60 * k) * t * (1 + 0.1 * i)) + 0.01 * rng.standard_normal(8000)
            sf.write(str(d / f"w{i}.wav"), x.astype(np.float32), 8000, subtype="PCM_16")
        (root / name / "silence").mkdir()
        sf.write(str(root / name / "silence" / "1.wav"), np.zeros(8000, np.float32), 8000, subtype="PCM_16")
    (root / "en").symlink_to(root / names[0])  # aliases are skipped


def test_held_out_pair_is_speaker_disjoint(tmp_path):
    names = ["en_US_f_A", "fr_CA_f_B", "it_IT_m_C", "ru_RU_f_D"]
    _fake_sounds(tmp_path / "sounds", names)
    m = build_speech_sample(
        tmp_path / "out",
        sounds_dir=tmp_path / "sounds",
        train=6,
        val=2,
        test=3,
        seconds=1.0,
        espeak_voices=0,
        festival_voices=0,
        prompt_packages={},
        test_speakers=("fr_CA_f_B", "it_IT_m_C"),
        progress=False,
    )
    assert m["train_speakers"] == ["en_US_f_A", "ru_RU_f_D"]
    assert m["mixtures"] == {"tr": 6, "cv": 2, "tt": 3}
    tt = sorted(p.name for p in (tmp_path / "out" / "tt" / "mix").glob("*.wav"))
    assert len(tt) == 3 and all("fr_CA_f_B" in n and "it_IT_m_C" in n for n in tt)
    tr = [p.name for p in (tmp_path / "out" / "tr" / "mix").glob("*.wav")]
    assert not any("fr_CA" in n or "it_IT" in n for n in tr)
    assert sorted(p.name for p in (tmp_path / "out" / "sources").iterdir()) == ["en_US_f_A", "ru_RU_f_D"]
    ds = Wsj0MixDataset(tmp_path / "out" / "tt")
    item = ds[0]
    assert item["mix"].shape == (8000,)
    assert float((item["sources"].sum(0) - item["mix"]).abs().max()) < 1e-3
    assert item["mix"].abs().max() <= 0.9 + 1e-3
    DynamicMixDataset(tmp_path / "out" / "sources", segment_seconds=0.5, length=2)[0]
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["test_speakers"] == ["fr_CA_f_B", "it_IT_m_C"]


def test_gsm_prompts_are_decoded_with_sox(tmp_path):
    import shutil
    import subprocess

    import pytest
    from sa_speechsep.sample import _load_prompts

    if shutil.which("sox") is None:
        pytest.fail("sox is missing: scripts/system-packages installs it")
    t = np.arange(8000) / 8000
    sf.write(str(tmp_path / "a.wav"), (0.3 * np.sin(2 * np.pi * 150 * t)).astype(np.float32), 8000)
    subprocess.run(["sox", str(tmp_path / "a.wav"), "-r", "8000", "-c", "1", str(tmp_path / "a.gsm")], check=True)
    utts = _load_prompts([tmp_path / "a.gsm", tmp_path / "a.wav"], 8000)
    assert len(utts) == 2 and all(abs(len(u) - 8000) <= 160 for u in utts)
    # wav files first, then the decoded GSM: lossy, but the 150 Hz tone survives
    u = utts[1]
    assert abs(np.abs(np.fft.rfft(u)).argmax() * 8000 / len(u) - 150.0) < 5.0


def test_virtual_speakers_by_speed(tmp_path):
    t = np.arange(8000) / 8000
    for spk, f0 in (("a", 200.0), ("b", 300.0)):
        (tmp_path / spk).mkdir()
        sf.write(str(tmp_path / spk / "u.wav"), (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32), 8000)
    ds = DynamicMixDataset(
        tmp_path, segment_seconds=0.5, length=8, speed_range=(1.0, 1.0), speaker_speeds=(0.8, 1.0), seed=3
    )
    assert ds.names == ["a", "a@0.8", "b", "b@0.8"]
    rng = np.random.default_rng(0)
    x = ds._utterance(rng, "a@0.8")
    freq = np.abs(np.fft.rfft(x)).argmax() * 8000 / len(x)
    assert abs(freq - 160.0) < 5.0  # 200 Hz played at 0.8x speed
    y = ds._utterance(rng, "a")
    assert abs(np.abs(np.fft.rfft(y)).argmax() * 8000 / len(y) - 200.0) < 5.0
    a, b = ds[5], ds[5]
    assert np.array_equal(a["mix"].numpy(), b["mix"].numpy())
    import pytest

    with pytest.raises(ValueError, match="speaker_speeds"):
        DynamicMixDataset(tmp_path, speaker_speeds=(0.8, 0.8))


def test_speaker_weights_and_distinct_folders(tmp_path):
    t = np.arange(4000) / 8000
    for spk in ("real_a", "real_b", "espeak_c", "espeak_d"):
        (tmp_path / spk).mkdir()
        sf.write(str(tmp_path / spk / "u.wav"), (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), 8000)
    ds = DynamicMixDataset(
        tmp_path, segment_seconds=0.25, length=400, speaker_speeds=(0.9, 1.0), speaker_weights={"espeak_*": 0.0}
    )
    assert sorted(set(ds.names)) == ds.names and len(ds.names) == 8
    # weight 0: only the two real folders are ever drawn, never a folder against its own shifted copy
    drawn, real = [], ds._utterance

    def spy(rng, speaker):
        drawn.append(speaker)
        return real(rng, speaker)

    ds._utterance = spy
    for i in range(40):
        ds[i]
    pairs = {tuple(sorted(ds.virtual[n][0] for n in drawn[k : k + 2])) for k in range(0, len(drawn), 2)}
    assert pairs == {("real_a", "real_b")}
    assert {"real_a", "real_a@0.9"} <= set(drawn)
    import pytest

    with pytest.raises(ValueError, match="positive weight"):
        DynamicMixDataset(tmp_path, speaker_weights={"*": 0.0})


def _vowel(f0: float = 150.0, formants=((500.0, 80.0), (1500.0, 120.0)), seconds: float = 1.0) -> np.ndarray:
    """A pulse train at ``f0`` through two-pole resonators: a synthetic vowel with known pitch and formants."""
    from scipy.signal import lfilter

    sr = 8000
    x = np.zeros(int(sr * seconds))
    x[:: int(sr / f0)] = 1.0
    for f, bw in formants:
        r, th = np.exp(-np.pi * bw / sr), 2 * np.pi * f / sr
        x = lfilter([1 - r], [1, -2 * r * np.cos(th), r * r], x)
    return (x / np.abs(x).max() * 0.5).astype(np.float32)


def _pitch(x: np.ndarray) -> float:
    ac = np.correlate(x, x, "full")[len(x) - 1 :]
    return 8000 / (int(np.argmax(ac[20:200])) + 20)


def _upper_formant(x: np.ndarray) -> float:
    """Frequency of the strongest (band-averaged) spectral region between 1 and 2.5 kHz."""
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    f = np.fft.rfftfreq(len(x), 1 / 8000)
    env = np.convolve(spec, np.ones(200) / 200, "same")
    band = (f > 1000) & (f < 2500)
    return float(f[band][np.argmax(env[band])])


def test_shift_formants_moves_the_envelope_and_keeps_the_pitch():
    import pytest
    from sa_speechsep.audio import shift_formants

    x = _vowel()
    assert np.array_equal(shift_formants(x, 1.0), x)
    f2 = _upper_formant(x)
    assert abs(f2 - 1500) < 100
    up, down = shift_formants(x, 1.15), shift_formants(x, 0.85)
    assert up.shape == x.shape and up.dtype == np.float32 and np.isfinite(up).all()
    # the 1.5 kHz formant moves with the factor (within the envelope's smoothing), the pitch does not move
    assert 1.08 * f2 < _upper_formant(up) < 1.3 * f2
    assert 0.75 * f2 < _upper_formant(down) < 0.93 * f2
    for y in (up, down):
        assert abs(_pitch(y) - _pitch(x)) < 2.0
    with pytest.raises(ValueError, match="formant factor"):
        shift_formants(x, 3.0)


def test_virtual_speakers_by_formant(tmp_path):
    import pytest

    for spk in ("a", "b"):
        (tmp_path / spk).mkdir()
        sf.write(str(tmp_path / spk / "u.wav"), _vowel(), 8000)
    ds = DynamicMixDataset(
        tmp_path,
        segment_seconds=0.5,
        length=8,
        speed_range=(1.0, 1.0),
        speaker_speeds=(0.9, 1.0),
        speaker_formants=(1.0, 1.15),
        seed=1,
    )
    assert ds.names == ["a", "a@0.9", "a@0.9~f1.15", "a~f1.15", "b", "b@0.9", "b@0.9~f1.15", "b~f1.15"]
    assert ds.virtual["a@0.9~f1.15"] == ("a", 0.9, 1.15)
    rng = np.random.default_rng(0)
    plain, shifted = ds._utterance(rng, "a"), ds._utterance(rng, "a~f1.15")
    assert _upper_formant(shifted) > 1.08 * _upper_formant(plain)
    assert np.array_equal(ds[3]["mix"].numpy(), ds[3]["mix"].numpy())
    with pytest.raises(ValueError, match="speaker_formants"):
        DynamicMixDataset(tmp_path, speaker_formants=(1.0, 1.0))
