"""Occlusion sensitivity (Zeiler & Fergus, 2013): cover a patch, watch the class probability drop.

Every patch position of an image gives one occluded copy. The copies are built inside the
graph from one stack of patch masks (``image + mask * (fill - image)``) and go through the
model in batches sized to a memory cap, so an image costs ``ceil(copies / batch)`` forward
calls instead of one call per patch position.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import tensorflow as tf

# A probe maps (image, fill, masks, target unit, reference outputs) to a score for each masked copy:
# the target class's probability, or for another task how much of the unoccluded answer survives.
Probe = Callable[..., np.ndarray]
# How a probe scores the model's outputs for the copies against the unoccluded image's outputs.
Score = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]

_BYTES_PER_VALUE = 4  # float32


def patch_starts(size: int, patch: int, stride: int) -> list[int]:
    """Top-left offsets of patches along one side; the last patch is flush with the edge.

    Raises:
        ValueError: ``patch`` is larger than ``size`` or ``stride`` is below 1.
    """
    if not 1 <= patch <= size or stride < 1:
        raise ValueError(f"need 1 <= patch <= size and stride >= 1, got patch {patch}, size {size}, stride {stride}")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)  # so the last pixels are covered too
    return starts


def patch_masks(size: int, patch: int, stride: int) -> np.ndarray:
    """One float32 mask per patch position, (K, size, size, 1), 1 inside the patch; row-major order."""
    starts = patch_starts(size, patch, stride)
    masks = np.zeros((len(starts) ** 2, size, size, 1), dtype=np.float32)
    for k, (y, x) in enumerate((y, x) for y in starts for x in starts):
        masks[k, y : y + patch, x : x + patch] = 1.0
    return masks


def batch_for(size: int, memory_mb: int) -> int:
    """Occluded copies per forward call so that one batch of copies stays under ``memory_mb``."""
    return max(1, memory_mb * 2**20 // (size * size * 3 * _BYTES_PER_VALUE))


def unit_value(outputs: tf.Tensor, reference: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """The default score: the target unit's output (a class probability), whatever the unoccluded image gave."""
    return outputs[:, target]


def make_probe(model, size: int, batch: int, score: Score = unit_value) -> Probe:
    """A compiled probe for ``model`` (input: RGB in [0, 255] of side ``size``).

    The masks are processed ``batch`` at a time; the returned array has one score per mask, from
    ``score(outputs, reference, target)`` (a task head's, see ``Head.explained_score``).
    """

    # A fixed signature: one trace serves every image, target and the smaller last chunk.
    @tf.function(
        input_signature=[
            tf.TensorSpec((size, size, 3), tf.float32),
            tf.TensorSpec((size, size, 3), tf.float32),
            tf.TensorSpec((None, size, size, 1), tf.float32),
            tf.TensorSpec((), tf.int32),
            tf.TensorSpec((None,), tf.float32),
        ]
    )
    def chunk(image: tf.Tensor, fill: tf.Tensor, masks: tf.Tensor, target: tf.Tensor, reference: tf.Tensor) -> tf.Tensor:
        copies = image + masks * (fill - image)  # the fill inside the patch, the image elsewhere
        return score(model(copies, training=False), reference, target)

    def probe(image: np.ndarray, fill: np.ndarray, masks: np.ndarray, target: int, reference: np.ndarray | None = None) -> np.ndarray:
        image_t, fill_t, target_t = tf.constant(image, tf.float32), tf.constant(fill, tf.float32), tf.constant(target, tf.int32)
        reference_t = tf.constant(np.zeros(1) if reference is None else reference, tf.float32)
        parts = [chunk(image_t, fill_t, masks[i : i + batch], target_t, reference_t).numpy() for i in range(0, len(masks), batch)]
        return np.concatenate(parts).astype(np.float32)

    return probe


def occlusion_map(
    probe: Probe, image: np.ndarray, fill: np.ndarray, target: int, masks: np.ndarray, base_probability: float,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """The drop in the target's probability (the probe's score) when each pixel is covered, (size, size) float32.

    Each pixel gets the mean drop over the patches that cover it (the patch-grid map upsampled to
    the image); positive where covering the pixel lowers the score. ``reference`` is the unoccluded
    image's outputs, for scores that compare against them.
    """
    drops = base_probability - probe(image, fill, masks, target, reference)
    area = masks[..., 0]
    total = np.tensordot(drops, area, axes=1)
    return (total / np.maximum(area.sum(axis=0), 1.0)).astype(np.float32)


def mean_fill(size: int, colour: np.ndarray) -> np.ndarray:
    """A fill image of one colour (e.g. the dataset's mean RGB)."""
    return np.broadcast_to(np.asarray(colour, dtype=np.float32), (size, size, 3)).copy()


def blurred_fill(image: np.ndarray, radius: float) -> np.ndarray:
    """A Gaussian-blurred copy of ``image``: covering a patch removes its detail but keeps its colours."""
    from PIL import Image, ImageFilter

    pixels = Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))
    return np.asarray(pixels.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)
