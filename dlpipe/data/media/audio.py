"""Audio decoding and validation: soundfile first, librosa as the fallback decoder."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from dlpipe.core.arrays import first_non_finite_row
from dlpipe.data.media import Rejected

_BLOCK_FRAMES = 1 << 16


@dataclass(frozen=True, slots=True)  # slots: ingest holds one per accepted file
class AudioInfo:
    """What ingest records about an accepted clip."""

    duration: float
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str


def inspect_audio(data: bytes, min_duration: float) -> AudioInfo:
    """Decode a clip fully (block by block, so memory stays flat) and validate it.

    Args:
        data: the file's bytes.
        min_duration: reject clips shorter than this many seconds.

    Raises:
        Rejected: ``empty_file``, ``not_audio``, ``no_audio_frames``, ``non_finite_samples``, ``too_short``.
    """
    if not data:
        raise Rejected("empty_file", "the file has zero bytes")
    try:
        info = _inspect_with_soundfile(data)
    except _SoundfileFailed as failure:
        info = _inspect_with_librosa(data, failure.reason)
    if info.frames == 0:
        raise Rejected("no_audio_frames", "the file holds a header but no samples")
    if info.duration < min_duration:
        raise Rejected("too_short", f"{info.duration:.3f} s is below ingest.audio.min_duration={min_duration} s")
    return info


class _SoundfileFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _inspect_with_soundfile(data: bytes) -> AudioInfo:
    import soundfile

    try:
        with soundfile.SoundFile(io.BytesIO(data)) as handle:
            frames_read = 0
            for block in handle.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
                _check_finite(block, frames_read, handle.samplerate)
                frames_read += len(block)
            return AudioInfo(
                duration=frames_read / handle.samplerate,
                sample_rate=handle.samplerate,
                channels=handle.channels,
                frames=frames_read,
                format=handle.format,
                subtype=handle.subtype,
            )
    except soundfile.LibsndfileError as exc:
        raise _SoundfileFailed(str(exc)) from None
    except RuntimeError as exc:  # libsndfile reports some read errors this way
        raise _SoundfileFailed(str(exc)) from None


def _inspect_with_librosa(data: bytes, soundfile_reason: str) -> AudioInfo:
    """Formats libsndfile cannot read (e.g. some compressed ones) go through librosa/audioread."""
    import librosa

    try:
        samples, rate = librosa.load(io.BytesIO(data), sr=None, mono=False)
    except Exception as exc:  # librosa/audioread raise many unrelated types for undecodable data
        raise Rejected("not_audio", f"no decoder can read it (soundfile: {soundfile_reason}; librosa: {exc})") from None
    block = np.atleast_2d(samples).T
    _check_finite(block, 0, rate)
    return AudioInfo(len(block) / rate, int(rate), block.shape[1], len(block), "librosa", str(samples.dtype))


def _check_finite(block: np.ndarray, offset: int, rate: int) -> None:
    """Reject a block of frames (frames x channels) holding NaN or inf, naming the first frame's time."""
    bad = first_non_finite_row(block)
    if bad is not None:
        first = offset + bad
        raise Rejected("non_finite_samples", f"NaN or infinite sample at frame {first} ({first / rate:.3f} s)")


@dataclass(frozen=True)
class DecodedClip:
    """A clip mixed to mono float32 and resampled, plus what the file itself holds."""

    samples: np.ndarray
    sample_rate: int  # of ``samples`` (the requested rate)
    source_rate: int
    source_channels: int
    source_frames: int


def load_mono(data: bytes, sample_rate: int) -> DecodedClip:
    """Decode a clip, average its channels to mono and resample it to ``sample_rate``.

    Raises:
        Rejected: ``not_audio`` when no decoder can read the bytes.
    """
    import librosa
    import soundfile

    try:
        frames, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        try:
            mono_or_multi, rate = librosa.load(io.BytesIO(data), sr=None, mono=False)
        except Exception as fallback:  # librosa/audioread raise many unrelated types for undecodable data
            raise Rejected("not_audio", f"no decoder can read it (soundfile: {exc}; librosa: {fallback})") from None
        frames = np.atleast_2d(mono_or_multi).T.astype(np.float32)
    # Averaging keeps a mono clip unchanged and a stereo clip at the same loudness.
    mono = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    if rate != sample_rate and mono.size:
        mono = librosa.resample(mono, orig_sr=rate, target_sr=sample_rate, res_type="soxr_hq")
    return DecodedClip(np.ascontiguousarray(mono, dtype=np.float32), sample_rate, int(rate), frames.shape[1], len(frames))
