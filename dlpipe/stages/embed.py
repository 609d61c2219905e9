"""``embed``: one feature vector per image, from the fine-tuned model or a pretrained backbone.

The vectors are the pooled activations before the classifier (the "deep
features"). They are written batch by batch into a memory-mapped
``embeddings.npy`` (float32, N × D, manifest order), so memory stays flat however
large the dataset, with a sidecar that says exactly how they were made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from dlpipe.artifacts import atomic_dir, atomic_write_json, library_versions, sha256_file, sidecar, stage_lock
from dlpipe.config import BackboneConfig, Project
from dlpipe.console import progress
from dlpipe.embeddings import EMBEDDINGS_FILE, SIDECAR_FILE
from dlpipe.errors import ArtifactError, InputDataError
from dlpipe.manifest import Manifest, load_image_manifest
from dlpipe.models.backbones import get_spec
from dlpipe.models.classifier import EMBEDDING_LAYER, backbone_embedding_model, embedding_model
from dlpipe.models.inputs import image_dataset, needs_pillow
from dlpipe.models.store import load_trained_model

STAGE = "embed"


@dataclass(frozen=True)
class Result:
    """What an embed run produced."""

    dataset: str
    out_dir: Path
    metrics_path: Path
    count: int
    dimension: int
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Extractor:
    """A Keras model mapping [0, 255] RGB images to embeddings, and how it was obtained."""

    model: Any
    image_size: int
    description: dict[str, Any]


def run(project: Project, dataset: str) -> Result:
    """Embed every image of ``dataset`` in manifest order.

    Raises:
        ArtifactError: no ingest output, or (``embed.source: finetuned``) no model, an inconsistent
            one, or a manifest that changed after the model was trained.
        InputDataError: an image yields non-finite features.
    """
    cfg = project.params.embed
    manifest = load_image_manifest(project, dataset)
    dataset_dir = project.dataset_dir(dataset)
    out_dir = dataset_dir / STAGE
    metrics_path = dataset_dir / "metrics" / f"{STAGE}.json"
    with stage_lock(dataset_dir, STAGE):
        extractor = _extractor(project, dataset, manifest)
        with atomic_dir(out_dir) as staging:
            seconds, dimension = _write_embeddings(staging / EMBEDDINGS_FILE, extractor, manifest, cfg.batch_size, cfg.normalize)
            atomic_write_json(
                staging / SIDECAR_FILE,
                sidecar(
                    STAGE,
                    dataset=dataset,
                    **extractor.description,
                    image_size=extractor.image_size,
                    layer=EMBEDDING_LAYER,
                    dimension=dimension,
                    count=len(manifest.rows),
                    dtype="float32",
                    order="manifest",
                    normalized=cfg.normalize,
                    metric="inner_product" if cfg.normalize else "l2",
                    manifest_sha256=manifest.sha256,
                    embeddings_sha256=sha256_file(staging / EMBEDDINGS_FILE),
                    versions=library_versions("tensorflow", "keras", "numpy"),
                ),
            )
        metrics = {
            "dataset": dataset,
            "source": extractor.description["source"],
            "count": len(manifest.rows),
            "dimension": dimension,
            "normalized": cfg.normalize,
            "images_per_second": round(len(manifest.rows) / max(seconds, 1e-9), 1),
        }
        atomic_write_json(metrics_path, metrics)
    return Result(dataset, out_dir, metrics_path, len(manifest.rows), dimension, metrics)


def _extractor(project: Project, dataset: str, manifest: Manifest) -> Extractor:
    cfg = project.params.embed
    if cfg.source == "backbone":
        spec = get_spec(cfg.backbone.name, key="embed.backbone.name")
        model = backbone_embedding_model(cfg.backbone, key="embed.backbone")
        description = {"source": "backbone", "backbone": cfg.backbone.model_dump(), "preprocessing": spec.preprocessing}
        return Extractor(model, cfg.backbone.image_size, description)
    trained = load_trained_model(project.dataset_dir(dataset) / "model")
    if trained.sidecar["manifest_sha256"] != manifest.sha256:
        raise ArtifactError(
            f"dataset '{dataset}' was re-ingested after the model in {trained.path.parent} was trained "
            "(the manifest's sha256 differs from the one in model.json)",
            f"retrain with `dlpipe finetune --dataset {dataset}` (or `dvc repro`), or set embed.source: backbone",
        )
    description = {
        "source": "finetuned",
        "model": str(trained.path),
        "model_sha256": trained.sidecar["model_sha256"],
        "backbone": trained.sidecar["backbone"],
        "preprocessing": trained.sidecar["preprocessing"],
        "classes": trained.classes,
    }
    return Extractor(embedding_model(trained.model), trained.image_size, description)


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 length (an all-zero row stays zero); query vectors go through this too."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def recorded_extractor(project: Project, dataset: str, recorded: dict[str, Any]) -> Extractor:
    """Rebuild the extractor an embeddings sidecar (or an index sidecar copied from it) describes.

    Query images must go through exactly the model and preprocessing that made the stored vectors.

    Raises:
        ArtifactError: the fine-tuned model is gone or changed since, or the backbone's preprocessing
            or input size differs from the recorded one.
        DependencyError: the recorded backbone's pretrained weights are unavailable.
    """
    rebuild = f"rerun `dlpipe embed --dataset {dataset}` and rebuild what used the embeddings (`dvc repro`)"
    if recorded.get("source") == "finetuned":
        model_dir = project.dataset_dir(dataset) / "model"
        trained = load_trained_model(model_dir)
        if trained.sidecar["model_sha256"] != recorded.get("model_sha256"):
            raise ArtifactError(f"the model in {model_dir} changed after the embeddings were computed", rebuild)
        extractor = Extractor(embedding_model(trained.model), trained.image_size, {"preprocessing": trained.sidecar["preprocessing"]})
    else:
        backbone = BackboneConfig(**recorded["backbone"])
        spec = get_spec(backbone.name, key="recorded backbone")
        model = backbone_embedding_model(backbone, key="recorded backbone")
        extractor = Extractor(model, backbone.image_size, {"preprocessing": spec.preprocessing})
    for key, now in (("preprocessing", extractor.description["preprocessing"]), ("image_size", extractor.image_size)):
        if now != recorded.get(key):
            raise ArtifactError(f"{key} is {now!r} now but the embeddings were made with {recorded.get(key)!r}", rebuild)
    return extractor


def _write_embeddings(path: Path, extractor: Extractor, manifest: Manifest, batch_size: int, normalize: bool) -> tuple[float, int]:
    """Stream batches through the model into a memory-mapped .npy.

    Returns (seconds, dimension); the seconds cover reading, decoding, the forward passes and
    writing, not the one-time graph tracing, so they measure the pipeline's throughput.
    """
    size = extractor.image_size
    batches = image_dataset(manifest.paths(), [needs_pillow(row) for row in manifest.rows], size, batch_size, dtype=tf.uint8)
    dimension = int(extractor.model.output_shape[-1])
    # uint8 batches cast inside the graph: a quarter of the bytes through tf.data, one map fewer.
    # A fixed signature: one trace per run, also for the smaller last batch.
    forward = tf.function(
        lambda images: extractor.model(tf.cast(images, tf.float32), training=False),
        input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)],
    )
    forward.get_concrete_function()
    output = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(manifest.rows), dimension))
    start = time.perf_counter()
    row = 0
    with progress(len(manifest.rows), f"embed {manifest.dataset}", "images") as advance:
        for images in batches:
            vectors = forward(images).numpy().astype(np.float32, copy=False)
            if normalize:
                vectors = normalize_rows(vectors)
            if not np.isfinite(vectors).all():
                bad = manifest.rows[row + int(np.argmin(np.isfinite(vectors).all(axis=1)))]["path"]
                raise InputDataError(f"non-finite embedding for {bad}", "check the image and the model's weights")
            output[row : row + len(vectors)] = vectors
            row += len(vectors)
            advance(len(vectors))
    output.flush()
    del output
    return time.perf_counter() - start, dimension
