"""The Keras training harness: two-phase transfer learning that resumes after an interruption.

Follows Keras' transfer-learning guide: (a) freeze the pretrained base and train the head;
(b) unfreeze the top of the base and train on with a lower learning rate, BatchNorm kept in
inference mode. With ``weights: none`` the whole network trains from the start in phase (a).
Early stopping restores the best weights. The task head supplies loss and metrics, so the
harness is the same for every task. In phase (a) the frozen base's features are computed once
where the head reads only pooled features (:mod:`dlpipe.models.frozen_features`).

The text classifier trains in one phase (:func:`train_single_phase`): it has no pretrained base.

Progress is kept in a resume folder: Keras' BackupAndRestore checkpoints per phase, the
CSVLogger history, and the head-phase weights once that phase has finished.

``finetune.distribute: mirrored`` trains under ``tf.distribute.MirroredStrategy`` (:func:`distribution`):
the caller builds the model inside ``Distribution.scope()`` and trains and predicts there; Keras'
``fit`` splits each global batch between the replicas and averages their gradients. One machine
only: Keras 3 does not support MultiWorkerMirroredStrategy.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dlpipe.core.artifacts import write_csv
from dlpipe.core.config import FinetuneConfig
from dlpipe.core.console import info, warn
from dlpipe.core.errors import ConfigError, InputDataError
from dlpipe.core.layout import TRAINING_LOG
from dlpipe.data.manifest import Manifest
from dlpipe.models import frozen_features
from dlpipe.models.frozen_features import CachedValidation, FrozenFeatures
from dlpipe.models.heads.base import Head


@dataclass(frozen=True)
class Splits:
    """The train/val/test input pipelines (``(inputs, target)`` batches) of one dataset, and their targets."""

    train: Any
    val: Any
    test: Any  # unshuffled, in manifest order, as test_targets
    train_targets: np.ndarray
    val_targets: np.ndarray
    test_targets: np.ndarray

    @property
    def train_count(self) -> int:
        """Items in the training split (for throughput figures)."""
        return len(self.train_targets)


@dataclass(frozen=True)
class FinetuneResult:
    """What a finetune run produced (for images and for text)."""

    dataset: str
    model_dir: Path
    plots_dir: Path
    metrics_path: Path
    metrics: dict[str, Any]
    resumed_from_epoch: int
    summary: str  # the headline figures in one line, as the head states them


@dataclass(frozen=True)
class History:
    """What training did: per-epoch figures, where a resumed run picked up, where phase (b) began."""

    epochs: dict[str, list[float]]  # Keras' history: loss, accuracy, val_loss, ...
    resumed_from: int
    phase_boundary: int

    def figures(self, train_count: int, train_seconds: float, unit: str) -> dict[str, float | int]:
        """The training figures of a finetune metrics file; throughput counts only the epochs this run trained."""
        epochs = len(self.epochs["loss"])
        return {
            "epochs": epochs,
            "best_val_loss": round(min(self.epochs["val_loss"]), 6),
            "train_seconds": round(train_seconds, 2),
            f"train_{unit}_per_second": round(train_count * (epochs - self.resumed_from) / max(train_seconds, 1e-9), 1),
            "resumed_from_epoch": self.resumed_from,
        }


def check_evaluation_splits(manifest: Manifest) -> None:
    """Raise InputDataError when the validation or test split is empty (early stopping and evaluation need them)."""
    for split in ("val", "test"):
        if not manifest.split(split):
            raise InputDataError(
                f"dataset '{manifest.dataset}': the {split} split is empty",
                f"set ingest.{split}_fraction above 0 (early stopping needs val, evaluation needs test)",
            )


@dataclass(frozen=True)
class Distribution:
    """The devices finetune trains on (``finetune.distribute``), and the strategy that spreads training over them."""

    name: str  # none | mirrored
    strategy: Any  # a tf.distribute.Strategy: the default (one device) for none
    devices: tuple[str, ...]

    @property
    def replicas(self) -> int:
        """Model copies that train in step: each takes an equal share of every global batch."""
        return int(self.strategy.num_replicas_in_sync)

    def scope(self) -> contextlib.AbstractContextManager[Any]:
        """The strategy's scope: build, compile, train and predict inside it."""
        return self.strategy.scope()

    def record(self) -> dict[str, Any]:
        """What model.json records: the strategy, the replica count and the devices."""
        return {"strategy": self.name, "replicas": self.replicas, "devices": list(self.devices)}


def distribution(name: str, batch_size: int, batch_key: str) -> Distribution:
    """The strategy for ``finetune.distribute``: ``none`` (TensorFlow's default device) or ``mirrored``.

    ``mirrored`` takes every GPU TensorFlow sees, or without one every logical CPU device. With a
    single device it says so and trains as one replica, so params written for a GPU machine still
    run on a laptop or in CI.

    Args:
        name: ``none`` or ``mirrored``.
        batch_size: the global batch (``batch_key`` in params.yaml), split evenly between the replicas.

    Raises:
        ConfigError: the batch size is not a multiple of the replica count.
    """
    gpus = [device.name for device in tf.config.list_logical_devices("GPU")]
    devices = gpus or [device.name for device in tf.config.list_logical_devices("CPU")]
    if name == "none":
        return Distribution(name, tf.distribute.get_strategy(), tuple(devices[:1]))
    if len(devices) == 1:
        info(f"finetune.distribute: mirrored finds one device ({devices[0]}): training runs as 1 replica")
    elif batch_size % len(devices):
        raise ConfigError(
            f"{batch_key}: {batch_size} does not split evenly between the {len(devices)} replicas of finetune.distribute: mirrored",
            f"set it to a multiple of {len(devices)} (each replica takes an equal share of every batch)",
        )
    return Distribution(name, _mirrored_strategy(tuple(devices)), tuple(devices))


@functools.cache
def _mirrored_strategy(devices: tuple[str, ...]) -> Any:
    # One per process: a second MirroredStrategy reuses the first one's collective keys, and the next
    # model's all-reduce fails on the shapes of the last one's (tensorflow/tensorflow#62790).
    return tf.distribute.MirroredStrategy(list(devices))


def resume_folder(root: Path, key: str) -> Path:
    """The resume folder for ``key`` under ``root``; folders of other keys (old params) are removed."""
    if root.is_dir():
        for other in root.iterdir():
            if other.name != key:
                shutil.rmtree(other, ignore_errors=True)
    folder = root / key
    folder.mkdir(parents=True, exist_ok=True)
    _discard_damaged_checkpoints(folder)
    return folder


def _discard_damaged_checkpoints(folder: Path) -> None:
    """Remove a phase's checkpoints when one cannot be read (a run killed, or out of space, while writing it).

    Keras writes them in place, so a half-written file is possible; resuming from it would fail, while
    starting that phase over only costs its epochs.
    """
    import h5py

    for weights in sorted(folder.rglob("*.weights.h5")):
        try:
            with h5py.File(weights, "r"):
                pass
        except OSError:
            damaged = weights.parent if weights.parent != folder else weights
            warn(f"discarding a damaged checkpoint, {damaged}: that training phase starts over")
            if damaged.is_dir():
                shutil.rmtree(damaged, ignore_errors=True)
            else:
                damaged.unlink(missing_ok=True)


@contextlib.contextmanager
def precision_policy(mixed: bool) -> Iterator[None]:
    """The mixed_float16 policy while training when asked, float32 again after."""
    if not mixed:
        yield
        return
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def train(
    model: keras.Model,
    base: keras.Model,
    head: Head,
    cfg: FinetuneConfig,
    splits: Splits,
    resume_dir: Path,
    class_weight: dict[int, float] | None = None,
    extra_callbacks: Sequence[Any] = (),
) -> History:
    """Run phase (a) and, for a pretrained base, phase (b), resuming from ``resume_dir``.

    Call it inside the scope of the :class:`Distribution` the model was built in.

    Args:
        model: the network from ``build_network``; ``base`` is its backbone.
        head: supplies the loss and Keras metrics.
        cfg: epochs, learning rates, patience, clipping, how much of the base to unfreeze, the batch size.
        splits: the input pipelines (batches of ``cfg.batch_size``); val drives early stopping.
        resume_dir: this run's resume folder (see :func:`resume_folder`).
        class_weight: Keras class weights, or None.
        extra_callbacks: added to every ``fit`` (tests use one to interrupt training).
    """
    log_path = resume_dir / TRAINING_LOG
    resumed_from = _announce_resume(log_path, resume_dir)
    pretrained = cfg.backbone.weights != "none"
    phase = Phase(model, head, splits, cfg.batch_size, resume_dir, cfg.clipnorm, cfg.early_stopping_patience, class_weight, extra_callbacks)
    head_done = resume_dir / "head.weights.h5"
    base.trainable = not pretrained
    if head_done.is_file():
        model.load_weights(head_done)
    else:
        replicas = model.distribute_strategy.num_replicas_in_sync
        frozen = None
        if pretrained and frozen_features.applies(model, head, replicas):
            frozen = frozen_features.compute(model, head, splits, cfg.cache_max_mb * 2**20)
        phase.fit("head", cfg.head_lr, 0, cfg.head_epochs, frozen)
        model.save_weights(resume_dir / "head.partial.weights.h5")
        (resume_dir / "head.partial.weights.h5").replace(head_done)
    phase_boundary = len(read_log(log_path)["loss"])
    if pretrained and cfg.fine_tune_epochs and cfg.unfreeze_top:
        unfreeze_top(base, cfg.unfreeze_top)
        phase.fit("fine_tune", cfg.fine_tune_lr, phase_boundary, phase_boundary + cfg.fine_tune_epochs)
    return History(read_log(log_path), resumed_from, phase_boundary)


def train_single_phase(phase: Phase, lr: float, epochs: int) -> History:
    """Train every layer that is trainable for at most ``epochs`` epochs in one phase (the text classifier's recipe)."""
    log_path = phase.resume_dir / TRAINING_LOG
    resumed_from = _announce_resume(log_path, phase.resume_dir)
    phase.fit("train", lr, 0, epochs)
    return History(read_log(log_path), resumed_from, 0)


@dataclass(frozen=True)
class Phase:
    """What every ``fit`` of one run shares: the model, its data, the resume folder, clipping and early stopping."""

    model: keras.Model
    head: Head
    splits: Splits
    batch_size: int  # of splits.train (the global batch under a distribution strategy)
    resume_dir: Path
    clipnorm: float  # 0 turns clipping off
    patience: int
    class_weight: dict[int, float] | None = None
    extra_callbacks: Sequence[Any] = ()

    def fit(self, name: str, lr: float, initial_epoch: int, epochs: int, frozen: FrozenFeatures | None = None) -> None:
        """Compile with Adam at ``lr`` and train from ``initial_epoch`` to ``epochs``, checkpointed under ``name``.

        With ``frozen`` (phase (a) on a frozen base), validation runs on the base's cached features, and
        so does training where the network does not augment its input: the head's layers train alone.
        """
        on_features = frozen if frozen is not None and frozen.train_features is not None else None
        model = on_features.head_model if on_features else self.model
        model.compile(optimizer=keras.optimizers.Adam(lr, clipnorm=self.clipnorm or None), **self.head.compile_arguments())
        callbacks = [
            *([CachedValidation(frozen, self.batch_size)] if frozen is not None else []),  # first: the others read its val_* logs
            keras.callbacks.BackupAndRestore(str(self.resume_dir / name)),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=self.patience, restore_best_weights=True),
            keras.callbacks.CSVLogger(str(self.resume_dir / TRAINING_LOG), append=True),
            EpochLine(name, epochs, self.splits.train_count),
            *self.extra_callbacks,
        ]
        replicas = self.model.distribute_strategy.num_replicas_in_sync
        if on_features:
            training = on_features.training_batches(self.batch_size)
        else:
            training = replica_batches(self.splits.train, self.splits.train_count, self.batch_size, replicas, "training")
        validation = None
        if frozen is None:
            validation = replica_batches(self.splits.val, len(self.splits.val_targets), self.batch_size, replicas, "validation")
        model.fit(
            training,
            validation_data=validation,
            initial_epoch=initial_epoch,
            epochs=epochs,
            class_weight=self.class_weight,
            callbacks=callbacks,
            shuffle=False,  # the tf.data pipeline already shuffles, from the seed
            verbose=0,
        )


def predict_split(model: keras.Model, batches: Any, count: int, batch_size: int) -> np.ndarray:
    """The model's outputs for the ``count`` items of an evaluation split, on every replica of the strategy it was built in."""
    replicas = model.distribute_strategy.num_replicas_in_sync
    return model.predict(replica_batches(batches, count, batch_size, replicas, "test"), verbose=0)


def replica_batches(batches: Any, count: int, batch_size: int, replicas: int, split: str) -> Any:
    """A split's ``batch_size`` batches of ``count`` items, regrouped so that every replica takes a share of each.

    Keras 3 builds a distributed model from the replicas' shares of the first batch and fails when
    they differ (keras-team/keras#19246); a replica handed an empty share fails or, in training, puts
    NaN into BatchNormalization's moving statistics. So the first batch is a multiple of ``replicas``
    and none is smaller. ``batch_size`` is a multiple of ``replicas`` (:func:`distribution` refuses
    others), so only the end of a split changes: training drops its last ``count % replicas`` items
    (other ones every epoch, as the split is reshuffled); evaluation adds them to its last batch.

    Raises:
        InputDataError: the split is too small to give every replica an item of its first batch.
    """
    if replicas == 1:
        return batches
    extra = count % replicas
    whole = count - extra
    sizes = [batch_size] * (whole // batch_size) + ([whole % batch_size] if whole % batch_size else [])
    if split != "training" and extra and len(sizes) == 1:
        # one batch that does not split evenly: a first batch that does, and the rest
        sizes = [whole - replicas, replicas + extra] if whole >= 2 * replicas else []
    elif split != "training" and extra:
        sizes[-1] += extra
    if not sizes:
        raise InputDataError(
            f"the {split} split has {count} items, too few for the {replicas} replicas of finetune.distribute: mirrored",
            "set finetune.distribute: none, or add data",
        )
    # tf.data cannot infer the count of rebatched data; stating it keeps Keras' epoch bookkeeping exact.
    cardinality = tf.data.experimental.assert_cardinality(len(sizes))
    if split == "training" and extra:
        return batches.rebatch([*sizes, extra]).take(len(sizes)).apply(cardinality)
    return batches.rebatch(sizes).apply(cardinality)


def _announce_resume(log_path: Path, resume_dir: Path) -> int:
    resumed_from = len(read_log(log_path)["loss"])
    if resumed_from:
        info(f"finetune: resuming after epoch {resumed_from} from {resume_dir}")
    return resumed_from


def unfreeze_top(base: keras.Model, count: int) -> None:
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
        info(f"finetune {self.phase} epoch {epoch + 1}/{self.epochs}: {figures} ({self.train_count / seconds:,.0f} items/s)")


def read_log(path: Path) -> dict[str, list[float]]:
    """Keras' CSVLogger file as columns (empty when absent)."""
    history: dict[str, list[float]] = {"loss": [], "val_loss": []}
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if key != "epoch" and value not in (None, ""):
                        history.setdefault(key, []).append(float(value))
    return history


def write_log(path: Path, history: dict[str, list[float]]) -> None:
    """The training history as ``training_log.csv``: epoch, then loss and every metric, train then val."""
    keys = [k for k in history if not k.startswith("val_") and k != "learning_rate"]
    keys += [f"val_{k}" for k in keys if f"val_{k}" in history]
    rows = ({"epoch": i, **{k: history[k][i] for k in keys}} for i in range(len(history["loss"])))
    write_csv(path, ["epoch", *keys], rows)
