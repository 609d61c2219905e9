"""Geometric augmentation moves boxes, points and steering signs exactly as it moves the pixels; target maths is right."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from dlpipe.core.config import AugmentConfig
from dlpipe.models.geometry import augment_items, random_warp, warp_image
from dlpipe.models.heads.bbox import BoxHead
from dlpipe.models.heads.keypoints import KeypointsHead
from dlpipe.models.heads.regions import RegionsHead, cell_targets, derived_boxes
from dlpipe.models.heads.regression import RegressionHead
from dlpipe.reports.localisation import box_iou, keypoint_errors, keypoint_metrics

SIZE = 64
EVERYTHING = AugmentConfig(flip=True, rotation=0.08, zoom=0.15, translation=0.1, contrast=0.0)


def bright_box(image: np.ndarray) -> np.ndarray:
    """The box (fractions of the side) around the pixels brighter than half."""
    ys, xs = np.nonzero(image[..., 0] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / image.shape[1]


def square_image(box_px: tuple[int, int, int, int]) -> np.ndarray:
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    x0, y0, x1, y1 = box_px
    image[y0:y1, x0:x1] = 255
    return image


@pytest.mark.parametrize("seed", [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12)])
def test_a_box_moves_with_its_image(seed):
    cfg = AugmentConfig(flip=True, rotation=0.0, zoom=0.15, translation=0.1, contrast=0.0)
    image = square_image((20, 12, 44, 30))
    box = tf.constant(bright_box(image), dtype=tf.float32)
    warp = random_warp(cfg, tf.constant(seed, dtype=tf.int64))
    moved = BoxHead().transform_targets(box, warp).numpy()
    warped = warp_image(tf.constant(image), warp).numpy()
    # The drawn square and the moved box agree to about a pixel (bilinear edges).
    assert np.abs(bright_box(warped) - moved).max() * SIZE <= 1.5


@pytest.mark.parametrize("seed", [(1, 2), (3, 4), (21, 5), (8, 13)])
def test_points_move_with_their_image_under_rotation_and_swap_under_a_flip(seed):
    head = KeypointsHead(["left", "right"], [["left", "right"]])
    image = np.zeros((SIZE, SIZE, 3), dtype=np.uint8)
    image[18:22, 14:18] = (255, 0, 0)  # "left" dot, red
    image[40:44, 46:50] = (0, 255, 0)  # "right" dot, green
    points = tf.constant([16 / SIZE, 20 / SIZE, 48 / SIZE, 42 / SIZE], dtype=tf.float32)
    warp = random_warp(EVERYTHING, tf.constant(seed, dtype=tf.int64))
    moved = head.transform_targets(points, warp).numpy().reshape(2, 2) * SIZE
    warped = warp_image(tf.constant(image), warp).numpy().astype(float)
    flipped = bool(warp.flipped.numpy())
    for index, channel in enumerate((0, 1)):
        weights = warped[..., channel]
        ys, xs = np.mgrid[0:SIZE, 0:SIZE] + 0.5
        centroid = np.array([(xs * weights).sum(), (ys * weights).sum()]) / weights.sum()
        # Under a flip the red dot is now the "right" point: the names swapped with the mirror.
        name = (1 - index) if flipped else index
        assert np.abs(centroid - moved[name]).max() <= 1.0


def test_a_flip_negates_only_the_declared_columns():
    head = RegressionHead(["steering", "speed"], [0, 0], [1, 1], negate=["steering"], invariant=["speed"])
    assert head.carries == {"flip"}
    flip_only = AugmentConfig(flip=True, rotation=0.0, zoom=0.0, translation=0.0, contrast=0.0)
    for seed in range(8):
        warp = random_warp(flip_only, tf.constant([seed, 0], dtype=tf.int64))
        moved = head.transform_targets(tf.constant([3.0, 20.0]), warp).numpy()
        expected = [-3.0, 20.0] if bool(warp.flipped.numpy()) else [3.0, 20.0]
        assert moved.tolist() == expected
    assert RegressionHead(["steering"], [0], [1]).carries == frozenset()  # no flip rule: flipping refused


def test_an_item_whose_target_would_leave_the_frame_keeps_its_original():
    # A box touching the border leaves the frame under almost any shift: the item must come back unchanged.
    image = square_image((0, 0, 30, 30))
    box = bright_box(image).astype(np.float32)
    cfg = AugmentConfig(flip=False, rotation=0.0, zoom=0.0, translation=0.3, contrast=0.0)
    items = tf.data.Dataset.from_tensors((tf.constant(image), tf.constant(box))).repeat(20)
    for warped, moved in augment_items(items, BoxHead(), cfg, seed=3):
        moved = moved.numpy()
        assert moved.min() >= 0 and moved.max() <= 1
        assert np.abs(bright_box(warped.numpy()) - moved).max() * SIZE <= 1.5


def test_regions_cells_are_the_same_in_numpy_and_tensorflow_and_give_back_the_box():
    head = RegionsHead(grid=4, cover=0.5)
    boxes = np.array([[0.0, 0.0, 0.5, 0.5], [0.30, 0.30, 0.40, 0.40], [0.1, 0.6, 0.99, 0.9]], dtype=np.float32)
    expected = cell_targets(boxes, 4, 0.5)
    for box, cells in zip(boxes, expected, strict=True):
        assert head.encode(tf.constant(box)).numpy().tolist() == cells.tolist()
    # A small box covers no cell by half: its centre's cell is still positive.
    assert expected[1].reshape(4, 4)[1, 1] == 1 and expected[1].sum() == 1
    assert derived_boxes(expected[:1], 4).tolist() == [[0.0, 0.0, 0.5, 0.5]]


def test_iou_and_pck_figures():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]], dtype=float)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], dtype=float)
    assert np.allclose(box_iou(a, b), [1.0, 50 / 150, 0.0])
    assert np.allclose(box_iou(a, b[:, [2, 3, 0, 1]]), [1.0, 50 / 150, 0.0])  # crossed corners are sorted
    errors = keypoint_errors(np.array([[[3.0, 4.0]], [[0.0, 0.0]]]), np.zeros((2, 1, 2)))
    figures = keypoint_metrics(errors, np.array([100.0, 100.0]), ["p"])
    assert figures["mean_error_px"] == 2.5 and figures["pck_05"] == 1.0
    figures = keypoint_metrics(errors, np.array([50.0, 50.0]), ["p"])
    assert figures["pck_05"] == 0.5 and figures["pck_10"] == 1.0


def test_the_flip_only_path_mirrors_image_and_box_together():
    image = square_image((4, 10, 20, 30))
    box = bright_box(image).astype(np.float32)
    cfg = AugmentConfig(flip=True, rotation=0.0, zoom=0.0, translation=0.0, contrast=0.0)
    items = tf.data.Dataset.from_tensors((tf.constant(image), tf.constant(box))).repeat(16)
    boxes = [(bright_box(warped.numpy()), moved.numpy()) for warped, moved in augment_items(items, BoxHead(), cfg, seed=5)]
    assert all(np.abs(drawn - moved).max() * SIZE <= 1e-3 for drawn, moved in boxes)
    assert {round(float(moved[0]), 4) for _, moved in boxes} == {round(4 / SIZE, 4), round(1 - 20 / SIZE, 4)}  # both sides seen
