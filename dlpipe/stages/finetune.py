"""``finetune``: transfer learning on an ingested image dataset, for the task head of ``datasets.<name>.task``.

For an audio dataset with ``finetune.audio_sequence.architecture`` set, a recurrent network
reads each spectrogram window as a sequence of mel frames instead (``models.sequence_network``),
trained in one phase at ``head_lr`` for ``head_epochs`` with its own gradient clipping; it takes
the same images, so everything downstream is unchanged.

The network is ``models.network`` (a backbone, pooling, the head's output layer), trained by
``models.training`` (head on a frozen base, then the top of the base; see there). The head
supplies loss, metrics, evaluation and the report figures, so this module only wires the
manifest, the harness and the artifacts together.

An interrupted run resumes: Keras' BackupAndRestore keeps its checkpoints in
``<data_dir>/<dataset>/.finetune-resume/<key>/`` (outside the DVC outputs, which
DVC deletes before a run), where the key hashes the params, seed and manifest,
so changed params start fresh.

``finetune.distribute: mirrored`` builds, trains and evaluates the network under
``tf.distribute.MirroredStrategy`` (``models.training.distribution``); ``model.json`` records the
strategy, the replica count and the devices, and the saved model loads anywhere without it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dlpipe.core.artifacts import (
    atomic_dir,
    atomic_write_json,
    library_versions,
    sha256_file,
    sha256_json,
    sidecar,
    stage_lock,
    write_metrics,
)
from dlpipe.core.config import FinetuneConfig, Project
from dlpipe.core.layout import MODEL_FILE, MODEL_SIDECAR, TRAINING_LOG
from dlpipe.data.manifest import Manifest, load_image_manifest
from dlpipe.data.media.images import load_rgb
from dlpipe.models.backbones import get_spec
from dlpipe.models.heads.base import Evaluation, Head
from dlpipe.models.heads.numeric import image_sizes
from dlpipe.models.heads.registry import head_class
from dlpipe.models.inputs import image_splits
from dlpipe.models.network import EMBEDDING_LAYER, build_network
from dlpipe.models.sequence_network import build_frame_network
from dlpipe.models.store import save_model
from dlpipe.models.training import (
    Distribution,
    FinetuneResult,
    History,
    Phase,
    check_evaluation_splits,
    distribution,
    precision_policy,
    predict_split,
    resume_folder,
    train,
    train_single_phase,
    write_log,
)
from dlpipe.reports.figures import write_history_plot
from dlpipe.reports.live import write_live_history
from dlpipe.reports.sheets import contact_sheet, top_losses_tiles

STAGE = "finetune"


def run(project: Project, dataset: str, extra_callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Fine-tune ``finetune.backbone`` on ``dataset`` and evaluate it on the test split.

    Args:
        project: validated params and the project root.
        dataset: an ingested image dataset.
        extra_callbacks: Keras callbacks added to every ``fit`` (tests use one to interrupt training).

    Raises:
        ArtifactError: the dataset has not been ingested, or its manifest was edited.
        InputDataError: the training split cannot train the head (a class with no item), the validation
            or test split is empty, or a split is too small to share between the replicas of ``mirrored``.
        ConfigError: ``finetune.batch_size`` is not a multiple of the replica count under ``mirrored``.
        ConfigError / DependencyError: the backbone or its weights cannot be resolved.
    """
    cfg = project.params.finetune
    seed = project.params.base.seed
    spec = project.dataset(dataset)
    manifest = load_image_manifest(project, dataset)
    head = head_class(spec.task).configure(manifest, cfg, spec)
    head.check_augmentation(cfg.augment, dataset)
    head.check_training_data(manifest)
    check_evaluation_splits(manifest)
    layout = project.layout(dataset)
    names = head.output_names(manifest)
    frames = cfg.audio_sequence.architecture if project.dataset(dataset).modality == "audio" else "none"
    params_hash = sha256_json({"finetune": cfg.model_dump(), "seed": seed})
    resume_key = sha256_json([params_hash, manifest.sha256, names])[:16]
    devices = distribution(cfg.distribute, cfg.batch_size, "finetune.batch_size")

    with stage_lock(layout.root, STAGE), precision_policy(cfg.mixed_precision):
        # Inside the lock: pruning other keys' checkpoints must not race another run.
        resume_dir = resume_folder(layout.resume_dir(STAGE), resume_key)
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        splits = image_splits(manifest, head, cfg, seed)
        class_weight = head.balanced_weights(splits.train_targets, len(names)) if cfg.class_weight == "balanced" else None
        started = time.perf_counter()
        with devices.scope():
            if frames == "none":
                model, base = build_network(cfg, head, len(names), seed)
                history = train(model, base, head, cfg, splits, resume_dir, class_weight, extra_callbacks)
            else:
                model = build_frame_network(cfg, head, len(names), seed)
                clipnorm = cfg.audio_sequence.clipnorm
                phase = Phase(
                    model, head, splits, cfg.batch_size, resume_dir, clipnorm, cfg.early_stopping_patience, class_weight, extra_callbacks
                )
                history = train_single_phase(phase, cfg.head_lr, cfg.head_epochs)
            train_seconds = time.perf_counter() - started
            predictions = predict_split(model, splits.test, len(splits.test_targets), cfg.batch_size)
        test_rows = [manifest.rows[i] for i in manifest.split("test")]
        sizes = image_sizes(test_rows) if head.item_sizes_needed() else None
        evaluation = head.evaluate(predictions, splits.test_targets, names, sizes)

        metrics = {
            "dataset": dataset,
            "backbone": cfg.backbone.name if frames == "none" else f"{frames} over mel frames",
            "weights": cfg.backbone.weights if frames == "none" else "none",
            **evaluation.metrics,
            **history.figures(splits.train_count, train_seconds, "images"),
            "head_epochs_run": history.phase_boundary,
            "replicas": devices.replicas,
        }
        with atomic_dir(layout.model_dir) as staging:
            save_model(model, staging / MODEL_FILE)
            write_log(staging / TRAINING_LOG, history.epochs)
            atomic_write_json(
                staging / MODEL_SIDECAR,
                _model_sidecar(cfg, head, dataset, names, manifest, model, staging / MODEL_FILE, params_hash, seed, frames, devices),
            )
        with atomic_dir(layout.plots(STAGE)) as staging:
            _write_plots(staging, head, history, evaluation, names, _test_paths(manifest), cfg.top_losses)
        write_metrics(layout.metrics(STAGE), metrics)
        shutil.rmtree(resume_dir, ignore_errors=True)
    return FinetuneResult(
        dataset, layout.model_dir, layout.plots(STAGE), layout.metrics(STAGE), metrics, history.resumed_from, head.summary(metrics)
    )


def _test_paths(manifest: Manifest) -> list[Path]:
    return [manifest.resolve(manifest.rows[i]["path"]) for i in manifest.split("test")]


def _write_plots(
    folder: Path, head: Head, history: History, evaluation: Evaluation, names: list[str], paths: list[Path], top_losses: int
) -> None:
    """DVCLive curves, the head's reports (a confusion matrix), training curves and the top-losses sheet."""
    write_live_history(folder / "live", history.epochs)
    head.write_reports(folder, evaluation, names, paths)
    write_history_plot(
        history.epochs, folder / "history.png", title="training curves", phase_boundaries=[history.phase_boundary], metric=head.curve_metric
    )
    # Decode only the images that make the sheet (ties broken by index, as top_losses_tiles does).
    worst = np.argsort(-evaluation.losses, kind="stable")[:top_losses]
    tiles = top_losses_tiles(
        [load_rgb(paths[i], 1 << 40) for i in worst],
        [evaluation.truth[i] for i in worst],
        [evaluation.predicted[i] for i in worst],
        evaluation.confidence[worst].tolist(),
        evaluation.losses[worst].tolist(),
        top_losses,
    )
    contact_sheet(tiles, folder / "top_losses.png", columns=8, tile_size=128, title="test images with the highest loss")


def _model_sidecar(
    cfg: FinetuneConfig, head: Head, dataset, names, manifest: Manifest, model, model_path, params_hash, seed, frames, devices: Distribution
):
    if frames == "none":
        preprocessing, backbone = get_spec(cfg.backbone.name).preprocessing, cfg.backbone.model_dump()
    else:  # no ImageNet base: the network reads the window's columns as frames (models.layers.MelFrames)
        preprocessing = "mel_frames"
        size, rnn = cfg.backbone.image_size, cfg.rnn.model_dump()
        backbone = {"name": f"{frames}_over_mel_frames", "weights": "none", "image_size": size, "rnn": rnn}
    return sidecar(
        STAGE,
        dataset=dataset,
        task=head.name,
        targets=head.record(),
        classes=names,
        image_size=cfg.backbone.image_size,
        input="float32 RGB in [0, 255], resized to image_size x image_size (area averaging when shrinking, bilinear otherwise)",
        preprocessing=preprocessing,
        backbone=backbone,
        architecture="cnn" if frames == "none" else frames,
        embedding_layer=EMBEDDING_LAYER,
        embedding_dim=int(model.get_layer(EMBEDDING_LAYER).output.shape[-1]),
        model_sha256=sha256_file(model_path),
        manifest_sha256=manifest.sha256,
        # the complete input transform of an audio model, so predict replays it from a copied folder
        spectrogram=manifest.spectrogram,
        params_hash=params_hash,
        params=cfg.model_dump(),
        distribute=devices.record(),
        seed=seed,
        versions=library_versions("tensorflow", "keras", "numpy"),
    )
