"""Log-mel spectrograms of fixed-length windows, and their mapping to image pixels.

One clip is transformed once (STFT, power, mel filter bank) and its frames are
then cut into windows of ``window_seconds``, ``window_hop_seconds`` apart; a
clip whose length is not a whole number of hops gets one more window aligned
to its end, so no sound is left out. Each window is converted to decibels on
its own: relative to its loudest mel bin (``reference: peak``, loudness does not
matter) or to a full-scale 1 kHz sine (``reference: full_scale``), and floored
``top_db`` below its maximum so silence never becomes ``-inf``.

Images put low frequencies at the bottom row and time left to right.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from dlpipe.core.config import SpectrogramConfig

# Power below this counts as silence (librosa's default ``amin`` for power_to_db).
AMIN = 1e-10
# The tone that defines 0 dB for reference: full_scale.
_CALIBRATION_HZ = 1000.0


@dataclass(frozen=True)
class Window:
    """One fixed-length window of a clip: where it lies and its log-mel values (n_mels x frames, dB)."""

    index: int
    start_seconds: float
    end_seconds: float
    db: np.ndarray


def window_samples(cfg: SpectrogramConfig) -> int:
    """Samples in one window at the target sample rate."""
    return int(round(cfg.window_seconds * cfg.sample_rate))


def frames_per_window(cfg: SpectrogramConfig) -> int:
    """STFT frames (image columns) in one window; frames are not centred, so none reaches past the window."""
    return 1 + (window_samples(cfg) - cfg.n_fft) // cfg.hop_length


@functools.lru_cache(maxsize=8)
def mel_filters(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's (Slaney) mel filter bank, ``n_mels x (1 + n_fft // 2)``, built once per setting."""
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


def mel_power(samples: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """Mel-band power (n_mels x frames) of ``samples``, which must hold at least ``n_fft`` samples."""
    import librosa

    spectrum = librosa.stft(
        samples, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length, window="hann", center=False
    )
    power = np.abs(spectrum) ** 2
    return mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax) @ power


@functools.lru_cache(maxsize=8)
def _full_scale_power(cfg: SpectrogramConfig) -> float:
    """Peak mel power of a full-scale 1 kHz sine through the same transform: 0 dB for ``full_scale``."""
    t = np.arange(max(cfg.n_fft * 4, window_samples(cfg))) / cfg.sample_rate
    tone = np.sin(2 * math.pi * min(_CALIBRATION_HZ, 0.45 * cfg.sample_rate) * t).astype(np.float32)
    return float(mel_power(tone, cfg).max())


def prepare(cfg: SpectrogramConfig) -> None:
    """Import librosa and build the filter bank (and 0 dB reference) once, before worker processes fork."""
    mel_filters(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    if cfg.reference == "full_scale":
        _full_scale_power(cfg)


def to_db(power: np.ndarray, cfg: SpectrogramConfig) -> np.ndarray:
    """Decibels of a window's mel power, floored ``top_db`` below the window's maximum (always finite)."""
    peak = float(power.max()) if power.size else 0.0
    if cfg.reference == "peak":
        if peak <= AMIN:  # nothing to be relative to: a silent window sits at the floor
            return np.full(power.shape, -cfg.top_db, dtype=np.float32)
        reference = peak
    else:
        reference = _full_scale_power(cfg)
    db = 10.0 * np.log10(np.maximum(power, AMIN) / reference)
    return np.maximum(db, db.max() - cfg.top_db).astype(np.float32)


def window_starts(total_frames: int, per_window: int, hop_frames: int) -> list[int]:
    """First frame of each window: every ``hop_frames``, plus one aligned to the end when the hops leave a tail."""
    if total_frames < per_window:
        return []
    starts = list(range(0, total_frames - per_window + 1, hop_frames))
    if starts[-1] + per_window < total_frames:
        starts.append(total_frames - per_window)
    return starts


def clip_windows(samples: np.ndarray, cfg: SpectrogramConfig) -> list[Window]:
    """Cut a mono clip at ``cfg.sample_rate`` into log-mel windows.

    A clip shorter than one window is padded with silence at its end when
    ``short_clips: pad``; with ``reject`` it yields no window (the caller records why).
    """
    needed = window_samples(cfg)
    if samples.size < needed:
        if cfg.short_clips == "reject":
            return []
        samples = np.pad(samples, (0, needed - samples.size))
    power = mel_power(samples, cfg)
    per_window = frames_per_window(cfg)
    hop_frames = max(1, int(round(cfg.window_hop_seconds * cfg.sample_rate / cfg.hop_length)))
    # The samples the frames of one window actually read (a little under window_seconds after rounding).
    span_seconds = ((per_window - 1) * cfg.hop_length + cfg.n_fft) / cfg.sample_rate
    windows = []
    for index, start in enumerate(window_starts(power.shape[1], per_window, hop_frames)):
        start_seconds = start * cfg.hop_length / cfg.sample_rate
        db = to_db(power[:, start : start + per_window], cfg)
        windows.append(Window(index, round(start_seconds, 6), round(start_seconds + span_seconds, 6), db))
    return windows


def db_to_pixels(db: np.ndarray, db_min: float, db_max: float, bit_depth: int) -> np.ndarray:
    """Map dB linearly onto ``0 .. 2**bit_depth - 1`` (clipped), low frequencies on the bottom row."""
    top = (1 << bit_depth) - 1
    scaled = np.clip((db - db_min) / (db_max - db_min), 0.0, 1.0) * top
    return np.round(scaled[::-1]).astype(np.uint8 if bit_depth == 8 else np.uint16)
