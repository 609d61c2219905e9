"""The engine seam: what an engine is given and what it yields.

An engine is a context manager (it may start and stop a cluster connection) whose ``embed``
yields ``(first row, vectors)`` blocks covering every row of the job exactly once, in any
order. Shards are contiguous blocks of rows that start at a multiple of the batch size, so every
engine batches the images exactly as the local pipeline does, and the model sees the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from dlpipe.models.extractor import EmbedderRecipe, Extractor


@dataclass(frozen=True)
class EmbeddingJob:
    """Image files to embed, in manifest order, and the model to embed them with.

    Attributes:
        extractor: the model as the driver built and checked it (the local engine runs it directly).
        recipe: how a worker elsewhere rebuilds the same model (remote engines send this, not the model).
        paths: the image files, row ``i`` being manifest row ``i``.
        pillow: per path, whether it must be decoded with Pillow (see ``models.inputs.needs_pillow``).
    """

    extractor: Extractor
    recipe: EmbedderRecipe
    paths: list[str]
    pillow: list[bool]


@dataclass(frozen=True)
class Shard:
    """Rows ``[start, start + len(paths))`` of a job: the unit of work an engine hands out (and retries)."""

    shard_id: int
    start: int
    paths: list[str]
    pillow: list[bool]


def shards(job: EmbeddingJob, rows_per_shard: int) -> Iterator[Shard]:
    """The job's rows cut into contiguous shards of ``rows_per_shard`` (the last may be shorter)."""
    for shard_id, start in enumerate(range(0, len(job.paths), rows_per_shard)):
        stop = start + rows_per_shard
        yield Shard(shard_id, start, job.paths[start:stop], job.pillow[start:stop])


class Engine(AbstractContextManager, Protocol):
    """Maps an embedding model over a job's rows (see the module docstring)."""

    def embed(self, job: EmbeddingJob) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, float32 vectors)`` blocks that together cover every row of ``job`` once."""
        ...

    def describe(self) -> dict[str, Any]:
        """What ran, for the embeddings sidecar (the engine's name and its workers)."""
        ...
