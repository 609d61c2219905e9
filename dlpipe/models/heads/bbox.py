"""Bounding boxes: one box per image, four sigmoid units (x_min, y_min, x_max, y_max as fractions of the sides).

A flip, zoom or shift moves a box to another axis-aligned box exactly; a rotation does not (the
rotated corners' enclosing box is looser than the object's), so rotation is refused rather than
training on boxes that are too big.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.config import BOX_COLUMNS, DatasetConfig, FinetuneConfig
from dlpipe.data.manifest import Manifest
from dlpipe.models.heads.base import Evaluation, Warp
from dlpipe.models.heads.numeric import (
    CoordinateHead,
    Values,
    rounded,
    to_pixels,
)
from dlpipe.reports.localisation import annotation_side, box_iou, box_metrics, draw_geometry, geometry_sheet, ordered_boxes

# Test images drawn on the boxes sheet.
SHEET_IMAGES = 24


def box_through_warp(box: Any, warp: Warp) -> Any:
    """The axis-aligned box around a box's four corners after ``warp`` (exact for flips, zooms and shifts)."""
    import tensorflow as tf

    corners = tf.stack([tf.stack([box[0], box[1]]), tf.stack([box[2], box[1]]), tf.stack([box[2], box[3]]), tf.stack([box[0], box[3]])])
    moved = warp.points(corners)
    return tf.concat([tf.reduce_min(moved, axis=0), tf.reduce_max(moved, axis=0)], axis=0)


def tensor_iou(boxes: Any, reference: Any) -> Any:
    """IoU of a batch of boxes (B, 4) with one box (4,), in TensorFlow (crossed corners sorted)."""
    import tensorflow as tf

    lo, hi = tf.minimum(boxes[:, :2], boxes[:, 2:]), tf.maximum(boxes[:, :2], boxes[:, 2:])
    ref_lo, ref_hi = tf.minimum(reference[:2], reference[2:]), tf.maximum(reference[:2], reference[2:])
    overlap = tf.reduce_prod(tf.maximum(tf.minimum(hi, ref_hi) - tf.maximum(lo, ref_lo), 0.0), axis=1)
    union = tf.reduce_prod(hi - lo, axis=1) + tf.reduce_prod(ref_hi - ref_lo) - overlap
    return overlap / tf.maximum(union, 1e-9)


def sheet_order(score: np.ndarray) -> np.ndarray:
    """The test items a sheet shows (higher ``score`` is better): the worst half, then the best of the rest."""
    order = np.argsort(score, kind="stable")
    worst = order[: SHEET_IMAGES // 2]
    best = [i for i in order[::-1] if i not in set(worst.tolist())][: SHEET_IMAGES - len(worst)]
    return np.concatenate([worst, best]).astype(np.int64)


class BoxHead(CoordinateHead):
    """One box per image, regressed directly."""

    name = "bbox"
    answer_title = "box (pixels)"
    carries = frozenset({"flip", "zoom", "translation"})
    score_name = "IoU with the unoccluded box"

    def __init__(self, columns: Sequence[str] = BOX_COLUMNS, loss: str = "huber") -> None:
        self.columns, self.loss = list(columns), loss

    @classmethod
    def configure(cls, manifest: Manifest, cfg: FinetuneConfig, spec: DatasetConfig) -> BoxHead:
        """The manifest's box columns and ``finetune.loss``."""
        return cls(manifest.target_columns, cfg.loss)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> BoxHead:
        """From model.json's ``targets``."""
        return cls(record["columns"], record["loss"])

    def record(self) -> dict[str, Any]:
        """The CSV's box columns and the loss."""
        return {"columns": self.columns, "loss": self.loss}

    def refusal_reason(self) -> str:
        """Rotation."""
        return "a rotated box is no longer the tight axis-aligned box of the object"

    def output_names(self, manifest: Manifest) -> list[str]:
        """x_min, y_min, x_max, y_max."""
        return list(BOX_COLUMNS)

    def transform_targets(self, targets: Any, warp: Warp) -> Any:
        """The box around the moved corners."""
        return box_through_warp(targets, warp)

    def explained_score(self, outputs: Any, reference: Any, unit: Any) -> Any:
        """The IoU of each occluded copy's box with the unoccluded image's box."""
        return tensor_iou(outputs, reference)

    def evaluate(self, outputs: np.ndarray, targets: np.ndarray, names: Sequence[str], sizes: np.ndarray | None = None) -> Evaluation:
        """Mean IoU and the shares at IoU >= 0.5 and >= 0.75; answers in pixels."""
        return box_evaluation(outputs, ordered_boxes(outputs), targets, sizes)

    def summary(self, metrics: dict[str, Any]) -> str:
        """``test mean IoU 0.81, 93% of boxes at IoU >= 0.5 after 40 epochs``."""
        return box_summary(metrics)

    def write_reports(self, folder: Path, evaluation: Evaluation, names: Sequence[str], paths: Sequence[Path] = ()) -> None:
        """``boxes.png``: test images with the true box dashed and the predicted one solid."""
        write_box_sheet(folder / "boxes.png", ordered_boxes(evaluation.outputs), evaluation, paths, None)

    def explained_units(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Explanations follow the box as a whole (unit 0 stands for it); its value is the box's area share."""
        boxes = ordered_boxes(outputs)
        return np.zeros(len(outputs), dtype=np.int64), (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    def answer(self, outputs: np.ndarray, names: Sequence[str], k: int, size: tuple[int, int] | None = None) -> Values:
        """The box in pixels of the input image (fractions when the size is unknown)."""
        return box_answer(ordered_boxes(outputs.mean(axis=0, keepdims=True)), size)

    def annotate(self, image: Any, answer: Values) -> Any:
        """The predicted box (solid) on the image."""
        return draw_geometry(image, predicted_box=answer.values, display=annotation_side(image))

    def no_answer(self) -> Values:
        """No box."""
        return Values([], [], "px")

    def csv_columns(self, k: int) -> list[str]:
        """x_min, y_min, x_max, y_max."""
        return list(BOX_COLUMNS)


def box_evaluation(outputs: np.ndarray, boxes: np.ndarray, targets: np.ndarray, sizes: np.ndarray | None) -> Evaluation:
    """The Evaluation of predicted ``boxes`` (fractions) against true ones: IoU figures, 1 - IoU as the sheet's loss."""
    iou = box_iou(boxes, targets)
    figures = box_metrics(iou)
    pixels = (lambda b: to_pixels(b, sizes)) if sizes is not None else (lambda b: b)
    return Evaluation(
        outputs=outputs,
        targets=targets,
        metrics={
            "test_mean_iou": figures["mean_iou"],
            "test_iou_50": figures["iou_50"],
            "test_iou_75": figures["iou_75"],
            "test_count": figures["n"],
        },
        losses=1.0 - iou,
        truth=[" ".join(f"{v:.0f}" for v in row) for row in pixels(targets)],
        predicted=[" ".join(f"{v:.0f}" for v in row) for row in pixels(boxes)],
        confidence=iou,
    )


def box_summary(metrics: dict[str, Any]) -> str:
    """The headline of a box metrics file."""
    iou, share, epochs = metrics["test_mean_iou"], metrics["test_iou_50"], metrics["epochs"]
    return f"test mean IoU {iou:.3f}, {share:.0%} of boxes at IoU >= 0.5 after {epochs} epochs"


def box_answer(box: np.ndarray, size: tuple[int, int] | None) -> Values:
    """A box (1, 4) of fractions as pixel corners of an image of ``size``."""
    if size is None:
        return Values(list(BOX_COLUMNS), rounded(box[0]), "fraction")
    return Values(list(BOX_COLUMNS), rounded(to_pixels(box, np.array([size], dtype=np.float64))[0]), "px")


def write_box_sheet(path: Path, boxes: np.ndarray, evaluation: Evaluation, paths: Sequence[Path], cells: np.ndarray | None) -> None:
    """Test images with their true (dashed) and predicted boxes, worst IoU first; a regions model's cells shaded."""
    from dlpipe.data.media.images import load_rgb

    images, captions, good = [], [], []
    for i in sheet_order(evaluation.confidence) if len(paths) else []:
        image = load_rgb(paths[i], 1 << 40)
        size = np.array([image.size], dtype=np.float64)
        true_box = to_pixels(evaluation.targets[i : i + 1], size)[0]
        predicted_box = to_pixels(boxes[i : i + 1], size)[0]
        images.append(draw_geometry(image, true_box=true_box, predicted_box=predicted_box, cells=None if cells is None else cells[i]))
        captions.append(f"{Path(paths[i]).name}\nIoU {evaluation.confidence[i]:.2f}")
        good.append(bool(evaluation.confidence[i] >= 0.5))
    title = "test images: true box dashed, predicted solid" + (", cells above 0.5 shaded" if cells is not None else "")
    geometry_sheet(images, captions, good, path, title)
