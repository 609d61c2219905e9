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
from dlpipe.config import Project
from dlpipe.console import progress
from dlpipe.errors import ArtifactError, InputDataError
from dlpipe.manifest import Manifest, load_manifest
from dlpipe.models.backbones import get_spec
from dlpipe.models.classifier import EMBEDDING_LAYER, backbone_embedding_model, embedding_model
from dlpipe.models.inputs import image_dataset, needs_pillow
from dlpipe.models.store import load_trained_model

STAGE = "embed"
EMBEDDINGS_FILE = "embeddings.npy"
SIDECAR_FILE = "embeddings.json"


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
    manifest = load_manifest(project, dataset)
    if manifest.modality != "image":
        raise InputDataError(f"dataset '{dataset}' is {manifest.modality}; embed needs images")
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


def _write_embeddings(path: Path, extractor: Extractor, manifest: Manifest, batch_size: int, normalize: bool) -> tuple[float, int]:
    """Stream batches through the model into a memory-mapped .npy; return (seconds, dimension)."""
    batches = image_dataset(
        manifest.paths(), [needs_pillow(row) for row in manifest.rows], extractor.image_size, batch_size
    )
    dimension = int(extractor.model.output_shape[-1])
    # A fixed signature: one trace per run, also for the smaller last batch.
    forward = tf.function(
        lambda images: extractor.model(images, training=False),
        input_signature=[tf.TensorSpec((None, extractor.image_size, extractor.image_size, 3), tf.float32)],
    )
    output = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(manifest.rows), dimension))
    start = time.perf_counter()
    row = 0
    with progress(len(manifest.rows), f"embed {manifest.dataset}", "images") as advance:
        for images in batches:
            vectors = forward(images).numpy().astype(np.float32, copy=False)
            if normalize:
                vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
            if not np.isfinite(vectors).all():
                bad = manifest.rows[row + int(np.argmin(np.isfinite(vectors).all(axis=1)))]["path"]
                raise InputDataError(f"non-finite embedding for {bad}", "check the image and the model's weights")
            output[row : row + len(vectors)] = vectors
            row += len(vectors)
            advance(len(vectors))
    output.flush()
    del output
    return time.perf_counter() - start, dimension
