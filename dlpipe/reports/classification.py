"""Classification reports: metrics for JSON and the confusion matrix (PNG and ``dvc plots`` CSV).

Labels are integer indices into ``classes`` (the order of the model's output
units). Every file is written atomically (see :mod:`dlpipe.core.artifacts`);
scikit-learn and matplotlib are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.artifacts import write_csv
from dlpipe.reports.figures import save_png

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


