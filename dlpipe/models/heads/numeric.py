"""What the numeric heads (regression, bbox, regions, keypoints) share: losses, the spatial output, answers in units.

Coordinates travel as fractions of the image's width and height, so a box or point means the same
thing at every input size and through the square resize; answers turn them back into pixels of the
image they were asked about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlpipe.core.errors import InputDataError
from dlpipe.data.manifest import Manifest
from dlpipe.models.heads.base import PREDICTIONS_LAYER, Answer, Head

# Huber's delta per target form: standardised values (a regression) and fractions of the image side.
HUBER_DELTA = {"standardised": 1.0, "fraction": 0.1}


def keras_loss(name: str, form: str) -> Any:
    """The Keras loss ``finetune.loss`` names (mse, mae or huber) for targets of ``form`` (see HUBER_DELTA)."""
    import keras

    if name == "huber":
        return keras.losses.Huber(delta=HUBER_DELTA[form])
    return keras.losses.MeanSquaredError() if name == "mse" else keras.losses.MeanAbsoluteError()


def numpy_loss(name: str, form: str, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The per-item value of :func:`keras_loss` (the mean over output units), in numpy."""
    error = np.abs(np.asarray(outputs, dtype=np.float64) - np.asarray(targets, dtype=np.float64))
    if name == "mse":
        return (error**2).mean(axis=1)
    if name == "mae":
        return error.mean(axis=1)
    delta = HUBER_DELTA[form]
    return np.where(error <= delta, 0.5 * error**2, delta * (error - 0.5 * delta)).mean(axis=1)


def dense_output(n_outputs: int, activation: str | None) -> Any:
    """The output layer, float32 even under mixed precision (coordinates need its resolution)."""
    import keras

    return keras.layers.Dense(n_outputs, activation=activation, dtype="float32", name=PREDICTIONS_LAYER)


def image_sizes(rows: Sequence[dict[str, str]]) -> np.ndarray:
    """(n, 2) width and height of manifest rows, in pixels (after EXIF orientation)."""
    return np.array([(float(row["width"]), float(row["height"])) for row in rows], dtype=np.float64).reshape(-1, 2)


def row_values(rows: Sequence[dict[str, str]], columns: Sequence[str]) -> np.ndarray:
    """(n, columns) float64 target values of manifest rows."""
    return np.array([[float(row[c]) for c in columns] for row in rows], dtype=np.float64).reshape(-1, len(columns))


def to_fractions(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Pixel coordinates (x, y alternating) as fractions of each image's width and height."""
    return values / np.tile(sizes, values.shape[1] // 2)


def to_pixels(fractions: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_fractions`."""
    return fractions * np.tile(sizes, fractions.shape[1] // 2)


@dataclass(frozen=True)
class Values(Answer):
    """Named numbers: a regression's predictions, a box's corners or points' coordinates, in their units."""

    names: list[str]
    values: list[float]
    unit: str = ""  # "px" for coordinates

    @property
    def text(self) -> str:
        """``name value`` pairs (``steering 3.25``; ``x_min 12.0 px``)."""
        suffix = f" {self.unit}" if self.unit else ""
        return ", ".join(f"{name} {value:.4g}{suffix}" for name, value in zip(self.names, self.values, strict=True))

    def as_json(self) -> dict[str, object]:
        """``{"values": {name: value}}`` (plus ``"unit"`` for pixels)."""
        document: dict[str, object] = {"values": dict(zip(self.names, self.values, strict=True))}
        if self.unit:
            document["unit"] = self.unit
        return document

    def csv_row(self) -> dict[str, object]:
        """One cell per name."""
        return dict(zip(self.names, self.values, strict=True))


def rounded(values: np.ndarray) -> list[float]:
    """Plain floats for JSON and CSV (6 significant decimals)."""
    return [round(float(v), 6) for v in np.asarray(values).reshape(-1)]


class CoordinateHead(Head):
    """Targets that are places in the image (box corners, points): fractions of its sides, sigmoid units, ``finetune.loss``."""

    spatial = True
    moves_targets = True
    curve_metric = "mae"
    columns: list[str]  # the manifest columns, x and y alternating, in pixels
    loss: str

    def check_training_data(self, manifest: Manifest) -> None:
        """A non-empty training split."""
        if not manifest.split("train"):
            raise InputDataError(f"dataset '{manifest.dataset}': the training split is empty", "add rows to the targets CSV")

    def targets(self, rows: Sequence[dict[str, str]], names: Sequence[str]) -> np.ndarray:
        """The coordinates as fractions of each image's width and height."""
        return to_fractions(row_values(rows, self.columns), image_sizes(rows)).astype(np.float32)

    def output_layer(self, n_outputs: int, seed: int) -> Any:
        """Sigmoid units: places inside the image."""
        return dense_output(n_outputs, "sigmoid")

    def compile_arguments(self) -> dict[str, Any]:
        """``finetune.loss`` on the fractions, and their MAE."""
        return {"loss": keras_loss(self.loss, "fraction"), "metrics": ["mae"]}

    def balanced_weights(self, targets: np.ndarray, n_outputs: int) -> None:
        """No classes to balance."""
        return None

    def item_losses(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """The training loss of each item."""
        return numpy_loss(self.loss, "fraction", outputs, targets)

    def item_sizes_needed(self) -> bool:
        """Answers (and keypoint errors) are in pixels."""
        return True
