"""The recorded window transform: how an audio dataset became the images a model was trained on.

The spectrogram stage writes its settings and dB range into ``spectrogram.json``; the
manifest carries them to ``finetune``, which records them in ``model.json``, and to
``embed``, which records them in ``embeddings.json`` (and so in ``index.json``). ``predict``
and ``search query`` replay them on a new clip: the same windows, the same dB mapping and
the same PNG encoding as the training images, wherever the model folder has been copied.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from dlpipe.audio.spectrogram import clip_windows, db_to_pixels, frames_per_window
from dlpipe.core.config import SpectrogramConfig
from dlpipe.core.errors import ArtifactError
from dlpipe.data.media import Rejected

# Keys of the record in a sidecar; anything else there is ignored.
_RECORD_KEYS = ("params", "db_min", "db_max", "image")


@dataclass(frozen=True)
class RecordedTransform:
    """Spectrogram settings and the dB-to-pixel range of one spectrogram run."""

    cfg: SpectrogramConfig
    db_range: tuple[float, float]

    def record(self) -> dict[str, Any]:
        """The JSON record sidecars store (``from_record`` reads it back)."""
        return {
            "params": self.cfg.model_dump(exclude={"workers"}),
            "db_min": self.db_range[0],
            "db_max": self.db_range[1],
            "image": {"height": self.cfg.n_mels, "width": frames_per_window(self.cfg)},
        }


def from_record(record: dict[str, Any], where: Path) -> RecordedTransform:
    """A transform from the record in a sidecar (``spectrogram.json``, ``model.json``, ``embeddings.json``).

    Raises:
        ArtifactError: the record lacks a key, its params are invalid, or its image size
            disagrees with what its params make (a hand-edited or damaged sidecar), naming ``where``.
    """
    rebuild = "rebuild it with `dvc repro` (spectrogram, then the stages after it)"
    missing = [key for key in _RECORD_KEYS if key not in record]
    if missing:
        raise ArtifactError(f"{where}: the recorded spectrogram transform lacks {', '.join(missing)}", rebuild)
    try:
        cfg = SpectrogramConfig.model_validate(record["params"] | {"workers": 1})
    except (ValidationError, TypeError) as exc:
        raise ArtifactError(f"{where}: the recorded spectrogram params are invalid ({exc})", rebuild) from None
    transform = RecordedTransform(cfg, (float(record["db_min"]), float(record["db_max"])))
    made = transform.record()["image"]
    recorded = {key: record["image"].get(key) for key in made} if isinstance(record["image"], dict) else record["image"]
    if recorded != made:
        raise ArtifactError(f"{where}: the recorded window image {recorded} does not match its params ({made})", rebuild)
    return transform


def window_png(db: np.ndarray, cfg: SpectrogramConfig, db_range: tuple[float, float]) -> bytes:
    """One window's dB values as the PNG the stage writes (uint8 -> grey ``L``, uint16 -> ``I;16``)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(db_to_pixels(db, *db_range, cfg.bit_depth)).save(buffer, format="PNG")
    return buffer.getvalue()


def clip_window_pngs(data: bytes, transform: RecordedTransform, min_duration: float = 0.0) -> list[bytes]:
    """A clip's window images, made as the stage made the model's training images.

    Raises:
        Rejected: ``not_audio``; ``too_short`` for a clip under ``min_duration`` seconds (ingest's
            ``ingest.audio.min_duration``), or under one window with ``short_clips: reject``.
    """
    from dlpipe.data.media.audio import load_mono

    clip = load_mono(data, transform.cfg.sample_rate)
    seconds = clip.source_frames / clip.source_rate if clip.source_rate else 0.0
    if seconds < min_duration:
        raise Rejected("too_short", f"{seconds:.3f} s is below ingest.audio.min_duration={min_duration} s")
    windows = clip_windows(clip.samples, transform.cfg)
    if not windows:
        raise Rejected("too_short", f"shorter than one {transform.cfg.window_seconds} s window (short_clips: reject)")
    return [window_png(window.db, transform.cfg, transform.db_range) for window in windows]
