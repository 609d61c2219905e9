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

from dlpipe.core.arrays import first_non_finite_row
from dlpipe.core.artifacts import atomic_dir, atomic_write_json, library_versions, sha256_file, sidecar, stage_lock
from dlpipe.core.config import Project
from dlpipe.core.console import progress
from dlpipe.core.errors import InputDataError
from dlpipe.core.layout import EMBEDDINGS_FILE, EMBEDDINGS_SIDECAR
from dlpipe.data.manifest import Manifest, load_image_manifest
from dlpipe.models.extractor import Extractor, configured_extractor, normalize_rows
from dlpipe.models.inputs import image_dataset, needs_pillow
from dlpipe.models.network import EMBEDDING_LAYER

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


def run(project: Project, dataset: str) -> Result:
    """Embed every image of ``dataset`` in manifest order.

    Raises:
        ArtifactError: no ingest output, or (``embed.source: finetuned``) no model, an inconsistent
            one, or a manifest that changed after the model was trained.
        InputDataError: an image yields non-finite features.
    """
    cfg = project.params.embed
    manifest = load_image_manifest(project, dataset)
    layout = project.layout(dataset)
    out_dir = layout.stage_dir(STAGE)
    metrics_path = layout.metrics(STAGE)
    with stage_lock(layout.root, STAGE):
        extractor = configured_extractor(cfg, layout.model_dir, manifest)
        with atomic_dir(out_dir) as staging:
            seconds, dimension = _write_embeddings(staging / EMBEDDINGS_FILE, extractor, manifest, cfg.batch_size, cfg.normalize)
            atomic_write_json(
                staging / EMBEDDINGS_SIDECAR,
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
            bad = first_non_finite_row(vectors)
            if bad is not None:
                path = manifest.rows[row + bad]["path"]
                raise InputDataError(f"non-finite embedding for {path}", "check the image and the model's weights")
            output[row : row + len(vectors)] = vectors
            row += len(vectors)
            advance(len(vectors))
    output.flush()
    del output
    return time.perf_counter() - start, dimension
