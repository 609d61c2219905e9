"""The pretrained path with real ImageNet weights: MobileNet v1 alpha 0.25 resolved as `weights: imagenet`.

The weights file is copied into a temporary KERAS_HOME, exactly where keras.applications
caches it on a user's machine after the first download; skipped only when the shared
weights folder is absent.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dlpipe.stages import embed, finetune, ingest
from tests.conftest import MOBILENET_FILE, Workspace

MOBILENET = (
    "finetune.backbone.name=mobilenet",
    "finetune.backbone.weights=imagenet",
    "finetune.backbone.alpha=0.25",
    "finetune.backbone.image_size=224",
)


@pytest.fixture
def imagenet_project(workspace: Workspace, shared_weights_dir: Path, keras_home: Path) -> Workspace:
    """Sample shapes (4 classes × 30) and a Keras cache that holds the MobileNet weights."""
    from dlpipe.core.config import SampleImagesConfig
    from dlpipe.data.sample import generate_images

    (keras_home / "models").mkdir()
    shutil.copy(shared_weights_dir / MOBILENET_FILE, keras_home / "models" / MOBILENET_FILE)
    generate_images(workspace.root / "shapes", SampleImagesConfig(per_class=30, size=96, jpeg_fraction=0.5), seed=5)
    workspace.add_dataset("shapes", "image", "shapes")
    ingest.run(workspace.load(), "shapes")
    return workspace


def test_frozen_imagenet_base_with_a_new_head_classifies_shapes(imagenet_project: Workspace) -> None:
    result = finetune.run(
        imagenet_project.load(*MOBILENET, "finetune.head_epochs=15", "finetune.head_lr=0.01", "finetune.batch_size=16"),
        "shapes",
    )
    sidecar = json.loads((result.model_dir / "model.json").read_text())
    assert (sidecar["preprocessing"], sidecar["embedding_dim"]) == ("tf", 256)
    # Measured 1.0 (20 of 20 test images); chance is 0.25.
    assert result.metrics["test_accuracy"] >= 0.85


def test_imagenet_embeddings_separate_the_classes(imagenet_project: Workspace) -> None:
    overrides = (
        "embed.source=backbone",
        "embed.backbone.name=mobilenet",
        "embed.backbone.weights=imagenet",
        "embed.backbone.alpha=0.25",
        "embed.backbone.image_size=224",
    )
    result = embed.run(imagenet_project.load(*overrides), "shapes")
    vectors = np.load(result.out_dir / "embeddings.npy")
    labels = np.array([line.split(",")[1] for line in
                       (imagenet_project.root / "data/shapes/ingest/manifest.csv").read_text().splitlines()[1:]])
    assert vectors.shape == (120, 256)
    # Leave-one-out nearest neighbour by cosine similarity (vectors are L2-normalised).
    similarity = vectors @ vectors.T
    np.fill_diagonal(similarity, -np.inf)
    accuracy = float((labels[similarity.argmax(axis=1)] == labels).mean())
    # Measured 0.958 (115 of 120); chance is 0.25.
    assert accuracy >= 0.85


def test_without_augmentation_the_head_trains_on_features_computed_once(imagenet_project: Workspace) -> None:
    no_augmentation = ("finetune.augment.flip=false", "finetune.augment.rotation=0")
    result = finetune.run(
        imagenet_project.load(*MOBILENET, *no_augmentation, "finetune.head_epochs=15", "finetune.head_lr=0.01", "finetune.batch_size=16"),
        "shapes",
    )
    log = (result.model_dir / "training_log.csv").read_text().splitlines()
    assert log[0] == "epoch,loss,accuracy,val_loss,val_accuracy" and len(log) == 16
    assert result.metrics["test_accuracy"] >= 0.85
