"""Phase (a) of transfer learning with the frozen base's features computed once, not every epoch.

While a pretrained base is frozen (BatchNorm in inference mode), it is a fixed function of its
input: the pooled features of an image are the same in every epoch, and computing them is nearly
all of an epoch's work (the head is one small layer). So in phase (a):

- the validation split's features are computed once; each epoch's ``val_loss`` and metrics come
  from the head's layers alone on those features (:class:`CachedValidation`), the same numbers
  Keras' own validation would compute, without a pass through the base;
- when the network has no augmentation layer (every ``finetune.augment`` value off), the training
  split's features are computed once too, and the head's layers train on them directly.

Features are kept in memory only within ``finetune.cache_max_mb`` (float32, the pooled width per
item): the validation split's, then the training split's with them; past the budget a split is
passed through the base every epoch as before.

The head's layers are shared with the whole network, so what they learn is the network's. Phase (b)
unfreezes the top of the base and trains the whole network as before. This applies to heads that
read the pooled features only; a spatial head reads the base's feature map, which is larger by the
map's area, and trains the usual way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dlpipe.models.heads.base import Head
from dlpipe.models.network import AUGMENTATION_LAYER, EMBEDDING_LAYER

# Op-level seed of the per-epoch shuffle of cached training features; with the global seed that
# finetune sets from base.seed it makes the order reproducible.
_SHUFFLE_SEED = 7


@dataclass(frozen=True)
class FrozenFeatures:
    """The head's layers as a model of their own, and the splits' features from the frozen base."""

    head_model: keras.Model  # pooled features -> the network's output, sharing the network's layers
    val_features: np.ndarray
    val_targets: np.ndarray
    train_features: np.ndarray | None  # None: the network augments its input, so training runs through the base
    train_targets: np.ndarray | None

    def training_batches(self, batch_size: int) -> tf.data.Dataset:
        """The cached training features and targets, reshuffled every epoch."""
        assert self.train_features is not None and self.train_targets is not None
        items = tf.data.Dataset.from_tensor_slices((self.train_features, self.train_targets))
        return items.shuffle(len(self.train_features), seed=_SHUFFLE_SEED, reshuffle_each_iteration=True).batch(batch_size)


def applies(model: keras.Model, head: Head, replicas: int) -> bool:
    """True when phase (a) can run on cached features: a pooled-features head on one replica."""
    return not head.spatial and not head.moves_targets and replicas == 1 and _head_layers(model) is not None


def compute(model: keras.Model, head: Head, splits: Any, max_bytes: int) -> FrozenFeatures | None:
    """Pass the splits through the frozen part of ``model`` once; build the head's own model.

    Call it only where :func:`applies` holds and the base is frozen.

    Args:
        model: the network from ``build_network``.
        head: its task head (loss and metrics).
        splits: the ``Splits`` of ``models.training`` (their batches and targets).
        max_bytes: the most the cached features may take; None is returned when not even the validation split's fit.
    """
    embedding = model.get_layer(EMBEDDING_LAYER).output
    item_bytes = 4 * int(embedding.shape[-1])
    val_count = len(splits.val_targets)
    if val_count * item_bytes > max_bytes:
        return None
    trunk = keras.Model(model.inputs, embedding)
    head_model = _head_model(model)
    head_model.compile(**head.compile_arguments())
    val_features, val_targets = _features(trunk, splits.val)
    augmented = any(layer.name == AUGMENTATION_LAYER for layer in model.layers)
    if augmented or (splits.train_count + val_count) * item_bytes > max_bytes:
        return FrozenFeatures(head_model, val_features, val_targets, None, None)
    train_features, train_targets = _features(trunk, splits.train)
    return FrozenFeatures(head_model, val_features, val_targets, train_features, train_targets)


class CachedValidation(keras.callbacks.Callback):
    """Fills each epoch's ``val_*`` logs from the head's layers on cached validation features.

    It must come first among the callbacks: Keras hands every callback the same logs, so early
    stopping and the CSV log after it see the validation figures.
    """

    def __init__(self, features: FrozenFeatures, batch_size: int) -> None:
        super().__init__()
        self.features, self.batch_size = features, batch_size

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        figures = self.features.head_model.evaluate(
            self.features.val_features, self.features.val_targets, batch_size=self.batch_size, verbose=0, return_dict=True
        )
        if logs is not None:
            logs.update({f"val_{name}": float(value) for name, value in figures.items()})


def _features(trunk: keras.Model, batches: Any) -> tuple[np.ndarray, np.ndarray]:
    """The pooled features and targets of every batch of a split, in the split's order."""
    features, targets = [], []
    forward = tf.function(lambda images: trunk(images, training=False))
    for images, batch_targets in batches:
        features.append(forward(images).numpy())
        targets.append(np.asarray(batch_targets))
    return np.concatenate(features), np.concatenate(targets)


def _head_layers(model: keras.Model) -> list[keras.layers.Layer] | None:
    """The layers after the pooled embedding (dropout, the output layer), or None for a network without one.

    ``build_network`` chains them one after the other for every head that is not spatial.
    """
    names = [layer.name for layer in model.layers]
    if EMBEDDING_LAYER not in names:
        return None
    return model.layers[names.index(EMBEDDING_LAYER) + 1 :] or None


def _head_model(model: keras.Model) -> keras.Model:
    layers = _head_layers(model)
    assert layers is not None
    inputs = keras.Input(model.get_layer(EMBEDDING_LAYER).output.shape[1:], name="pooled_features")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name="head")
