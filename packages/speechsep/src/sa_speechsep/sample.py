"""``speech-sample``: an offline two-speaker 8 kHz sample set from real recordings in Debian packages.

Sources: the Asterisk voice prompts (``asterisk-core-sounds-{en,fr,it,ru}-wav``, CC-BY-SA-3.0; native 8 kHz
mono 16-bit; one professional speaker per language: en female, fr female, it male, ru female), more real
prompt speakers from Debian's ``asterisk-prompt-*`` packages (it Menardi as WAV; fr Armelle and es-CO as GSM,
decoded with sox), ``festival`` voices (Debian ``festvox-*`` diphone / unit-selection / HTS voices: synthetic
speech concatenated from or trained on one real speaker's recordings, several of them male) and ``espeak-ng``
voices (several languages and voice variants, resampled to 8 kHz) for training volume. Missing optional
packages are skipped (the manifest lists the speakers actually used).

One speaker pair (default: two real female speakers, the French-Canadian ``June`` and the Italian ``Menardi``)
is held out: it appears only in ``tt``, so the test set is speaker-disjoint. The only real male prompt voice
(Carlo) stays in training: holding him out (the default before 2026-12) left the training pool without a single
real male voice, and models trained on it did not separate the held-out pair at all (SI-SDRi below 0 dB).
Layout (WSJ0-2mix style, readable by ``Wsj0MixDataset``)::

    OUT/tr/{mix,s1,s2}/*.wav    training mixtures (training speakers, 90 % of their utterances)
    OUT/cv/{mix,s1,s2}/*.wav    validation mixtures (training speakers, the other 10 % of utterances)
    OUT/tt/{mix,s1,s2}/*.wav    test mixtures of the held-out pair
    OUT/sources/<speaker>/*.wav training utterances per speaker (dynamic mixing)
    OUT/manifest.json           speakers, splits, counts, licences

Mixtures are ``seconds`` long; each source is a run of random utterances of one speaker (short pauses
between), RMS-normalised, with relative gains of +-``gain_db`` (WSJ0-2mix: 0 to 2.5 dB).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "build_speech_sample",
    "main",
    "DEFAULT_TEST_SPEAKERS",
    "ESPEAK_VOICES",
    "FESTIVAL_VOICES",
    "PROMPT_PACKAGES",
]

DEFAULT_SOUNDS = "/usr/share/asterisk/sounds"
DEFAULT_TEST_SPEAKERS = ("fr_CA_f_June", "it_IT_f_Menardi")
#: espeak-ng (voice, variant, pitch) triples used as extra training speakers.
ESPEAK_VOICES: tuple[tuple[str, str, int], ...] = (
    ("en-us", "m1", 40),
    ("en-gb", "f2", 60),
    ("de", "m3", 35),
    ("es", "f1", 70),
    ("fr-fr", "m2", 45),
    ("it", "f3", 65),
    ("pt", "m4", 30),
    ("nl", "f4", 55),
    ("pl", "m5", 50),
    ("sv", "f5", 75),
    ("en-us", "m7", 25),
    ("ru", "f2", 68),
)
#: Real prompt speakers shipped by Debian packages without a ``<lang>_<REGION>_<g>_<Name>`` folder: speaker -> package.
PROMPT_PACKAGES: dict[str, str] = {
    "fr_FR_f_Armelle": "asterisk-prompt-fr-armelle",
    "es_CO_f_Avatar": "asterisk-prompt-es-co",
}
#: Festival voices (``voice_<name>``) used as extra training speakers, from Debian's festvox-* packages.
FESTIVAL_VOICES: tuple[str, ...] = (
    "kal_diphone",  # US English male (festvox-kallpc16k)
    "lp_diphone",  # Italian female (festvox-italp16k)
    "ked_diphone",  # US English male (festvox-kdlpc16k)
    "cmu_us_slt_arctic_hts",  # US English female (festvox-us-slt-hts)
    "pc_diphone",  # Italian male (festvox-itapc16k)
    "czech_dita",  # Czech female (festvox-czech-dita)
    "msu_ru_nsh_clunits",  # Russian male (festvox-ru)
    "suo_fi_lj_diphone",  # Finnish female (festvox-suopuhe-lj)
    "czech_machac",  # Czech male (festvox-czech-machac)
    "hy_fi_mv_diphone",  # Finnish male (festvox-suopuhe-mv)
    "czech_ph",  # Czech male (festvox-czech-ph)
)
_MIN_SECONDS = 0.4


def _real_speakers(sounds_dir: Path) -> dict[str, list[Path]]:
    """``<lang>_<REGION>_<f|m>_<Name>`` folders (symlinked aliases skipped) -> their prompt files."""
    out: dict[str, list[Path]] = {}
    if not sounds_dir.is_dir():
        return out
    for d in sorted(sounds_dir.iterdir()):
        if d.is_symlink() or not d.is_dir() or d.name.count("_") < 3:
            continue
        files = sorted(p for p in d.rglob("*.wav") if "silence" not in p.parts)
        if files:
            out[d.name] = files
    return out


def _package_files(package: str) -> list[Path]:
    """The ``.wav`` / ``.gsm`` prompt files an installed Debian package ships (``[]`` if not installed)."""
    exe = shutil.which("dpkg-query")
    if exe is None:
        return []
    res = subprocess.run([exe, "-L", package], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        return []
    files = [Path(line) for line in res.stdout.splitlines() if line.endswith((".wav", ".gsm"))]
    return sorted(f for f in files if f.is_file() and "silence" not in f.parts)


def _load_prompts(files: list[Path], sr: int) -> list[np.ndarray]:
    """Loads prompt files; GSM 6.10 files are decoded with sox (skipped when sox is missing)."""
    wavs = [f for f in files if f.suffix == ".wav"]
    gsms = [f for f in files if f.suffix == ".gsm"]
    utts = _load_real(wavs, sr)
    sox = shutil.which("sox")
    if gsms and sox is not None:
        with tempfile.TemporaryDirectory() as tmp:
            decoded = []
            for i, f in enumerate(gsms):
                wav = Path(tmp) / f"{i}.wav"
                cmd = [sox, "-q", str(f), "-r", str(sr), "-c", "1", "-b", "16", str(wav)]
                if subprocess.run(cmd, capture_output=True, check=False).returncode == 0:
                    decoded.append(wav)
            utts += _load_real(decoded, sr)
    return utts


def _trim(x: np.ndarray, sr: int) -> np.ndarray:
    """Strips leading/trailing silence (frames 40 dB below the peak)."""
    frame = sr // 100
    if len(x) < frame:
        return x
    n = len(x) // frame
    energy = np.sqrt(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1))
    active = np.nonzero(energy > energy.max() * 0.01)[0]
    if active.size == 0:
        return x[:0]
    return x[active[0] * frame : (active[-1] + 1) * frame]


def _load_real(files: list[Path], sr: int) -> list[np.ndarray]:
    """Loads, trims and keeps the utterances of at least ``_MIN_SECONDS`` (unreadable files skipped)."""
    from .audio import load_mono

    utts = []
    for f in files:
        try:
            x = _trim(load_mono(f, sr), sr)
        except ValueError:
            continue
        if len(x) >= _MIN_SECONDS * sr:
            utts.append(x)
    return utts


def _espeak_texts(words: list[str], count: int, rng: np.random.Generator) -> list[str]:
    return [" ".join(rng.choice(words, size=int(rng.integers(4, 9)))) for _ in range(count)]


def _synthesise(voice: tuple[str, str, int], texts: list[str], sr: int, rng: np.random.Generator) -> list[np.ndarray]:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return []
    lang, variant, pitch = voice
    with tempfile.TemporaryDirectory() as tmp:
        wavs = []
        for i, text in enumerate(texts):
            wav = Path(tmp) / f"{i}.wav"
            speed = int(rng.integers(140, 185))
            cmd = [exe, "-v", f"{lang}+{variant}", "-p", str(pitch), "-s", str(speed), "-w", str(wav), text]
            if subprocess.run(cmd, capture_output=True, check=False).returncode == 0 and wav.is_file():
                wavs.append(wav)
        return _load_real(wavs, sr)


def _festival(voice: str, texts: list[str], sr: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Synthesises ``texts`` with a Festival voice (random duration stretch 0.85-1.2); ``[]`` if unavailable."""
    exe = shutil.which("text2wave")
    if exe is None:
        return []
    with tempfile.TemporaryDirectory() as tmp:
        wavs = []
        for i, text in enumerate(texts):
            txt, wav = Path(tmp) / f"{i}.txt", Path(tmp) / f"{i}.wav"
            txt.write_text(text + "\n", encoding="utf-8")
            stretch = float(rng.uniform(0.85, 1.2))
            cmd = [exe, "-eval", f"(voice_{voice})", "-eval", f"(Parameter.set 'Duration_Stretch {stretch:.2f})"]
            res = subprocess.run([*cmd, str(txt), "-o", str(wav)], capture_output=True, check=False, timeout=120)
            if res.returncode != 0 or not wav.is_file() or wav.stat().st_size < 1000:
                if i == 0:
                    return []  # voice not installed (or crashing): skip it
                continue
            wavs.append(wav)
        return _load_real(wavs, sr)


def fill_segment(utts: list[np.ndarray], length: int, rng: np.random.Generator, sr: int) -> np.ndarray:
    """A ``length``-sample stretch of one speaker: random utterances with 0-250 ms pauses, random crop,
    RMS-normalised to 1."""
    pieces, total = [], 0
    while total < length + sr // 2:
        x = utts[int(rng.integers(len(utts)))]
        gap = np.zeros(int(rng.integers(0, sr // 4)), dtype=np.float32)
        pieces += [x, gap]
        total += len(x) + len(gap)
    y = np.concatenate(pieces)
    start = int(rng.integers(0, len(y) - length + 1))
    y = y[start : start + length]
    return (y / (np.sqrt(np.mean(y**2)) + 1e-8)).astype(np.float32)


def _write_split(
    out: Path,
    split: str,
    count: int,
    pool: dict[str, list[np.ndarray]],
    length: int,
    sr: int,
    gain_db: float,
    rng: np.random.Generator,
    pairs: list[tuple[str, str]] | None = None,
) -> int:
    from .audio import write_wav

    names = sorted(pool)
    for i in range(count):
        if pairs:
            a, b = pairs[i % len(pairs)]
        else:
            ia, ib = rng.choice(len(names), size=2, replace=False)
            a, b = names[int(ia)], names[int(ib)]
        if rng.random() < 0.5:
            a, b = b, a
        g = float(rng.uniform(0, gain_db))
        s1 = fill_segment(pool[a], length, rng, sr) * 10 ** (g / 20)
        s2 = fill_segment(pool[b], length, rng, sr) * 10 ** (-g / 20)
        mix = s1 + s2
        scale = 0.9 * float(rng.uniform(0.3, 1.0)) / (float(np.abs(np.stack([mix, s1, s2])).max()) + 1e-8)
        name = f"{i:05d}_{a}_{b}.wav"
        write_wav(out / split / "mix" / name, mix * scale, sr)
        write_wav(out / split / "s1" / name, s1 * scale, sr)
        write_wav(out / split / "s2" / name, s2 * scale, sr)
    return count


def build_speech_sample(
    out: str | Path,
    *,
    sounds_dir: str | Path = DEFAULT_SOUNDS,
    train: int = 600,
    val: int = 60,
    test: int = 120,
    seconds: float = 4.0,
    sample_rate: int = 8000,
    espeak_voices: int = 8,
    espeak_utterances: int = 60,
    festival_voices: int = len(FESTIVAL_VOICES),
    festival_utterances: int = 60,
    prompt_packages: dict[str, str] | None = None,
    test_speakers: Sequence[str] = DEFAULT_TEST_SPEAKERS,
    gain_db: float = 2.5,
    seed: int = 0,
    max_files_per_speaker: int = 0,
    progress: bool = True,
) -> dict[str, object]:
    """Builds the sample set (see the module docstring) and returns its manifest.

    Raises:
        FileNotFoundError: the Asterisk prompts or the held-out speakers are not installed.
    """
    from tqdm.auto import tqdm

    from .audio import write_wav

    rng = np.random.default_rng(seed)
    out = Path(out)
    real = _real_speakers(Path(sounds_dir))
    missing = [s for s in test_speakers if s not in real]
    if missing:
        raise FileNotFoundError(
            f"{sounds_dir}: held-out speaker(s) {missing} not found (found {sorted(real)}); install "
            "asterisk-core-sounds-{en,fr,it,ru}-wav and asterisk-prompt-it-menardi-wav (scripts/system-packages) "
            "or pass --sounds-dir/--test-speakers"
        )
    pools: dict[str, list[np.ndarray]] = {}
    for name in tqdm(sorted(real), desc="asterisk speakers", disable=not progress):
        files = real[name]
        if max_files_per_speaker:
            files = [files[int(i)] for i in np.sort(rng.permutation(len(files))[:max_files_per_speaker])]
        utts = _load_real(files, sample_rate)
        if len(utts) >= 4:
            pools[name] = utts
    packages = PROMPT_PACKAGES if prompt_packages is None else prompt_packages
    for name, package in tqdm(sorted(packages.items()), desc="prompt packages", disable=not progress):
        files = _package_files(package)
        if max_files_per_speaker and files:
            files = [files[int(i)] for i in np.sort(rng.permutation(len(files))[:max_files_per_speaker])]
        utts = _load_prompts(files, sample_rate)
        if len(utts) >= 4 and name not in pools:
            pools[name] = utts
    words = sorted({w for f in real[sorted(real)[0]] for w in f.stem.replace("_", "-").split("-") if w.isalpha()})
    words = words or ["hello", "world", "separation", "speech"]
    for voice in tqdm(ESPEAK_VOICES[:espeak_voices], desc="espeak-ng voices", disable=not progress):
        utts = _synthesise(voice, _espeak_texts(words, espeak_utterances, rng), sample_rate, rng)
        if len(utts) >= 4:
            pools[f"espeak_{voice[0]}_{voice[1]}"] = utts
    for fvoice in tqdm(FESTIVAL_VOICES[:festival_voices], desc="festival voices", disable=not progress):
        utts = _festival(fvoice, _espeak_texts(words, festival_utterances, rng), sample_rate, rng)
        if len(utts) >= 4:
            pools[f"festival_{fvoice}"] = utts
    test_pool = {s: pools.pop(s) for s in test_speakers}
    if len(pools) < 2:
        raise FileNotFoundError(f"fewer than two training speakers ({sorted(pools)}): is espeak-ng installed?")
    train_pool, val_pool = {}, {}
    for name, utts in pools.items():
        order = rng.permutation(len(utts))
        n_val = max(2, len(utts) // 10)
        val_pool[name] = [utts[i] for i in order[:n_val]]
        train_pool[name] = [utts[i] for i in order[n_val:]]
    if out.exists():
        for sub in ("tr", "cv", "tt", "sources"):
            shutil.rmtree(out / sub, ignore_errors=True)
    for name, utts in train_pool.items():
        for i, x in enumerate(utts):
            write_wav(out / "sources" / name / f"{i:04d}.wav", x / (np.abs(x).max() + 1e-8) * 0.9, sample_rate)
    length = int(round(seconds * sample_rate))
    a, b = test_speakers[0], test_speakers[1]
    counts = {}
    for split, n, pool, pairs in (
        ("tr", train, train_pool, None),
        ("cv", val, val_pool, None),
        ("tt", test, test_pool, [(a, b)]),
    ):
        counts[split] = _write_split(out, split, n, pool, length, sample_rate, gain_db, rng, pairs)
    manifest: dict[str, object] = {
        "name": "speech-sample",
        "sample_rate": sample_rate,
        "seconds": seconds,
        "gain_db": gain_db,
        "seed": seed,
        "train_speakers": sorted(train_pool),
        "test_speakers": list(test_speakers),
        "mixtures": counts,
        "utterances": {k: len(v) for k, v in {**train_pool, **test_pool}.items()},
        "licences": {
            "asterisk prompts": "CC-BY-SA-3.0 (Digium, asterisk-core-sounds-*-wav)",
            "asterisk-prompt-*": "see /usr/share/doc/asterisk-prompt-*/copyright (Debian main)",
            "festival": "synthesised with Festival voices (Debian festvox-*, see their copyright files)",
            "espeak-ng": "synthesised with espeak-ng (GPL-3.0 program; output unrestricted)",
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``speech-sample``."""
    ap = argparse.ArgumentParser(prog="speech-sample", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("out", nargs="?", default="data/speech-sample", help="output folder")
    ap.add_argument("--sounds-dir", default=DEFAULT_SOUNDS, help="Asterisk sounds folder")
    ap.add_argument("--train", type=int, default=600, help="training mixtures")
    ap.add_argument("--val", type=int, default=60, help="validation mixtures")
    ap.add_argument("--test", type=int, default=120, help="test mixtures (held-out pair)")
    ap.add_argument("--seconds", type=float, default=4.0, help="mixture length")
    ap.add_argument("--espeak-voices", type=int, default=8, help=f"espeak-ng voices (max {len(ESPEAK_VOICES)})")
    ap.add_argument("--espeak-utterances", type=int, default=60, help="sentences per espeak-ng voice")
    ap.add_argument("--festival-voices", type=int, default=len(FESTIVAL_VOICES), help="festival voices (0: none)")
    ap.add_argument("--festival-utterances", type=int, default=60, help="sentences per festival voice")
    ap.add_argument("--no-prompt-packages", action="store_true", help="skip the extra asterisk-prompt-* speakers")
    ap.add_argument("--test-speakers", default=",".join(DEFAULT_TEST_SPEAKERS), help="held-out pair, comma-separated")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-files-per-speaker", type=int, default=0, help="use at most N prompts per speaker (0: all)")
    ap.add_argument("--tiny", action="store_true", help="a few mixtures of 2 s (tests, DEMO_BUDGET=tiny)")
    args = ap.parse_args(argv)
    kw = dict(
        train=args.train,
        val=args.val,
        test=args.test,
        seconds=args.seconds,
        espeak_voices=args.espeak_voices,
        espeak_utterances=args.espeak_utterances,
        festival_voices=args.festival_voices,
        festival_utterances=args.festival_utterances,
        max_files_per_speaker=args.max_files_per_speaker,
    )
    if args.tiny:
        kw = dict(
            train=16,
            val=4,
            test=4,
            seconds=2.0,
            espeak_voices=2,
            espeak_utterances=6,
            festival_voices=1,
            festival_utterances=6,
            max_files_per_speaker=40,
        )
    try:
        m = build_speech_sample(
            args.out,
            sounds_dir=args.sounds_dir,
            test_speakers=args.test_speakers.split(","),
            seed=args.seed,
            prompt_packages={} if args.no_prompt_packages else None,
            **kw,
        )
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{args.out}: {m['mixtures']} mixtures; training speakers {m['train_speakers']}; "
        f"held-out pair {m['test_speakers']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
