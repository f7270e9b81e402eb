"""Audio I/O behind a small adapter: soundfile for reading, :func:`resample` (bounded memory) for rates.

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
import math
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
    "resample_bytes",
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


#: torchaudio's windowed-sinc design, shared by both resampling paths: zero crossings each side, cut-off
#: as a fraction of the lower Nyquist frequency.
_ZERO_CROSSINGS = 6
_ROLLOFF = 0.99
#: torchaudio's path is used while its polyphase table (``new/gcd`` rows of ``orig/gcd + 2 width`` taps) has at
#: most this many entries; its construction holds a few float64 copies, so this caps it at a few tens of MB.
_MAX_TABLE_ENTRIES = 1 << 20
#: kernel entries (output samples x taps) the bounded path evaluates at a time.
_CHUNK_ENTRIES = 1 << 18


def _reduced(orig_sr: int, new_sr: int) -> tuple[int, int]:
    g = math.gcd(orig_sr, new_sr)
    return orig_sr // g, new_sr // g


def _table_entries(orig_sr: int, new_sr: int) -> int:
    """Entries of torchaudio's polyphase table for this pair of rates (it grows with ``orig/gcd x new/gcd``)."""
    p, q = _reduced(orig_sr, new_sr)
    width = math.ceil(_ZERO_CROSSINGS * p / (min(p, q) * _ROLLOFF))
    return q * (p + 2 * width)


def _half_taps(orig_sr: int, new_sr: int) -> int:
    """Input samples each side of an output position that the kernel reaches (``ceil`` of its half-width)."""
    return math.ceil(_ZERO_CROSSINGS * orig_sr / (min(orig_sr, new_sr) * _ROLLOFF))


def _check_rates(orig_sr: int, new_sr: int) -> tuple[int, int]:
    orig, new = int(orig_sr), int(new_sr)
    if orig != orig_sr or new != new_sr or orig <= 0 or new <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr!r} -> {new_sr!r}")
    return orig, new


def resample_bytes(n_samples: int, orig_sr: int, new_sr: int, channels: int = 1) -> int:
    """Estimated peak working memory of :func:`resample` in bytes, known before any sample is touched.

    Linear in ``n_samples * channels`` (input and output copies) plus a term that depends on the rates only:
    torchaudio's polyphase table where :func:`resample` uses it (small by construction), else one chunk of the
    bounded path (about 10 MB; more only for extreme ratios whose kernel alone is longer than a chunk).

    Args:
        n_samples: input length. orig_sr / new_sr: rates in Hz. channels: rows resampled together.

    Returns:
        bytes (an estimate with margin, not an exact count).
    """
    orig, new = _check_rates(orig_sr, new_sr)
    n, c = max(int(n_samples), 0), max(int(channels), 1)
    if orig == new:
        return 4 * n * c
    n_out = -(-n * new // orig)
    data = 4 * c * (2 * (n + 2 * _half_taps(orig, new) + orig) + 2 * n_out)  # input (+ padded copy), output x2
    if _table_entries(orig, new) <= _MAX_TABLE_ENTRIES:
        return data + 5 * 8 * _table_entries(orig, new)  # float64 temporaries while torchaudio builds its table
    entries = max(_CHUNK_ENTRIES, 2 * _half_taps(orig, new))
    return data + entries * (5 * 8 + 3 * 4 * c)  # per chunk: float64/int64 positions, weights, gathered samples


def _resample_sinc(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Bounded-memory resampling of ``(..., T)``: the same windowed sinc as torchaudio, evaluated per output.

    Output sample ``j`` sits at input position ``j * orig / new``; its kernel is
    ``sinc(base * d) * hann(base * d) * base`` for ``d`` = (input index - position) / ``orig`` seconds,
    ``base = 0.99 * min(orig, new)``, over the inputs within 6 zero crossings (zeros beyond the signal's ends).
    Kernels are computed for a chunk of outputs at a time, so memory is one chunk (``_CHUNK_ENTRIES`` kernel
    entries) plus the input and output, whatever the rates' common factor; the cost is ``O(T_out x taps)``.
    """
    import torch

    orig, new = _check_rates(orig_sr, new_sr)
    shape = x.shape
    x2 = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(-1, shape[-1])  # (B, T)
    n = x2.shape[1]
    n_out = -(-n * new // orig)  # ceil(n * new / orig), torchaudio's length
    half = _half_taps(orig, new)
    base_per_sample = min(orig, new) * _ROLLOFF / orig  # cut-off in cycles per input sample
    xp = torch.nn.functional.pad(x2, (half, half + 1))  # (B, T + 2 half + 1): zeros beyond the ends
    offsets = torch.arange(-half + 1, half + 1, dtype=torch.int64)  # (K,) taps relative to floor(position)
    step = max(1, _CHUNK_ENTRIES // offsets.numel())
    out = torch.empty(x2.shape[0], n_out, dtype=torch.float32)  # (B, T_out)
    for start in range(0, n_out, step):
        j = torch.arange(start, min(start + step, n_out), dtype=torch.int64)  # (C,)
        num = j * orig  # exact integer positions: floor and fraction without rounding drift
        floor = num // new
        frac = (num % new).to(torch.float64) / new  # (C,) in [0, 1)
        t = (offsets.to(torch.float64)[None, :] - frac[:, None]) * base_per_sample  # (C, K) in zero crossings
        t = t.clamp_(-_ZERO_CROSSINGS, _ZERO_CROSSINGS)
        window = torch.cos(t * (math.pi / (2 * _ZERO_CROSSINGS))) ** 2
        kernel = (torch.sinc(t) * window * base_per_sample).to(torch.float32)  # (C, K)
        idx = floor[:, None] + offsets[None, :] + half  # (C, K) indices into the padded input
        out[:, start : start + j.numel()] = torch.einsum("bck,ck->bc", xp[:, idx], kernel)
    return out.reshape(*shape[:-1], n_out).numpy()


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling along the last axis with memory bounded by construction; float32 out.

    Every resampling in this package goes through here. Both paths apply the same filter (torchaudio's
    Hann-windowed sinc, 6 zero crossings, cut-off at 99 % of the lower Nyquist frequency) and give the same
    length, ``ceil(T * new_sr / orig_sr)``:

    * rates with a friendly common factor (16000 -> 8000, 44100 -> 8000, 22050 -> 8000, ...): torchaudio's
      polyphase table, exact and fast;
    * rates whose table would be large (22051 -> 8000 needs ``8000 x 22085`` entries, 96001 -> 8000 four times
      that: GBs): the kernel is evaluated at each output's fractional input position, a chunk of outputs at
      a time (:func:`_resample_sinc`), so memory is linear in the length and no approximation of the ratio is
      made (no pitch error).

    :func:`resample_bytes` estimates the peak memory beforehand.

    Args:
        x: ``(..., T)`` samples. orig_sr / new_sr: positive integer rates in Hz.

    Returns:
        ``(..., ceil(T * new_sr / orig_sr))`` float32.
    """
    orig, new = _check_rates(orig_sr, new_sr)
    if orig == new:
        return np.asarray(x).astype(np.float32, copy=False)
    if _table_entries(orig, new) > _MAX_TABLE_ENTRIES:
        return _resample_sinc(np.asarray(x), orig, new)
    import torch
    import torchaudio.functional as AF  # noqa: N812

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return AF.resample(t, orig, new).numpy()


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
