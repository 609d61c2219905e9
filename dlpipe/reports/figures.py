"""Figures every report draws on: PNGs rendered without pyplot state, training curves.

Matplotlib is imported inside the functions and used through
:class:`matplotlib.figure.Figure` with the Agg canvas, so importing this module
is cheap and no global pyplot state is touched. Every file is written atomically
(see :mod:`dlpipe.core.artifacts`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlpipe.core.artifacts import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 120


def save_png(fig: Figure, png_path: Path) -> None:
    """Render ``fig`` with the Agg canvas and write the PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No "Software" tag: identical figures give identical bytes across matplotlib patch releases.
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    atomic_write_bytes(Path(png_path), buffer.getvalue())


def _curve_keys(history: dict[str, list[float]], metric: str) -> tuple[str, str]:
    """Train and validation keys for ``metric``; for accuracy, fall back to e.g. ``sparse_categorical_accuracy``."""
    if metric in history or f"val_{metric}" in history or metric != "accuracy":
        return metric, f"val_{metric}"
    for key in history:
        if not key.startswith("val_") and (key.endswith("accuracy") or key == "acc"):
            return key, f"val_{key}"
    return metric, f"val_{metric}"


def write_history_plot(
    history: dict[str, list[float]],
    png_path: Path,
    title: str,
    *,
    phase_boundaries: Sequence[int] = (),
    metric: str = "accuracy",
) -> None:
    """Plot the loss and ``metric`` (accuracy, or MAE for numeric heads) per epoch, train and validation, side by side.

    Args:
        history: Keras-style history, e.g. ``{"loss": [...], "val_loss": [...],
            "accuracy": [...], "val_accuracy": [...]}``; missing keys are skipped.
        png_path: where to write the PNG.
        title: figure title.
        phase_boundaries: 0-based indices of the first epoch of a new phase in the
            concatenated history (e.g. the number of head-training epochs); each
            is drawn as a dashed vertical line labelled "fine-tune starts" between
            the last epoch before it and the first one of the new phase.

    Epochs are numbered from 1 on the x axis.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    fig.suptitle(title, fontsize=13)
    lengths = [len(v) for v in history.values() if v is not None]
    n_epochs = max(lengths, default=0)
    for ax, panel in zip(axes, ("loss", metric), strict=True):
        keys = _curve_keys(history, panel)
        drawn = False
        for key in keys:
            values = history.get(key)
            if not values:
                continue
            y = np.asarray([float("nan") if v is None else float(v) for v in values], dtype=float)
            x = np.arange(1, y.size + 1)
            val = key.startswith("val_")
            ax.plot(
                x,
                y,
                color="C1" if val else "C0",
                marker=("s" if val else "o") if y.size <= 40 else None,
                markersize=3.5,
                linewidth=1.6,
                label="validation" if val else "train",
            )
            drawn = True
        shown = [b for b in sorted({int(b) for b in phase_boundaries}) if 0 < b < n_epochs]
        for b_index, boundary in enumerate(shown):
            ax.axvline(
                boundary + 0.5,
                color="#555555",
                linestyle="--",
                linewidth=1.4,
                label="fine-tune starts" if b_index == 0 else None,
            )
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if panel == "accuracy" and drawn:
            finite = [v for k in keys for v in (history.get(k) or []) if v is not None and math.isfinite(float(v))]
            if finite and min(finite) >= 0.0 and max(finite) <= 1.0:
                ax.set_ylim(0.0, 1.02)
        if drawn:
            ax.legend(loc="best", fontsize=9)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.text(0.5, 0.5, "(no data)", transform=ax.transAxes, ha="center", va="center", color="#777777")
    save_png(fig, Path(png_path))
