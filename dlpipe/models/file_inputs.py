"""Model inputs for a file named on the command line: an image, or each spectrogram window of an audio clip.

``predict`` and ``search query`` take files the pipeline has never seen. For a
model trained on an audio dataset's spectrograms, a clip is cut into windows
with the settings the spectrogram stage recorded, and each window goes through
the same PNG encoding, decoding and resizing as the training images did.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from dlpipe.audio.transform import RecordedTransform, clip_window_pngs
from dlpipe.data.media import Rejected
from dlpipe.models.inputs import load_image_array


def accepted_files(transform: RecordedTransform | None) -> str:
    """What a model takes from the command line, for error hints: images, and clips for a spectrogram model."""
    return "an image or audio file" if transform else "an image file"


def file_model_inputs(path: Path, image_size: int, transform: RecordedTransform | None) -> list[np.ndarray]:
    """The model inputs for one file: the image itself, or each spectrogram window of an audio clip.

    Args:
        path: an image file, or (when ``transform`` is given) an audio clip.
        image_size: the model's input side in pixels.
        transform: the spectrogram settings behind the model (recorded in model.json), or None for a
            model trained on photos, which then takes images only.

    Returns:
        float32 (size, size, 3) arrays in [0, 255]: one for an image, one per window for a clip.

    Raises:
        Rejected: the file is not an image (nor, with a ``transform``, a usable audio clip).
    """
    try:
        return [load_image_array(path, image_size)]
    except Rejected as rejection:
        if transform is None:
            raise
        image_problem = rejection.detail
    try:
        pngs = clip_window_pngs(path.read_bytes(), transform)
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
