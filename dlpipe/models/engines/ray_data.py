"""The ``ray`` engine: Ray Data actors run contiguous shards of items, each loading the model once.

The driver turns the job into one Ray Data row per shard (its first row and its items, e.g. file
paths), ``map_batches`` hands each shard to an actor of a fixed pool (``embed.ray.actors``, each with
``cpus_per_actor`` and ``gpus_per_actor``), and the actor runs the job's worker over the shard: the
same code and batch boundaries as the local engine. Each result row carries its row number, so the
driver puts it in place whatever order shards finish in.

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
from dlpipe.models.engines.base import InferenceJob, Recipe, Results, concatenated, shards

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
                # "local": a Ray of its own even when `ray start` left a cluster running on this machine
                ray.init(address="local", num_cpus=os.cpu_count() or 1, **options)
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

    def map(self, job: InferenceJob) -> Iterator[tuple[int, Results]]:
        """Every shard through the actor pool; blocks come back in the order shards finish."""
        import ray

        rows_per_shard = self.cfg.shard_batches * job.batch_size
        items = [{"start": shard.start, "items": shard.items} for shard in shards(job, rows_per_shard)]
        self.actors = min(len(items), self.cfg.actors or self._actors_that_fit())
        dataset = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            MapShards,
            fn_constructor_args=(job.recipe,),
            batch_size=1,  # one shard per call: the worker batches its items from the shard's first row
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=self.cfg.cpus_per_actor,
            num_gpus=self.cfg.gpus_per_actor,
        )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                _raise_worker_error(batch["error"])
                yield from _contiguous_runs(batch["row"], batch["result"])
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


class MapShards:
    """The Ray Data callable class: builds the worker once per actor, then runs one shard per call.

    A DlpipeError (a changed model, weights missing on that node) comes back as data, an ``error``
    row the driver raises again: Ray hands the driver only the text of an exception raised in a UDF.
    """

    def __init__(self, recipe: Recipe) -> None:
        self.failure: DlpipeError | None = None
        self.width: int | None = None
        try:
            self.worker = recipe.build()
            self.width = self.worker.width
        except DlpipeError as exc:
            self.failure = exc

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        """Row numbers, results and an empty error per item of the shard(s) in ``batch``; one error row on failure."""
        if self.failure is not None:
            return self._error_row(self.failure)
        rows, results = [], []
        for start, items in zip(batch["start"], batch["items"], strict=True):
            try:
                block = concatenated(list(self.worker.run(list(items))))
            except DlpipeError as exc:
                return self._error_row(exc)
            rows.append(np.arange(int(start), int(start) + len(block), dtype=np.int64))
            results.append(block)
        result = concatenated(results)
        if not isinstance(result, np.ndarray):
            objects = np.empty(len(result), dtype=object)  # a 1-D column even when the objects are sequences
            objects[:] = result
            result = objects
        return {"row": np.concatenate(rows), "result": result, "error": np.full(len(result), "", dtype=object)}

    def _error_row(self, error: DlpipeError) -> dict[str, Any]:
        text = json.dumps({"class": type(error).__name__, "message": error.message, "hint": error.hint})
        placeholder = np.zeros((1, self.width), np.float32) if self.width else np.array([None], dtype=object)
        return {"row": np.array([-1]), "result": placeholder, "error": np.array([text], dtype=object)}


def _raise_worker_error(errors: np.ndarray) -> None:
    """Raise the first DlpipeError a worker sent back as an ``error`` row."""
    for text in errors:
        if text:
            record = json.loads(text)
            raise _ERRORS.get(record["class"], DlpipeError)(record["message"], record["hint"])


def _contiguous_runs(rows: np.ndarray, results: np.ndarray) -> Iterator[tuple[int, Results]]:
    """``(first row, results)`` for each run of consecutive row numbers in a result batch."""
    rows = np.asarray(rows, dtype=np.int64)
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    for run_rows, run_results in zip(np.split(rows, breaks), np.split(results, breaks), strict=True):
        if len(run_rows):
            yield int(run_rows[0]), run_results if run_results.dtype != object else list(run_results)
