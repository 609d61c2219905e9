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

from dlpipe.core.config import AugmentConfig, DatasetConfig, FinetuneConfig
from dlpipe.core.errors import ConfigError
from dlpipe.data.manifest import Manifest

PREDICTIONS_LAYER = "predictions"
# The geometric augmentations of finetune.augment, by param name.
GEOMETRIC_AUGMENTATIONS = ("flip", "rotation", "zoom", "translation")


class Warp(ABC):
    """One training image's random geometric transform, as a head needs it to move its targets (TensorFlow)."""

    @property
    @abstractmethod
    def flipped(self) -> Any:
        """A boolean scalar tensor: the image was mirrored left to right."""

    @abstractmethod
    def points(self, xy: Any) -> Any:
        """Where points (a (P, 2) tensor of x, y in [0, 1] of the image) land in the transformed image."""


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
    """One task: build the network's output, train it, judge it and state its answers.

    Targets have two forms. ``targets`` reads the *raw* form from manifest rows: class ids, values in
    the CSV's units, or coordinates as fractions of the image's width and height (so they survive
    resizing). Geometric augmentation moves raw targets with the image (``transform_targets``);
    ``encode`` then turns them into what the loss compares the network's outputs with.
    """

    name: ClassVar[str]
    answer_title: ClassVar[str]  # what an Answer's text holds, for table headers
    # The output reads the backbone's feature map through a small spatial layer, not only the pooled
    # features: a box or a steering angle depends on where things are, which average pooling discards.
    spatial: ClassVar[bool] = False
    # Geometric augmentations whose effect on the targets this head can follow. Classification
    # targets do not move, so its augmentation runs inside the network (Keras layers); every other
    # head's runs in the input pipeline, where image and targets are transformed together.
    moves_targets: ClassVar[bool] = False
    carries: ClassVar[frozenset[str]] = frozenset(GEOMETRIC_AUGMENTATIONS)
    curve_metric: ClassVar[str] = "accuracy"  # the Keras metric the training-curves figure draws beside the loss
    score_name: ClassVar[str] = "probability"  # what explained_score measures, for heatmap scales and metrics

    @classmethod
    def configure(cls, manifest: Manifest, cfg: FinetuneConfig, spec: DatasetConfig) -> Head:
        """The head that trains on ``manifest`` (``spec`` its dataset entry; a regression head learns its targets' scale)."""
        return cls()

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Head:
        """The head a model folder describes (``record`` is model.json's ``targets``)."""
        return cls()

    def record(self) -> dict[str, Any]:
        """What model.json keeps under ``targets`` so :meth:`from_record` rebuilds this head."""
        return {}

    def check_augmentation(self, augment: AugmentConfig, dataset: str) -> None:
        """Raise ConfigError when ``finetune.augment`` asks for a transform this head's targets cannot follow."""
        refused = [key for key in GEOMETRIC_AUGMENTATIONS if getattr(augment, key) and key not in self.carries]
        if refused:
            off = ", ".join(f"finetune.augment.{key}: {'false' if key == 'flip' else 0}" for key in refused)
            raise ConfigError(
                f"dataset '{dataset}' (task {self.name}): finetune.augment.{' / '.join(refused)} cannot carry "
                f"its targets ({self.refusal_reason()}); they would be silently wrong",
                f"turn it off for this dataset: datasets.image.{dataset}.overrides: {{{off}}}",
            )

    def refusal_reason(self) -> str:
        """Why :attr:`carries` leaves out what it does (the ConfigError of check_augmentation says it)."""
        return "the head does not know how these transforms change its targets"

    def encode(self, targets: Any) -> Any:
        """What the loss compares the outputs with, from raw targets (a tensor, batched or not); identity by default."""
        return targets

    def transform_targets(self, targets: Any, warp: Warp) -> Any:
        """One item's raw targets after its image was warped (only heads with ``moves_targets``)."""
        return targets

    def item_sizes_needed(self) -> bool:
        """True when evaluation and answers need each image's size in pixels (coordinates)."""
        return False

    def explained_score(self, outputs: Any, reference: Any, unit: Any) -> Any:
        """How much of the answer survives in ``outputs`` (a batch, TensorFlow) against the unoccluded image's ``reference``.

        Occlusion maps show where covering the image lowers it; the deletion metric removes pixels
        until it falls. The default is the explained unit's output: a class probability.
        """
        return outputs[:, unit]

    def annotate(self, image: Any, answer: Answer) -> Any:
        """A copy of ``image`` (PIL) with ``answer`` drawn on it, for ``predict --out FOLDER``: its text by default."""
        from dlpipe.reports.localisation import annotation_side, draw_caption

        return draw_caption(image, answer.text, display=annotation_side(image))

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
    def evaluate(self, outputs: np.ndarray, targets: np.ndarray, names: Sequence[str], sizes: np.ndarray | None = None) -> Evaluation:
        """Test metrics, per-item losses and readable answers; ``sizes`` is each image's (width, height) in pixels."""

    @abstractmethod
    def summary(self, metrics: dict[str, Any]) -> str:
        """The headline figures of a finetune metrics file, in one line."""

    @abstractmethod
    def write_reports(self, folder: Path, evaluation: Evaluation, names: Sequence[str], paths: Sequence[Path] = ()) -> None:
        """The task's report figures (and ``dvc plots`` tables) of the test split into ``folder``; ``paths`` are its images."""

    @abstractmethod
    def explained_units(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per item, the output unit an explanation (heatmap) follows by default, and its value."""

    @abstractmethod
    def answer(self, outputs: np.ndarray, names: Sequence[str], k: int, size: tuple[int, int] | None = None) -> Answer:
        """The answer for one input from its outputs, shape (windows, units): several windows are one clip.

        ``size`` is the input image's (width, height), for answers in pixels.
        """

    @abstractmethod
    def no_answer(self) -> Answer:
        """The empty answer of an input that could not be read (its fields, but no values)."""

    @abstractmethod
    def csv_columns(self, k: int) -> list[str]:
        """The CSV columns of an Answer (``csv_row`` keys), given the ``k`` predict asked for."""
