"""The per-class mean spectrogram montage: what separates the classes, at a glance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dlpipe.core.config import SpectrogramConfig
from dlpipe.reports.figures import save_png

# Mel bands labelled on the frequency axis.
_FREQUENCY_TICKS = 5
_COLUMNS = 4


def save_class_montage(
    png_path: Path, means: dict[str, np.ndarray], windows: dict[str, int], cfg: SpectrogramConfig, db_range: tuple[float, float]
) -> None:
    """One panel per class (its mean log-mel window, dB), a shared colour bar, Hz on the frequency axis.

    Args:
        png_path: where to write the PNG (atomically).
        means: class -> mean dB window (n_mels x frames, lowest mel band first).
        windows: class -> how many windows the mean covers.
        cfg: the spectrogram params (axes in seconds and Hz).
        db_range: the dB range the images map to pixels (the colour scale).
    """
    import librosa
    from matplotlib.figure import Figure

    columns = min(_COLUMNS, len(means))
    lines = -(-len(means) // columns)
    # A fixed layout: matplotlib's constrained layout cost more than the drawing itself.
    fig = Figure(figsize=(3.2 * columns + 1.0, 2.9 * lines + 0.7))
    fig.subplots_adjust(left=0.08, right=0.86, bottom=0.12, top=0.86, wspace=0.35, hspace=0.55)
    fig.suptitle(f"mean log-mel spectrogram per class ({cfg.window_seconds:g} s windows, {cfg.n_mels} mel bands)")
    axes = fig.subplots(lines, columns, squeeze=False).ravel()
    # Band centres in Hz: librosa's mel scale with the two outer edges dropped.
    centres = librosa.mel_frequencies(cfg.n_mels + 2, fmin=cfg.fmin, fmax=cfg.fmax)[1:-1]
    ticks = np.linspace(0, cfg.n_mels - 1, _FREQUENCY_TICKS).round().astype(int)
    shown = None
    for axis, (label, mean) in zip(axes, means.items(), strict=False):
        duration = ((mean.shape[1] - 1) * cfg.hop_length + cfg.n_fft) / cfg.sample_rate
        shown = axis.imshow(
            mean, origin="lower", aspect="auto", cmap="magma", vmin=db_range[0], vmax=db_range[1],
            extent=(0, duration, -0.5, cfg.n_mels - 0.5),
        )
        axis.set_title(f"{label} (mean of {windows[label]} windows)", fontsize=9)
        axis.set_yticks(ticks, [f"{centres[i]:.0f}" for i in ticks])
        axis.set_xlabel("seconds")
        axis.set_ylabel("Hz (mel scale)")
    for axis in axes[len(means) :]:
        axis.axis("off")
    if shown is not None:
        fig.colorbar(shown, cax=fig.add_axes((0.89, 0.12, 0.02, 0.74)), label="dB")
    save_png(fig, png_path)
