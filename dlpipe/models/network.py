"""The fine-tuning network: augmentation, preprocessing, a backbone, the task head's output layer.

    image [0, 255] -> augmentation (training only) -> Preprocess -> backbone
        -> GlobalAveragePooling2D "embedding" -> Dropout -> head output "predictions"

A spatial head (regression, boxes, regions, points: answers about *where*) also reads the
backbone's feature map, through a 1x1 convolution and a flatten that keep each position apart:

        backbone -> GlobalAveragePooling2D "embedding" ----------------\
                 -> Conv2D 1x1 "spatial_features" -> Flatten -> Concatenate -> Dropout -> "predictions"

The pooled layer is the embedding the embed, cluster and search stages use, whatever the
task. The model holds its own preprocessing, so ``model.keras`` takes raw RGB pixels.
"""

from __future__ import annotations

import keras

from dlpipe.core.config import AugmentConfig, BackboneConfig, FinetuneConfig
from dlpipe.models.backbones import build_base, get_spec
from dlpipe.models.heads.base import Head
from dlpipe.models.layers import Preprocess

EMBEDDING_LAYER = "embedding"
AUGMENTATION_LAYER = "augmentation"
# Channels per feature-map position that a spatial head reads (a 1x1 convolution squeezes the backbone's to these).
SPATIAL_CHANNELS = 32


def augmentation(cfg: AugmentConfig, seed: int, geometric: bool = True) -> keras.Sequential | None:
    """Random flip, rotation, zoom, translation and contrast (active only while training).

    ``geometric=False`` leaves out all but contrast: a head whose targets move with the image is
    augmented in its input pipeline instead (:mod:`dlpipe.models.geometry`).
    """
    layers = []
    if cfg.flip and geometric:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation and geometric:
        layers.append(keras.layers.RandomRotation(cfg.rotation, seed=seed + 1))
    if cfg.zoom and geometric:
        layers.append(keras.layers.RandomZoom(cfg.zoom, seed=seed + 2))
    if cfg.translation and geometric:
        layers.append(keras.layers.RandomTranslation(cfg.translation, cfg.translation, seed=seed + 3))
    if cfg.contrast:
        layers.append(keras.layers.RandomContrast(cfg.contrast, seed=seed + 4))
    return keras.Sequential(layers, name=AUGMENTATION_LAYER) if layers else None


def build_network(cfg: FinetuneConfig, head: Head, n_outputs: int, seed: int) -> tuple[keras.Model, keras.Model]:
    """Return the network and its backbone (the nested base model, for freezing and Grad-CAM)."""
    spec = get_spec(cfg.backbone.name, key="finetune.backbone.name")
    size = cfg.backbone.image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = inputs
    augment = augmentation(cfg.augment, seed, geometric=not head.moves_targets)
    if augment is not None:
        x = augment(x)
    x = Preprocess(spec.preprocessing, name="preprocess")(x)
    base = build_base(cfg.backbone, key="finetune.backbone")
    # A pretrained base keeps BatchNorm in inference mode, also once unfrozen (Keras' transfer-learning guide);
    # a base trained from scratch needs BatchNorm to learn its statistics.
    pretrained = cfg.backbone.weights != "none"
    features = base(x, training=False) if pretrained else base(x)
    x = keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(features)
    if head.spatial:
        where = keras.layers.Conv2D(SPATIAL_CHANNELS, 1, activation="relu", name="spatial_features")(features)
        where = keras.layers.Flatten(name="spatial_flatten")(where)
        x = keras.layers.Concatenate(name="what_and_where")([x, where])
    x = keras.layers.Dropout(cfg.dropout, seed=seed + 5)(x)
    outputs = head.output_layer(n_outputs, seed)(x)
    return keras.Model(inputs, outputs, name=f"{cfg.backbone.name}_{head.name}"), base


def embedding_model(network: keras.Model) -> keras.Model:
    """The trained network cut at its pooled penultimate layer."""
    return keras.Model(network.inputs, network.get_layer(EMBEDDING_LAYER).output, name="embedding_model")


def backbone_embedding_model(cfg: BackboneConfig, key: str) -> keras.Model:
    """A registry backbone used as a feature extractor, no training: preprocessing, base, pooling."""
    spec = get_spec(cfg.name, key=f"{key}.name")
    inputs = keras.Input((cfg.image_size, cfg.image_size, 3), name="image")
    x = Preprocess(spec.preprocessing, name="preprocess")(inputs)
    x = build_base(cfg, key=key)(x, training=False)
    outputs = keras.layers.GlobalAveragePooling2D(name=EMBEDDING_LAYER)(x)
    return keras.Model(inputs, outputs, name=f"{cfg.name}_features")
