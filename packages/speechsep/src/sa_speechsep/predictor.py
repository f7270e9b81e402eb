"""Separation predictor shared by ``sa-speechsep separate`` and the server.

``preprocess`` reads WAV/FLAC/OGG bytes (or a path, an array, or ``{"audio": array, "sample_rate": int}``),
checks it (:mod:`sa_speechsep.audio`: empty, non-audio, NaN and silent inputs are refused with an
:class:`InputError`; stereo is down-mixed and clipping reported with a warning; 24-bit PCM is read exactly),
resamples to the model rate (:func:`sa_speechsep.audio.resample`: memory linear in the length at any rate; an
input whose resampling there and back would need more than ``max_resample_bytes`` is refused with an
:class:`InputError` before any work) and peak-normalises. ``predict`` separates each item in overlapping chunks
(bounded memory, speaker order kept across chunks). ``postprocess`` undoes the normalisation, resamples back
to the input's rate and returns ``{"sample_rate": int, "sources_wav": [16-bit PCM WAV bytes, ...]}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from shared_attention.serving import FieldSpec, InputError, IOSpec, PredictorBase, load_run_model

from .config import SepConfig

__all__ = ["SpeechsepPredictor", "SeparationPredictor"]

_PEAK = 0.9  # inputs are peak-normalised to this before the model (training mixtures peak at <= 0.9)


class SpeechsepPredictor(PredictorBase):
    """Separates a mixture into one waveform per speaker.

    Args:
        model: separator ``(B, T) -> (B, S, T)``.
        cfg: the run's config (sample rate, chunking).
        device: where the model runs.
    """

    domain: ClassVar[str] = "speechsep"
    io_spec: ClassVar[IOSpec] = IOSpec(
        inputs=(
            FieldSpec(
                "audio",
                "audio",
                ("audio/wav", "audio/flac", "audio/ogg"),
                "(T,) or (T, C)",
                "mixture recording, any sample rate (resampled), stereo is down-mixed",
                {"max_seconds": 600},
            ),
        ),
        outputs=(
            FieldSpec(
                "sources_wav",
                "audio",
                ("audio/wav",),
                "[(T,)] per speaker",
                "one 16-bit PCM WAV per speaker at the input's sample rate",
            ),
        ),
    )

    model: nn.Module
    #: bound on the estimated resampling memory of one request (to the model rate and back, all speakers);
    #: 2 GiB covers the longest upload (600 s) at rates up to about 140 kHz (96 kHz: about 1.4 GiB).
    max_resample_bytes: int = 2 << 30

    def __init__(self, model: nn.Module, cfg: SepConfig, device: str | torch.device = "cpu") -> None:
        self.model = model.eval().to(device)
        self.cfg = cfg
        self.device = torch.device(device)
        self.sample_rate = cfg.data.sample_rate
        self.chunk = int(round(cfg.chunk_seconds * self.sample_rate))
        self.overlap = int(round(cfg.overlap_seconds * self.sample_rate))
        self.last_warnings: list[str] = []

    @classmethod
    def load(cls, run_dir: str | Path, device: str | torch.device = "cpu") -> SpeechsepPredictor:
        """Reads ``config.yaml`` + ``model.safetensors`` of a speechsep run (or a converted official model)."""
        from .config import SpeechsepConfig
        from .models import build_model

        run, cfg, model = load_run_model(run_dir, SpeechsepConfig, build_model, cls.domain)
        pred = cls(model, cfg, device)
        pred.run = run
        return pred

    @classmethod
    def from_official(
        cls, state_dict_or_path: Any, device: str | torch.device = "cpu", **official_kwargs: Any
    ) -> SpeechsepPredictor:
        """A predictor around official MossFormer weights (see :func:`sa_speechsep.official.load_official`)."""
        from .config import SepConfig, SepModelConfig
        from .official import load_official

        model = load_official(state_dict_or_path, **official_kwargs)
        cfg = SepConfig(model=SepModelConfig(arch="mossformer", variant="mossformer-l", num_spks=model.num_spks))
        return cls(model, cfg, device)

    def _from_array(self, audio: Any, sample_rate: Any) -> tuple[np.ndarray, int]:
        arr = np.asarray(audio, dtype=np.float32)
        if arr.ndim == 2:  # (T, C)
            if arr.shape[1] > 1:
                import warnings

                msg = f"audio: {arr.shape[1]} channels down-mixed to mono"
                self.last_warnings.append(msg)
                warnings.warn(msg, stacklevel=3)
            arr = arr.mean(axis=1)
        if arr.ndim != 1:
            raise InputError(f"expected (T,) or (T, C) samples, got shape {arr.shape}", "audio")
        if arr.size == 0:
            raise InputError("empty audio (0 samples)", "audio")
        if not np.isfinite(arr).all():
            raise InputError("contains NaN or infinite samples", "audio")
        if float(np.abs(arr).max()) < 1e-4:
            raise InputError("silent input; nothing to separate", "audio")
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise InputError(f"sample_rate must be a positive integer, got {sample_rate!r}", "sample_rate")
        return arr, sample_rate

    def _check_resample_memory(self, n: int, sr: int) -> None:
        """Refuses (before any work) an input whose resampling to the model rate and back would need too much."""
        from .audio import resample_bytes

        n_model = -(-n * self.sample_rate // sr)
        need = resample_bytes(n, sr, self.sample_rate)
        need += resample_bytes(n_model, self.sample_rate, sr, channels=self.cfg.model.num_spks)
        if need > self.max_resample_bytes:
            raise InputError(
                f"{n} samples at {sr} Hz would need about {need / 2**20:.0f} MB to resample to {self.sample_rate} Hz"
                f" and back (limit {self.max_resample_bytes / 2**20:.0f} MB); send a shorter recording",
                "audio",
            )

    cost_unit: ClassVar[str] = "samples"

    def cost(self, meta: Mapping[str, Any]) -> float | None:
        """Work of one request: its samples at the model rate (separation is chunked, so linear in length)."""
        frames, sr = meta.get("frames"), meta.get("sample_rate")
        if not frames or not sr:
            return None
        return float(frames) * self.sample_rate / float(sr)

    def memory_bytes(self, meta: Mapping[str, Any]) -> int | None:
        """Peak bytes of one request, dominated by resampling to the model rate and back (header-only)."""
        from .audio import resample_bytes

        frames, sr = meta.get("frames"), meta.get("sample_rate")
        if not frames or not sr:
            return None
        n, sr = int(frames), int(sr)
        n_model = -(-n * self.sample_rate // sr)
        speakers = int(self.cfg.model.num_spks)
        return int(
            resample_bytes(n, sr, self.sample_rate)
            + resample_bytes(n_model, self.sample_rate, sr, channels=speakers)
            + 4 * n_model * (2 * speakers + 2)  # separated chunks, the blended output and its weights
        )

    def preprocess(self, raw: Any) -> dict[str, torch.Tensor]:
        """Raw upload -> ``{"audio": (1, T) at the model rate, "sample_rate": (1,), "scale": (1,)}``."""
        from .audio import AudioError, read_audio, resample

        self.last_warnings = []
        if isinstance(raw, bytes | bytearray | str | Path):
            try:
                x, info = read_audio(raw if not isinstance(raw, str) else Path(raw))
            except AudioError as exc:
                raise InputError(str(exc), "audio") from exc
            self.last_warnings += info.warnings
            sr = info.sample_rate
        elif isinstance(raw, Mapping):
            if "audio" not in raw or "sample_rate" not in raw:
                raise InputError("expected a mapping with 'audio' and 'sample_rate'", "audio")
            x, sr = self._from_array(raw["audio"], raw["sample_rate"])
        else:
            raise InputError(f"unsupported input type {type(raw).__name__}: send WAV bytes or a file path", "audio")
        self._check_resample_memory(x.shape[0], sr)
        x = resample(x, sr, self.sample_rate)
        if x.shape[0] < 2:
            raise InputError(f"too short after resampling to {self.sample_rate} Hz ({x.shape[0]} samples)", "audio")
        scale = _PEAK / max(float(np.abs(x).max()), 1e-8)
        return {
            "audio": torch.from_numpy(x * scale)[None],  # (1, T)
            "sample_rate": torch.tensor([sr], dtype=torch.int64),
            "scale": torch.tensor([scale], dtype=torch.float64),
        }

    @torch.no_grad()
    def predict(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``{"audio": (B, T)}`` -> ``{"sources": (B, S, T), ...}`` (chunked per item; bounded memory)."""
        from .separate import separate_chunked

        audio = batch["audio"]
        outs = [
            separate_chunked(self.model, audio[i], self.chunk, self.overlap, self.device) for i in range(audio.shape[0])
        ]
        return {"sources": torch.stack(outs), "sample_rate": batch["sample_rate"], "scale": batch["scale"]}

    def postprocess(self, output: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """One item -> ``{"sample_rate": int, "sources_wav": [bytes, ...]}`` at the input's rate."""
        from .audio import resample, wav_bytes

        sources = output["sources"]
        if sources.dim() == 3:
            sources = sources[0]
        sr = int(torch.as_tensor(output["sample_rate"]).reshape(-1)[0])
        scale = float(torch.as_tensor(output["scale"]).reshape(-1)[0])
        est = sources.float().cpu().numpy() / scale  # (S, T)
        est = resample(est, self.sample_rate, sr)
        return {"sample_rate": sr, "sources_wav": [wav_bytes(s, sr) for s in est]}

    def separate_file(self, path: str | Path, out_dir: str | Path) -> list[Path]:
        """Separates ``path`` into ``out_dir/<stem>_s1.wav`` ... (the CLI's ``separate``)."""
        from .audio import write_wav

        batch = self.preprocess(Path(path))
        out = self.predict(batch)
        sr = int(batch["sample_rate"][0])
        from .audio import resample

        for msg in self.last_warnings:
            print(f"warning: {msg}")
        est = resample(out["sources"][0].float().cpu().numpy() / float(batch["scale"][0]), self.sample_rate, sr)
        stem = Path(path).stem
        return [write_wav(Path(out_dir) / f"{stem}_s{i + 1}.wav", s, sr) for i, s in enumerate(est)]


#: deprecated name (one release)
SeparationPredictor = SpeechsepPredictor
