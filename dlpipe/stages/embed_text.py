"""``embed`` on a labelled text dataset: one vector per document, the text model's penultimate layer.

The documents are encoded as the model was trained (its tokeniser settings, vocabulary and
``max_length``, all in the model folder) and written in manifest order into the same
memory-mapped ``embeddings.npy`` and sidecar as image embeddings, so ``cluster`` and
``search`` read them unchanged.
"""

from __future__ import annotations

import time

import numpy as np

from dlpipe.core.artifacts import atomic_dir, atomic_write_json, stage_lock, write_metrics
from dlpipe.core.config import Project
from dlpipe.core.console import info
from dlpipe.core.errors import ConfigError
from dlpipe.core.layout import EMBEDDINGS_FILE, EMBEDDINGS_SIDECAR
from dlpipe.core.results import StageResult
from dlpipe.data.manifest import load_text_manifest
from dlpipe.models.extractor import embeddings_sidecar, write_vectors
from dlpipe.models.network import embedding_model
from dlpipe.models.store import load_model_trained_on
from dlpipe.text.encoding import encode_documents

STAGE = "embed"


class Result(StageResult):
    """What an embed run on documents produced (count and dimension are in the metrics)."""

    @property
    def count(self) -> int:
        """Documents embedded."""
        return int(self.metrics["count"])

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        return int(self.metrics["dimension"])


def run(project: Project, dataset: str) -> Result:
    """Embed every document of labelled text dataset ``dataset`` with its trained text model, in manifest order.

    Raises:
        ConfigError: ``embed.source: backbone`` (an ImageNet backbone cannot read text).
        ArtifactError: no ingest output or model, an inconsistent one, or a manifest that changed after training.
        InputDataError: a document yields a non-finite embedding.
    """
    cfg = project.params.embed
    if cfg.source != "finetuned":
        raise ConfigError(
            f"embed.source: {cfg.source} embeds images with an ImageNet backbone; dataset '{dataset}' is text",
            f"set embed.source: finetuned for it (datasets.text.{dataset}.overrides), after `dlpipe finetune --dataset {dataset}`",
        )
    if cfg.engine != "local":
        info(f"embed {dataset}: documents are embedded in this process (embed.engine: {cfg.engine} serves image and audio datasets)")
    manifest = load_text_manifest(project, dataset)
    layout = project.layout(dataset)
    out_dir = layout.stage_dir(STAGE)
    with stage_lock(layout.root, STAGE):
        trained = load_model_trained_on(layout.model_dir, manifest)
        encoded = encode_documents(trained, manifest.documents or [])
        model = embedding_model(trained.model)
        dimension = int(model.output_shape[-1])
        batches = (model.predict_on_batch(encoded.ids[i : i + cfg.batch_size]) for i in range(0, len(encoded.ids), cfg.batch_size))
        with atomic_dir(out_dir) as staging:
            started = time.perf_counter()
            write_vectors(staging / EMBEDDINGS_FILE, batches, manifest, dimension, cfg.normalize, "documents")
            seconds = time.perf_counter() - started
            source = {
                "source": "finetuned",
                "modality": "text",
                "model": trained.recorded_path,
                "model_sha256": trained.sidecar["model_sha256"],
                "architecture": trained.sidecar["architecture"],
                "classes": trained.classes,
            }
            sidecar = embeddings_sidecar(staging / EMBEDDINGS_FILE, manifest, dimension, cfg.normalize, **source, engine={"name": "local"})
            atomic_write_json(staging / EMBEDDINGS_SIDECAR, sidecar)
        metrics = {
            "count": len(manifest.rows),
            "dimension": dimension,
            "normalized": cfg.normalize,
            "documents_per_second": round(len(manifest.rows) / max(seconds, 1e-9), 1),
            "truncated_documents": encoded.truncated,
            "empty_documents": int(np.count_nonzero(encoded.lengths == 0)),
        }
        write_metrics(layout.metrics(STAGE), metrics)
    return Result(dataset, out_dir, layout.metrics(STAGE), metrics)
