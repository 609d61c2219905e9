"""The ``local`` engine: the worker in this process, one pass over every item in order (the default)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dlpipe.models.engines.base import InferenceJob, Results, sequential_blocks


class LocalEngine:
    """One pass over every item, batches in order."""

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, job: InferenceJob) -> Iterator[tuple[int, Results]]:
        """The driver's worker (or one built from the recipe) over all items, from row 0 on."""
        worker = job.local if job.local is not None else job.recipe.build()
        return sequential_blocks(worker.run(job.items))

    def describe(self) -> dict[str, Any]:
        """``{"name": "local"}``."""
        return {"name": "local"}
