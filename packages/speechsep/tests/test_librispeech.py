"""LibriSpeech-style speech folders: listing, sex-balanced speaker splits, fixed WSJ0-2mix mixtures, dynamic
mixing of the training speakers and evaluation on a speech folder (tiny generated audio, never the real data)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from sa_speechsep.audio import AudioError
from sa_speechsep.data import DynamicMixDataset, Wsj0MixDataset, build_dataset
from sa_speechsep.domain import main
from sa_speechsep.librispeech import (
    DataError,
    LibriSpeechMixDataset,
    SpeakerCorpus,
    SplitOptions,
    load_utterance,
    read_speakers_file,
    scan_speakers,
    split_speakers,
)

SCRIPT = Path(__file__).resolve().parents[3] / "datasets" / "speechsep" / "build_mixtures.py"
SPEAKERS = [str(101 + 7 * k) for k in range(8)]  # 101, 108, ... 150
SEXES = {s: "F" if k % 2 == 0 else "M" for k, s in enumerate(SPEAKERS)}


def _speakers_txt(path: Path, sexes: dict[str, str]) -> None:
    lines = [
        "; Some pipe(|) separated metadata about all LibriVox readers",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
        "9999 | M | train-other-500  | 30.00 | someone absent",
    ]
    lines += [f"{s:<5}| {x} | train-clean-100  | 25.00 | |Reader|{s}" for s, x in sexes.items()]  # names hold '|'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _voice(speaker: str, utt: int, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng([int(speaker), utt])
    n = int(sr * rng.uniform(0.5, 1.0))
    t = np.arange(n) / sr
    f0 = 100 + 5 * (int(speaker) % 40)
    x = 0.3 * np.sin(2 * np.pi * f0 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t + utt)) + 0.02 * rng.standard_normal(n)
    return x.astype(np.float32)


def _flat(root: Path, speakers=SPEAKERS, utts: int = 2, sexes=SEXES) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for s in speakers:
        for u in range(utts):
            sf.write(str(root / f"{s}-{2000 + int(s)}-{u:04d}.flac"), _voice(s, u), 16000, subtype="PCM_16")
    if sexes:
        _speakers_txt(root / "SPEAKERS.TXT", sexes)
    return root


def _tree(base: Path, speakers=SPEAKERS, utts: int = 2) -> Path:
    """The official layout: ``LibriSpeech/SPEAKERS.TXT`` + ``LibriSpeech/train-clean-100/<spk>/<ch>/...``."""
    root = base / "LibriSpeech" / "train-clean-100"
    for s in speakers:
        ch = str(2000 + int(s))
        folder = root / s / ch
        folder.mkdir(parents=True)
        for u in range(utts):
            sf.write(str(folder / f"{s}-{ch}-{u:04d}.flac"), _voice(s, u), 16000, subtype="PCM_16")
        (folder / f"{s}-{ch}.trans.txt").write_text(
            "".join(f"{s}-{ch}-{u:04d} HELLO NUMBER {u}\n" for u in range(utts))
        )
    _speakers_txt(base / "LibriSpeech" / "SPEAKERS.TXT", SEXES)
    return root


def _header_only_flac() -> bytes:
    """``fLaC`` + a last STREAMINFO block (16 kHz, mono, 16 bit, 0 samples) and nothing after it."""
    packed = (16000 << 44) | (0 << 41) | (15 << 36)  # rate (20 bits), channels - 1 (3), bits - 1 (5), samples (36)
    info = (4096).to_bytes(2, "big") * 2 + bytes(6) + packed.to_bytes(8, "big") + bytes(16)
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info


def _level_db(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * np.log10(np.sum(a.astype(np.float64) ** 2) / np.sum(b.astype(np.float64) ** 2))


def test_both_layouts_list_the_same_speakers_and_utterances(tmp_path):
    flat = scan_speakers(_flat(tmp_path / "flat"))
    tree = scan_speakers(_tree(tmp_path / "tree"))
    assert flat.speakers == tree.speakers == SPEAKERS  # numeric order
    for s in SPEAKERS:
        assert (
            [u.id for u in flat.utterances[s]]
            == [u.id for u in tree.utterances[s]]
            == [f"{s}-{2000 + int(s)}-{u:04d}" for u in range(2)]
        )
    assert tree.utterances["101"][1].transcript == "HELLO NUMBER 1"  # *.trans.txt read
    assert tree.speakers_file is not None and tree.speakers_file.parent.name == "LibriSpeech"  # found one level up
    assert {s: flat.sex(s) for s in SPEAKERS} == SEXES == {s: tree.sex(s) for s in SPEAKERS}
    # .wav is accepted too; no SPEAKERS.TXT -> unknown sex
    wav = tmp_path / "wav"
    wav.mkdir()
    for s in SPEAKERS[:3]:
        sf.write(str(wav / f"{s}-1-0000.wav"), _voice(s, 0), 16000)
    c = scan_speakers(wav)
    assert c.speakers == SPEAKERS[:3] and c.sex("101") == "?"


def test_split_is_disjoint_sex_balanced_and_independent_of_listing_order(tmp_path):
    c = scan_speakers(_flat(tmp_path / "flat"))
    sp = split_speakers(c, test_speakers=2, val_speakers=2, seed=0)
    assert set(sp.train) | set(sp.val) | set(sp.test) == set(SPEAKERS)
    assert len(sp.train) + len(sp.val) + len(sp.test) == len(SPEAKERS)  # disjoint
    assert sp.counts()["test"] == {"speakers": 2, "F": 1, "M": 1, "?": 0}
    assert sp.counts()["val"] == {"speakers": 2, "F": 1, "M": 1, "?": 0}
    # 25 + 25 of 60 speakers (30 F, 30 M): 13/12 and 12/13 as in the real recipe; seeded
    many = [str(1000 + k) for k in range(60)]
    sexes = {s: "F" if k < 30 else "M" for k, s in enumerate(many)}
    big = SpeakerCorpus(tmp_path, {s: () for s in many}, sexes)
    reordered = SpeakerCorpus(tmp_path, {s: () for s in reversed(many)}, dict(reversed(list(sexes.items()))))
    a = split_speakers(big, 25, 25, seed=3)
    assert a == split_speakers(reordered, 25, 25, seed=3)  # listing order does not matter
    for part in ("test", "val"):
        row = a.counts()[part]
        assert row["speakers"] == 25 and abs(row["F"] - row["M"]) == 1
    assert a.counts()["train"] == {"speakers": 10, "F": 5, "M": 5, "?": 0}
    assert split_speakers(big, 25, 25, seed=4).test != a.test
    # a sex runs out: the other fills the rest
    lopsided = SpeakerCorpus(tmp_path, {s: () for s in many[:33]}, {s: sexes[s] for s in many[:33]})  # 30 F, 3 M
    t = split_speakers(lopsided, 10, 0, seed=0).counts()["test"]
    assert (t["F"], t["M"]) == (7, 3)
    with pytest.raises(DataError, match="8 speakers, cannot hold out 5 test \\+ 4 validation"):
        split_speakers(c, 5, 4)


def test_mixtures_are_deterministic_wsj0_layout_and_levels(tmp_path, capsys):
    src = _flat(tmp_path / "flat")
    opts = ["--mixtures", "5", "--seconds", "0.75", "--test-speakers", "3", "--val-speakers", "2", "--no-progress"]
    assert main(["mixtures", "--src", str(src), "--out", str(tmp_path / "a"), *opts]) == 0
    out = capsys.readouterr().out
    assert "test: 3 speakers (F 2, M 1)" in out or "test: 3 speakers (F 1, M 2)" in out
    assert main(["mixtures", "--src", str(src), "--out", str(tmp_path / "b"), *opts]) == 0
    assert main(["mixtures", "--src", str(src), "--out", str(tmp_path / "c"), *opts, "--seed", "1"]) == 0
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    for part, held in (("cv", set(man["split"]["speakers"]["val"])), ("tt", set(man["split"]["speakers"]["test"]))):
        files = sorted((tmp_path / "a" / part / "mix").glob("*.wav"))
        assert [f.stem for f in files] == man["mixtures"][part] and len(files) == 5
        for f in files:
            for sub in ("mix", "s1", "s2"):  # same seed: the same bytes
                assert (tmp_path / "a" / part / sub / f.name).read_bytes() == (
                    tmp_path / "b" / part / sub / f.name
                ).read_bytes()
            u1, g1, u2, g2 = f.stem.split("_")
            spk1, spk2 = u1.split("-")[0], u2.split("-")[0]
            assert spk1 != spk2 and {spk1, spk2} <= held  # different speakers of this part
            s1, sr = sf.read(str(tmp_path / "a" / part / "s1" / f.name), dtype="int16")
            s2, _ = sf.read(str(tmp_path / "a" / part / "s2" / f.name), dtype="int16")
            assert sr == 8000 and len(s1) == len(s2) == 6000
            level = _level_db(s1, s2)
            assert abs(level) <= 2.5 + 1e-3
            assert level == pytest.approx(float(g1) - float(g2), abs=0.02)  # the name says the gains
    other = {f.name for f in (tmp_path / "c" / "tt" / "mix").glob("*.wav")}
    assert other != {f.name for f in (tmp_path / "a" / "tt" / "mix").glob("*.wav")}  # another seed differs
    # readable by the existing WSJ0-mix dataset
    ds = Wsj0MixDataset(tmp_path / "a" / "tt")
    assert len(ds) == 5 and ds[0]["sources"].shape == (2, 6000)
    torch.testing.assert_close(ds[0]["sources"].sum(0), ds[0]["mix"], atol=1e-4, rtol=0)
    # the same mixtures in memory, sample for sample
    mem = LibriSpeechMixDataset(src, "tt", mixtures=5, seconds=0.75, split=SplitOptions(3, 2))
    assert mem.names == ds.names
    for i in range(5):
        assert torch.equal(mem[i]["mix"], ds[i]["mix"]) and torch.equal(mem[i]["sources"], ds[i]["sources"])
    # a second run into the same folder refuses to mix old and new files
    assert main(["mixtures", "--src", str(src), "--out", str(tmp_path / "a"), *opts, "--seed", "1"]) == 2
    assert "already holds 5 mixtures" in capsys.readouterr().err


def test_builder_script_on_the_official_tree_matches_the_command(tmp_path):
    spec = importlib.util.spec_from_file_location("build_mixtures", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["build_mixtures"] = mod
    spec.loader.exec_module(mod)
    tree = _tree(tmp_path / "tree")
    opts = ["--mixtures", "3", "--seconds", "0.5", "--test-speakers", "2", "--val-speakers", "2"]
    assert mod.main(["--src", str(tree), "--out", str(tmp_path / "script"), *opts]) == 0
    flat = _flat(tmp_path / "flat")
    assert main(["mixtures", "--src", str(flat), "--out", str(tmp_path / "cmd"), *opts, "--no-progress"]) == 0
    names = sorted(p.name for p in (tmp_path / "script" / "tt" / "mix").glob("*.wav"))
    assert names == sorted(p.name for p in (tmp_path / "cmd" / "tt" / "mix").glob("*.wav")) and len(names) == 3
    for n in names:  # same audio, same names, whichever layout it came from
        assert (tmp_path / "script" / "tt" / "mix" / n).read_bytes() == (
            tmp_path / "cmd" / "tt" / "mix" / n
        ).read_bytes()


def test_dynamic_mixing_draws_training_speakers_only(tmp_path):
    src = _tree(tmp_path / "tree")
    split = SplitOptions(test_speakers=2, val_speakers=2, seed=0)
    ds = build_dataset(str(src), kind="librispeech", train=True, segment_seconds=0.25, seed=5, split=split, length=6)
    assert isinstance(ds, DynamicMixDataset)
    sp = split_speakers(scan_speakers(src), 2, 2, 0)
    assert set(ds.files) == set(sp.train) and len(sp.train) == 4
    assert all(p.suffix == ".flac" for files in ds.files.values() for p in files)
    x = ds[2]
    assert x["sources"].shape == (2, 2000) and torch.equal(x["mix"], ds[2]["mix"])
    torch.testing.assert_close(x["sources"].sum(0), x["mix"])
    # auto: a speech folder (no mix/) gives the fixed test mixtures
    fixed = build_dataset(str(src), split=split, mixtures=2, mixture_seconds=0.5)
    assert isinstance(fixed, LibriSpeechMixDataset) and len(fixed) == 2 and fixed[0]["mix"].shape == (4000,)


def _train_tiny(tmp_path: Path, src: Path) -> Path:
    run = tmp_path / "run"
    args = [
        "train",
        "--config",
        "tiny",
        f"train.run_dir={run}",
        "data.train_kind=librispeech",
        f"data.librispeech_root={src}",
        f"data.val={src}",
        "data.test_speakers=2",
        "data.val_speakers=2",
        "data.eval_mixtures=2",
        "data.eval_seconds=0.5",
        "data.segment_seconds=0.5",
        "data.dynamic_length=4",
        "train.max_steps=2",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "train.progress=false",
    ]
    assert main(args) == 0
    return run


def test_evaluate_on_speech_folder_equals_written_mixtures(tmp_path, capsys):
    src = _flat(tmp_path / "flat")
    run = _train_tiny(tmp_path, src)  # trained on the 4 training speakers' dynamic mixtures, 2 steps
    common = ["--mixtures", "3", "--seconds", "0.5", "--seed", "7", "--test-speakers", "2", "--val-speakers", "2"]
    assert main(["mixtures", "--src", str(src), "--out", str(tmp_path / "mix"), *common, "--no-progress"]) == 0
    assert main(["evaluate", "--run", str(run), "--data", str(src), *common, "--oracle", "--no-progress"]) == 0
    mem = json.loads((run / "evaluation.json").read_text())
    assert (
        main(["evaluate", "--run", str(run), "--data", str(tmp_path / "mix" / "tt"), "--oracle", "--no-progress"]) == 0
    )
    disk = json.loads((run / "evaluation.json").read_text())
    rows_mem, rows_disk = mem["details"]["per_mixture"], disk["details"]["per_mixture"]
    assert len(rows_mem) == len(rows_disk) == 3
    for a, b in zip(rows_mem, rows_disk, strict=True):
        assert a["name"] == b["name"]
        for key in ("si_sdri", "sdri", "si_sdr", "sdr", "irm_si_sdri"):
            assert np.isfinite(a[key]) and a[key] == pytest.approx(b[key], abs=1e-6)
    assert mem["model"] == pytest.approx(disk["model"], abs=1e-6)
    for key in ("si_sdri", "sdri"):  # means written beside the rows
        assert mem["details"]["model_means"][key] == pytest.approx(np.mean([r[key] for r in rows_mem]))
    assert mem["details"]["speech_folder"]["speakers"]["test"]["speakers"] == 2
    # defaults come from the run's config (2 mixtures of 0.5 s, seed 0); a mixture folder refuses the options
    assert main(["evaluate", "--run", str(run), "--data", str(src), "--no-sdr", "--no-progress"]) == 0
    assert json.loads((run / "evaluation.json").read_text())["details"]["mixtures"] == 2
    capsys.readouterr()
    assert main(["evaluate", "--run", str(run), "--data", str(tmp_path / "mix" / "tt"), "--mixtures", "3"]) == 2
    assert "--mixtures apply to a speech folder only" in capsys.readouterr().err


def test_unreadable_and_empty_flac_name_the_file(tmp_path, capsys):
    src = _flat(tmp_path / "flat", speakers=SPEAKERS[:2], utts=1)
    bad = src / f"{SPEAKERS[0]}-{2000 + int(SPEAKERS[0])}-0000.flac"
    args = ["mixtures", "--src", str(src), "--out", str(tmp_path / "o"), "--mixtures", "1", "--no-progress"]
    args += ["--test-speakers", "2", "--val-speakers", "0", "--seconds", "0.5"]
    bad.write_bytes(b"fLaC this is not really flac")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}: not a readable audio file") and "\n" not in err
    bad.write_bytes(b"")
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: empty file (0 bytes)"
    bad.write_bytes(_header_only_flac())  # a valid FLAC header, no audio frames
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: empty FLAC (a header and no audio frames)"
    wav = tmp_path / "empty.wav"
    sf.write(str(wav), np.zeros(0, dtype=np.float32), 16000)  # a WAV with 0 samples
    with pytest.raises(AudioError, match=f"^{wav}: empty audio \\(0 samples\\)$"):
        load_utterance(wav)
    sf.write(str(bad), np.zeros(4000, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="silent utterance"):
        load_utterance(bad)


def test_bad_names_and_speaker_lines_are_reported_with_file_and_line(tmp_path):
    src = _flat(tmp_path / "flat", speakers=SPEAKERS[:2], utts=1)
    (src / "notes.flac").write_bytes(b"x")
    with pytest.raises(DataError, match="notes.flac: file name is not <speaker>-<chapter>-<utterance>.flac"):
        scan_speakers(src)
    (src / "notes.flac").unlink()
    (src / "SPEAKERS.TXT").write_text("; comment\n101 | X | train | 1 | someone\n")
    with pytest.raises(DataError, match="SPEAKERS.TXT:2: sex of speaker 101 must be F or M, got 'X'"):
        read_speakers_file(src / "SPEAKERS.TXT")
    (src / "SPEAKERS.TXT").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no .flac or .wav utterances"):
        scan_speakers(empty)
    with pytest.raises(DataError, match="needs at least 2 speakers"):
        LibriSpeechMixDataset(src, "cv", split=SplitOptions(test_speakers=1, val_speakers=1))


def test_bundled_librispeech_recipes_differ_only_in_the_model() -> None:
    # MossFormer `cpu` and its Conv-TasNet baseline `convtasnet-cpu` train on the same speakers, budget, schedule
    from dataclasses import asdict

    from sa_speechsep.config import load_sep_config

    mf, ct = load_sep_config("cpu"), load_sep_config("convtasnet-cpu")
    assert (mf.model.arch, ct.model.arch) == ("mossformer", "convtasnet")
    assert mf.data == ct.data and mf.data.train_kind == "librispeech"
    assert mf.data.librispeech_root == mf.data.val == mf.data.test == "../shared/data/librispeech-251"
    d = mf.data
    assert (d.test_speakers, d.val_speakers, d.eval_mixtures, d.eval_seconds) == (25, 25, 200, 4)
    a, b = asdict(mf.train), asdict(ct.train)
    assert a.pop("run_dir") != b.pop("run_dir")
    assert a == b and mf.train.max_minutes == 45 and mf.train.schedule.by_time
    # the offline speech-sample pair stays available under its own names
    assert load_sep_config("cpu-small").data.train_kind == load_sep_config("convtasnet-cpu-small").data.train_kind
