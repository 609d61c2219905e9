"""Classification: one softmax unit per class, cross-entropy, accuracy and macro-F1, a confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.errors import InputDataError
from dlpipe.data.manifest import Manifest
from dlpipe.models.heads.base import PREDICTIONS_LAYER, Answer, Evaluation, Head
from dlpipe.reports.classification import classification_metrics, write_confusion


@dataclass(frozen=True)
class TopClasses(Answer):
    """The ``k`` most probable classes of one input, best first."""

    labels: list[str]
    probabilities: list[float]

    @property
    def text(self) -> str:
        """``label probability`` pairs, best first."""
        return ", ".join(f"{label} {q:.3f}" for label, q in zip(self.labels, self.probabilities, strict=True))

    def as_json(self) -> dict[str, object]:
        """``{"top": [{"label", "probability"}, ...]}``."""
        return {"top": [{"label": label, "probability": q} for label, q in zip(self.labels, self.probabilities, strict=True)]}

    def csv_row(self) -> dict[str, object]:
        """``label_1, probability_1, label_2, ...``."""
        row: dict[str, object] = {}
        for rank, (label, q) in enumerate(zip(self.labels, self.probabilities, strict=True), start=1):
            row[f"label_{rank}"], row[f"probability_{rank}"] = label, q
        return row


class ClassificationHead(Head):
    """Single-label classification over the manifest's ``label`` column."""

    name = "classification"
    answer_title = "top classes"

    def output_names(self, manifest: Manifest) -> list[str]:
        """The manifest's classes, in output-unit order."""
        return list(manifest.classes)

    def check_training_data(self, manifest: Manifest) -> None:
        """Every class needs at least one training item."""
        in_train = {manifest.rows[i]["label"] for i in manifest.split("train")}
        missing = [label for label in manifest.classes if label not in in_train]
        if missing:
            raise InputDataError(
                f"dataset '{manifest.dataset}': class(es) {', '.join(missing)} have no item in the training split",
                "add items for them, or lower ingest.val_fraction / ingest.test_fraction",
            )

    def targets(self, rows: Sequence[dict[str, str]], names: Sequence[str]) -> np.ndarray:
        """Class indices (sparse labels)."""
        index = {name: i for i, name in enumerate(names)}
        return np.array([index[row["label"]] for row in rows], dtype=np.int64)

    def output_layer(self, n_outputs: int, seed: int) -> Any:
        """Dense softmax, float32 even under mixed precision (a float16 softmax loses small probabilities)."""
        import keras

        return keras.layers.Dense(n_outputs, activation="softmax", dtype="float32", name=PREDICTIONS_LAYER)

    def compile_arguments(self) -> dict[str, Any]:
        """Sparse categorical cross-entropy and accuracy."""
        return {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]}

    def balanced_weights(self, targets: np.ndarray, n_outputs: int) -> dict[int, float]:
        """'balanced' weights: n / (classes x count of the class)."""
        counts = np.bincount(targets, minlength=n_outputs)
        return {i: float(len(targets) / (n_outputs * c)) for i, c in enumerate(counts)}

    def item_losses(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Cross-entropy of each item: -log of the probability given to its true class."""
        return -np.log(np.clip(outputs[np.arange(len(targets)), targets], 1e-12, 1.0))

    def evaluate(self, outputs: np.ndarray, targets: np.ndarray, names: Sequence[str], sizes: np.ndarray | None = None) -> Evaluation:
        """Accuracy, macro-F1 and per-class figures; answers as class names."""
        predicted = outputs.argmax(axis=1)
        report = classification_metrics(targets.tolist(), predicted.tolist(), names)
        return Evaluation(
            outputs=outputs,
            targets=targets,
            metrics={
                "test_accuracy": report["accuracy"],
                "test_macro_f1": report["macro_f1"],
                "test_per_class": report["per_class"],
                "test_count": report["n"],
            },
            losses=self.item_losses(outputs, targets),
            truth=[names[i] for i in targets],
            predicted=[names[i] for i in predicted],
            confidence=outputs.max(axis=1),
        )

    def summary(self, metrics: dict[str, Any]) -> str:
        """``test accuracy 0.950, macro-F1 0.948 after 12 epochs``."""
        return f"test accuracy {metrics['test_accuracy']:.3f}, macro-F1 {metrics['test_macro_f1']:.3f} after {metrics['epochs']} epochs"

    def write_reports(self, folder: Path, evaluation: Evaluation, names: Sequence[str], paths: Sequence[Path] = ()) -> None:
        """The confusion matrix as PNG and as ``dvc plots`` CSV."""
        write_confusion(
            evaluation.targets.tolist(),
            evaluation.outputs.argmax(axis=1).tolist(),
            names,
            folder / "confusion.png",
            folder / "confusion.csv",
            title="test split: true vs predicted",
        )

    def explained_units(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The predicted class of each item and its probability."""
        best = outputs.argmax(axis=1)
        return best, outputs[np.arange(len(outputs)), best]

    def answer(self, outputs: np.ndarray, names: Sequence[str], k: int, size: tuple[int, int] | None = None) -> TopClasses:
        """Top ``k`` classes of the windows' mean probabilities (ties keep class order)."""
        mean = outputs.mean(axis=0)
        best = np.argsort(-mean, kind="stable")[:k]
        return TopClasses([names[i] for i in best], [round(float(mean[i]), 6) for i in best])

    def no_answer(self) -> TopClasses:
        """No classes."""
        return TopClasses([], [])

    def csv_columns(self, k: int) -> list[str]:
        """``label_1, probability_1, ..., label_k, probability_k``."""
        return [f"{kind}_{rank}" for rank in range(1, k + 1) for kind in ("label", "probability")]
