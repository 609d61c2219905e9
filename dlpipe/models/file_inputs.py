"""Model inputs for a file named on the command line: an image, or each spectrogram window of an audio clip.

``predict`` and ``search query`` take files the pipeline has never seen. For a
model trained on an audio dataset's spectrograms, a clip is cut into windows
with the settings the spectrogram stage recorded, and each window goes through
the same PNG encoding, decoding and resizing as the training images did. Every
file meets ingest's checks first (:class:`FileLimits`): a file the pipeline would
have rejected is rejected here too, before it is decoded.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlpipe.audio.transform import RecordedTransform, clip_window_pngs
from dlpipe.core.config import IngestConfig
from dlpipe.data.media import Rejected
from dlpipe.models.inputs import load_image_array


@dataclass(frozen=True)
class FileLimits:
    """Ingest's checks, for files named on the command line (``ingest.image`` and ``ingest.audio``).

    The defaults are those of the shipped params.yaml, for a model used outside its project.
    """

    min_side: int = 16
    max_pixels: int = 40_000_000
    min_duration: float = 0.1

    @classmethod
    def of(cls, cfg: IngestConfig) -> FileLimits:
        """The limits a project's ``ingest`` section sets."""
        return cls(cfg.image.min_side, cfg.image.max_pixels, cfg.audio.min_duration)


# What a model used outside its project is held to.
DEFAULT_LIMITS = FileLimits()


def accepted_files(transform: RecordedTransform | None) -> str:
    """What a model takes from the command line, for error hints: images, and clips for a spectrogram model."""
    return "an image or audio file" if transform else "an image file"


def file_model_inputs(path: Path, image_size: int, transform: RecordedTransform | None, limits: FileLimits) -> list[np.ndarray]:
    """The model inputs for one file: the image itself, or each spectrogram window of an audio clip.

    Args:
        path: an image file, or (when ``transform`` is given) an audio clip.
        image_size: the model's input side in pixels.
        transform: the spectrogram settings behind the model (recorded in model.json), or None for a
            model trained on photos, which then takes images only.
        limits: the checks the file must meet (ingest's).

    Returns:
        float32 (size, size, 3) arrays in [0, 255]: one for an image, one per window for a clip.

    Raises:
        Rejected: the file is not an image (nor, with a ``transform``, a usable audio clip), or fails a check.
    """
    try:
        return [load_image_array(path, image_size, limits.min_side, limits.max_pixels)]
    except Rejected as rejection:
        if transform is None or rejection.reason != "not_an_image":
            raise
        image_problem = rejection.detail
    try:
        pngs = clip_window_pngs(path.read_bytes(), transform, limits.min_duration)
    except Rejected as rejection:
        raise Rejected(rejection.reason, f"neither an image ({image_problem}) nor usable audio ({rejection.detail})") from None
    # Through files, so each window is decoded and resized by the very code training used.
    with tempfile.TemporaryDirectory(prefix="dlpipe-windows-") as folder:
        arrays = []
        for index, png in enumerate(pngs):
            window = Path(folder) / f"w{index:03d}.png"
            window.write_bytes(png)
            arrays.append(load_image_array(window, image_size))
    return arrays
