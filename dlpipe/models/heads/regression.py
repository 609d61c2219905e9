"""Regression: one linear unit per numeric column (a steering angle), trained on standardised values.

The network predicts each column standardised by the training split's mean and standard deviation
(recorded in model.json), so the loss weighs columns of any unit alike; answers and metrics are
in the CSV's units. A horizontal flip negates the columns ``targets.flip_negate`` names and keeps
``targets.flip_invariant``; with a column in neither, flipping is refused, as is any other geometric
transform (what a rotated road does to the right steering angle is not known).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.config import DatasetConfig, FinetuneConfig
from dlpipe.core.errors import InputDataError
from dlpipe.data.manifest import Manifest
from dlpipe.models.heads.base import Evaluation, Head, Warp
from dlpipe.models.heads.numeric import Values, dense_output, keras_loss, numpy_loss, rounded, row_values
from dlpipe.reports.regression import regression_metrics, write_regression_figures


class RegressionHead(Head):
    """Numeric columns of the manifest, predicted by a linear layer."""

    name = "regression"
    answer_title = "predicted values"
    spatial = True
    moves_targets = True
    curve_metric = "mae"
    score_name = "minus the change of the value (standardised)"

    def __init__(
        self,
        columns: Sequence[str] = (),
        mean: Sequence[float] = (),
        std: Sequence[float] = (),
        negate: Sequence[str] = (),
        invariant: Sequence[str] = (),
        loss: str = "huber",
    ) -> None:
        self.columns, self.loss = list(columns), loss
        self.mean, self.std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        self.negate, self.invariant = list(negate), list(invariant)
        # Flipping is carried only when every column says what a mirror does to it.
        self.carries = frozenset({"flip"}) if set(self.columns) <= set(self.negate) | set(self.invariant) else frozenset()

    @classmethod
    def configure(cls, manifest: Manifest, cfg: FinetuneConfig, spec: DatasetConfig) -> RegressionHead:
        """Standardisation from the training split; flip rules from ``datasets.<name>.targets``."""
        columns = list(manifest.target_columns)
        train = row_values([manifest.rows[i] for i in manifest.split("train")], columns)
        std = train.std(axis=0) if len(train) else np.ones(len(columns))
        targets = spec.targets
        return cls(
            columns,
            train.mean(axis=0) if len(train) else np.zeros(len(columns)),
            np.where(std > 0, std, 1.0),
            targets.flip_negate if targets else (),
            targets.flip_invariant if targets else (),
            cfg.loss,
        )

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RegressionHead:
        """From model.json's ``targets``."""
        return cls(record["columns"], record["mean"], record["std"], record["flip_negate"], record["flip_invariant"], record["loss"])

    def record(self) -> dict[str, Any]:
        """Columns, standardisation, flip rules and loss."""
        return {
            "columns": self.columns,
            "mean": rounded(self.mean),
            "std": rounded(self.std),
            "flip_negate": self.negate,
            "flip_invariant": self.invariant,
            "loss": self.loss,
        }

    def refusal_reason(self) -> str:
        """Only a flip is known, and only when every column is flip_negate or flip_invariant."""
        unknown = [c for c in self.columns if c not in self.negate and c not in self.invariant]
        if unknown:
            return (
                f"say in datasets.<name>.targets whether a mirror negates {', '.join(unknown)} (flip_negate) or keeps it (flip_invariant)"
            )
        return "only a horizontal flip has a known effect on a regression target"

    def output_names(self, manifest: Manifest) -> list[str]:
        """The target columns."""
        return list(manifest.target_columns)

    def check_training_data(self, manifest: Manifest) -> None:
        """At least two training items (a spread to learn)."""
        if len(manifest.split("train")) < 2:
            raise InputDataError(f"dataset '{manifest.dataset}': fewer than 2 training items", "add rows to the targets CSV")

    def targets(self, rows: Sequence[dict[str, str]], names: Sequence[str]) -> np.ndarray:
        """The values in the CSV's units (float32)."""
        return row_values(rows, names).astype(np.float32)

    def encode(self, targets: Any) -> Any:
        """Standardised values."""
        return (targets - self.mean.astype(np.float32)) / self.std.astype(np.float32)

    def transform_targets(self, targets: Any, warp: Warp) -> Any:
        """A mirrored image negates the flip_negate columns."""
        import tensorflow as tf

        sign = np.array([-1.0 if c in self.negate else 1.0 for c in self.columns], dtype=np.float32)
        return tf.where(warp.flipped, targets * sign, targets)

    def decode(self, outputs: np.ndarray) -> np.ndarray:
        """Network outputs back in the CSV's units."""
        return np.asarray(outputs, dtype=np.float64) * self.std + self.mean

    def explained_score(self, outputs: Any, reference: Any, unit: Any) -> Any:
        """Minus the change of the explained value (standardised units): 0 when covering a patch changes nothing."""
        import tensorflow as tf

        return -tf.abs(outputs[:, unit] - reference[unit])

    def output_layer(self, n_outputs: int, seed: int) -> Any:
        """Linear units."""
        return dense_output(n_outputs, None)

    def compile_arguments(self) -> dict[str, Any]:
        """``finetune.loss`` on standardised values, and their MAE."""
        return {"loss": keras_loss(self.loss, "standardised"), "metrics": ["mae"]}

    def balanced_weights(self, targets: np.ndarray, n_outputs: int) -> None:
        """No classes to balance."""
        return None

    def item_losses(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The training loss of each item."""
        return numpy_loss(self.loss, "standardised", outputs, self.encode(np.asarray(targets, dtype=np.float32)))

    def evaluate(self, outputs: np.ndarray, targets: np.ndarray, names: Sequence[str], sizes: np.ndarray | None = None) -> Evaluation:
        """MAE, RMSE and R² in the CSV's units, with the constant predictor (training mean) beside them."""
        predicted = self.decode(outputs)
        report = regression_metrics(predicted, targets, self.mean, names)
        error = np.abs(predicted - targets).mean(axis=1)
        return Evaluation(
            outputs=outputs,
            targets=targets,
            metrics={
                "test_mae": report["mae"],
                "test_rmse": report["rmse"],
                "test_r2": report["r2"],
                "test_constant_mae": report["constant_mae"],
                "test_target_std": report["target_std"],
                "test_per_column": report["per_column"],
                "test_count": report["n"],
            },
            losses=error,  # the largest errors make the sheet, in the targets' units
            truth=[", ".join(f"{v:.3g}" for v in row) for row in targets],
            predicted=[", ".join(f"{v:.3g}" for v in row) for row in predicted],
            confidence=np.full(len(targets), np.nan),
        )

    def summary(self, metrics: dict[str, Any]) -> str:
        """``test MAE 1.52 (constant predictor 6.80), R² 0.91 after 30 epochs``."""
        return (
            f"test MAE {metrics['test_mae']:.4g} (constant predictor {metrics['test_constant_mae']:.4g}), "
            f"R² {metrics['test_r2']:.3f} after {metrics['epochs']} epochs"
        )

    def write_reports(self, folder: Path, evaluation: Evaluation, names: Sequence[str], paths: Sequence[Path] = ()) -> None:
        """Predicted-vs-true scatter, residual histograms and predictions.csv."""
        write_regression_figures(self.decode(evaluation.outputs), evaluation.targets, names, folder)

    def explained_units(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first column and its predicted value."""
        return np.zeros(len(outputs), dtype=np.int64), self.decode(outputs)[:, 0]

    def answer(self, outputs: np.ndarray, names: Sequence[str], k: int, size: tuple[int, int] | None = None) -> Values:
        """The values in the CSV's units (the mean over an input's windows)."""
        return Values(list(names), rounded(self.decode(outputs.mean(axis=0, keepdims=True))[0]))

    def no_answer(self) -> Values:
        """No values."""
        return Values([], [])

    def csv_columns(self, k: int) -> list[str]:
        """One column per target."""
        return list(self.columns)
