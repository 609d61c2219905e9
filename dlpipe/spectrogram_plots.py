"""The per-class mean spectrogram montage: what separates the classes, at a glance.

Means are accumulated by reading the window images back one at a time, so the
montage costs one small PNG decode per window and no memory per window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.config import SpectrogramConfig
from dlpipe.reports import save_png

# Mel bands labelled on the frequency axis.
_FREQUENCY_TICKS = 5


def class_mean_db(folder: Path, rows: Sequence[dict[str, Any]], cfg: SpectrogramConfig, db_range: tuple[float, float]) -> dict[str, np.ndarray]:
    """Mean dB image (n_mels x frames, mel-band order) of every class's windows, from the saved PNGs."""
    from PIL import Image

    from dlpipe.spectrograms import pixels_to_db

    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for row in rows:
        with Image.open(folder / row["path"]) as image:
            db = pixels_to_db(np.asarray(image), *db_range, cfg.bit_depth)
        label = row["label"]
        sums[label] = sums.get(label, 0.0) + db
        counts[label] = counts.get(label, 0) + 1
    return {label: sums[label] / counts[label] for label in sorted(sums)}


def save_class_montage(
    png_path: Path, folder: Path, rows: Sequence[dict[str, Any]], cfg: SpectrogramConfig, db_range: tuple[float, float]
) -> None:
    """One panel per class (its mean log-mel window), a shared dB colour bar, Hz on the frequency axis."""
    import librosa
    from matplotlib.figure import Figure

    means = class_mean_db(folder, rows, cfg, db_range)
    counts = {label: sum(1 for row in rows if row["label"] == label) for label in means}
    columns = min(4, len(means))
    lines = -(-len(means) // columns)
    fig = Figure(figsize=(3.4 * columns + 1.2, 3.0 * lines + 0.8), layout="constrained")
    fig.suptitle(f"mean log-mel spectrogram per class ({cfg.window_seconds:g} s windows, {cfg.n_mels} mel bands)")
    axes = np.atleast_1d(fig.subplots(lines, columns, squeeze=False)).ravel()
    # Band centres in Hz: librosa's mel scale with the two outer edges dropped.
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax)[1:-1]
    ticks = np.linspace(0, cfg.n_mels - 1, _FREQUENCY_TICKS).round().astype(int)
    duration = ((next(iter(means.values())).shape[1] - 1) * cfg.hop_length + cfg.n_fft) / cfg.sample_rate
    shown = None
    for axis, (label, mean) in zip(axes, means.items(), strict=False):
        shown = axis.imshow(
            mean, origin="lower", aspect="auto", cmap="magma", vmin=db_range[0], vmax=db_range[1], extent=(0, duration, -0.5, cfg.n_mels - 0.5)
        )
        axis.set_title(f"{label} ({counts[label]} windows)", fontsize=10)
        axis.set_yticks(ticks, [f"{centres[i]:.0f}" for i in ticks])
        axis.set_xlabel("seconds")
        axis.set_ylabel("Hz (mel scale)")
    for axis in axes[len(means) :]:
        axis.axis("off")
    if shown is not None:
        fig.colorbar(shown, ax=axes.tolist(), label="dB", shrink=0.9)
    save_png(fig, png_path)
