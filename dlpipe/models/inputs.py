"""tf.data input pipelines over manifest rows: images decoded from files, or features held in memory.

Images are decoded in parallel by TensorFlow when the manifest says they need no
conversion (plain RGB JPEG/PNG/GIF/BMP); anything ingest had to normalise (EXIF
orientation, CMYK, transparency, 16-bit grey, other formats) goes through the
same Pillow code ingest validated with. Every image is resized with antialiasing
to a square network input and kept as RGB in [0, 255] (float32, or uint8 for
consumers that cast inside their own graph): each model does its own
preprocessing inside (``dlpipe.models.layers.Preprocess``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from dlpipe.core.config import FinetuneConfig
from dlpipe.data.manifest import Manifest
from dlpipe.data.media.images import inspect_image, load_rgb
from dlpipe.models.heads.base import Head
from dlpipe.models.training import Splits

# Formats tf.io.decode_image reads exactly as Pillow does once no conversion is needed.
_TF_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP"})
# Large enough that the pixel guard never fires on files ingest accepted.
_MAX_PIXELS = 1 << 40
# Images decoded at once: one per core keeps every core busy without oversubscribing the model's threads.
_DECODE_CALLS = os.cpu_count() or 1
# Batches decoded ahead of the consumer: enough to hide decode latency behind one forward pass.
_PREFETCH_BATCHES = 2


def needs_pillow(row: dict[str, str]) -> bool:
    """True when a manifest row must be decoded by Pillow (ingest recorded a conversion)."""
    return bool(row.get("conversion")) or row.get("format", "") not in _TF_FORMATS


def decoded_bytes(count: int, image_size: int) -> int:
    """Memory needed to cache ``count`` decoded uint8 images of the given size."""
    return count * image_size * image_size * 3


def image_splits(manifest: Manifest, head: Head, cfg: FinetuneConfig, seed: int) -> Splits:
    """The train/val/test pipelines of an image manifest for ``head``; train shuffled from ``seed``.

    Decoded images are cached in memory when the whole manifest fits ``cfg.cache_max_mb``. For a
    head whose targets move with the image, the training split is augmented here, image and targets
    together (:mod:`dlpipe.models.geometry`), and every split carries the head's encoded targets.
    """
    from dlpipe.models.geometry import augment_items, encode_items

    names = head.output_names(manifest)
    size = cfg.backbone.image_size
    cache = decoded_bytes(len(manifest.rows), size) <= cfg.cache_max_mb * 2**20

    def pipeline(split: str) -> tuple[tf.data.Dataset, np.ndarray]:
        rows = [manifest.rows[i] for i in manifest.split(split)]
        targets = head.targets(rows, names)
        prepare = None
        if head.moves_targets:

            def prepare(items: tf.data.Dataset) -> tf.data.Dataset:
                if split == "train":
                    items = augment_items(items, head, cfg.augment, seed)
                return encode_items(items, head)

        dataset = image_dataset(
            [manifest.resolve(row["path"]) for row in rows],
            [needs_pillow(row) for row in rows],
            size,
            cfg.batch_size,
            targets,
            shuffle_seed=seed if split == "train" else None,
            cache=cache,
            prepare=prepare,
        )
        return dataset, targets

    (train, train_targets), (val, val_targets), (test, test_targets) = (pipeline(split) for split in ("train", "val", "test"))
    return Splits(train, val, test, train_targets, val_targets, test_targets)


def image_dataset(
    paths: Sequence[Path],
    pillow: Sequence[bool],
    image_size: int,
    batch_size: int,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    shuffle_seed: int | None = None,
    cache: bool = False,
    dtype: tf.DType = tf.float32,
    prepare: Callable[[tf.data.Dataset], tf.data.Dataset] | None = None,
) -> tf.data.Dataset:
    """Batches of ``(images, labels)`` (or just images when ``labels`` is None).

    Args:
        paths: image files, in the order batches should follow (unless shuffled).
        pillow: per path, whether to decode with Pillow (see :func:`needs_pillow`).
        image_size: side of the square output in pixels.
        batch_size: images per batch; the last batch may be smaller.
        labels: targets aligned with ``paths``: class indices, or a float array (n, units).
        shuffle_seed: shuffle every epoch from this seed (training); None keeps the order.
        cache: keep decoded, resized images in memory after the first pass.
        dtype: ``tf.float32``, or ``tf.uint8`` to skip the cast when the consumer casts in its own
            graph (a quarter of the bytes through the pipeline, one map fewer).
        prepare: applied to the unbatched uint8 ``(image, label)`` items after caching and shuffling
            (augmentation that moves targets, target encoding).
    """
    columns = (tf.constant([str(p) for p in paths]), tf.constant(list(pillow), dtype=tf.bool))
    if labels is not None:
        values = np.asarray(labels)
        columns = columns + (tf.constant(values, dtype=tf.int32 if values.dtype.kind in "iu" else tf.float32),)
    dataset = tf.data.Dataset.from_tensor_slices(columns)

    def load(path: tf.Tensor, use_pillow: tf.Tensor, *label: tf.Tensor):
        image = _load_resized(path, use_pillow, image_size)
        return (image, *label) if label else image

    dataset = dataset.map(load, num_parallel_calls=_DECODE_CALLS, deterministic=True)
    if cache:
        dataset = dataset.cache()
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(paths), seed=shuffle_seed, reshuffle_each_iteration=True)
    if prepare is not None:
        dataset = prepare(dataset)

    dataset = dataset.batch(batch_size)
    if dtype != tf.uint8:

        def cast(image: tf.Tensor, *label: tf.Tensor):
            image = tf.cast(image, dtype)
            return (image, *label) if label else image

        dataset = dataset.map(cast, num_parallel_calls=_DECODE_CALLS)
    options = tf.data.Options()
    # Fixed parallelism instead of AUTOTUNE: on 2 cores the autotuner's background work stalled the
    # embed loop (some runs took twice as long, waiting on the last batch) and competed with the model.
    options.autotune.enabled = False
    return dataset.prefetch(_PREFETCH_BATCHES).with_options(options)


def _load_resized(path: tf.Tensor, use_pillow: tf.Tensor, image_size: int) -> tf.Tensor:
    """Decode and resize one image to uint8 (size, size, 3).

    Rounded to uint8 so a cache holds a quarter of the bytes; models see float32.
    """
    image = _decode(path, use_pillow)
    side = tf.shape(image)[:2]
    size = (image_size, image_size)
    # Shrinking both sides: area averaging (a box filter) is antialiased and a sixth of the cost of
    # antialiased bilinear. Mixed: antialiased bilinear. Enlarging: plain bilinear, aliasing cannot occur.
    image = tf.cond(
        tf.reduce_all(side >= image_size),
        lambda: tf.image.resize(image, size, method="area"),
        lambda: tf.cond(
            tf.reduce_any(side > image_size),
            lambda: tf.image.resize(image, size, method="bilinear", antialias=True),
            lambda: tf.image.resize(image, size, method="bilinear"),
        ),
    )
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _decode(path: tf.Tensor, use_pillow: tf.Tensor) -> tf.Tensor:
    image = tf.cond(
        use_pillow,
        lambda: tf.numpy_function(_pillow_decode, [path], tf.uint8, stateful=False),
        lambda: tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False),
    )
    image.set_shape([None, None, 3])
    return image


def _pillow_decode(path: bytes | np.ndarray) -> np.ndarray:
    # Traced in tf.data the path arrives as bytes; called eagerly, as a 0-d numpy array of bytes.
    raw = path.item() if isinstance(path, np.ndarray) else path
    return np.asarray(load_rgb(Path(raw.decode("utf-8")), _MAX_PIXELS), dtype=np.uint8)


def load_image_array(path: Path, image_size: int, min_side: int = 1, max_pixels: int = _MAX_PIXELS) -> np.ndarray:
    """One image file as float32 (size, size, 3) in [0, 255], decoded and resized exactly as in training.

    Args:
        path: the image file.
        image_size: the model's input side.
        min_side, max_pixels: ingest's checks (``ingest.image``), made before any pixel is decoded.

    Raises:
        dlpipe.data.media.Rejected: the file is not a decodable image, or fails a check.
    """
    info = inspect_image(Path(path).read_bytes(), min_side=min_side, max_pixels=max_pixels)
    use_pillow = needs_pillow({"conversion": info.conversion, "format": info.format})
    image = _load_resized(tf.constant(str(path)), tf.constant(use_pillow), image_size)
    return image.numpy().astype(np.float32)


def array_splits(features: np.ndarray, targets: np.ndarray, manifest: Manifest, batch_size: int, seed: int) -> Splits:
    """The train/val/test pipelines over in-memory features (a text model's token ids), row i being manifest row i.

    Train is shuffled every epoch from ``seed``; val and test keep manifest order.
    """

    def split(name: str, shuffle: bool) -> tuple[tf.data.Dataset, np.ndarray]:
        rows = np.array(manifest.split(name), dtype=np.int64)
        dataset = tf.data.Dataset.from_tensor_slices((features[rows], targets[rows]))
        if shuffle:
            dataset = dataset.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
        return dataset.batch(batch_size).prefetch(_PREFETCH_BATCHES), targets[rows]

    (train, train_targets), (val, val_targets), (test, test_targets) = split("train", True), split("val", False), split("test", False)
    return Splits(train, val, test, train_targets, val_targets, test_targets)
