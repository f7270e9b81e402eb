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
