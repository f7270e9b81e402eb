"""WSJ0-mix folders, LibriMix CSVs and dynamic mixing."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from sa_speechsep.data import DynamicMixDataset, LibriMixDataset, Wsj0MixDataset, build_dataset


def _write(path, x, sr=8000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), sr, subtype="PCM_16")


def _wsj0(root, n=3, spk=2, length=4000, sr=8000):
    rng = np.random.default_rng(0)
    for i in range(n):
        srcs = [0.08 * rng.standard_normal(length + 100 * i) for _ in range(spk)]
        for j, s in enumerate(srcs):
            _write(root / f"s{j + 1}" / f"m{i}.wav", s, sr)
        _write(root / "mix" / f"m{i}.wav", sum(srcs), sr)
    return root


def test_wsj0_layout_2_and_3_speakers_and_resampling(tmp_path):
    ds = Wsj0MixDataset(_wsj0(tmp_path / "tt"), num_spks=2)
    assert len(ds) == 3
    item = ds[1]
    assert item["mix"].shape == (4100,) and item["sources"].shape == (2, 4100)
    torch.testing.assert_close(item["sources"].sum(0), item["mix"], atol=2e-4, rtol=0)
    ds3 = Wsj0MixDataset(_wsj0(tmp_path / "tt3", spk=3), num_spks=3, segment_seconds=0.25, random_crop=True)
    assert ds3[0]["sources"].shape == (3, 2000)
    with pytest.raises(FileNotFoundError, match="s3"):
        Wsj0MixDataset(tmp_path / "tt", num_spks=3)
    ds16 = Wsj0MixDataset(_wsj0(tmp_path / "tt16", sr=16000, length=8000), num_spks=2, sample_rate=8000)
    assert ds16[0]["mix"].shape == (4000,)


def test_librimix_csv_relative_paths_and_errors(tmp_path):
    _wsj0(tmp_path / "audio")
    rows = ["mixture_ID,mixture_path,source_1_path,source_2_path,length"]
    rows += [f"m{i},audio/mix/m{i}.wav,audio/s1/m{i}.wav,audio/s2/m{i}.wav,4000" for i in range(3)]
    (tmp_path / "meta.csv").write_text("\n".join(rows) + "\n")
    ds = build_dataset(str(tmp_path / "meta.csv"), segment_seconds=0.5)
    assert isinstance(ds, LibriMixDataset) and len(ds) == 3
    assert ds[2]["sources"].shape == (2, 4000)
    (tmp_path / "bad.csv").write_text("mixture_path,source_1_path\nx.wav,y.wav\n")
    with pytest.raises(ValueError, match="line 1.*source_2_path"):
        LibriMixDataset(tmp_path / "bad.csv")
    (tmp_path / "empty_cell.csv").write_text("mixture_path,source_1_path,source_2_path\na.wav,,c.wav\n")
    with pytest.raises(ValueError, match="line 2: empty source_1_path"):
        LibriMixDataset(tmp_path / "empty_cell.csv")


def test_dynamic_mixing_is_deterministic_and_sums(tmp_path):
    rng = np.random.default_rng(1)
    for spk in ("a", "b", "c"):
        for u in range(2):
            _write(tmp_path / spk / f"{u}.wav", 0.3 * rng.standard_normal(3000))
    ds = DynamicMixDataset(tmp_path, num_spks=2, segment_seconds=0.5, length=10, seed=4)
    x, y = ds[3], ds[3]
    assert torch.equal(x["mix"], y["mix"])
    assert not torch.equal(ds[4]["mix"], x["mix"])
    assert x["sources"].shape == (2, 4000)
    torch.testing.assert_close(x["sources"].sum(0), x["mix"])
    assert x["mix"].abs().max() <= 0.9 + 1e-6
    with pytest.raises(ValueError, match="need >= 4"):
        DynamicMixDataset(tmp_path, num_spks=4)
