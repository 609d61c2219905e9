"""Embedding extractors: a Keras model from [0, 255] RGB images to the pooled penultimate features.

``embed`` builds one from its params (the fine-tuned model cut at its embedding layer, or a
pretrained backbone); ``search query`` rebuilds the one an embeddings sidecar records, so query
images go through exactly the model and preprocessing that made the stored vectors.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from dlpipe.core.arrays import NpyRowWriter, first_non_finite_row
from dlpipe.core.artifacts import library_versions, sha256_file, sidecar, writing
from dlpipe.core.config import BackboneConfig, EmbedConfig
from dlpipe.core.console import progress
from dlpipe.core.errors import ArtifactError, ConfigError, InputDataError
from dlpipe.data.manifest import Manifest
from dlpipe.models.backbones import get_spec
from dlpipe.models.engines.base import sequential_blocks
from dlpipe.models.inputs import image_dataset, needs_pillow
from dlpipe.models.network import EMBEDDING_LAYER, backbone_embedding_model, embedding_model
from dlpipe.models.store import load_model_trained_on, load_trained_model

# Batches per tf.data pipeline: a new one starts every this many batches, so the file list it holds stays bounded.
_PIPELINE_BATCHES = 256


@dataclass(frozen=True)
class Extractor:
    """A Keras model mapping [0, 255] RGB images to embeddings, and how it was obtained."""

    model: Any
    image_size: int
    description: dict[str, Any]


def configured_extractor(cfg: EmbedConfig, model_dir: Path, manifest: Manifest) -> Extractor:
    """The extractor ``embed`` params ask for: a pretrained backbone, or the fine-tuned model in ``model_dir``.

    Raises:
        ArtifactError: (``source: finetuned``) no model, an inconsistent one, or one trained on another manifest.
        ConfigError: (``source: backbone``) random weights (``weights: none``).
    """
    if cfg.source == "backbone":
        if cfg.backbone.weights == "none":
            # Each build draws new random weights: a query, or an engine's worker, would embed with another model.
            raise ConfigError(
                "embed.backbone.weights: none gives random features that no later query (or Ray worker) can reproduce",
                "set embed.backbone.weights to imagenet or a weights file, or embed.source: finetuned",
            )
        spec = get_spec(cfg.backbone.name, key="embed.backbone.name")
        model = backbone_embedding_model(cfg.backbone, key="embed.backbone")
        description = {"source": "backbone", "backbone": cfg.backbone.model_dump(), "preprocessing": spec.preprocessing}
        return Extractor(model, cfg.backbone.image_size, description)
    trained = load_model_trained_on(model_dir, manifest, "or set embed.source: backbone")
    description = {
        "source": "finetuned",
        "model": trained.recorded_path,
        "model_sha256": trained.sidecar["model_sha256"],
        "backbone": trained.sidecar["backbone"],
        "preprocessing": trained.sidecar["preprocessing"],
        "classes": trained.classes,
    }
    return Extractor(embedding_model(trained.model), trained.image_size, description)


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 length (an all-zero row stays zero); query vectors go through this too."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def recorded_extractor(model_dir: Path, dataset: str, recorded: dict[str, Any]) -> Extractor:
    """Rebuild the extractor an embeddings sidecar (or an index sidecar copied from it) describes.

    Query images must go through exactly the model and preprocessing that made the stored vectors.

    Raises:
        ArtifactError: the fine-tuned model is gone or changed since, or the backbone's preprocessing
            or input size differs from the recorded one.
        DependencyError: the recorded backbone's pretrained weights are unavailable.
    """
    rebuild = f"rerun `dlpipe embed --dataset {dataset}` and rebuild what used the embeddings (`dvc repro`)"
    if recorded.get("source") == "finetuned":
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


@dataclass(frozen=True)
class EmbedderRecipe:
    """How to rebuild an extractor anywhere the model folder can be read: small and picklable.

    An engine's workers (Ray actors on other machines) receive this instead of the Keras model and
    build the model once each with :meth:`build`; the recorded description makes them refuse a model
    that changed after the driver checked it.
    """

    model_dir: Path
    dataset: str
    recorded: dict[str, Any]
    batch_size: int

    @classmethod
    def of(cls, extractor: Extractor, model_dir: Path, dataset: str, batch_size: int) -> EmbedderRecipe:
        """The recipe that rebuilds ``extractor`` (as ``embed`` configured it)."""
        return cls(model_dir, dataset, {**extractor.description, "image_size": extractor.image_size}, batch_size)

    def build(self) -> ImageEmbedder:
        """Load the model and trace its forward pass (seconds: TensorFlow and the weights load here)."""
        return ImageEmbedder(recorded_extractor(self.model_dir, self.dataset, self.recorded), self.batch_size)


class ImageEmbedder:
    """An extractor with its traced forward pass: ``(path, use Pillow)`` items in, batches of embeddings out.

    The engines' :class:`~dlpipe.models.engines.base.Worker` for ``embed``.
    """

    def __init__(self, extractor: Extractor, batch_size: int) -> None:
        self.extractor = extractor
        self.batch_size = batch_size
        self.width = int(extractor.model.output_shape[-1])
        size = extractor.image_size
        # uint8 batches cast inside the graph: a quarter of the bytes through tf.data, one map fewer.
        # A fixed signature: one trace per run, also for the smaller last batch.
        self.forward = tf.function(
            lambda images: extractor.model(tf.cast(images, tf.float32), training=False),
            input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)],
        )
        self.forward.get_concrete_function()

    def run(self, items: Sequence[tuple[str, bool]]) -> Iterator[np.ndarray]:
        """Embeddings of ``(path, use Pillow)`` items in order, one float32 array per ``batch_size`` images.

        Batches start at the first item, so two calls whose first items sit a whole number of batches
        apart in one list give the same numbers as one call over the list (the engines rely on it).
        Items are read a bounded number of batches at a time, so memory does not grow with their count.
        """
        step = self.batch_size * _PIPELINE_BATCHES
        for start in range(0, len(items), step):
            chunk = items[start : start + step]
            paths = [str(path) for path, _ in chunk]
            pillow = [bool(use) for _, use in chunk]
            for images in image_dataset(paths, pillow, self.extractor.image_size, self.batch_size, dtype=tf.uint8):
                yield self.forward(images).numpy()


class ManifestImages(Sequence[tuple[str, bool]]):
    """A manifest's images as an engine's items, ``(absolute path, decode with Pillow)`` in row order, made on demand."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest

    def __len__(self) -> int:
        return len(self.manifest.rows)

    def __getitem__(self, index):  # type: ignore[override]  (int -> item, slice -> list of items)
        if isinstance(index, slice):
            return [self[row] for row in range(*index.indices(len(self)))]
        row = self.manifest.rows[index]
        return str(self.manifest.resolve(row["path"])), needs_pillow(row)


def write_embeddings(path: Path, extractor: Extractor, manifest: Manifest, batch_size: int, normalize: bool) -> tuple[float, int]:
    """Stream the manifest's images through the extractor into a memory-mapped .npy (float32, manifest order).

    Raises:
        InputDataError: an image's embedding holds NaN or inf (named by its manifest path).

    Returns (seconds, dimension); the seconds cover reading, decoding, the forward passes and
    writing, not the one-time graph tracing, so they measure the pipeline's throughput.
    """
    embedder = ImageEmbedder(extractor, batch_size)
    start = time.perf_counter()
    write_vectors(path, embedder.run(ManifestImages(manifest)), manifest, embedder.width, normalize, "images")
    return time.perf_counter() - start, embedder.width


def write_vectors(path: Path, batches: Iterable[np.ndarray], manifest: Manifest, dimension: int, normalize: bool, unit: str) -> None:
    """Write batches of vectors (manifest order, ``len(manifest.rows)`` in all) into a memory-mapped float32 .npy.

    Raises:
        InputDataError: a vector holds NaN or inf (named by its manifest path).
    """
    write_blocks(path, sequential_blocks(batches), manifest, dimension, normalize, unit)


def write_blocks(
    path: Path, blocks: Iterable[tuple[int, np.ndarray]], manifest: Manifest, dimension: int, normalize: bool, unit: str
) -> None:
    """Write ``(first row, vectors)`` blocks, in any order, into a float32 .npy of the manifest's rows (its space allocated first).

    Every row must arrive: a row delivered twice (an engine that retried a task) is written once, and a
    row that never arrived fails the run, so the file never holds a gap or a stale row.

    Raises:
        InputDataError: a vector holds NaN or inf (named by its manifest path).
        ArtifactError: blocks of the wrong width or outside the manifest's rows, or rows missing at the end.
        StorageError: no room for the whole file (found before any row is written), or a write failed.
    """
    count = len(manifest.rows)
    written = np.zeros(count, dtype=bool)
    with (
        writing(path, "the embeddings"),
        NpyRowWriter(path, count, dimension) as output,
        progress(count, f"embed {manifest.dataset}", unit) as advance,
    ):
        for first, block in blocks:
            vectors = np.asarray(block, dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[1] != dimension or not 0 <= first <= count - len(vectors):
                raise ArtifactError(
                    f"embedding block of shape {vectors.shape} at row {first} does not fit {count} rows of dimension {dimension}"
                )
            if normalize:
                vectors = normalize_rows(vectors)
            bad = first_non_finite_row(vectors)
            if bad is not None:
                item = manifest.rows[first + bad]["path"]
                raise InputDataError(f"non-finite embedding for {item}", "check the input and the model's weights")
            rows = slice(first, first + len(vectors))
            new = int(np.count_nonzero(~written[rows]))
            output.write(first, vectors)
            written[rows] = True
            advance(new)
    missing = np.flatnonzero(~written)
    if len(missing):
        raise ArtifactError(
            f"{len(missing)} of {count} embeddings never arrived (first: row {missing[0]}, {manifest.rows[missing[0]]['path']})",
            "rerun embed; with embed.engine: ray, check the cluster's logs for workers that died",
        )


def embeddings_sidecar(path: Path, manifest: Manifest, dimension: int, normalize: bool, **source: Any) -> dict[str, Any]:
    """The fields of ``embeddings.json`` every embed run writes (``source``: how the vectors were made)."""
    return sidecar(
        "embed",
        dataset=manifest.dataset,
        **source,
        layer=EMBEDDING_LAYER,
        dimension=dimension,
        count=len(manifest.rows),
        dtype="float32",
        order="manifest",
        normalized=normalize,
        metric="inner_product" if normalize else "l2",
        manifest_sha256=manifest.sha256,
        embeddings_sha256=sha256_file(path),
        versions=library_versions("tensorflow", "keras", "numpy"),
    )
