"""Read ``embed``'s output back, checked against its sidecar and the current manifest, and in bounded blocks.

``cluster`` and ``search`` both start here, so a stale, truncated or corrupt
``embeddings.npy`` is refused the same way everywhere, before any work.

:func:`row_blocks` and :func:`take_rows` read rows of any 2-D array; from a memory-mapped ``.npy``
they read through the file instead of the mapping. Every page touched through a mapping stays
mapped, and counted in the process's resident memory, until the mapping is closed: one pass over
a 2.4 GiB ``embeddings.npy`` would leave 2.4 GiB resident, whatever size of block the caller
reads. Read through the file, those pages are the kernel's page cache and the process holds
only the block it asked for.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.arrays import BLOCK_BYTES, first_non_finite_row
from dlpipe.core.artifacts import read_json, sha256_file
from dlpipe.core.config import Project
from dlpipe.core.errors import ArtifactError
from dlpipe.core.layout import EMBEDDINGS_FILE, EMBEDDINGS_SIDECAR
from dlpipe.data.manifest import Manifest, load_model_manifest


@dataclass(frozen=True)
class Embeddings:
    """One dataset's embeddings (memory-mapped, manifest order), their sidecar and the manifest."""

    vectors: np.ndarray
    sidecar: dict[str, Any]
    manifest: Manifest
    path: Path

    @property
    def normalized(self) -> bool:
        """True when rows are L2-normalised (inner product is cosine similarity)."""
        return bool(self.sidecar["normalized"])


def load_embeddings(project: Project, dataset: str) -> Embeddings:
    """Open ``<data_dir>/<dataset>/embed/embeddings.npy`` after checking it is whole and current.

    Raises:
        ArtifactError: the file or sidecar is missing or corrupt, its sha256 or shape disagrees with the
            sidecar, the manifest changed since embedding, it holds no rows, or a row is NaN/inf.
    """
    manifest = load_model_manifest(project, dataset)
    folder = project.layout(dataset).embed_dir
    path = folder / EMBEDDINGS_FILE
    sidecar = read_json(folder / EMBEDDINGS_SIDECAR, "embeddings sidecar")
    rerun = f"rerun `dlpipe embed --dataset {dataset}` (or `dvc repro`)"
    if not path.is_file():
        raise ArtifactError(f"embeddings not found: {path}", rerun)
    if sha256_file(path) != sidecar.get("embeddings_sha256"):
        raise ArtifactError(f"{path} does not match the sha256 in {EMBEDDINGS_SIDECAR} (truncated or replaced?)", rerun)
    if sidecar.get("manifest_sha256") != manifest.sha256:
        raise ArtifactError(f"dataset '{dataset}' was re-ingested after {path} was written (manifest sha256 differs)", rerun)
    try:
        vectors = np.load(path, mmap_mode="r")
    except ValueError as exc:
        raise ArtifactError(f"{path} is not a readable .npy file ({exc})", rerun) from None
    expected = (sidecar.get("count"), sidecar.get("dimension"))
    if vectors.ndim != 2 or vectors.shape != expected or vectors.shape[0] != len(manifest.rows):
        raise ArtifactError(
            f"{path} has shape {vectors.shape}, but the sidecar says {expected} and the manifest has {len(manifest.rows)} rows",
            rerun,
        )
    if vectors.shape[0] == 0:
        raise ArtifactError(f"{path} holds no embeddings", "ingest a dataset with at least one image, then " + rerun)
    row = first_bad_row(vectors, first_non_finite_row)
    if row is not None:
        raise ArtifactError(f"{path} row {row} ({manifest.rows[row]['path']}) holds NaN or inf", rerun)
    return Embeddings(vectors, sidecar, manifest, path)


def rows_per_block(dimension: int, itemsize: int = 4, block_bytes: int = BLOCK_BYTES) -> int:
    """How many rows of ``dimension`` values of ``itemsize`` bytes make one block of ``block_bytes`` (at least 1)."""
    return max(1, block_bytes // max(1, dimension * itemsize))


def row_blocks(
    vectors: np.ndarray, rows: int | None = None, start: int = 0, stop: int | None = None
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, block)`` over rows ``start:stop`` of a 2-D array, in order, ``rows`` rows per block.

    ``rows`` defaults to :data:`dlpipe.core.arrays.BLOCK_BYTES` (64 MiB) of the array's values. A block
    is a view of an array already in memory. From a memory-mapped ``.npy`` it is read through the file
    into one buffer that every block reuses, so no page of the mapping stays resident (see the module
    docstring) and one block's memory is all it takes: copy what must outlive the next block.
    """
    count, dimension = vectors.shape
    stop = count if stop is None else min(stop, count)
    step = rows or rows_per_block(dimension, vectors.itemsize)
    source = _mapped_file(vectors)
    if source is None:
        for first in range(start, stop, step):
            yield first, np.asarray(vectors[first : first + step])
        return
    path, offset = source
    row_bytes = dimension * vectors.itemsize
    buffer = np.empty((min(step, max(stop - start, 0)), dimension), dtype=vectors.dtype)
    with open(path, "rb") as handle:
        for first in range(start, stop, step):
            block = buffer[: min(step, stop - first)]
            handle.seek(offset + first * row_bytes)
            _read_exactly(handle, memoryview(block).cast("B"), path)
            yield first, block


def first_bad_row(vectors: np.ndarray, find: Callable[[np.ndarray], int | None]) -> int | None:
    """The first row of ``vectors`` that ``find`` reports (a check of one block: its first bad row, or None), read
    in :func:`row_blocks`; e.g. ``first_bad_row(vectors, first_non_finite_row)``."""
    for start, block in row_blocks(vectors):
        bad = find(block)
        if bad is not None:
            return start + bad
    return None


def take_rows(vectors: np.ndarray, rows: np.ndarray | list[int]) -> np.ndarray:
    """A copy of the given rows (in the order given) of a 2-D array; a memory-mapped ``.npy`` is read through its file."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    source = _mapped_file(vectors)
    if source is None:
        return np.asarray(vectors[rows])
    path, offset = source
    count, dimension = vectors.shape
    if len(rows) and (rows.min() < 0 or rows.max() >= count):
        raise IndexError(f"rows must lie in 0..{count - 1}")
    row_bytes = dimension * vectors.itemsize
    taken = np.empty((len(rows), dimension), dtype=vectors.dtype)
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
