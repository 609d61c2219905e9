"""Geometric augmentation that moves the targets with the image (boxes, points, a steering sign).

Each training item gets its own random affine transform (a flip, a rotation about the centre, a
zoom and a shift, as ``finetune.augment`` allows), drawn from a stateless seed that tf.data hands
out per item and per epoch, so runs repeat exactly. The image is resampled through the transform;
the head moves its raw targets through the same map (:class:`dlpipe.models.heads.base.Warp`).
Where a transform would push a box corner or a point out of the frame, that item keeps its
original image and targets, because a sigmoid output cannot say "outside".
"""

from __future__ import annotations

import math
import os

import tensorflow as tf

from dlpipe.core.config import AugmentConfig
from dlpipe.models.heads.base import Head, Warp

# How far outside [0, 1] a moved point may land and still count as inside (float rounding).
_INSIDE_TOLERANCE = 1e-4


class AffineWarp(Warp):
    """x' = A (x - c) + c + t in fractions of the side, c the centre; records whether every moved point stayed inside."""

    def __init__(self, matrix: tf.Tensor, shift: tf.Tensor, flipped: tf.Tensor) -> None:
        self.matrix, self.shift, self._flipped = matrix, shift, flipped
        self.inside: list[tf.Tensor] = []

    @property
    def flipped(self) -> tf.Tensor:
        """True when the image was mirrored left to right."""
        return self._flipped

    def points(self, xy: tf.Tensor) -> tf.Tensor:
        """Move (P, 2) points; remembers whether they all stay in the frame."""
        moved = tf.linalg.matmul(xy - 0.5, self.matrix, transpose_b=True) + 0.5 + self.shift
        self.inside.append(tf.reduce_all((moved >= -_INSIDE_TOLERANCE) & (moved <= 1 + _INSIDE_TOLERANCE)))
        return moved

    def all_inside(self) -> tf.Tensor:
        """True when every point moved so far stayed in the frame (True when none was moved)."""
        return tf.reduce_all(tf.stack(self.inside)) if self.inside else tf.constant(True)

    def image_transform(self, size: int) -> tf.Tensor:
        """The 8 numbers ImageProjectiveTransform takes: output pixel index -> input pixel index."""
        inverse = tf.linalg.inv(self.matrix)
        centre = tf.constant([0.5, 0.5]) * size
        # u_in = A^-1 (u_out + 0.5 - size (c + t)) + size c - 0.5, pixel centres at index + 0.5
        offset = tf.linalg.matvec(inverse, 0.5 - centre - size * self.shift) + centre - 0.5
        return tf.concat([inverse[0], offset[0:1], inverse[1], offset[1:2], tf.zeros(2)], axis=0)


def random_warp(cfg: AugmentConfig, seed: tf.Tensor) -> AffineWarp:
    """One item's transform from a stateless seed (shape (2,), int64): flip, then rotation and zoom about the centre, then shift."""
    draws = tf.random.stateless_uniform([5], seed=seed, minval=-1.0, maxval=1.0)
    flipped = tf.logical_and(tf.constant(cfg.flip), draws[0] > 0)
    angle = draws[1] * cfg.rotation * 2 * math.pi
    scale = 1.0 + draws[2] * cfg.zoom
    shift = tf.stack([draws[3], draws[4]]) * cfg.translation
    flip = tf.linalg.diag(tf.stack([tf.where(flipped, -1.0, 1.0), 1.0]))
    cos, sin = tf.cos(angle), tf.sin(angle)
    rotation = tf.stack([tf.stack([cos, -sin]), tf.stack([sin, cos])])
    return AffineWarp(scale * tf.linalg.matmul(rotation, flip), shift, flipped)


def warp_image(image: tf.Tensor, warp: AffineWarp) -> tf.Tensor:
    """Resample a uint8 (size, size, 3) image through ``warp`` (bilinear; uncovered pixels black).

    Not 'nearest' or 'reflect' fill: both copy an object that touches the border into the uncovered
    band, a phantom the moved box or points would not cover.
    """
    size = int(image.shape[0])
    warped = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(image, tf.float32)[None],
        transforms=warp.image_transform(size)[None],
        output_shape=tf.constant([size, size]),
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="CONSTANT",
    )[0]
    return tf.cast(tf.clip_by_value(tf.round(warped), 0, 255), tf.uint8)


def augment_items(dataset: tf.data.Dataset, head: Head, cfg: AugmentConfig, seed: int) -> tf.data.Dataset:
    """Unbatched ``(image, raw targets)`` items, each warped with its targets (a fresh transform every epoch)."""
    if not any((cfg.flip, cfg.rotation, cfg.zoom, cfg.translation)):
        return dataset
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
    # A mirror alone needs no resampling and keeps every point in the frame: the cheap path.
    flip_only = not (cfg.rotation or cfg.zoom or cfg.translation)

    def augment(item: tuple[tf.Tensor, tf.Tensor], pair: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        image, targets = item
        warp = random_warp(cfg, pair)
        moved = head.transform_targets(targets, warp)
        if flip_only:
            return tf.cond(warp.flipped, lambda: tf.image.flip_left_right(image), lambda: image), moved
        keep = warp.all_inside()
        image = tf.cond(keep, lambda: warp_image(image, warp), lambda: image)
        return image, tf.where(keep, moved, targets)

    return tf.data.Dataset.zip((dataset, seeds)).map(augment, num_parallel_calls=os.cpu_count() or 1, deterministic=True)


def encode_items(dataset: tf.data.Dataset, head: Head) -> tf.data.Dataset:
    """Unbatched items with the head's encoded targets (what the loss sees); no map for a head that keeps them raw."""
    if type(head).encode is Head.encode:
        return dataset
    return dataset.map(lambda image, targets: (image, head.encode(targets)), num_parallel_calls=os.cpu_count() or 1, deterministic=True)
