"""Classification evaluation artifacts: metrics JSON, confusion matrix PNG/CSV, training curves."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dlpipe.reports.classification import classification_metrics, write_confusion
from dlpipe.reports.figures import write_history_plot

CLASSES = ["a", "b", "c", "d"]
# Hand-computed example (d has no support and is never predicted):
#   index   0 1 2 3 4 5
#   true    a a a b b c
#   pred    a a b b c c        -> 4 of 6 right: accuracy 0.666667
#   a: predicted twice, both right -> precision 2/2 = 1.0; 3 true a, 2 found -> recall 2/3
#      f1 = 2 * 1 * (2/3) / (1 + 2/3) = 0.8
#   b: predicted at 2 (true a) and 3 (true b) -> precision 1/2; true at 3, 4 -> recall 1/2; f1 0.5
#   c: predicted at 4 (true b) and 5 (true c) -> precision 1/2; true at 5 only -> recall 1; f1 2/3
#   d: support 0, never predicted -> all 0 (zero_division=0), left out of the macro mean
#   macro-F1 over a, b, c = (0.8 + 0.5 + 0.666667) / 3 = 0.655556
Y_TRUE = [0, 0, 0, 1, 1, 2]
Y_PRED = [0, 0, 1, 1, 2, 2]


def test_classification_metrics_hand_computed() -> None:
    m = classification_metrics(Y_TRUE, Y_PRED, CLASSES)
    assert m["n"] == 6
    assert m["accuracy"] == 0.666667
    assert m["macro_f1"] == 0.655556
    assert m["per_class"]["a"] == {"precision": 1.0, "recall": 0.666667, "f1": 0.8, "support": 3}
    assert m["per_class"]["b"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert m["per_class"]["c"] == {"precision": 0.5, "recall": 1.0, "f1": 0.666667, "support": 1}
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert list(m["per_class"]) == CLASSES
    json.dumps(m)  # JSON-ready: plain floats and ints only
    assert all(type(v) is int for v in (m["n"], m["per_class"]["a"]["support"]))


def test_class_predicted_without_support_counts_in_macro_f1() -> None:
    # true a a b b, pred a c b b: c has no support but was predicted once -> precision 0, f1 0.
    # a: precision 1, recall 1/2, f1 2/3; b: precision 1, recall 1, f1 1; macro over a, b, c = (2/3 + 1 + 0) / 3
    m = classification_metrics([0, 0, 1, 1], [0, 2, 1, 1], ["a", "b", "c"])
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["macro_f1"] == round((2 / 3 + 1) / 3, 6)
    assert m["accuracy"] == 0.75


def test_classification_metrics_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="outside"):
        classification_metrics([0, 4], [0, 1], CLASSES)
    with pytest.raises(ValueError, match="y_pred has"):
        classification_metrics([0, 1], [0], CLASSES)


def test_classification_metrics_empty() -> None:
    m = classification_metrics([], [], CLASSES)
    assert m["n"] == 0 and m["accuracy"] == 0.0 and set(m["per_class"]) == set(CLASSES)


@pytest.mark.parametrize("n_classes", [2, 4, 12])
def test_write_confusion_png_and_csv(tmp_path: Path, n_classes: int) -> None:
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(n_classes)
    classes = [f"class_{i}" if i % 3 else f"a rather long class name {i}" for i in range(n_classes)]
    y_true = rng.integers(0, n_classes, 150)
    y_pred = np.where(rng.random(150) < 0.6, y_true, rng.integers(0, n_classes, 150))
    png, csv_path = tmp_path / "plots" / "confusion.png", tmp_path / "plots" / "confusion.csv"
    write_confusion(y_true.tolist(), y_pred.tolist(), classes, png, csv_path, "Confusion (test)")

    with Image.open(png) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 300 <= width <= 3000 and 250 <= height <= 3000

    with open(csv_path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["actual", "predicted"]
        rows = list(reader)
    assert len(rows) == 150
    assert rows[0] == {"actual": classes[y_true[0]], "predicted": classes[y_pred[0]]}
    index = {name: i for i, name in enumerate(classes)}
    tally = Counter((index[r["actual"]], index[r["predicted"]]) for r in rows)
    matrix = np.zeros((n_classes, n_classes), dtype=int)
    for (t, p), count in tally.items():
        matrix[t, p] = count
    np.testing.assert_array_equal(matrix, confusion_matrix(y_true, y_pred, labels=list(range(n_classes))))
    assert not [p.name for p in png.parent.iterdir() if p.name.endswith(".tmp")]


def test_write_confusion_larger_matrix_gets_larger_png(tmp_path: Path) -> None:
    sizes = []
    for k in (3, 16):
        labels = list(range(k)) * 2
        write_confusion(labels, labels, [f"c{i}" for i in range(k)], tmp_path / f"{k}.png", tmp_path / f"{k}.csv", "t")
        with Image.open(tmp_path / f"{k}.png") as image:
            sizes.append(image.size)
    assert sizes[1][0] > sizes[0][0] and sizes[1][1] > sizes[0][1]


def test_write_history_plot(tmp_path: Path) -> None:
    history = {
        "loss": [1.2, 0.9, 0.7, 0.5, 0.4],
        "val_loss": [1.3, 1.0, 0.8, 0.7, 0.65],
        "accuracy": [0.4, 0.6, 0.7, 0.8, 0.85],
        "val_accuracy": [0.35, 0.55, 0.65, 0.7, 0.72],
    }
    png = tmp_path / "history.png"
    write_history_plot(history, png, "Training", phase_boundaries=[3])
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 200

    # Missing keys (no accuracy, no validation) and an empty history still give a picture.
    write_history_plot({"loss": [1.0, 0.5]}, tmp_path / "partial.png", "Partial")
    write_history_plot({}, tmp_path / "empty.png", "Empty", phase_boundaries=[2])
    for name in ("partial.png", "empty.png"):
        with Image.open(tmp_path / name) as image:
            image.verify()
