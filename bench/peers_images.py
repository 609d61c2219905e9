"""The image halves of bench_peers.py: dlpipe finetune and embed against the Keras scripts a user would write.

Each side runs in its own fresh process (``python bench/peers_images.py <side> <params.yaml> <dataset>``)
and prints one JSON line, so neither inherits the other's compiled graphs, caches or threads.

**The plain finetune script** follows Keras' transfer-learning guide: ``image_dataset_from_directory`` over
folders holding exactly dlpipe's train / val / test split (symlinks), batched, ``.cache().prefetch()`` as the
guide does; the augmentation layers in the model; rescaling to [-1, 1]; the frozen base called with
``training=False``; global average pooling, dropout, a softmax layer; ``fit`` with validation for the same
epochs at the same learning rate and batch size; then ``predict`` on the test folder.

**The plain embed script** is ``model.predict`` over ``image_dataset_from_directory`` with the embedding model
of dlpipe's trained network (the same weights), the way a user would embed a folder with a saved model.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def split_folders(manifest: Any, root: Path) -> Path:
    """``root/<split>/<label>/<file>`` symlinks to the manifest's images: dlpipe's split, laid out for Keras."""
    for row in manifest.rows:
        target = root / row["split"] / row["label"] / Path(row["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            target.symlink_to(manifest.resolve(row["path"]))
    return root


def plain_finetune(folders: Path, cfg: Any, seed: int) -> dict[str, float]:
    """The hand-written transfer-learning script on ``folders``; train images/s and test accuracy."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    size = (cfg.backbone.image_size, cfg.backbone.image_size)

    def folder(split: str, shuffle: bool) -> tf.data.Dataset:
        dataset = keras.utils.image_dataset_from_directory(
            folders / split, image_size=size, batch_size=cfg.batch_size, shuffle=shuffle, seed=seed, verbose=False
        )
        return dataset.cache().prefetch(tf.data.AUTOTUNE)

    train, val, test = folder("train", True), folder("val", False), folder("test", False)
    classes = len(list((folders / "train").iterdir()))  # one folder per class (cache() drops the dataset's class_names)
    layers = []
    if cfg.augment.flip:
        layers.append(keras.layers.RandomFlip("horizontal"))
    if cfg.augment.rotation:
        layers.append(keras.layers.RandomRotation(cfg.augment.rotation))
    base = keras.applications.MobileNet(input_shape=(*size, 3), alpha=cfg.backbone.alpha, include_top=False, weights=cfg.backbone.weights)
    base.trainable = False
    inputs = keras.Input((*size, 3))
    x = keras.Sequential(layers)(inputs) if layers else inputs
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(cfg.dropout)(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(cfg.head_lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    train_count = sum(1 for _ in (folders / "train").rglob("*") if _.is_file() or _.is_symlink())
    started = time.perf_counter()
    model.fit(train, validation_data=val, epochs=cfg.head_epochs, verbose=0)
    seconds = time.perf_counter() - started
    labels = np.concatenate([batch_labels.numpy() for _, batch_labels in test])
    accuracy = float((model.predict(test, verbose=0).argmax(axis=1) == labels).mean())
    return {"train_seconds": seconds, "train_images_per_second": train_count * cfg.head_epochs / seconds, "test_accuracy": accuracy}


def plain_embed(folders: Path, model_path: Path, image_size: int, batch_size: int) -> dict[str, float]:
    """``model.predict`` over ``image_dataset_from_directory`` of every split, with the trained network cut at its embedding.

    Timed from its second call: the first, on one batch, traces the model, which dlpipe also does before its clock starts.
    """
    import keras

    from dlpipe.models.network import embedding_model
    from dlpipe.models.store import load_trained_model

    model = embedding_model(load_trained_model(model_path).model)
    dataset = keras.utils.image_dataset_from_directory(
        folders, image_size=(image_size, image_size), batch_size=batch_size, shuffle=False, labels=None, verbose=False
    )
    count = sum(1 for _ in folders.rglob("*.*"))
    model.predict(dataset.take(1), verbose=0)  # traced here, as dlpipe traces before its clock starts
    started = time.perf_counter()
    vectors = model.predict(dataset, verbose=0)
    seconds = time.perf_counter() - started
    return {"predict_seconds": seconds, "images_per_second": count / seconds, "rows": int(vectors.shape[0])}


def main() -> None:
    side, params_path, dataset = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dlpipe.core.config import load_project
    from dlpipe.data.manifest import load_image_manifest

    project = load_project(params_path).for_dataset(dataset)
    manifest = load_image_manifest(project, dataset)
    folders = split_folders(manifest, params_path.parent / "split" / dataset)
    cfg = project.params.finetune
    if side == "finetune":
        result = plain_finetune(folders, cfg, project.params.base.seed)
    elif side == "embed":
        model_path = project.layout(dataset).model_dir
        result = plain_embed(folders, model_path, cfg.backbone.image_size, project.params.embed.batch_size)
    else:
        raise SystemExit(f"unknown side {side!r}: finetune | embed")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
