"""Classification evaluation artifacts: metrics JSON, confusion matrix, training curves.

Labels are integer indices into ``classes`` (the order of the model's output
units). Every file is written atomically (see :mod:`dlpipe.artifacts`).
Matplotlib is imported inside the functions and used through
:class:`matplotlib.figure.Figure` with the Agg canvas, so importing this module
is cheap and no global pyplot state is touched.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlpipe.artifacts import atomic_write_bytes, write_csv

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 120
_ROUND = 6


def _check_labels(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Validate label sequences against ``classes``; return them as int arrays."""
    true = np.asarray(y_true, dtype=np.int64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}")
    if not classes:
        raise ValueError("classes is empty")
    k = len(classes)
    for name, arr in (("y_true", true), ("y_pred", pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= k):
            raise ValueError(f"{name} holds a label outside 0..{k - 1} (the {k} classes)")
    return true, pred


def _r(value: float) -> float:
    return round(float(value), _ROUND)


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support, ready for JSON.

    Args:
        y_true: true class indices into ``classes``.
        y_pred: predicted class indices, same length.
        classes: class names; every one is listed under ``per_class`` even when it
            has no support (precision/recall/F1 are then 0 by ``zero_division=0``).

    Returns:
        ``{"accuracy", "macro_f1", "n", "per_class": {name: {precision, recall, f1, support}}}``.
        ``macro_f1`` is sklearn's unweighted mean over the classes that occur in
        ``y_true`` or ``y_pred`` (a class absent from both, e.g. from a small test
        split, does not drag it down; a class predicted but never true counts as 0).
        With no items at all, accuracy and macro_f1 are 0.0 and ``n`` is 0.
    """
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        precision_recall_fscore_support,
    )

    true, pred = _check_labels(y_true, y_pred, classes)
    labels = list(range(len(classes)))
    n = int(true.size)
    if n == 0:
        zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
        return {"accuracy": 0.0, "macro_f1": 0.0, "n": 0, "per_class": {str(c): dict(zero) for c in classes}}
    precision, recall, f1, support = precision_recall_fscore_support(
        true, pred, labels=labels, average=None, zero_division=0
    )
    present = sorted(set(true.tolist()) | set(pred.tolist()))
    macro_f1 = f1_score(true, pred, labels=present, average="macro", zero_division=0)
    per_class = {
        str(name): {
            "precision": _r(precision[i]),
            "recall": _r(recall[i]),
            "f1": _r(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    }
    return {"accuracy": _r(accuracy_score(true, pred)), "macro_f1": _r(macro_f1), "n": n, "per_class": per_class}


def save_png(fig: Figure, png_path: Path) -> None:
    """Render ``fig`` with the Agg canvas and write the PNG atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    # No "Software" tag: identical figures give identical bytes across matplotlib patch releases.
    fig.savefig(buffer, format="png", dpi=_DPI, metadata={"Software": None})
    atomic_write_bytes(Path(png_path), buffer.getvalue())


def write_confusion(
    y_true: Sequence[int],
    y_pred: Sequence[int],
    classes: Sequence[str],
    png_path: Path,
    csv_path: Path,
    title: str,
) -> None:
    """Write a confusion-matrix heatmap (PNG) and its ``dvc plots`` CSV.

    The PNG has rows = true class, columns = predicted class, the count in every
    cell (zero cells are left blank above 10 classes), class names on both axes and a colour bar; its size grows with the
    number of classes so that 2 to ~30 classes stay readable. The CSV has one row
    per item with columns ``actual,predicted`` holding class names (the input of
    DVC's ``confusion`` plot template).
    """
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix

    true, pred = _check_labels(y_true, y_pred, classes)
    names = [str(c) for c in classes]
    write_csv(
        Path(csv_path),
        ["actual", "predicted"],
        ({"actual": names[t], "predicted": names[p]} for t, p in zip(true.tolist(), pred.tolist(), strict=True)),
    )

    k = len(names)
    matrix = confusion_matrix(true, pred, labels=list(range(k))) if true.size else np.zeros((k, k), dtype=np.int64)
    longest = max(len(n) for n in names)
    rotate = k > 6 or longest > 6
    # Cell edge in inches: roomy for few classes, ~0.4" for 30 classes.
    cell = min(0.9, max(0.38, 5.0 / k))
    label_space = min(longest, 30) * 0.075 + 0.4  # inches for the tick labels
    side = cell * k
    fig = Figure(figsize=(side + label_space + 1.6, side + label_space * (0.75 if rotate else 0.3) + 1.0), layout="constrained")
    ax = fig.add_subplot()
    vmax = max(int(matrix.max()), 1)
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax, interpolation="nearest", aspect="equal")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, shrink=0.9)
    colorbar.set_label("items")

    digits = len(str(vmax))
    cell_points = cell * 72
    fontsize = max(5.0, min(13.0, cell_points / (0.62 * digits + 1.1)))
    show_zeros = k <= 10  # larger matrices are mostly zeros: blank cells read better (and draw faster)
    for i in range(k):
        for j in range(k):
            count = int(matrix[i, j])
            if count == 0:
                if not show_zeros:
                    continue
                color, alpha = "#9a9a9a", 0.8
            else:
                color, alpha = ("white" if count > 0.55 * vmax else "#1a1a1a"), 1.0
            ax.text(j, i, str(count), ha="center", va="center", fontsize=fontsize, color=color, alpha=alpha)

    tick_size = max(6.0, min(11.0, cell_points * 0.45))
    ax.set_xticks(range(k))
    ax.set_yticks(range(k))
    short = [n if len(n) <= 30 else n[:29] + "..." for n in names]
    if rotate:
        ax.set_xticklabels(short, rotation=45, ha="right", rotation_mode="anchor", fontsize=tick_size)
    else:
        ax.set_xticklabels(short, fontsize=tick_size)
    ax.set_yticklabels(short, fontsize=tick_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(length=0)
    # Thin white grid between cells.
    ax.set_xticks(np.arange(-0.5, k, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, k, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    total = int(matrix.sum())
    correct = int(np.trace(matrix))
    accuracy = f"{correct / total:.1%}" if total else "n/a"
    ax.set_title(f"{title}\n{total} items, accuracy {accuracy}", fontsize=12)
    save_png(fig, Path(png_path))


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
) -> None:
    """Plot loss and accuracy per epoch, train and validation, in two panels side by side.

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
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        keys = _curve_keys(history, metric)
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
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        if metric == "accuracy" and drawn:
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
