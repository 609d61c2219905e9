"""The task/head seam: what a trained network predicts, and everything that depends on it.

A head owns the task-specific half of dlpipe: the output layer and its activation, the loss
and Keras metrics, the targets read from a manifest, per-item losses (for top-loss sheets and
heatmap choices), test metrics, the report figures, and how ``predict`` states an answer.
finetune, predict, heatmap and the model store call only this interface, so a regression or
localisation task is one new module implementing it plus one entry in ``heads.registry.HEADS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dlpipe.data.manifest import Manifest

PREDICTIONS_LAYER = "predictions"


class Answer(ABC):
    """A head's answer for one input, in the three forms ``predict`` prints."""

    @property
    @abstractmethod
    def text(self) -> str:
        """One line for the terminal table."""

    @abstractmethod
    def as_json(self) -> dict[str, object]:
        """The fields ``--json`` prints for this input."""

    @abstractmethod
    def csv_row(self) -> dict[str, object]:
        """The cells of this input's CSV row (the columns of :meth:`Head.csv_columns`)."""


@dataclass(frozen=True)
class Evaluation:
    """A model's outputs on the test split, judged by its head."""

    outputs: np.ndarray  # the model's outputs, one row per item
    targets: np.ndarray  # what the outputs should have been
    metrics: dict[str, Any]  # the ``test_*`` entries of the stage's metrics file
    losses: np.ndarray  # per item, the quantity training minimised
    truth: list[str]  # per item, the target as text
    predicted: list[str]  # per item, the model's answer as text
    confidence: np.ndarray  # per item, how sure the model was of its answer (shown on sheets)


class Head(ABC):
    """One task: build the network's output, train it, judge it and state its answers."""

    name: ClassVar[str]
    answer_title: ClassVar[str]  # what an Answer's text holds, for table headers

    @abstractmethod
    def output_names(self, manifest: Manifest) -> list[str]:
        """The names of the output units, recorded in model.json (``classes``)."""

    @abstractmethod
    def check_training_data(self, manifest: Manifest) -> None:
        """Raise InputDataError when the manifest's training split cannot train this head."""

    @abstractmethod
    def targets(self, rows: Sequence[dict[str, str]], names: Sequence[str]) -> np.ndarray:
        """The training targets of manifest rows, in the form the loss takes."""

    @abstractmethod
    def output_layer(self, n_outputs: int, seed: int) -> Any:
        """The final Keras layer, named PREDICTIONS_LAYER and computed in float32."""

    @abstractmethod
    def compile_arguments(self) -> dict[str, Any]:
        """``loss`` and ``metrics`` for ``model.compile``."""

    @abstractmethod
    def balanced_weights(self, targets: np.ndarray, n_outputs: int) -> dict[int, float] | None:
        """Keras ``class_weight`` that balances the training targets (None where the task has no classes)."""

    @abstractmethod
    def item_losses(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Per-item loss of model outputs against targets."""

    @abstractmethod
    def evaluate(self, outputs: np.ndarray, targets: np.ndarray, names: Sequence[str]) -> Evaluation:
        """Test metrics, per-item losses and readable answers."""

    @abstractmethod
    def summary(self, metrics: dict[str, Any]) -> str:
        """The headline figures of a finetune metrics file, in one line."""

    @abstractmethod
    def write_reports(self, folder: Path, evaluation: Evaluation, names: Sequence[str]) -> None:
        """The task's report figures (and ``dvc plots`` tables) of the test split into ``folder``."""

    @abstractmethod
    def explained_units(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per item, the output unit an explanation (heatmap) follows by default, and its value."""

    @abstractmethod
    def answer(self, outputs: np.ndarray, names: Sequence[str], k: int) -> Answer:
        """The answer for one input from its outputs, shape (windows, units): several windows are one clip."""

    @abstractmethod
    def no_answer(self) -> Answer:
        """The empty answer of an input that could not be read (its fields, but no values)."""

    @abstractmethod
    def csv_columns(self, k: int) -> list[str]:
        """The CSV columns of an Answer (``csv_row`` keys), given the ``k`` predict asked for."""
