"""Audio I/O behind a small adapter: soundfile for reading, torchaudio for resampling.

Writing is :mod:`shared_attention.io`'s 16-bit PCM encoder, re-exported: ``write_wav(path, x, sample_rate)``
(atomic) and ``wav_bytes(x, sample_rate)``; float samples are scaled by 32768 (soundfile's read scale),
rounded and clipped to the int16 range.

Input checks (all raise :class:`AudioError`, a ``ValueError``, with the file name in the message):

* not audio (soundfile cannot parse it), empty (no samples), NaN/Inf samples, silent (peak below
  ``silence_peak``);
* 24-bit (and 32-bit / float) PCM is *accepted*: soundfile converts it to float32 exactly, so it is
  handled, not rejected;
* stereo / multichannel input is down-mixed to mono by averaging the channels, with a warning;
* clipped input (more than ``clip_fraction`` of samples at full scale) is separated, with a warning,
  because clipping distortion cannot be undone and the estimates carry it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared_attention.io import encode_wav as wav_bytes
from shared_attention.io import write_wav

__all__ = [
    "AudioError",
    "AudioInfo",
    "read_audio",
    "load_mono",
    "resample",
    "shift_formants",
    "write_wav",
    "wav_bytes",
]


class AudioError(ValueError):
    """An input that cannot be separated; the message names the file and the reason."""


@dataclass
class AudioInfo:
    """What :func:`read_audio` found out about a file.

    Attributes:
        sample_rate: native rate. channels: native channel count. subtype: soundfile subtype (``PCM_16``...).
        warnings: human-readable notes (down-mixed, clipped) also issued through :mod:`warnings`.
    """

    sample_rate: int
    channels: int
    subtype: str
    warnings: list[str] = field(default_factory=list)


def _source_name(src: Any) -> str:
    if isinstance(src, str | Path):
        return str(src)
    return "<uploaded audio>"


def read_audio(
    src: str | Path | bytes,
    *,
    silence_peak: float = 1e-4,
    clip_fraction: float = 0.01,
    check_silence: bool = True,
) -> tuple[np.ndarray, AudioInfo]:
    """Reads a file (path or raw bytes) to a mono float32 array with checks.

    Args:
        src: a path or the bytes of a WAV/FLAC/OGG file.
        silence_peak: peak amplitude below which the input counts as silent.
        clip_fraction: fraction of full-scale samples above which a clipping warning is issued.
        check_silence: raise on silent input.

    Returns:
        ``(mono (T,) float32, AudioInfo)``.

    Raises:
        AudioError: not audio, empty, NaN/Inf or silent.
    """
    import soundfile as sf

    name = _source_name(src)
    if isinstance(src, bytes | bytearray):
        if len(src) == 0:
            raise AudioError(f"{name}: empty upload (0 bytes)")
        handle: Any = io.BytesIO(bytes(src))
    else:
        if not Path(src).is_file():
            raise AudioError(f"{name}: no such file")
        handle = str(src)
    try:
        data, sr = sf.read(handle, dtype="float32", always_2d=True)  # (T, C)
        subtype = sf.info(io.BytesIO(bytes(src)) if isinstance(src, bytes | bytearray) else handle).subtype
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise AudioError(f"{name}: not a readable audio file (WAV, FLAC or OGG expected): {exc}") from exc
    info = AudioInfo(sample_rate=int(sr), channels=int(data.shape[1]), subtype=str(subtype))
    if data.shape[0] == 0:
        raise AudioError(f"{name}: empty audio (0 samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    if data.shape[1] > 1:
        msg = f"{name}: {data.shape[1]} channels down-mixed to mono (channel average)"
        info.warnings.append(msg)
        warnings.warn(msg, stacklevel=2)
    mono = data.mean(axis=1).astype(np.float32)  # (T,)
    peak = float(np.abs(mono).max())
    if check_silence and peak < silence_peak:
        raise AudioError(f"{name}: silent input (peak {peak:.2e}); nothing to separate")
    clipped = float(np.mean(np.abs(data) >= 0.999))
    if clipped > clip_fraction:
        msg = f"{name}: {100 * clipped:.1f}% of samples are clipped; the separated sources keep the distortion"
        info.warnings.append(msg)
        warnings.warn(msg, stacklevel=2)
    return mono, info


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling (torchaudio's windowed sinc) along the last axis; float32 out."""
    if orig_sr == new_sr:
        return x.astype(np.float32, copy=False)
    import torch
    import torchaudio.functional as AF  # noqa: N812

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return AF.resample(t, int(orig_sr), int(new_sr)).numpy()


def shift_formants(x: np.ndarray, factor: float, n_fft: int = 256, hop: int = 64, n_cepstrum: int = 24) -> np.ndarray:
    """Moves the spectral envelope (formants, i.e. the vocal tract) by ``factor`` and keeps the pitch and timing.

    Cepstral envelope warping per STFT frame: the envelope is the liftered (first ``n_cepstrum`` coefficients)
    log-magnitude spectrum, the rest (harmonics: the pitch) stays where it is; the envelope is resampled along
    frequency (``E'(f) = E(f / factor)``: above 1, formants move up, a shorter vocal tract) and the phase of the
    input is kept. With speed changes (which move pitch and formants together) it makes virtual speakers whose
    pitch and vocal-tract length differ independently. ``factor == 1`` returns the input.

    Args:
        x: mono ``(T,)`` float audio. factor: envelope frequency scale (about 0.8-1.25 stays natural).
        n_fft / hop: STFT frame and hop (32 ms / 8 ms at 8 kHz). n_cepstrum: envelope smoothness.

    Returns:
        float32 ``(T,)``.
    """
    if not 0.5 <= factor <= 2.0:
        raise ValueError(f"formant factor must be in [0.5, 2], got {factor}")
    x = np.asarray(x, dtype=np.float32)
    if factor == 1.0 or len(x) < n_fft:
        return x
    import torch

    t = torch.from_numpy(np.ascontiguousarray(x))
    win = torch.hann_window(n_fft)
    spec = torch.stft(t, n_fft, hop, window=win, return_complex=True)  # (K, F), K = n_fft / 2 + 1
    mag = spec.abs().clamp_min(1e-7)
    ceps = torch.fft.irfft(mag.log(), n=n_fft, dim=0)  # (n_fft, F) real cepstrum
    lifter = torch.zeros(n_fft, 1)
    lifter[:n_cepstrum] = 1.0
    lifter[n_fft - n_cepstrum + 1 :] = 1.0  # symmetric: the cepstrum of a real log-spectrum is even
    log_env = torch.fft.rfft(ceps * lifter, dim=0).real  # (K, F) smooth log envelope
    k = spec.shape[0]
    src = torch.arange(k, dtype=torch.float32) / factor  # bin of the input envelope each output bin reads
    lo = src.floor().clamp(max=k - 1).long()
    hi = (lo + 1).clamp(max=k - 1)
    w = (src - lo.float()).clamp(0, 1)[:, None]
    warped = (1 - w) * log_env[lo] + w * log_env[hi]  # (K, F) linear interpolation along frequency
    warped[src > k - 1] = log_env[-1]  # beyond the old Nyquist: the envelope's value at Nyquist, per frame
    out = spec * torch.exp(warped - log_env)  # fine structure and phase kept, envelope replaced
    y = torch.istft(out, n_fft, hop, window=win, length=len(x)).numpy()
    return y.astype(np.float32)


def load_mono(path: str | Path, sample_rate: int | None = None) -> np.ndarray:
    """Reads a training/evaluation file to mono float32 at ``sample_rate`` (no silence check)."""
    x, info = read_audio(path, check_silence=False)
    if sample_rate is not None and info.sample_rate != sample_rate:
        x = resample(x, info.sample_rate, sample_rate)
    return x
