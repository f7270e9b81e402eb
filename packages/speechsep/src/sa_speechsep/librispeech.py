"""LibriSpeech-style speech: speaker listing, seeded speaker-disjoint splits and fixed 2-speaker test mixtures.

Two layouts are read (``.flac`` or ``.wav``, any rate; every file is resampled by
:func:`sa_speechsep.audio.resample`):

* the official tree ``<root>/<speaker>/<chapter>/<speaker>-<chapter>-<utterance>.flac`` with its
  ``<speaker>-<chapter>.trans.txt`` transcripts (``<root>`` a subset such as ``train-clean-100``, or the
  ``LibriSpeech`` folder holding several);
* a flat folder of ``<speaker>-<chapter>-<utterance>.flac`` files (e.g. ``../shared/data/librispeech-251``).

The speaker is read from the file name; a file whose name does not follow that pattern takes its speaker and
chapter from its two parent folders (tree layout). ``SPEAKERS.TXT`` (``ID | SEX | SUBSET | MINUTES | NAME``,
comment lines start with ``;``) in the folder or the one above gives each speaker's sex.

:func:`split_speakers` holds out test and validation speakers, balanced by sex; :func:`plan_mixtures` and
:func:`render_mixture` build fixed WSJ0-2mix-style mixtures from them (:func:`write_mixtures` writes
``{cv,tt}/{mix,s1,s2}/<name>.wav``; :class:`LibriSpeechMixDataset` builds the same mixtures in memory).
Training mixes the training speakers dynamically: :func:`sa_speechsep.data.librispeech_dynamic_dataset`.
Everything is deterministic: speakers are sorted before any seeded draw, so the listing order of the file
system never matters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .audio import AudioError, read_audio, resample, write_wav

__all__ = [
    "DEFAULT_ROOT",
    "DataError",
    "Utterance",
    "SpeakerCorpus",
    "SpeakerSplit",
    "SplitOptions",
    "MixtureSpec",
    "LibriSpeechMixDataset",
    "is_speaker_folder",
    "read_speakers_file",
    "scan_speakers",
    "split_speakers",
    "load_utterance",
    "plan_mixtures",
    "render_mixture",
    "write_mixtures",
]

#: where the benchmark's LibriSpeech utterances live, relative to the repository root (never committed)
DEFAULT_ROOT = "../shared/data/librispeech-251"
_AUDIO_SUFFIXES = (".flac", ".wav")
_NAME = re.compile(r"^(?P<speaker>[^-\s]+)-(?P<chapter>[^-\s]+)-(?P<utt>[^-\s]+)$")
#: per-part salt of the mixture seeds, so cv and tt never draw the same stream
_PART_SALT = {"cv": 1, "tt": 2}


class DataError(ValueError):
    """A speech folder, speaker list or split request that cannot be used; the message names the file or option."""


@dataclass(frozen=True)
class Utterance:
    """One single-speaker recording.

    Attributes:
        id: ``<speaker>-<chapter>-<utterance>`` (the file stem). speaker / chapter: its parts.
        path: the audio file. transcript: the ``*.trans.txt`` line's text, when there is one.
    """

    id: str
    speaker: str
    chapter: str
    path: Path
    transcript: str | None = None


@dataclass(frozen=True)
class SpeakerCorpus:
    """The utterances of a speech folder, per speaker.

    Attributes:
        root: the folder. utterances: speaker id -> its utterances sorted by id.
        sexes: speaker id -> ``"F"`` / ``"M"`` for the speakers ``SPEAKERS.TXT`` lists.
        speakers_file: the ``SPEAKERS.TXT`` read (``None``: none found).
    """

    root: Path
    utterances: Mapping[str, tuple[Utterance, ...]]
    sexes: Mapping[str, str] = field(default_factory=dict)
    speakers_file: Path | None = None

    @property
    def speakers(self) -> list[str]:
        """Speaker ids in a fixed order (numeric ids by value)."""
        return sorted(self.utterances, key=_speaker_key)

    def sex(self, speaker: str) -> str:
        """``"F"``, ``"M"`` or ``"?"`` (not in ``SPEAKERS.TXT``)."""
        return self.sexes.get(speaker, "?")


@dataclass(frozen=True)
class SplitOptions:
    """How :func:`split_speakers` holds out speakers (the same options must be used for training and testing).

    Attributes:
        test_speakers / val_speakers: speakers held out for test and validation. seed: the split's seed.
        speakers_file: ``SPEAKERS.TXT`` to read sexes from (``None``: look in the folder and the one above).
    """

    test_speakers: int = 25
    val_speakers: int = 25
    seed: int = 0
    speakers_file: str | None = None


@dataclass(frozen=True)
class SpeakerSplit:
    """Disjoint speaker lists.

    Attributes:
        train / val / test: speaker ids (sorted). sexes: speaker id -> ``"F"`` / ``"M"`` / ``"?"``.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    sexes: Mapping[str, str]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{"train": {"speakers": n, "F": f, "M": m, "?": u}, "val": ..., "test": ...}``."""
        out = {}
        for part, spk in (("train", self.train), ("val", self.val), ("test", self.test)):
            row = {"speakers": len(spk), "F": 0, "M": 0, "?": 0}
            for s in spk:
                row[self.sexes.get(s, "?")] += 1
            out[part] = row
        return out

    def describe(self) -> str:
        """One line: ``train 201 (F 100, M 101), val 25 (F 13, M 12), test 25 (F 12, M 13)``."""
        parts = []
        for part, row in self.counts().items():
            sexes = ", ".join(f"{k} {row[k]}" for k in ("F", "M", "?") if row[k])
            parts.append(f"{part} {row['speakers']}" + (f" ({sexes})" if sexes else ""))
        return ", ".join(parts)


@dataclass(frozen=True)
class MixtureSpec:
    """One fixed two-speaker mixture, before any audio is read.

    Attributes:
        name: ``<utt1>_<gain1>_<utt2>_<gain2>`` (WSJ0-2mix style; gains in dB, ``gain2 = -gain1``).
        utterances: the two utterances (different speakers). gains_db: each source's level after RMS
            normalisation (the relative level ``gain1 - gain2`` is uniform in +-``gain_db``).
        positions: in ``[0, 1)``, per source: where the crop starts in a longer utterance, or where a shorter
            one sits in the zero-padded window.
    """

    name: str
    utterances: tuple[Utterance, Utterance]
    gains_db: tuple[float, float]
    positions: tuple[float, float]


def _speaker_key(speaker: str) -> tuple[int, int, str]:
    return (0, int(speaker), speaker) if speaker.isdigit() else (1, 0, speaker)


def read_speakers_file(path: str | Path) -> dict[str, str]:
    """Speaker id -> sex (``"F"`` / ``"M"``) from a LibriSpeech ``SPEAKERS.TXT``.

    Lines are ``ID | SEX | SUBSET | MINUTES | NAME`` (the name may itself hold ``|``); lines starting with ``;``
    and blank lines are skipped.

    Raises:
        FileNotFoundError: no such file. DataError: a line without an id and a sex of F or M (file:line).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: speakers file not found")
    out: dict[str, str] = {}
    for lineno, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith(";"):
            continue
        fields = [f.strip() for f in text.split("|")]
        if len(fields) < 2 or not fields[0]:
            raise DataError(f"{p}:{lineno}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {text[:60]!r}")
        sex = fields[1].upper()
        if sex not in ("F", "M"):
            raise DataError(f"{p}:{lineno}: sex of speaker {fields[0]} must be F or M, got {fields[1]!r}")
        out[fields[0]] = sex
    return out


def _find_speakers_file(root: Path, speakers_file: str | Path | None) -> Path | None:
    if speakers_file:
        return Path(speakers_file)
    for folder in (root, root.parent):
        candidate = folder / "SPEAKERS.TXT"
        if candidate.is_file():
            return candidate
    return None


def _read_transcripts(path: Path) -> dict[str, str]:
    out = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if not _NAME.match(parts[0]):
            raise DataError(f"{path}:{lineno}: expected '<speaker>-<chapter>-<utterance> TEXT', got {line[:60]!r}")
        out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out


def is_speaker_folder(path: str | Path) -> bool:
    """Whether ``path`` looks like a LibriSpeech-style speech folder (not a WSJ0-mix split folder).

    True for a folder without ``mix/`` that holds ``SPEAKERS.TXT`` or ``<speaker>-<chapter>-<utt>`` audio files
    directly (flat) or two levels down (official tree).
    """
    p = Path(path)
    if not p.is_dir() or (p / "mix").is_dir():
        return False
    if (p / "SPEAKERS.TXT").is_file():
        return True
    for pattern in ("*-*-*.flac", "*-*-*.wav", "*/*/*-*-*.flac", "*/*/*-*-*.wav"):
        if next(p.glob(pattern), None) is not None:
            return True
    return False


def scan_speakers(root: str | Path, speakers_file: str | Path | None = None) -> SpeakerCorpus:
    """Lists the utterances of a LibriSpeech-style folder per speaker (no audio is read).

    Args:
        root: official tree (``<speaker>/<chapter>/*.flac`` + ``*.trans.txt``) or flat ``<spk>-<ch>-<utt>.flac``
            (``.wav`` accepted too). speakers_file: ``SPEAKERS.TXT`` (default: in ``root`` or its parent).

    Returns:
        a :class:`SpeakerCorpus`.

    Raises:
        FileNotFoundError: ``root`` (or the given speakers file) missing. DataError: no utterances, a file name
        that names no speaker, the same utterance twice, or a bad transcript / speakers line.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"{base}: speech folder not found")
    transcripts: dict[str, str] = {}
    for t in sorted(base.rglob("*.trans.txt")):
        transcripts.update(_read_transcripts(t))
    found: dict[str, Utterance] = {}
    for path in sorted(base.rglob("*")):
        if path.suffix.lower() not in _AUDIO_SUFFIXES or not path.is_file():
            continue
        m = _NAME.match(path.stem)
        rel = path.relative_to(base).parts
        if m:
            speaker, chapter = m.group("speaker"), m.group("chapter")
        elif len(rel) >= 3:
            speaker, chapter = rel[-3], rel[-2]
        else:
            raise DataError(f"{path}: file name is not <speaker>-<chapter>-<utterance>{path.suffix}")
        uid = path.stem if m else f"{speaker}-{chapter}-{path.stem}"
        if uid in found:
            raise DataError(f"{path}: utterance {uid} also in {found[uid].path}")
        found[uid] = Utterance(uid, speaker, chapter, path, transcripts.get(uid))
    if not found:
        raise DataError(
            f"{base}: no .flac or .wav utterances (expected <speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac "
            "or flat <speaker>-<chapter>-<utt>.flac files)"
        )
    per: dict[str, list[Utterance]] = {}
    for uid in sorted(found):
        per.setdefault(found[uid].speaker, []).append(found[uid])
    sfile = _find_speakers_file(base, speakers_file)
    sexes = read_speakers_file(sfile) if sfile is not None else {}
    return SpeakerCorpus(
        root=base,
        utterances={s: tuple(u) for s, u in per.items()},
        sexes={s: sexes[s] for s in per if s in sexes},
        speakers_file=sfile,
    )


def _draw(pools: dict[str, list[str]], n: int) -> list[str]:
    """Takes ``n`` speakers from the (already shuffled) pools, alternating sexes: always from the known sex with
    fewer picks so far (ties: the larger remaining pool, then F); unknown-sex speakers only when F and M run out."""
    picked: list[str] = []
    taken = {"F": 0, "M": 0}
    for _ in range(n):
        known = [s for s in ("F", "M") if pools[s]]
        if known:
            sex = min(known, key=lambda s: (taken[s], -len(pools[s]), s))
            taken[sex] += 1
        else:
            sex = "?"
        picked.append(pools[sex].pop(0))
    return picked


def split_speakers(
    corpus: SpeakerCorpus, test_speakers: int = 25, val_speakers: int = 25, seed: int = 0
) -> SpeakerSplit:
    """A seeded, speaker-disjoint train / validation / test split, balanced by sex where sexes are known.

    The speakers of each sex are sorted, then shuffled with ``seed``; the test speakers are taken first, then
    the validation speakers, alternating sexes (equal F / M as far as the pools allow; speakers of unknown sex
    only when both run out); the rest train. The result depends only on the speaker ids, their sexes, the
    counts and the seed (not on the order files were listed).

    Raises:
        DataError: negative counts, or more held-out speakers than the folder has.
    """
    if test_speakers < 0 or val_speakers < 0:
        raise DataError(f"--test-speakers / --val-speakers must be >= 0, got {test_speakers} / {val_speakers}")
    speakers = corpus.speakers
    if test_speakers + val_speakers > len(speakers):
        raise DataError(
            f"{corpus.root}: {len(speakers)} speakers, cannot hold out {test_speakers} test + "
            f"{val_speakers} validation speakers"
        )
    rng = np.random.default_rng(seed)
    pools: dict[str, list[str]] = {}
    for sex in ("F", "M", "?"):
        group = [s for s in speakers if corpus.sex(s) == sex]
        pools[sex] = [group[i] for i in rng.permutation(len(group))]
    test = _draw(pools, test_speakers)
    val = _draw(pools, val_speakers)
    held = set(test) | set(val)
    train = [s for s in speakers if s not in held]
    return SpeakerSplit(
        train=tuple(train),
        val=tuple(sorted(val, key=_speaker_key)),
        test=tuple(sorted(test, key=_speaker_key)),
        sexes={s: corpus.sex(s) for s in speakers},
    )


def _flac_without_frames(path: Path) -> bool:
    """Whether ``path`` is a FLAC stream whose metadata blocks end the file (a header and no audio frames)."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        if fh.read(4) != b"fLaC":
            return False
        while True:
            head = fh.read(4)  # last-block flag (1 bit), type (7 bits), length (24 bits)
            if len(head) < 4:
                return False
            fh.seek(int.from_bytes(head[1:4], "big"), 1)
            if head[0] & 0x80:
                return fh.tell() == size


def load_utterance(path: str | Path, sample_rate: int = 8000) -> np.ndarray:
    """Reads one utterance to mono float32 at ``sample_rate`` (through :func:`~sa_speechsep.audio.resample`).

    Raises:
        AudioError: ``<file>: <problem>``: missing, empty (0 bytes, a FLAC header without audio frames, 0
        samples), not audio, NaN/Inf, silent.
    """
    p = Path(path)
    if p.is_file() and p.stat().st_size == 0:
        raise AudioError(f"{p}: empty file (0 bytes)")
    try:
        x, info = read_audio(p, check_silence=False)
    except AudioError:
        if p.is_file() and _flac_without_frames(p):  # libsndfile's own message for it is "psf_fseek() failed"
            raise AudioError(f"{p}: empty FLAC (a header and no audio frames)") from None
        raise
    peak = float(np.abs(x).max())
    if peak < 1e-4:
        raise AudioError(f"{p}: silent utterance (peak {peak:.1e})")
    if info.sample_rate != sample_rate:
        x = resample(x, info.sample_rate, sample_rate)
    return x


def _pair_count(corpus: SpeakerCorpus, speakers: Sequence[str]) -> int:
    sizes = [len(corpus.utterances[s]) for s in speakers]
    return (sum(sizes) ** 2 - sum(n * n for n in sizes)) // 2


def plan_mixtures(
    corpus: SpeakerCorpus,
    speakers: Sequence[str],
    mixtures: int,
    seed: int = 0,
    part: str = "tt",
    gain_db: float = 2.5,
) -> list[MixtureSpec]:
    """Draws ``mixtures`` fixed two-speaker mixtures from ``speakers`` (sorted by name, as a folder lists them).

    Mixture ``i`` uses its own generator ``(seed, part, i)``: two different speakers uniformly, one utterance
    each, a relative level uniform in +-``gain_db`` dB (split evenly: ``+r/2`` and ``-r/2``, 4 decimals, as
    in the name) and crop positions. A pair of utterances is not reused while unused pairs remain, and names
    are unique. The first ``k`` mixtures are the same whatever ``mixtures`` is.

    Raises:
        DataError: fewer than two speakers, ``mixtures < 1`` or an unknown ``part``.
    """
    if part not in _PART_SALT:
        raise DataError(f"part must be one of {sorted(_PART_SALT)}, got {part!r}")
    if mixtures < 1:
        raise DataError(f"--mixtures must be >= 1, got {mixtures}")
    spk = sorted(speakers, key=_speaker_key)
    if len(spk) < 2:
        raise DataError(f"{corpus.root}: {part} needs at least 2 speakers to mix, got {len(spk)}")
    total_pairs = _pair_count(corpus, spk)
    used_pairs: set[frozenset[str]] = set()
    names: set[str] = set()
    specs = []
    for i in range(mixtures):
        rng = np.random.default_rng([seed, _PART_SALT[part], i])
        for _attempt in range(10000):
            a, b = (int(k) for k in rng.choice(len(spk), size=2, replace=False))
            ua = corpus.utterances[spk[a]][int(rng.integers(len(corpus.utterances[spk[a]])))]
            ub = corpus.utterances[spk[b]][int(rng.integers(len(corpus.utterances[spk[b]])))]
            g = round(float(rng.uniform(-gain_db, gain_db)) / 2, 4) + 0.0  # + 0.0: no "-0.0000"
            pos = (float(rng.uniform()), float(rng.uniform()))
            name = f"{ua.id}_{g:.4f}_{ub.id}_{-g + 0.0:.4f}"
            pair = frozenset((ua.id, ub.id))
            if (pair in used_pairs and len(used_pairs) < total_pairs) or name in names:
                continue
            break
        else:  # pragma: no cover - needs 10000 colliding draws
            raise DataError(f"{corpus.root}: could not draw {mixtures} distinct {part} mixtures")
        used_pairs.add(pair)
        names.add(name)
        specs.append(MixtureSpec(name, (ua, ub), (g, -g + 0.0), pos))
    return sorted(specs, key=lambda s: s.name + ".wav")


def _place(x: np.ndarray, length: int, position: float) -> np.ndarray:
    n = len(x)
    if n >= length:
        start = int(position * (n - length + 1))
        return x[start : start + length]
    out = np.zeros(length, dtype=np.float32)
    start = int(position * (length - n + 1))
    out[start : start + n] = x
    return out


def render_mixture(spec: MixtureSpec, seconds: float, sample_rate: int = 8000) -> tuple[np.ndarray, np.ndarray]:
    """The audio of one mixture as 16-bit PCM samples (what the WAV files hold).

    Each utterance is read at ``sample_rate``, cropped to ``seconds`` (or zero-padded), RMS-normalised over the
    window and scaled by its gain; the mixture is their sum; all three are scaled by one factor so the largest
    peak is 0.9, then rounded to int16 (as :func:`~sa_speechsep.audio.write_wav` does).

    Returns:
        ``(mix (T,) int16, sources (2, T) int16)``.
    """
    length = int(round(seconds * sample_rate))
    if length < 1:
        raise DataError(f"--seconds must give at least one sample, got {seconds}")
    sources = []
    for utt, gain, pos in zip(spec.utterances, spec.gains_db, spec.positions, strict=True):
        seg = _place(load_utterance(utt.path, sample_rate), length, pos).astype(np.float64)
        rms = float(np.sqrt(np.mean(seg**2)))
        if rms < 1e-6:
            raise AudioError(f"{utt.path}: silent {seconds:g} s stretch (choose other --seconds or --seed)")
        sources.append(seg / rms * 10 ** (gain / 20))
    mix = sources[0] + sources[1]  # (T,)
    peak = max(float(np.abs(a).max()) for a in (mix, *sources))
    scale = 0.9 / peak

    def pcm(a: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(a * scale * 32768.0), -32768, 32767).astype(np.int16)

    return pcm(mix), np.stack([pcm(s) for s in sources])


def _to_float(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32) / 32768.0)


class LibriSpeechMixDataset(Dataset[dict[str, torch.Tensor]]):
    """Fixed two-speaker mixtures of a speech folder's validation (``cv``) or test (``tt``) speakers, in memory.

    Item ``i`` equals what :func:`write_mixtures` writes as the ``i``-th file (sorted by name) of that part with
    the same options, read back: ``{"mix": (T,), "sources": (2, T)}`` float32.

    Args:
        root: LibriSpeech tree or flat folder. part: ``cv`` (validation speakers) or ``tt`` (test speakers).
        mixtures: how many. seconds: their length. seed: the mixtures' seed. sample_rate: output rate.
        split: the speaker split options (must match the training run's). gain_db: relative level range.
        corpus: an already scanned folder (skips the scan).
    """

    def __init__(
        self,
        root: str | Path,
        part: str = "tt",
        mixtures: int = 200,
        seconds: float = 4.0,
        seed: int = 0,
        sample_rate: int = 8000,
        split: SplitOptions | None = None,
        gain_db: float = 2.5,
        corpus: SpeakerCorpus | None = None,
    ) -> None:
        opts = split or SplitOptions()
        self.corpus = corpus or scan_speakers(root, opts.speakers_file)
        self.split = split_speakers(self.corpus, opts.test_speakers, opts.val_speakers, opts.seed)
        speakers = self.split.test if part == "tt" else self.split.val
        self.specs = plan_mixtures(self.corpus, speakers, mixtures, seed, part, gain_db)
        self.part = part
        self.seconds = seconds
        self.sample_rate = sample_rate

    @property
    def names(self) -> list[str]:
        """The mixtures' names, in item order."""
        return [s.name for s in self.specs]

    def __len__(self) -> int:
        return len(self.specs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        mix, sources = render_mixture(self.specs[index], self.seconds, self.sample_rate)
        return {"mix": _to_float(mix), "sources": _to_float(sources)}


def write_mixtures(
    src: str | Path,
    out: str | Path,
    *,
    mixtures: int = 200,
    seconds: float = 4.0,
    seed: int = 0,
    split: SplitOptions | None = None,
    sample_rate: int = 8000,
    gain_db: float = 2.5,
    overwrite: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Writes fixed mixtures in the WSJ0-2mix layout: ``<out>/{cv,tt}/{mix,s1,s2}/<name>.wav`` + ``manifest.json``.

    ``cv`` mixes the validation speakers, ``tt`` the test speakers (a part with no speakers is skipped), each
    ``mixtures`` mixtures of ``seconds`` at ``sample_rate`` (16-bit PCM). ``manifest.json`` records the options,
    the split (speakers and sexes per part) and the mixture names.

    Returns:
        the manifest (a dict).

    Raises:
        DataError: ``<out>/<part>/mix`` already holds WAV files (without ``overwrite``), or see
        :func:`scan_speakers`, :func:`split_speakers`, :func:`plan_mixtures`. AudioError: an unreadable utterance.
    """
    from tqdm.auto import tqdm

    opts = split or SplitOptions()
    corpus = scan_speakers(src, opts.speakers_file)
    sp = split_speakers(corpus, opts.test_speakers, opts.val_speakers, opts.seed)
    dest = Path(out)
    plans: dict[str, list[MixtureSpec]] = {}
    for part, speakers in (("cv", sp.val), ("tt", sp.test)):
        if speakers:
            plans[part] = plan_mixtures(corpus, speakers, mixtures, seed, part, gain_db)
    for part in plans:
        old = sorted((dest / part / "mix").glob("*.wav"))
        if old and not overwrite:
            raise DataError(
                f"{dest / part / 'mix'}: already holds {len(old)} mixtures; use an empty --out or --overwrite"
            )
    for part in plans:  # --overwrite: stale mixtures of another seed must not stay beside the new ones
        for sub in ("mix", "s1", "s2"):
            for f in sorted((dest / part / sub).glob("*.wav")):
                f.unlink()
    for part, specs in plans.items():
        for spec in tqdm(specs, desc=part, disable=not progress):
            mix, sources = render_mixture(spec, seconds, sample_rate)
            write_wav(dest / part / "mix" / f"{spec.name}.wav", mix, sample_rate)
            write_wav(dest / part / "s1" / f"{spec.name}.wav", sources[0], sample_rate)
            write_wav(dest / part / "s2" / f"{spec.name}.wav", sources[1], sample_rate)
    manifest: dict[str, Any] = {
        "source": str(src),
        "speakers_file": str(corpus.speakers_file) if corpus.speakers_file else None,
        "layout": "WSJ0-2mix: {cv,tt}/{mix,s1,s2}/<utt1>_<gain1>_<utt2>_<gain2>.wav",
        "sample_rate": sample_rate,
        "seconds": seconds,
        "mixtures_per_part": mixtures,
        "seed": seed,
        "gain_db": gain_db,
        "split": {
            "seed": opts.seed,
            "test_speakers": opts.test_speakers,
            "val_speakers": opts.val_speakers,
            "counts": sp.counts(),
            "speakers": {"train": list(sp.train), "val": list(sp.val), "test": list(sp.test)},
            "sexes": {s: sp.sexes[s] for s in corpus.speakers},
        },
        "mixtures": {part: [s.name for s in specs] for part, specs in plans.items()},
    }
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest
