"""Phase (a) on the frozen base's cached features: the same validation figures, the same network learning.

A small MobileNet (alpha 0.25, 32 px, no weights needed) stands in for a pretrained base: the cache
depends only on the base being frozen, which the tests set themselves.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from dlpipe.core.config import load_project
from dlpipe.models import frozen_features
from dlpipe.models.frozen_features import CachedValidation
from dlpipe.models.heads.registry import head_class
from dlpipe.models.network import build_network
from dlpipe.models.training import Splits

REPO = Path(__file__).resolve().parents[2]
MOBILENET = ("finetune.backbone.name=mobilenet", "finetune.backbone.alpha=0.25", "finetune.backbone.image_size=32")
NO_AUGMENTATION = ("finetune.augment.flip=false", "finetune.augment.rotation=0")


def network(*overrides: str) -> tuple[keras.Model, object]:
    cfg = load_project(REPO / "params.yaml", [*MOBILENET, *overrides]).params.finetune
    head = head_class("classification")()
    model, base = build_network(cfg, head, 3, seed=0)
    base.trainable = False
    return model, head


def batches(count: int, seed: int) -> tf.data.Dataset:
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (count, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 3, count).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)


def splits() -> Splits:
    """24 training and 20 validation items (the targets are what the tests count, not what they train on)."""
    return Splits(batches(24, 1), batches(20, 2), batches(4, 3), np.zeros(24), np.zeros(20), np.zeros(4))


def test_cached_validation_reports_what_keras_validation_computes() -> None:
    model, head = network()
    frozen = frozen_features.compute(model, head, splits(), 2**20)
    model.compile(**head.compile_arguments())
    expected = model.evaluate(batches(20, 2), verbose=0, return_dict=True)
    logs: dict[str, float] = {"loss": 1.0}
    CachedValidation(frozen, 8).on_epoch_end(0, logs)
    assert logs["val_loss"] == pytest.approx(expected["loss"], rel=1e-5)
    assert logs["val_accuracy"] == pytest.approx(expected["accuracy"], abs=1e-6)
    assert logs["loss"] == 1.0  # the training figures are left as they were


def test_an_augmenting_network_trains_through_the_base_and_caches_only_validation() -> None:
    model, head = network("finetune.augment.flip=true")
    frozen = frozen_features.compute(model, head, splits(), 2**20)
    assert frozen.train_features is None and frozen.val_features.shape == (20, 256)


def test_the_head_trained_on_cached_features_is_the_networks_head() -> None:
    model, head = network(*NO_AUGMENTATION)
    frozen = frozen_features.compute(model, head, splits(), 2**20)
    assert frozen.train_features is not None and frozen.train_features.shape == (24, 256)
    before = model.predict(batches(20, 2), verbose=0)
    frozen.head_model.compile(optimizer=keras.optimizers.Adam(0.05), **head.compile_arguments())
    frozen.head_model.fit(frozen.training_batches(8), epochs=3, shuffle=False, verbose=0)
    after = model.predict(batches(20, 2), verbose=0)
    # Training moved the whole network's answers, and to exactly what the head computes from the cache.
    assert np.abs(after - before).max() > 1e-3
    np.testing.assert_allclose(after, frozen.head_model.predict(frozen.val_features, verbose=0), rtol=1e-4, atol=1e-6)


def test_spatial_heads_and_several_replicas_train_the_usual_way() -> None:
    model, head = network()
    assert frozen_features.applies(model, head, replicas=1)
    assert not frozen_features.applies(model, head, replicas=2)
    assert not frozen_features.applies(model, head_class("regression")(), replicas=1)


def test_features_past_the_budget_are_not_cached() -> None:
    model, head = network(*NO_AUGMENTATION)
    # 256 float32 values per item: room for the 20 validation items but not for the 24 training items too.
    frozen = frozen_features.compute(model, head, splits(), 30 * 256 * 4)
    assert frozen is not None and frozen.val_features.shape == (20, 256) and frozen.train_features is None
    assert frozen_features.compute(model, head, splits(), 10 * 256 * 4) is None
