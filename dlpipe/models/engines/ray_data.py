"""The ``ray`` engine: Ray Data actors embed contiguous shards of rows, each loading the model once.

The driver turns the job into one Ray Data row per shard (its first row and its file paths),
``map_batches`` hands each shard to an actor of a fixed pool (``embed.ray.actors``, each with
``cpus_per_actor`` and ``gpus_per_actor``), and the actor decodes and embeds the shard with the
same tf.data code and batch boundaries as the local engine. Each result row carries its manifest
row number, so the driver writes it in place whatever order shards finish in.

Failures: Ray Data restarts a dead actor and retries its shard (its actor pools default to
unlimited restarts and task retries); a shard delivered twice is written once and a shard that
never arrives fails the run (``write_blocks`` checks every row). A DlpipeError on a worker (a
model that changed, weights missing on that node) comes back to the driver as that error.

Sizing on a small machine: Ray Data also needs a CPU for its own operators; a pool whose actors
reserve every CPU can stall the pipeline, so ``actors: 0`` leaves one CPU free.

Where it runs: with ``embed.ray.address`` (or ``$RAY_ADDRESS``) it joins that cluster and leaves it
running; otherwise it starts a local Ray on this machine and stops it when the stage ends. On a
cluster, every node needs dlpipe installed and must read the dataset's files and the model folder
at the same paths as the driver (a shared file system); see docs/SCALING.md.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from dlpipe.core.config import RayEngineConfig
from dlpipe.core.errors import ArtifactError, ConfigError, DependencyError, DlpipeError, InputDataError
from dlpipe.models.engines.base import EmbeddingJob, shards
from dlpipe.models.extractor import EmbedderRecipe

# CPUs that actors: 0 leaves to Ray Data's own operators (see "Sizing" above)
_RESERVED_CPUS = 1
_ERRORS = {cls.__name__: cls for cls in (ConfigError, InputDataError, ArtifactError, DependencyError)}


class RayEngine:
    """Connects to (or starts) a Ray cluster on enter, disconnects (or stops it) on exit."""

    def __init__(self, cfg: RayEngineConfig) -> None:
        self.cfg = cfg
        self.address = cfg.address or os.environ.get("RAY_ADDRESS", "")
        self.actors = 0

    def __enter__(self) -> RayEngine:
        try:
            import ray
        except ImportError:
            raise DependencyError(
                "embed.engine: ray needs the Ray package, which is not installed", "pip install -e '.[ray]' (or set embed.engine: local)"
            ) from None
        # Ray's own notices (token authentication, progress bars off, execution finished) are not the user's business.
        logging.getLogger("ray").setLevel(logging.ERROR)
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        try:
            if self.address:
                ray.init(address=self.address, **options)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"the Ray cluster at {self.address!r}" if self.address else "a local Ray"
            raise DependencyError(
                f"could not start or join {where}: {str(exc).strip().splitlines()[0]}",
                "check embed.ray.address / $RAY_ADDRESS (empty starts a local Ray), or set embed.engine: local",
            ) from None
        logging.getLogger("ray.data").setLevel(logging.ERROR)  # Ray Data sets up its own logger on import
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # dlpipe's own progress line counts the rows
        context.print_on_execution_start = False
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        # On a local Ray this stops every Ray process; on a cluster it only disconnects this driver.
        ray.shutdown()

    def embed(self, job: EmbeddingJob) -> Iterator[tuple[int, np.ndarray]]:
        """Every shard through the actor pool; blocks come back in the order shards finish."""
        import ray

        rows_per_shard = self.cfg.shard_batches * job.recipe.batch_size
        items = [
            {"shard": s.shard_id, "start": s.start, "paths": s.paths, "pillow": s.pillow} for s in shards(job, rows_per_shard)
        ]
        self.actors = min(len(items), self.cfg.actors or self._actors_that_fit())
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            EmbedShards,
            fn_constructor_args=(job.recipe, int(job.extractor.model.output_shape[-1])),
            batch_size=1,  # one shard per call: its rows are batched inside, from the shard's first row
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.cfg.cpus_per_actor,
            num_gpus=self.cfg.gpus_per_actor,
        )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                _raise_worker_error(batch["error"])
                yield from _contiguous_runs(batch["row"], batch["vector"])
        except DlpipeError:
            raise
        except Exception as exc:  # a failure of Ray itself, or a non-dlpipe error on a worker
            raise DependencyError(
                f"the Ray engine failed: {str(exc).strip().splitlines()[-1][:300]}",
                "see the Ray logs (/tmp/ray/session_latest/logs on the head node), or set embed.engine: local",
            ) from None

    def describe(self) -> dict[str, Any]:
        """The engine's name, its actor pool and where it ran (a local Ray, or the cluster joined)."""
        return {
            "name": "ray",
            "cluster": "joined" if self.address else "local",
            "actors": self.actors,
            "cpus_per_actor": self.cfg.cpus_per_actor,
            "gpus_per_actor": self.cfg.gpus_per_actor,
            "shard_batches": self.cfg.shard_batches,
        }

    def _actors_that_fit(self) -> int:
        """As many actors as the cluster's GPUs (or CPUs, one left for Ray Data) hold, at least one."""
        import ray

        resources = ray.cluster_resources()
        if self.cfg.gpus_per_actor > 0:
            return max(1, math.floor(resources.get("GPU", 0) / self.cfg.gpus_per_actor))
        return max(1, math.floor((resources.get("CPU", 1) - _RESERVED_CPUS) / self.cfg.cpus_per_actor))


class EmbedShards:
    """The Ray Data callable class: builds the model once per actor, then embeds one shard per call.

    A DlpipeError (a changed model, missing weights) comes back as data, an ``error`` row the driver
    raises again: Ray hands the driver only the text of an exception raised in a UDF.
    """

    def __init__(self, recipe: EmbedderRecipe, dimension: int) -> None:
        self.dimension = dimension
        self.failure: DlpipeError | None = None
        try:
            self.embedder = recipe.build()
        except DlpipeError as exc:
            self.failure = exc

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Rows, vectors and an empty error per row of the shards in ``batch``; one error row on failure."""
        if self.failure is not None:
            return _error_rows(self.failure, self.dimension)
        rows, vectors = [], []
        for start, paths, pillow in zip(batch["start"], batch["paths"], batch["pillow"], strict=True):
            try:
                block = np.concatenate(list(self.embedder.embed([str(p) for p in paths], [bool(b) for b in pillow])))
            except DlpipeError as exc:
                return _error_rows(exc, self.dimension)
            rows.append(np.arange(int(start), int(start) + len(block), dtype=np.int64))
            vectors.append(block.astype(np.float32, copy=False))
        count = sum(len(r) for r in rows)
        return {"row": np.concatenate(rows), "vector": np.concatenate(vectors), "error": np.full(count, "", dtype=object)}


def _error_rows(error: DlpipeError, dimension: int) -> dict[str, np.ndarray]:
    text = json.dumps({"class": type(error).__name__, "message": error.message, "hint": error.hint})
    return {"row": np.array([-1]), "vector": np.zeros((1, dimension), np.float32), "error": np.array([text], dtype=object)}


def _raise_worker_error(errors: np.ndarray) -> None:
    """Raise the first DlpipeError a worker sent back as an ``error`` row."""
    for text in errors:
        if text:
            record = json.loads(text)
            raise _ERRORS.get(record["class"], DlpipeError)(record["message"], record["hint"])


def _contiguous_runs(rows: np.ndarray, vectors: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, vectors)`` for each run of consecutive row numbers in a result batch."""
    rows = np.asarray(rows, dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float32)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for run_rows, run_vectors in zip(np.split(rows, breaks), np.split(vectors, breaks), strict=True):
        if len(run_rows):
            yield int(run_rows[0]), run_vectors
