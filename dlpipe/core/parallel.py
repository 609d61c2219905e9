"""Map a function over many items in a process pool, with progress.

Workers are fresh interpreters (``spawn``), not forks of the caller: a forked child shares the
caller's heap, and the caller then writes to those pages (every read of a Python object updates its
reference count), so each child ends up holding a private copy of the caller's items; it would also
inherit every open file, the stage lock among them. Each worker asks the kernel to kill it when the
caller dies (:func:`die_with_parent`), so a killed stage leaves no worker behind. Each task carries
one contiguous slice of the items, so pickling costs one call per slice; that keeps the overhead
small enough for cheap items (decoding a 96 px thumbnail takes well under a millisecond).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from dlpipe.core.console import progress

T = TypeVar("T")
R = TypeVar("R")

# Below this many items per worker, starting processes costs more than it saves.
_MIN_ITEMS_PER_WORKER = 4
# Ranges per worker: enough to balance uneven items and move the progress bar, few enough to stay cheap.
_RANGES_PER_WORKER = 8

_function: Callable | None = None


def resolve_workers(workers: int) -> int:
    """``0`` means one worker per CPU core."""
    return workers or os.cpu_count() or 1


def parallel_map(
    function: Callable[[T], R], items: Sequence[T], workers: int, description: str, unit: str = "items"
) -> list[R]:
    """Return ``[function(item) for item in items]``, computed by ``workers`` processes.

    Args:
        function: a picklable (module-level) function of one item.
        items: the inputs; results come back in the same order.
        workers: process count; 0 means one per core, 1 runs in this process.
        description: label of the progress bar.
        unit: what an item is called in the throughput figure.
    """
    workers = resolve_workers(workers)
    total = len(items)
    with progress(total, description, unit) as advance:
        if workers == 1 or total < _MIN_ITEMS_PER_WORKER * workers:
            results = []
            for item in items:
                results.append(function(item))
                advance(1)
            return results
        size = max(1, math.ceil(total / (workers * _RANGES_PER_WORKER)))
        context = multiprocessing.get_context("spawn")
        chunks = (items[start : start + size] for start in range(0, total, size))
        start_worker = (function, os.getpid())
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_install_function, initargs=start_worker) as pool:
            results = []
            for batch in pool.map(_run_chunk, chunks):
                results.extend(batch)
                advance(len(batch))
            return results


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent (pid ``parent``) dies; Linux only, else nothing.

    Call it first thing in a child process. A parent that died before the request took effect is
    caught by comparing ``parent`` with the current parent.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


def _install_function(function: Callable, parent: int) -> None:
    die_with_parent(parent)
    global _function
    _function = function
    # The pool already has a process per core: BLAS threads inside each worker would only compete for them.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _run_chunk(chunk: Sequence) -> list:
    assert _function is not None, "worker started without a function"
    return [_function(item) for item in chunk]
