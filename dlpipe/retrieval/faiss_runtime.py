"""What FAISS may use: the one GPU probe and the one OpenMP thread-count guard of dlpipe."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import faiss

from dlpipe.core.errors import DependencyError


def gpu_wanted(requested: bool | None) -> bool:
    """Whether FAISS work runs on a GPU: ``None`` uses one when FAISS sees one, ``False`` never does.

    Raises:
        DependencyError: ``requested`` is True but FAISS sees no GPU (the CPU build, or no device).
    """
    gpus = faiss.get_num_gpus()
    if requested and gpus == 0:
        raise DependencyError(
            "a GPU was requested but FAISS sees no GPU",
            "install the GPU build (pip install '.[gpu]', after uninstalling faiss-cpu) on a machine with a GPU, "
            "or leave use_gpu unset",
        )
    return gpus > 0 and requested is not False


@contextlib.contextmanager
def faiss_threads(count: int | None) -> Iterator[None]:
    """Run FAISS's OpenMP code on ``count`` threads inside the block (None: leave it), then restore the previous count."""
    previous = faiss.omp_get_max_threads()
    if count is not None:
        faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
