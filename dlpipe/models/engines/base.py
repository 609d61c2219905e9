"""The engine seam: what an engine is given and what it yields.

A job is a list of picklable items (image paths, files to predict) and a recipe that builds a
:class:`Worker` (the model, loaded once) wherever the job runs. An engine is a context manager (it
may start and stop a cluster connection) whose ``map`` yields ``(first row, results)`` blocks that
cover every item exactly once, in any order: a float32 array (one row per item) or a list (one
object per item). Shards are contiguous rows starting at a multiple of the job's batch size, so a
worker batches them exactly as one pass over every item would, and the model sees the same inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

# One block of results: a float32 array with a row per item, or a list with an object per item.
Results = np.ndarray | list[Any]


class Worker(Protocol):
    """A model ready to run: items in, results out, in order."""

    width: int | None  # columns of each array result; None when results are objects

    def run(self, items: Sequence[Any]) -> Iterator[Results]:
        """Results for ``items`` in order, in consecutive batches (batch ``i`` starts at item ``i * batch_size``)."""
        ...


class Recipe(Protocol):
    """How to build a worker anywhere the model's files can be read: small and picklable."""

    def build(self) -> Worker:
        """Load the model (once per worker)."""
        ...


@dataclass(frozen=True)
class InferenceJob:
    """Items to map a model over, in output order.

    Attributes:
        recipe: how a worker elsewhere builds the model (remote engines send this, not the model).
        items: picklable items, row ``i`` of the output being item ``i`` (any sequence: a lazy view
            over a manifest keeps the driver's memory flat).
        batch_size: shards start at multiples of it.
        local: the driver's own worker, already built and checked (the local engine runs it; None builds one).
    """

    recipe: Recipe
    items: Sequence[Any]
    batch_size: int
    local: Worker | None = None


@dataclass(frozen=True)
class Shard:
    """Items ``[start, start + len(items))`` of a job: the unit of work an engine hands out (and retries)."""

    start: int
    items: list[Any]


def shards(job: InferenceJob, rows_per_shard: int) -> Iterator[Shard]:
    """The job's items cut into contiguous shards of ``rows_per_shard`` (the last may be shorter)."""
    for start in range(0, len(job.items), rows_per_shard):
        yield Shard(start, job.items[start : start + rows_per_shard])


def sequential_blocks(blocks: Iterable[Results]) -> Iterator[tuple[int, Results]]:
    """``(first row, results)`` for blocks that follow each other from row 0."""
    row = 0
    for block in blocks:
        yield row, block
        row += len(block)


def concatenated(blocks: list[Results]) -> Results:
    """Consecutive result blocks as one (arrays stacked, lists joined)."""
    if blocks and isinstance(blocks[0], np.ndarray):
        return np.concatenate(blocks)
    return [result for block in blocks for result in block]


class Engine(AbstractContextManager, Protocol):
    """Maps a worker over a job's items (see the module docstring)."""

    def map(self, job: InferenceJob) -> Iterator[tuple[int, Results]]:
        """``(first row, results)`` blocks that together cover every item of ``job`` once."""
        ...

    def describe(self) -> dict[str, Any]:
        """What ran, for sidecars (the engine's name and its workers)."""
        ...
