"""Reading arrays that may be memory-mapped in bounded blocks, and checks over their rows.

:func:`row_blocks` and :func:`take_rows` read rows of any array; from a memory-mapped ``.npy``
they read through the file instead of the mapping. Every page touched through a mapping stays
mapped, and counted in the process's resident memory, until the mapping is closed: one pass over
a 2.4 GiB ``embeddings.npy`` would leave 2.4 GiB resident, whatever size of block the caller
reads. Read through the file, those pages are the kernel's page cache and the process holds
only the block it asked for.
"""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from dlpipe.core.errors import ArtifactError

# Bytes read per block: large enough to stream at disk speed, small beside any machine's memory.
BLOCK_BYTES = 64 << 20


class NpyRowWriter:
    """A float32 ``.npy`` of ``rows`` x ``dimension`` whose space is allocated up front and rows written through the file.

    A memory-mapped output would be a sparse file: on a full disk the kernel kills the process with
    SIGBUS at the first page it cannot back, with no message. Allocated first, a full disk is an
    OSError before any row is written; written with ``pwrite``, a later failure is an OSError too.
    Use it as a context manager; the file is complete only when every row was written.
    """

    def __init__(self, path: Any, rows: int, dimension: int) -> None:
        self.dimension = dimension
        self._handle = open(path, "wb")  # noqa: SIM115 (closed in __exit__)
        try:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False, "shape": (rows, dimension)}
            np.lib.format.write_array_header_1_0(self._handle, header)
            self._handle.flush()
            self._offset = self._handle.tell()
            size = rows * dimension * 4
            if size:
                os.posix_fallocate(self._handle.fileno(), self._offset, size)
        except BaseException:
            self._handle.close()
            raise

    def write(self, first: int, block: np.ndarray) -> None:
        """Write ``block`` (float32, C order) as rows ``first`` onwards."""
        data = np.ascontiguousarray(block, dtype=np.float32)
        os.pwrite(self._handle.fileno(), data.data, self._offset + first * self.dimension * 4)

    def __enter__(self) -> NpyRowWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.close()


def load_npy(path: Any, what: str, mmap_mode: str | None = None) -> np.ndarray:
    """Open a ``.npy`` artifact as plain numbers: an object array (a pickle inside) is refused, never loaded.

    Args:
        path: the file.
        what: what it is, for the error message.
        mmap_mode: ``"r"`` to map it instead of reading it.

    Raises:
        ArtifactError: the file is missing, is a folder, is not a ``.npy`` file, is truncated, or holds objects.
    """
    rerun = "rerun the stage that writes it"
    try:
        array = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except FileNotFoundError:
        raise ArtifactError(f"{what} not found: {path}", rerun) from None
    except (ValueError, OSError, EOFError) as exc:  # numpy's words for not-a-.npy, truncated, and pickled objects
        raise ArtifactError(f"{what} in {path} is not a readable array of numbers ({exc})", rerun) from None
    if not isinstance(array, np.ndarray) or array.dtype.hasobject:
        raise ArtifactError(f"{what} in {path} is not an array of numbers", rerun)
    return array


def first_failing_row(vectors: np.ndarray, row_ok: Callable[[np.ndarray], np.ndarray]) -> int | None:
    """The index of the first row for which ``row_ok`` (block -> one bool per row) is False, or None."""
    for start, block in row_blocks(vectors):
        ok = row_ok(block)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def first_non_finite_row(vectors: np.ndarray) -> int | None:
    """The index of the first row holding NaN or an infinity, or None when every value is finite."""
    return first_failing_row(vectors, lambda block: np.isfinite(block).all(axis=tuple(range(1, block.ndim))))


def rows_per_block(dimension: int, itemsize: int = 4, block_bytes: int = BLOCK_BYTES) -> int:
    """How many rows of ``dimension`` values of ``itemsize`` bytes make one block of ``block_bytes`` (at least 1)."""
    return max(1, block_bytes // max(1, dimension * itemsize))


def row_blocks(vectors: np.ndarray, rows: int | None = None, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, block)`` over rows ``start:stop`` (the first axis) of an array, in order, ``rows`` rows per block.

    ``rows`` defaults to :data:`dlpipe.core.arrays.BLOCK_BYTES` (64 MiB) of the array's values. A block
    is a view of an array already in memory. From a memory-mapped ``.npy`` it is read through the file
    into one buffer that every block reuses, so no page of the mapping stays resident (see the module
    docstring) and one block's memory is all it takes: copy what must outlive the next block.
    """
    count, row_shape = vectors.shape[0], vectors.shape[1:]
    stop = count if stop is None else min(stop, count)
    step = rows or rows_per_block(int(np.prod(row_shape)), vectors.itemsize)
    source = _mapped_file(vectors)
    if source is None:
        for first in range(start, stop, step):
            yield first, np.asarray(vectors[first : first + step])
        return
    path, offset = source
    row_bytes = int(np.prod(row_shape)) * vectors.itemsize
    buffer = np.empty((min(step, max(stop - start, 0)), *row_shape), dtype=vectors.dtype)
    with open(path, "rb") as handle:
        for first in range(start, stop, step):
            block = buffer[: min(step, stop - first)]
            handle.seek(offset + first * row_bytes)
            _read_exactly(handle, memoryview(block).cast("B"), path)
            yield first, block


def take_rows(vectors: np.ndarray, rows: np.ndarray | list[int]) -> np.ndarray:
    """A copy of the given rows (in the order given) of an array; a memory-mapped ``.npy`` is read through its file."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    source = _mapped_file(vectors)
    if source is None:
        return np.asarray(vectors[rows])
    path, offset = source
    count, row_shape = vectors.shape[0], vectors.shape[1:]
    if len(rows) and (rows.min() < 0 or rows.max() >= count):
        raise IndexError(f"rows must lie in 0..{count - 1}")
    row_bytes = int(np.prod(row_shape)) * vectors.itemsize
    taken = np.empty((len(rows), *row_shape), dtype=vectors.dtype)
    buffer = memoryview(taken).cast("B")
    with open(path, "rb") as handle:
        for i, row in enumerate(rows.tolist()):
            handle.seek(offset + row * row_bytes)
            _read_exactly(handle, buffer[i * row_bytes : (i + 1) * row_bytes], path)
    return taken


def _mapped_file(vectors: np.ndarray) -> tuple[str, int] | None:
    """``(file, byte offset)`` of a C-ordered ``np.memmap`` that maps a whole file array; None for anything else.

    A slice of a memmap keeps its parent's ``offset``, so only an array whose buffer is the mapping itself qualifies.
    """
    if isinstance(vectors, np.memmap) and isinstance(vectors.base, mmap.mmap) and vectors.flags.c_contiguous and vectors.filename:
        return vectors.filename, vectors.offset
    return None


def _read_exactly(handle: Any, buffer: memoryview, path: str) -> None:
    while buffer.nbytes:
        got = handle.readinto(buffer)
        if not got:
            raise ArtifactError(f"{path} ended early: it was truncated while being read", "rerun the stage that wrote it")
        buffer = buffer[got:]
