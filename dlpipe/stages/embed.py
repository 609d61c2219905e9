"""``embed``: one feature vector per image, from the fine-tuned model or a pretrained backbone.

The vectors are the pooled activations before the classifier (the "deep
features"). They are written batch by batch into a memory-mapped
``embeddings.npy`` (float32, N × D, manifest order), so memory stays flat however
large the dataset, with a sidecar that says exactly how they were made. ``embed.engine`` picks
who runs the model: this process (``local``) or Ray Data actors (``ray``, see
:mod:`dlpipe.models.engines.ray_data`); both write the same file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from dlpipe.core.artifacts import atomic_dir, atomic_write_json, stage_lock, write_metrics
from dlpipe.core.config import Project
from dlpipe.core.layout import EMBEDDINGS_FILE, EMBEDDINGS_SIDECAR
from dlpipe.core.results import StageResult
from dlpipe.data.manifest import load_image_manifest
from dlpipe.models.engines.base import InferenceJob
from dlpipe.models.engines.registry import open_engine
from dlpipe.models.extractor import EmbedderRecipe, ImageEmbedder, ManifestImages, configured_extractor, embeddings_sidecar, write_blocks

STAGE = "embed"


@dataclass(frozen=True)
class Result(StageResult):
    """What an embed run produced."""

    count: int
    dimension: int


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
        recipe = EmbedderRecipe.of(extractor, layout.model_dir, dataset, cfg.batch_size)
        embedder = ImageEmbedder(extractor, cfg.batch_size)  # traced here, before the clock starts
        job = InferenceJob(recipe, ManifestImages(manifest), cfg.batch_size, local=embedder)
        dimension = embedder.width
        with atomic_dir(out_dir) as staging, open_engine(cfg) as engine:
            embeddings = staging / EMBEDDINGS_FILE
            start = time.perf_counter()
            write_blocks(embeddings, engine.map(job), manifest, dimension, cfg.normalize, "images")
            seconds = time.perf_counter() - start
            source = {**extractor.description, "image_size": extractor.image_size}
            info = embeddings_sidecar(embeddings, manifest, dimension, cfg.normalize, **source, engine=engine.describe())
            atomic_write_json(staging / EMBEDDINGS_SIDECAR, info)
        metrics = {
            "dataset": dataset,
            "source": extractor.description["source"],
            "count": len(manifest.rows),
            "dimension": dimension,
            "normalized": cfg.normalize,
            "images_per_second": round(len(manifest.rows) / max(seconds, 1e-9), 1),
        }
        write_metrics(metrics_path, metrics)
    return Result(dataset, out_dir, metrics_path, metrics, count=len(manifest.rows), dimension=dimension)
