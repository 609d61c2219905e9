"""Regions: the talk's localisation as classification, an S x S grid where each cell says "the object covers me".

Targets are the CSV's box; a cell is positive when the box covers at least ``finetune.regions.cover``
of it, and the cell holding the box's centre always is (so a small object is never all-negative).
The network has one sigmoid per cell, trained with binary cross-entropy. A box is derived from
the answer as the extent of the cells at p >= 0.5 (the most likely cell when none is), so its IoU
with the truth can be set beside the bbox head's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.config import BOX_COLUMNS, DatasetConfig, FinetuneConfig
from dlpipe.data.manifest import Manifest
from dlpipe.models.heads.base import Evaluation
from dlpipe.models.heads.bbox import BoxHead, box_answer, box_evaluation, box_summary, write_box_sheet
from dlpipe.models.heads.numeric import Values


def cell_targets(boxes: np.ndarray, grid: int, cover: float) -> np.ndarray:
    """(n, grid * grid) 0/1 cells of boxes (n, 4) given as fractions, row-major from the top-left."""
    edges = np.arange(grid + 1) / grid
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    ox = np.clip(np.minimum(boxes[:, 2:3], edges[None, 1:]) - np.maximum(boxes[:, 0:1], edges[None, :-1]), 0, None) * grid
    oy = np.clip(np.minimum(boxes[:, 3:4], edges[None, 1:]) - np.maximum(boxes[:, 1:2], edges[None, :-1]), 0, None) * grid
    cells = (oy[:, :, None] * ox[:, None, :]) >= cover
    cx = np.clip(((boxes[:, 0] + boxes[:, 2]) / 2 * grid).astype(np.int64), 0, grid - 1)
    cy = np.clip(((boxes[:, 1] + boxes[:, 3]) / 2 * grid).astype(np.int64), 0, grid - 1)
    cells[np.arange(len(boxes)), cy, cx] = True
    return cells.reshape(len(boxes), grid * grid).astype(np.float32)


def derived_boxes(probabilities: np.ndarray, grid: int) -> np.ndarray:
    """(n, 4) boxes (fractions) spanning each item's cells at p >= 0.5, or its most likely cell."""
    cells = np.asarray(probabilities).reshape(-1, grid, grid)
    boxes = np.zeros((len(cells), 4))
    for i, item in enumerate(cells):
        rows, cols = np.nonzero(item >= 0.5)
        if not len(rows):
            rows, cols = np.unravel_index([int(item.argmax())], item.shape)
        boxes[i] = (cols.min() / grid, rows.min() / grid, (cols.max() + 1) / grid, (rows.max() + 1) / grid)
    return boxes


class RegionsHead(BoxHead):
    """An S x S grid of per-cell sigmoids over the image.

    Its raw targets are the box (moved by augmentation as a bbox head's, refused rotation alike);
    the cells come from :meth:`encode`, and its answers are the derived box, stated and drawn as a box.
    """

    name = "regions"
    answer_title = "box from cells (pixels)"
    curve_metric = "binary_accuracy"
    score_name = "1 - mean change of the cells"

    def __init__(self, columns: Sequence[str] = BOX_COLUMNS, grid: int = 7, cover: float = 0.5) -> None:
        super().__init__(columns)
        self.grid, self.cover = grid, cover

    @classmethod
    def configure(cls, manifest: Manifest, cfg: FinetuneConfig, spec: DatasetConfig) -> RegionsHead:
        """The box columns and ``finetune.regions``."""
        return cls(manifest.target_columns, cfg.regions.grid, cfg.regions.cover)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RegionsHead:
        """From model.json's ``targets``."""
        return cls(record["columns"], record["grid"], record["cover"])

    def record(self) -> dict[str, Any]:
        """Box columns, grid and cover."""
        return {"columns": self.columns, "grid": self.grid, "cover": self.cover}

    def output_names(self, manifest: Manifest) -> list[str]:
        """``cell_<row>_<col>``, row-major from the top-left."""
        return [f"cell_{row}_{col}" for row in range(self.grid) for col in range(self.grid)]

    def encode(self, targets: Any) -> Any:
        """One box (4,) as its grid of 0/1 cells (grid * grid,), in TensorFlow."""
        import tensorflow as tf

        grid = self.grid
        edges = tf.range(grid + 1, dtype=tf.float32) / grid
        ox = tf.clip_by_value(tf.minimum(targets[2], edges[1:]) - tf.maximum(targets[0], edges[:-1]), 0.0, 1.0) * grid
        oy = tf.clip_by_value(tf.minimum(targets[3], edges[1:]) - tf.maximum(targets[1], edges[:-1]), 0.0, 1.0) * grid
        cells = oy[:, None] * ox[None, :] >= self.cover
        cx = tf.clip_by_value(tf.cast((targets[0] + targets[2]) / 2 * grid, tf.int32), 0, grid - 1)
        cy = tf.clip_by_value(tf.cast((targets[1] + targets[3]) / 2 * grid, tf.int32), 0, grid - 1)
        centre = tf.logical_and(tf.range(grid)[:, None] == cy, tf.range(grid)[None, :] == cx)
        return tf.reshape(tf.cast(tf.logical_or(cells, centre), tf.float32), [grid * grid])

    def explained_score(self, outputs: Any, reference: Any, unit: Any) -> Any:
        """One minus the mean change of the cell probabilities: 1 when covering a patch changes no cell."""
        import tensorflow as tf

        return 1.0 - tf.reduce_mean(tf.abs(outputs - reference), axis=1)

    def compile_arguments(self) -> dict[str, Any]:
        """Binary cross-entropy per cell, and cell accuracy."""
        return {"loss": "binary_crossentropy", "metrics": ["binary_accuracy"]}

    def item_losses(self, outputs: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Mean binary cross-entropy over each item's cells."""
        cells = cell_targets(targets, self.grid, self.cover)
        p = np.clip(np.asarray(outputs, dtype=np.float64), 1e-7, 1 - 1e-7)
        return -(cells * np.log(p) + (1 - cells) * np.log(1 - p)).mean(axis=1)

    def evaluate(self, outputs: np.ndarray, targets: np.ndarray, names: Sequence[str], sizes: np.ndarray | None = None) -> Evaluation:
        """IoU of the cell-derived boxes (as for bbox), and the share of cells right."""
        evaluation = box_evaluation(outputs, derived_boxes(outputs, self.grid), targets, sizes)
        cells = cell_targets(targets, self.grid, self.cover)
        evaluation.metrics["test_cell_accuracy"] = round(float(((outputs >= 0.5) == (cells >= 0.5)).mean()), 6)
        return evaluation

    def summary(self, metrics: dict[str, Any]) -> str:
        """As for bbox, of the derived boxes, with the cell accuracy."""
        return f"{box_summary(metrics)}; {metrics['test_cell_accuracy']:.1%} of cells right"

    def write_reports(self, folder: Path, evaluation: Evaluation, names: Sequence[str], paths: Sequence[Path] = ()) -> None:
        """``boxes.png``: the grid, the cells at p >= 0.5 shaded, the derived box and the true one (dashed)."""
        cells = evaluation.outputs.reshape(-1, self.grid, self.grid)
        write_box_sheet(folder / "boxes.png", derived_boxes(evaluation.outputs, self.grid), evaluation, paths, cells)

    def explained_units(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The most likely cell of each item and its probability."""
        best = outputs.argmax(axis=1)
        return best, outputs[np.arange(len(outputs)), best]

    def answer(self, outputs: np.ndarray, names: Sequence[str], k: int, size: tuple[int, int] | None = None) -> Values:
        """The derived box in pixels of the input image."""
        return box_answer(derived_boxes(outputs.mean(axis=0, keepdims=True), self.grid), size)
