"""``finetune``: transfer learning on an ingested image dataset.

Follows Keras' transfer-learning guide: (a) freeze the pretrained base and train
a new head; (b) unfreeze the top of the base and train on with a lower learning
rate, BatchNorm kept in inference mode. With ``weights: none`` the whole network
trains from the start in phase (a). Early stopping restores the best weights.

An interrupted run resumes: Keras' BackupAndRestore keeps its checkpoints in
``<data_dir>/<dataset>/.finetune-resume/<key>/`` (outside the DVC outputs, which
DVC deletes before a run), where the key hashes the params, seed and manifest,
so changed params start fresh.
"""

from __future__ import annotations

import contextlib
import csv
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from dvclive import Live

from dlpipe.core.artifacts import atomic_dir, atomic_write_json, library_versions, sha256_file, sha256_json, sidecar, stage_lock, write_csv
from dlpipe.core.config import FinetuneConfig, Project
from dlpipe.core.console import info
from dlpipe.core.errors import InputDataError
from dlpipe.core.layout import MODEL_FILE, MODEL_SIDECAR, TRAINING_LOG
from dlpipe.data.manifest import Manifest, load_image_manifest
from dlpipe.data.media.images import load_rgb
from dlpipe.models.backbones import get_spec
from dlpipe.models.classifier import EMBEDDING_LAYER, build_classifier
from dlpipe.models.inputs import decoded_bytes, image_dataset, needs_pillow
from dlpipe.reports.classification import classification_metrics, write_confusion
from dlpipe.reports.figures import write_history_plot
from dlpipe.reports.sheets import contact_sheet, top_losses_tiles

STAGE = "finetune"


@dataclass(frozen=True)
class Result:
    """What a finetune run produced."""

    dataset: str
    model_dir: Path
    plots_dir: Path
    metrics_path: Path
    metrics: dict[str, Any]
    resumed_from_epoch: int

    @property
    def summary(self) -> str:
        """The headline figures in one line."""
        m = self.metrics
        return f"test accuracy {m['test_accuracy']:.3f}, macro-F1 {m['test_macro_f1']:.3f} after {m['epochs']} epochs"


def run(project: Project, dataset: str, extra_callbacks: Sequence[Any] = ()) -> Result:
    """Fine-tune ``finetune.backbone`` on ``dataset`` and evaluate it on the test split.

    Args:
        project: validated params and the project root.
        dataset: an ingested image dataset.
        extra_callbacks: Keras callbacks added to every ``fit`` (tests use one to interrupt training).

    Raises:
        ArtifactError: the dataset has not been ingested, or its manifest was edited.
        InputDataError: a class has no training image, or the validation or test split is empty.
        ConfigError / DependencyError: the backbone or its weights cannot be resolved.
    """
    cfg = project.params.finetune
    seed = project.params.base.seed
    manifest = load_image_manifest(project, dataset)
    _check_splits(manifest)
    layout = project.layout(dataset)
    model_dir = layout.model_dir
    plots_dir = layout.plots(STAGE)
    metrics_path = layout.metrics(STAGE)
    classes = manifest.classes
    params_hash = sha256_json({"finetune": cfg.model_dump(), "seed": seed})
    resume_key = sha256_json([params_hash, manifest.sha256, classes])[:16]

    with stage_lock(layout.root, STAGE), _precision(cfg.mixed_precision):
        # Inside the lock: pruning other keys' checkpoints must not race another run.
        resume_dir = _resume_dir(layout.resume_dir(STAGE), resume_key)
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        model, base = build_classifier(cfg, len(classes), seed)
        data = _Splits(manifest, cfg, seed)
        started = time.perf_counter()
        history, resumed_from, phase_boundary = _train(model, base, cfg, data, resume_dir, list(extra_callbacks))
        train_seconds = time.perf_counter() - started
        evaluation = _evaluate(model, data, classes)

        metrics = {
            "dataset": dataset,
            "backbone": cfg.backbone.name,
            "weights": cfg.backbone.weights,
            "test_accuracy": evaluation["report"]["accuracy"],
            "test_macro_f1": evaluation["report"]["macro_f1"],
            "test_per_class": evaluation["report"]["per_class"],
            "test_count": evaluation["report"]["n"],
            "epochs": len(history["loss"]),
            "head_epochs_run": phase_boundary,
            "best_val_loss": round(min(history["val_loss"]), 6),
            "train_seconds": round(train_seconds, 2),
            "train_images_per_second": round(
                len(data.train_indices) * (len(history["loss"]) - resumed_from) / max(train_seconds, 1e-9), 1
            ),
            "resumed_from_epoch": resumed_from,
        }
        with atomic_dir(model_dir) as staging:
            model.save(staging / MODEL_FILE)
            _write_log(staging / TRAINING_LOG, history)
            atomic_write_json(
                staging / MODEL_SIDECAR,
                _model_sidecar(cfg, dataset, classes, manifest, model, staging / MODEL_FILE, params_hash, seed),
            )
        with atomic_dir(plots_dir) as staging:
            _write_plots(staging, history, phase_boundary, evaluation, classes, cfg.top_losses)
        atomic_write_json(metrics_path, metrics)
        shutil.rmtree(resume_dir, ignore_errors=True)
    return Result(dataset, model_dir, plots_dir, metrics_path, metrics, resumed_from)


def _check_splits(manifest: Manifest) -> None:
    in_train = {manifest.rows[i]["label"] for i in manifest.split("train")}
    missing = [label for label in manifest.classes if label not in in_train]
    if missing:
        raise InputDataError(
            f"dataset '{manifest.dataset}': class(es) {', '.join(missing)} have no image in the training split",
            "add images for them, or lower ingest.val_fraction / ingest.test_fraction",
        )
    for split in ("val", "test"):
        if not manifest.split(split):
            raise InputDataError(
                f"dataset '{manifest.dataset}': the {split} split is empty",
                f"set ingest.{split}_fraction above 0 (early stopping needs val, evaluation needs test)",
            )


class _Splits:
    """The train/val/test tf.data pipelines of one manifest."""

    def __init__(self, manifest: Manifest, cfg: FinetuneConfig, seed: int) -> None:
        self.manifest = manifest
        self.class_index = {label: i for i, label in enumerate(manifest.classes)}
        self.train_indices = manifest.split("train")
        self.test_indices = manifest.split("test")
        size = cfg.backbone.image_size
        # Cache only what fits the budget; the whole manifest is the upper bound.
        cache = decoded_bytes(len(manifest.rows), size) <= cfg.cache_max_mb * 2**20

        def pipeline(indices: list[int], shuffle: bool):
            rows = [manifest.rows[i] for i in indices]
            return image_dataset(
                [manifest.resolve(row["path"]) for row in rows],
                [needs_pillow(row) for row in rows],
                size,
                cfg.batch_size,
                [self.class_index[row["label"]] for row in rows],
                shuffle_seed=seed if shuffle else None,
                cache=cache,
            )

        self.train = pipeline(self.train_indices, shuffle=True)
        self.val = pipeline(manifest.split("val"), shuffle=False)
        self.test = pipeline(self.test_indices, shuffle=False)

    def labels(self, indices: list[int]) -> np.ndarray:
        return np.array([self.class_index[self.manifest.rows[i]["label"]] for i in indices])

    def class_weight(self) -> dict[int, float]:
        """'balanced' weights: n / (classes × count of the class), from the training split."""
        counts = np.bincount(self.labels(self.train_indices), minlength=len(self.class_index))
        return {i: float(len(self.train_indices) / (len(counts) * c)) for i, c in enumerate(counts)}


def _resume_dir(root: Path, key: str) -> Path:
    """The resume folder for this key under ``root``; folders of other keys (old params) are removed."""
    if root.is_dir():
        for other in root.iterdir():
            if other.name != key:
                shutil.rmtree(other, ignore_errors=True)
    folder = root / key
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextlib.contextmanager
def _precision(mixed: bool):
    """The mixed_float16 policy while training when asked, float32 again after."""
    if not mixed:
        yield
        return
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def _train(model, base, cfg: FinetuneConfig, data: _Splits, resume_dir: Path, extra: list) -> tuple[dict, int, int]:
    """Run phase (a) and, for a pretrained base, phase (b); return history, resume epoch, phase boundary."""
    log_path = resume_dir / TRAINING_LOG
    resumed_from = len(_read_log(log_path)["loss"])
    if resumed_from:
        info(f"finetune: resuming after epoch {resumed_from} from {resume_dir}")
    pretrained = cfg.backbone.weights != "none"
    class_weight = data.class_weight() if cfg.class_weight == "balanced" else None

    def fit(phase: str, lr: float, initial_epoch: int, epochs: int) -> None:
        model.compile(
            optimizer=keras.optimizers.Adam(lr, clipnorm=cfg.clipnorm or None),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        callbacks = [
            keras.callbacks.BackupAndRestore(str(resume_dir / phase)),
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=cfg.early_stopping_patience, restore_best_weights=True
            ),
            keras.callbacks.CSVLogger(str(log_path), append=True),
            EpochLine(phase, epochs, len(data.train_indices)),
            *extra,
        ]
        model.fit(
            data.train,
            validation_data=data.val,
            initial_epoch=initial_epoch,
            epochs=epochs,
            class_weight=class_weight,
            callbacks=callbacks,
            shuffle=False,  # the tf.data pipeline already shuffles, from the seed
            verbose=0,
        )

    head_done = resume_dir / "head.weights.h5"
    base.trainable = not pretrained
    if head_done.is_file():
        model.load_weights(head_done)
    else:
        fit("head", cfg.head_lr, 0, cfg.head_epochs)
        model.save_weights(resume_dir / "head.partial.weights.h5")
        (resume_dir / "head.partial.weights.h5").replace(head_done)
    phase_boundary = len(_read_log(log_path)["loss"])
    if pretrained and cfg.fine_tune_epochs and cfg.unfreeze_top:
        _unfreeze_top(base, cfg.unfreeze_top)
        fit("fine_tune", cfg.fine_tune_lr, phase_boundary, phase_boundary + cfg.fine_tune_epochs)
    return _read_log(log_path), resumed_from, phase_boundary


def _unfreeze_top(base, count: int) -> None:
    """Make the top ``count`` layers of the base trainable; BatchNorm layers stay frozen."""
    base.trainable = True
    for index, layer in enumerate(base.layers):
        top = index >= len(base.layers) - count
        layer.trainable = top and not isinstance(layer, keras.layers.BatchNormalization)


class EpochLine(keras.callbacks.Callback):
    """One line per epoch on stderr (Keras' own progress goes to stdout and would spoil --json)."""

    def __init__(self, phase: str, epochs: int, train_count: int) -> None:
        super().__init__()
        self.phase, self.epochs, self.train_count = phase, epochs, train_count
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs=None) -> None:
        seconds = time.perf_counter() - self.started
        figures = " ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items() if k != "learning_rate")
        info(f"finetune {self.phase} epoch {epoch + 1}/{self.epochs}: {figures} ({self.train_count / seconds:,.0f} img/s)")


def _read_log(path: Path) -> dict[str, list[float]]:
    """Keras' CSVLogger file as columns (empty when absent)."""
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if key != "epoch" and value not in (None, ""):
                        history.setdefault(key, []).append(float(value))
    return history


def _write_log(path: Path, history: dict[str, list[float]]) -> None:
    keys = [k for k in ("loss", "accuracy", "val_loss", "val_accuracy") if k in history]
    rows = ({"epoch": i, **{k: history[k][i] for k in keys}} for i in range(len(history["loss"])))
    write_csv(path, ["epoch", *keys], rows)


def _evaluate(model, data: _Splits, classes: list[str]) -> dict[str, Any]:
    probabilities = model.predict(data.test, verbose=0)
    y_true = data.labels(data.test_indices)
    y_pred = probabilities.argmax(axis=1)
    losses = -np.log(np.clip(probabilities[np.arange(len(y_true)), y_true], 1e-12, 1.0))
    return {
        "report": classification_metrics(y_true.tolist(), y_pred.tolist(), classes),
        "y_true": y_true,
        "y_pred": y_pred,
        "confidence": probabilities.max(axis=1),
        "losses": losses,
        "paths": [data.manifest.resolve(data.manifest.rows[i]["path"]) for i in data.test_indices],
    }


def _write_plots(folder: Path, history, phase_boundary: int, evaluation, classes: list[str], top_losses: int) -> None:
    """DVCLive curves, confusion matrix (PNG + CSV), training curves and the top-losses sheet."""
    with Live(dir=str(folder / "live"), save_dvc_exp=False, dvcyaml=None) as live:
        for epoch in range(len(history["loss"])):
            for key, values in history.items():
                split = "val" if key.startswith("val_") else "train"
                live.log_metric(f"{split}/{key.removeprefix('val_')}", values[epoch])
            live.next_step()
    true_names = [classes[i] for i in evaluation["y_true"]]
    predicted_names = [classes[i] for i in evaluation["y_pred"]]
    write_confusion(
        evaluation["y_true"].tolist(), evaluation["y_pred"].tolist(), classes,
        folder / "confusion.png", folder / "confusion.csv", title="test split: true vs predicted",
    )
    write_history_plot(history, folder / "history.png", title="training curves", phase_boundaries=[phase_boundary])
    # Decode only the images that make the sheet (ties broken by index, as top_losses_tiles does).
    worst = np.argsort(-evaluation["losses"], kind="stable")[:top_losses]
    tiles = top_losses_tiles(
        [load_rgb(evaluation["paths"][i], 1 << 40) for i in worst],
        [true_names[i] for i in worst],
        [predicted_names[i] for i in worst],
        evaluation["confidence"][worst].tolist(),
        evaluation["losses"][worst].tolist(),
        top_losses,
    )
    contact_sheet(tiles, folder / "top_losses.png", columns=8, tile_size=128, title="test images with the highest loss")


def _model_sidecar(cfg: FinetuneConfig, dataset, classes, manifest: Manifest, model, model_path, params_hash, seed):
    return sidecar(
        STAGE,
        dataset=dataset,
        classes=classes,
        image_size=cfg.backbone.image_size,
        input="float32 RGB in [0, 255], resized to image_size x image_size (area averaging when shrinking, bilinear otherwise)",
        preprocessing=get_spec(cfg.backbone.name).preprocessing,
        backbone=cfg.backbone.model_dump(),
        embedding_layer=EMBEDDING_LAYER,
        embedding_dim=int(model.get_layer(EMBEDDING_LAYER).output.shape[-1]),
        model_sha256=sha256_file(model_path),
        manifest_sha256=manifest.sha256,
        # the complete input transform of an audio model, so predict replays it from a copied folder
        spectrogram=manifest.spectrogram,
        params_hash=params_hash,
        params=cfg.model_dump(),
        seed=seed,
        versions=library_versions("tensorflow", "keras", "numpy"),
    )
