"""The ``local`` engine: the tf.data pipeline and the model in this process (the default)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from dlpipe.models.engines.base import EmbeddingJob
from dlpipe.models.extractor import ImageEmbedder, sequential_blocks


class LocalEngine:
    """One pipeline over every row, batches in manifest order."""

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def embed(self, job: EmbeddingJob) -> Iterator[tuple[int, np.ndarray]]:
        """Batches of ``embed.batch_size`` images from row 0 on, through the driver's own model."""
        embedder = ImageEmbedder(job.extractor, job.recipe.batch_size)
        return sequential_blocks(embedder.embed(job.paths, job.pillow))

    def describe(self) -> dict[str, Any]:
        """``{"name": "local"}``."""
        return {"name": "local"}
