"""Separation datasets: WSJ0-2mix/3mix folders, LibriMix metadata CSVs, dynamic mixing.

* WSJ0-mix layout (also written by ``speech-sample``): ``<split>/mix/*.wav`` with the same file names in
  ``<split>/s1``, ``<split>/s2`` (``s3`` for 3mix). Pass the split folder (``.../wav8k/min/tr``).
* LibriMix: a metadata CSV with ``mixture_path, source_1_path, source_2_path[, ...]`` columns (paths
  absolute or relative to the CSV's folder); other columns are ignored.
* Dynamic mixing (the MossFormer recipe): a folder of single-speaker utterances, one sub-folder per speaker
  (``si_tr_s/<speaker>/*.wav`` for WSJ0); every item draws ``num_spks`` distinct speakers, one utterance
  each, a random segment, gains in +-``gain_db`` and speed perturbation, deterministically from
  ``(seed, index)`` so runs resume exactly.
* LibriSpeech-style speech (:mod:`sa_speechsep.librispeech`, ``kind='librispeech'``; auto-detected): training
  mixes the training speakers of a seeded speaker split dynamically; validation / test are fixed mixtures of
  the held-out speakers, the same as ``sa-speechsep mixtures`` writes.

Items are dicts ``{"mix": (T,), "sources": (S, T)}`` (float32 tensors).
"""

from __future__ import annotations

import csv
import fnmatch
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .audio import load_mono, resample, shift_formants

if TYPE_CHECKING:
    from .librispeech import SplitOptions

__all__ = [
    "Wsj0MixDataset",
    "LibriMixDataset",
    "DynamicMixDataset",
    "crop_or_pad",
    "build_dataset",
    "librispeech_dynamic_dataset",
]


def crop_or_pad(arrays: list[np.ndarray], length: int | None, rng: np.random.Generator | None) -> list[np.ndarray]:
    """Crops one common random window of ``length`` samples (or zero-pads) from equally long arrays."""
    if length is None:
        return arrays
    n = len(arrays[0])
    if n >= length:
        start = int(rng.integers(0, n - length + 1)) if rng is not None else 0
        return [a[start : start + length] for a in arrays]
    return [np.pad(a, (0, length - n)) for a in arrays]


def _item(mix: np.ndarray, sources: list[np.ndarray]) -> dict[str, torch.Tensor]:
    return {
        "mix": torch.from_numpy(np.ascontiguousarray(mix, dtype=np.float32)),
        "sources": torch.from_numpy(np.ascontiguousarray(np.stack(sources), dtype=np.float32)),
    }


class _FileMixDataset(Dataset[dict[str, torch.Tensor]]):
    """Shared logic of the file-backed datasets: ``self.rows`` lists ``(mix_path, [source_paths])``."""

    rows: list[tuple[Path, list[Path]]]

    def __init__(self, sample_rate: int, segment_seconds: float | None, random_crop: bool, seed: int) -> None:
        self.sample_rate = sample_rate
        self.segment = int(round(segment_seconds * sample_rate)) if segment_seconds else None
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def names(self) -> list[str]:
        """The mixtures' file stems, in item order."""
        return [mix.stem for mix, _ in self.rows]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        mix_path, src_paths = self.rows[index]
        mix = load_mono(mix_path, self.sample_rate)
        sources = [load_mono(p, self.sample_rate) for p in src_paths]
        n = min(len(mix), *(len(s) for s in sources))
        arrays = [mix[:n]] + [s[:n] for s in sources]
        rng = np.random.default_rng([self.seed, index, self.epoch]) if self.random_crop else None
        arrays = crop_or_pad(arrays, self.segment, rng)
        return _item(arrays[0], arrays[1:])

    def set_epoch(self, epoch: int) -> None:
        """Changes the random crops (deterministic per ``(seed, index, epoch)``)."""
        self.epoch = epoch


class Wsj0MixDataset(_FileMixDataset):
    """A WSJ0-2mix / 3mix split folder (``mix/``, ``s1/``, ``s2/``[, ``s3/``]).

    Args:
        split_dir: the split folder (e.g. ``wsj0-mix/2speakers/wav8k/min/tr``).
        num_spks: 2 or 3 (``s1 .. s<num_spks>`` must exist).
        sample_rate: files at another rate are resampled.
        segment_seconds: crop (training) / pad to this length; ``None`` keeps whole utterances.
        random_crop: random crop position (training) instead of the start.
        seed: crop seed.
    """

    def __init__(
        self,
        split_dir: str | Path,
        num_spks: int = 2,
        sample_rate: int = 8000,
        segment_seconds: float | None = None,
        random_crop: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(sample_rate, segment_seconds, random_crop, seed)
        root = Path(split_dir)
        mix_dir = root / "mix"
        if not mix_dir.is_dir():
            raise FileNotFoundError(f"{root}: not a WSJ0-mix split folder (no mix/ sub-folder)")
        src_dirs = [root / f"s{i + 1}" for i in range(num_spks)]
        for d in src_dirs:
            if not d.is_dir():
                raise FileNotFoundError(f"{d}: missing (a {num_spks}-speaker split needs s1..s{num_spks})")
        self.rows = []
        for mix in sorted(mix_dir.glob("*.wav")):
            srcs = [d / mix.name for d in src_dirs]
            missing = [str(s) for s in srcs if not s.is_file()]
            if missing:
                raise FileNotFoundError(f"{mix}: no matching source file {missing[0]}")
            self.rows.append((mix, srcs))
        if not self.rows:
            raise FileNotFoundError(f"{mix_dir}: no .wav files")


class LibriMixDataset(_FileMixDataset):
    """LibriMix metadata CSV (``mixture_path``, ``source_1_path`` ... columns).

    Args:
        csv_path: the metadata file (e.g. ``Libri2Mix/wav8k/min/metadata/mixture_train-100_mix_clean.csv``).
        num_spks / sample_rate / segment_seconds / random_crop / seed: as :class:`Wsj0MixDataset`.
    """

    def __init__(
        self,
        csv_path: str | Path,
        num_spks: int = 2,
        sample_rate: int = 8000,
        segment_seconds: float | None = None,
        random_crop: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__(sample_rate, segment_seconds, random_crop, seed)
        path = Path(csv_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: LibriMix metadata CSV not found")
        cols = ["mixture_path"] + [f"source_{i + 1}_path" for i in range(num_spks)]
        self.rows = []
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in cols if c not in header]
            if missing:
                raise ValueError(f"{path}: line 1: missing column(s) {missing}; found {header}")
            for lineno, row in enumerate(reader, start=2):
                paths = []
                for c in cols:
                    value = (row.get(c) or "").strip()
                    if not value:
                        raise ValueError(f"{path}: line {lineno}: empty {c}")
                    p = Path(value)
                    paths.append(p if p.is_absolute() else path.parent / p)
                self.rows.append((paths[0], paths[1:]))
        if not self.rows:
            raise ValueError(f"{path}: no data rows")


def _factors(name: str, values: tuple[float, ...] | list[float]) -> tuple[float, ...]:
    """Distinct factors in [0.5, 2] (the virtual-speaker settings of :class:`DynamicMixDataset`)."""
    out = tuple(float(f) for f in values)
    if not out or any(not 0.5 <= f <= 2.0 for f in out) or len(set(out)) != len(out):
        raise ValueError(f"{name}: need distinct factors in [0.5, 2], got {list(values)}")
    return out


class DynamicMixDataset(Dataset[dict[str, torch.Tensor]]):
    """On-the-fly mixtures of single-speaker utterances (MossFormer's dynamic mixing).

    Args:
        speakers_dir: one sub-folder of ``.wav`` utterances per speaker.
        num_spks: speakers per mixture (distinct).
        sample_rate: model rate. segment_seconds: mixture length.
        gain_db: each source gets a gain uniform in ``[-gain_db, +gain_db]`` dB (after RMS normalisation).
        speed_range: speed perturbation factor range (resampling on a 2.5 % grid, changes tempo and pitch);
            ``(1, 1)``: off.
        length: virtual number of items per epoch. seed: mixing seed.
        speakers: restrict to these speaker folder names.
        speaker_speeds: each speaker folder becomes one virtual speaker per factor (named ``spk@0.85``): its
            utterances are resampled by the factor (below 1: slower and lower-pitched, formants lowered too),
            on top of ``speed_range``. More, more varied speakers for small speaker pools; ``(1.0,)``: off.
        speaker_formants: each (speed-shifted) speaker also becomes one virtual speaker per formant factor
            (named ``spk~f1.1``): :func:`~sa_speechsep.audio.shift_formants` moves its spectral envelope (vocal
            tract length) and keeps its pitch, so pitch and timbre vary independently; ``(1.0,)``: off.
        speaker_weights: sampling weight per speaker folder, by ``fnmatch`` pattern (first match wins, default
            1), e.g. ``{"espeak_*": 0.2}`` draws synthetic voices less often than real ones.
        files: speaker -> utterance files (any format soundfile reads) instead of scanning ``speakers_dir``'s
            sub-folders for ``.wav`` files (the LibriSpeech training speakers,
            :func:`~sa_speechsep.librispeech.librispeech_dynamic_dataset`).
    """

    def __init__(
        self,
        speakers_dir: str | Path,
        num_spks: int = 2,
        sample_rate: int = 8000,
        segment_seconds: float = 4.0,
        gain_db: float = 2.5,
        speed_range: tuple[float, float] = (0.95, 1.05),
        length: int = 20000,
        seed: int = 0,
        speakers: list[str] | None = None,
        speaker_speeds: tuple[float, ...] | list[float] = (1.0,),
        speaker_weights: Mapping[str, float] | None = None,
        speaker_formants: tuple[float, ...] | list[float] = (1.0,),
        files: Mapping[str, Sequence[str | Path]] | None = None,
    ) -> None:
        root = Path(speakers_dir)
        self.files: dict[str, list[Path]] = {}
        if files is not None:
            for name in sorted(files):
                if (speakers is None or name in speakers) and files[name]:
                    self.files[name] = sorted(Path(f) for f in files[name])
            if len(self.files) < num_spks:
                raise ValueError(f"{root}: {len(self.files)} speakers with utterances, need >= {num_spks}")
        else:
            if not root.is_dir():
                raise FileNotFoundError(f"{root}: speakers folder not found")
            for d in sorted(p for p in root.iterdir() if p.is_dir()):
                if speakers is not None and d.name not in speakers:
                    continue
                wavs = sorted(d.rglob("*.wav"))
                if wavs:
                    self.files[d.name] = wavs
            if len(self.files) < num_spks:
                raise ValueError(f"{root}: {len(self.files)} speaker folders with .wav files, need >= {num_spks}")
        speeds, formants = _factors("speaker_speeds", speaker_speeds), _factors("speaker_formants", speaker_formants)
        # virtual speaker name -> (speaker folder, speed factor, formant factor)
        self.virtual: dict[str, tuple[str, float, float]] = {
            name + ("" if f == 1.0 else f"@{f:g}") + ("" if g == 1.0 else f"~f{g:g}"): (name, f, g)
            for name in sorted(self.files)
            for f in speeds
            for g in formants
        }
        self.names = sorted(self.virtual)
        weights = []
        for name in self.names:
            folder = self.virtual[name][0]
            w = next((float(v) for k, v in (speaker_weights or {}).items() if fnmatch.fnmatchcase(folder, k)), 1.0)
            if not w >= 0:
                raise ValueError(f"speaker_weights: weight of {folder!r} must be >= 0, got {w}")
            weights.append(w)
        if len({self.virtual[n][0] for n, w in zip(self.names, weights, strict=True) if w > 0}) < num_spks:
            raise ValueError(f"speaker_weights: fewer than {num_spks} speakers with a positive weight")
        self.probs = np.asarray(weights) / sum(weights)
        folders = sorted(self.files)
        self._folder_index = np.asarray([folders.index(self.virtual[n][0]) for n in self.names])
        self.num_spks = num_spks
        self.sample_rate = sample_rate
        self.segment = int(round(segment_seconds * sample_rate))
        self.gain_db = gain_db
        self.speed_range = speed_range
        self.length = length
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def _utterance(self, rng: np.random.Generator, speaker: str) -> np.ndarray:
        folder, factor, formant = self.virtual[speaker]
        files = self.files[folder]
        pieces, total = [], 0
        # concatenate random utterances of the speaker until the segment is filled (short prompts)
        while total < self.segment:
            x = load_mono(files[int(rng.integers(len(files)))], self.sample_rate)
            lo, hi = self.speed_range
            speed = factor * (float(rng.uniform(lo, hi)) if hi > lo else 1.0)
            # factors on a 2.5 % grid keep the resampling ratio small (short polyphase filters)
            step = self.sample_rate // 40
            orig = int(round(self.sample_rate * speed / step)) * step
            if orig != self.sample_rate:
                x = resample(x, orig, self.sample_rate)
            if formant != 1.0:
                x = shift_formants(x, formant)
            gap = np.zeros(int(rng.integers(0, self.sample_rate // 4)), dtype=np.float32)
            pieces += [x, gap]
            total += len(x) + len(gap)
        x = np.concatenate(pieces)
        start = int(rng.integers(0, len(x) - self.segment + 1))
        x = x[start : start + self.segment]
        rms = float(np.sqrt(np.mean(x**2)) + 1e-8)
        return x / rms * 10 ** (float(rng.uniform(-self.gain_db, self.gain_db)) / 20)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        # distinct speaker folders (never one voice against its own speed-shifted copy)
        probs, spk = self.probs.copy(), []
        for _ in range(self.num_spks):
            i = int(rng.choice(len(self.names), p=probs / probs.sum()))
            spk.append(i)
            probs[self._folder_index == self._folder_index[i]] = 0.0
        sources = [self._utterance(rng, self.names[i]) for i in spk]
        mix = np.sum(sources, axis=0)
        peak = float(np.abs(mix).max()) + 1e-8
        scale = 0.9 / peak * float(rng.uniform(0.25, 1.0))
        return _item(mix * scale, [s * scale for s in sources])


def librispeech_dynamic_dataset(
    root: str | Path, split: SplitOptions | None = None, **dynamic: Any
) -> DynamicMixDataset:
    """Dynamic mixing (:class:`DynamicMixDataset`) of the training speakers of a LibriSpeech-style speech folder.

    Args:
        root: LibriSpeech tree or flat ``<speaker>-<chapter>-<utt>.flac`` folder.
        split: the speaker split (:class:`~sa_speechsep.librispeech.SplitOptions`); its validation and test
            speakers are left out.
        dynamic: :class:`DynamicMixDataset` arguments (``num_spks``, ``segment_seconds``, ``gain_db``...).
    """
    from .librispeech import SplitOptions, scan_speakers, split_speakers

    opts = split or SplitOptions()
    corpus = scan_speakers(root, opts.speakers_file)
    sp = split_speakers(corpus, opts.test_speakers, opts.val_speakers, opts.seed)
    files = {s: [u.path for u in corpus.utterances[s]] for s in sp.train}
    return DynamicMixDataset(root, files=files, **dynamic)


def build_dataset(
    spec: str,
    *,
    kind: str = "auto",
    num_spks: int = 2,
    sample_rate: int = 8000,
    segment_seconds: float | None = None,
    train: bool = False,
    seed: int = 0,
    split: SplitOptions | None = None,
    part: str = "tt",
    mixtures: int = 200,
    mixture_seconds: float = 4.0,
    **dynamic: Any,
) -> Dataset[dict[str, torch.Tensor]]:
    """A dataset from a path.

    ``kind``: ``auto`` (``.csv`` -> LibriMix, a LibriSpeech-style speech folder -> ``librispeech``, else
    WSJ0-mix), ``wsj0mix``, ``librimix``, ``dynamic`` (speaker sub-folders) or ``librispeech``: with ``train``,
    dynamic mixing of the training speakers of ``split``; without, ``mixtures`` fixed mixtures of
    ``mixture_seconds`` of the ``part`` (``cv`` / ``tt``) speakers, seeded by ``seed``
    (:class:`~sa_speechsep.librispeech.LibriSpeechMixDataset`). ``dynamic``: :class:`DynamicMixDataset`
    arguments (``dynamic`` and ``librispeech`` training only).
    """
    path = Path(spec)
    if kind == "auto":
        from .librispeech import is_speaker_folder

        if path.suffix == ".csv":
            kind = "librimix"
        else:
            kind = "librispeech" if is_speaker_folder(path) else "wsj0mix"
    if kind == "librimix":
        return LibriMixDataset(path, num_spks, sample_rate, segment_seconds, random_crop=train, seed=seed)
    if kind == "wsj0mix":
        return Wsj0MixDataset(path, num_spks, sample_rate, segment_seconds, random_crop=train, seed=seed)
    if kind == "dynamic":
        return DynamicMixDataset(path, num_spks, sample_rate, segment_seconds or 4.0, seed=seed, **dynamic)
    if kind == "librispeech":
        from .librispeech import LibriSpeechMixDataset

        if train:
            return librispeech_dynamic_dataset(
                path,
                split,
                num_spks=num_spks,
                sample_rate=sample_rate,
                segment_seconds=segment_seconds or 4.0,
                seed=seed,
                **dynamic,
            )
        if num_spks != 2:
            raise ValueError(f"{path}: fixed LibriSpeech mixtures have 2 speakers, the model separates {num_spks}")
        return LibriSpeechMixDataset(path, part, mixtures, mixture_seconds, seed, sample_rate, split)
    raise ValueError(f"unknown dataset kind {kind!r}: use auto, wsj0mix, librimix, dynamic or librispeech")
