"""Configs of the speech separation package: model, data and engine settings (YAML in ``configs/``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shared_attention.engine import TrainConfig, load_bundled_config

__all__ = [
    "SpeechsepModelConfig",
    "SpeechsepDataConfig",
    "SpeechsepConfig",
    "CONFIG_DIR",
    "load_sep_config",
    "SepModelConfig",
    "SepDataConfig",
    "SepConfig",
]

CONFIG_DIR = Path(__file__).with_name("configs")


@dataclass(frozen=True)
class SpeechsepModelConfig:
    """Which separator to build.

    Attributes:
        arch: ``mossformer`` or ``convtasnet`` (torchaudio's Conv-TasNet, the peer baseline).
        variant: MossFormer variant (``mossformer-l``, ``mossformer-m``, ``cpu-small``, ``tiny``) or Conv-TasNet
            size (``cpu-small``, ``tiny``, ``paper``).
        num_spks: speakers.
        overrides: constructor arguments replacing the variant's (official MossFormer argument names, or
            torchaudio ``ConvTasNet`` argument names).
    """

    arch: Literal["mossformer", "convtasnet"] = "mossformer"
    variant: str = "cpu-small"
    num_spks: int = 2
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SpeechsepDataConfig:
    """Training and validation data.

    Attributes:
        train: WSJ0-mix split folder, LibriMix CSV, or (``train_kind: dynamic``) a folder of speaker folders.
        train_kind: ``auto`` (folder -> WSJ0-mix, ``.csv`` -> LibriMix), ``dynamic``, or ``librispeech``:
            dynamic mixing of the training speakers of ``librispeech_root`` (``train`` is then unused).
        val: validation split folder or CSV, or a LibriSpeech-style speech folder (then ``eval_mixtures``
            fixed mixtures of its validation speakers). test: test split or speech folder (``evaluate``
            default; a speech folder gives fixed mixtures of its test speakers).
        sample_rate: model rate (files are resampled). segment_seconds: training crop length.
        val_segment_seconds: validation crop (``null``: whole utterances, use ``eval_batch_size: 1``).
        max_val_items: evaluate on at most this many validation mixtures (0: all).
        dynamic_length: virtual items per epoch of dynamic mixing. gain_db / speed_min / speed_max: dynamic
            mixing gains and speed perturbation. speaker_speeds: dynamic mixing turns each speaker into one
            virtual speaker per factor (pitch/tempo shifted by resampling; ``[1.0]``: off). speaker_weights:
            dynamic mixing draws speaker folders matching a pattern with that weight (``{"espeak_*": 0.2}``).
            speaker_formants: dynamic mixing also turns each speaker into one virtual speaker per formant factor
            (spectral envelope moved, pitch kept; ``[1.0]``: off).
        librispeech_root: LibriSpeech tree or flat ``<speaker>-<chapter>-<utt>.flac`` folder (``train_kind:
            librispeech``), relative to the working directory. speakers_file: its ``SPEAKERS.TXT`` (``null``: in
            the folder or the one above). test_speakers / val_speakers / split_seed: the speaker-disjoint split
            (sex-balanced; keep them equal between training and evaluation).
        eval_mixtures / eval_seconds / eval_seed: the fixed mixtures built from a speech folder for validation
            and ``evaluate`` (the same as ``sa-speechsep mixtures --mixtures N --seconds L --seed S`` writes).
    """

    train: str = "data/speech-sample/tr"
    train_kind: Literal["auto", "wsj0mix", "librimix", "dynamic", "librispeech"] = "auto"
    val: str = "data/speech-sample/cv"
    test: str = "data/speech-sample/tt"
    sample_rate: int = 8000
    segment_seconds: float = 4.0
    val_segment_seconds: float | None = None
    max_val_items: int = 0
    dynamic_length: int = 20000
    gain_db: float = 2.5
    speed_min: float = 0.95
    speed_max: float = 1.05
    speaker_speeds: list[float] = field(default_factory=lambda: [1.0])
    speaker_weights: dict[str, float] = field(default_factory=dict)
    speaker_formants: list[float] = field(default_factory=lambda: [1.0])
    librispeech_root: str = "../shared/data/librispeech-251"
    speakers_file: str | None = None
    test_speakers: int = 25
    val_speakers: int = 25
    split_seed: int = 0
    eval_mixtures: int = 200
    eval_seconds: float = 4.0
    eval_seed: int = 0


@dataclass(frozen=True)
class SpeechsepConfig:
    """The whole speech separation config.

    Attributes:
        model / data / train: see :class:`SpeechsepModelConfig`, :class:`SpeechsepDataConfig`, ``TrainConfig``.
        loss_clamp_db: SI-SNR above which an utterance stops contributing to the loss (``null``: never).
        chunk_seconds / overlap_seconds: chunked inference of the predictor (long files).
    """

    model: SpeechsepModelConfig = field(default_factory=SpeechsepModelConfig)
    data: SpeechsepDataConfig = field(default_factory=SpeechsepDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss_clamp_db: float | None = 30.0
    chunk_seconds: float = 8.0
    overlap_seconds: float = 2.0


#: deprecated names (one release)
SepModelConfig = SpeechsepModelConfig
SepDataConfig = SpeechsepDataConfig
SepConfig = SpeechsepConfig


def load_sep_config(
    name_or_path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> SpeechsepConfig:
    """Loads a config by bundled name (``cpu-small``, ``mossformer-l-wsj0-2mix``...) or YAML path + overrides."""
    return load_bundled_config(SpeechsepConfig, name_or_path, CONFIG_DIR, overrides)
