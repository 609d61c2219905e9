"""Keypoints: K named points per image, 2K sigmoid units (x, y as fractions of the sides).

Every geometric augmentation carries points exactly (each point is moved by the image's transform);
a horizontal flip also swaps the names ``targets.flip_pairs`` lists (a mirrored left eye is the right eye).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.config import DatasetConfig, FinetuneConfig
from dlpipe.data.manifest import Manifest
from dlpipe.models.heads.base import Evaluation, Warp
from dlpipe.models.heads.bbox import sheet_order
from dlpipe.models.heads.numeric import (
    CoordinateHead,
    Values,
    rounded,
    to_pixels,
)
from dlpipe.reports.localisation import annotation_side, draw_geometry, geometry_sheet, keypoint_errors, keypoint_metrics


class KeypointsHead(CoordinateHead):
    """Named (x, y) points, regressed directly."""

    name = "keypoints"
    answer_title = "points (pixels)"
    score_name = "minus the points' mean shift (fraction of the side)"

    def __init__(self, points: Sequence[str] = (), flip_pairs: Sequence[Sequence[str]] = (), loss: str = "huber") -> None:
        self.points, self.flip_pairs, self.loss = list(points), [list(pair) for pair in flip_pairs], loss

    @classmethod
    def configure(cls, manifest: Manifest, cfg: FinetuneConfig, spec: DatasetConfig) -> KeypointsHead:
        """Point names and flip pairs from ``datasets.<name>.targets``, ``finetune.loss``."""
        targets = spec.targets
        assert targets is not None  # config validation requires targets.points for keypoints
        return cls(targets.points, targets.flip_pairs, cfg.loss)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> KeypointsHead:
        """From model.json's ``targets``."""
        return cls(record["points"], record["flip_pairs"], record["loss"])

    def record(self) -> dict[str, Any]:
        """Point names, flip pairs and loss."""
        return {"points": self.points, "flip_pairs": self.flip_pairs, "loss": self.loss}

    @property
    def columns(self) -> list[str]:
        """``<point>_x, <point>_y`` per point."""
        return [f"{point}_{axis}" for point in self.points for axis in ("x", "y")]

    def flip_order(self) -> list[int]:
        """Point index permutation of a mirrored image (pairs swapped, the rest in place)."""
        order = list(range(len(self.points)))
        for a, b in self.flip_pairs:
            i, j = self.points.index(a), self.points.index(b)
            order[i], order[j] = j, i
        return order

    def output_names(self, manifest: Manifest) -> list[str]:
        """``<point>_x, <point>_y`` per point."""
        return self.columns

    def transform_targets(self, targets: Any, warp: Warp) -> Any:
        """Each point moved; under a flip, paired names swapped."""
        import tensorflow as tf

        moved = warp.points(tf.reshape(targets, [-1, 2]))
        moved = tf.cond(warp.flipped, lambda: tf.gather(moved, self.flip_order()), lambda: moved)
        return tf.reshape(moved, [-1])

    def explained_score(self, outputs: Any, reference: Any, unit: Any) -> Any:
        """Minus the mean distance (fractions of the side) the points move from the unoccluded image's."""
        import tensorflow as tf

        shift = tf.reshape(outputs - reference, [tf.shape(outputs)[0], -1, 2])
        return -tf.reduce_mean(tf.norm(shift, axis=-1), axis=1)

    def evaluate(self, outputs: np.ndarray, targets: np.ndarray, names: Sequence[str], sizes: np.ndarray | None = None) -> Evaluation:
        """Mean error in pixels, PCK at 5% and 10% of the image's longer side."""
        if sizes is None:
            sizes = np.ones((len(outputs), 2))
        predicted = to_pixels(np.asarray(outputs, dtype=np.float64), sizes).reshape(len(outputs), -1, 2)
        true = to_pixels(np.asarray(targets, dtype=np.float64), sizes).reshape(len(outputs), -1, 2)
        errors = keypoint_errors(predicted, true)
        report = keypoint_metrics(errors, sizes.max(axis=1), self.points)
        mean_error = errors.mean(axis=1)
        return Evaluation(
            outputs=outputs,
            targets=targets,
            metrics={
                "test_mean_error_px": report["mean_error_px"],
                "test_pck_05": report["pck_05"],
                "test_pck_10": report["pck_10"],
                "test_per_point": report["per_point"],
                "test_count": report["n"],
            },
            losses=mean_error,
            truth=[" ".join(f"{v:.0f}" for v in row.reshape(-1)) for row in true],
            predicted=[" ".join(f"{v:.0f}" for v in row.reshape(-1)) for row in predicted],
            confidence=mean_error / sizes.max(axis=1),  # the sheet's caption: error as a share of the side
        )

    def summary(self, metrics: dict[str, Any]) -> str:
        """``test mean error 2.1 px, PCK@10% 0.95 after 40 epochs``."""
        error, pck5, pck10 = metrics["test_mean_error_px"], metrics["test_pck_05"], metrics["test_pck_10"]
        return f"test mean error {error:.2f} px, PCK@5% {pck5:.2f}, PCK@10% {pck10:.2f} after {metrics['epochs']} epochs"

    def write_reports(self, folder: Path, evaluation: Evaluation, names: Sequence[str], paths: Sequence[Path] = ()) -> None:
        """``points.png``: test images with true points (rings) and predicted ones (dots), the worst first."""
        from dlpipe.data.media.images import load_rgb

        images, captions, good = [], [], []
        for i in sheet_order(-evaluation.confidence) if len(paths) else []:  # confidence holds the error: lower is better
            image = load_rgb(paths[i], 1 << 40)
            size = np.array([image.size], dtype=np.float64)
            true = to_pixels(evaluation.targets[i : i + 1].astype(np.float64), size).reshape(-1, 2)
            predicted = to_pixels(evaluation.outputs[i : i + 1].astype(np.float64), size).reshape(-1, 2)
            images.append(draw_geometry(image, true_points=true, predicted_points=predicted))
            captions.append(f"{Path(paths[i]).name}\nerror {evaluation.confidence[i]:.1%} of side")
            good.append(bool(evaluation.confidence[i] <= 0.10))
        geometry_sheet(images, captions, good, folder / "points.png", "test images: true points as rings, predicted as dots")

    def explained_units(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The first point's x and its value."""
        return np.zeros(len(outputs), dtype=np.int64), outputs[:, 0]

    def answer(self, outputs: np.ndarray, names: Sequence[str], k: int, size: tuple[int, int] | None = None) -> Values:
        """The points in pixels of the input image (fractions when the size is unknown)."""
        mean = outputs.mean(axis=0, keepdims=True).astype(np.float64)
        if size is None:
            return Values(self.columns, rounded(mean[0]), "fraction")
        return Values(self.columns, rounded(to_pixels(mean, np.array([size], dtype=np.float64))[0]), "px")

    def annotate(self, image: Any, answer: Values) -> Any:
        """The predicted points (dots) on the image."""
        return draw_geometry(image, predicted_points=np.asarray(answer.values).reshape(-1, 2), display=annotation_side(image))

    def no_answer(self) -> Values:
        """No points."""
        return Values([], [], "px")

    def csv_columns(self, k: int) -> list[str]:
        """``<point>_x, <point>_y`` per point."""
        return self.columns
