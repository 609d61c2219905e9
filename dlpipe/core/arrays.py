"""Checks over 2-D arrays that may be memory-mapped: read in blocks, so a large file stays on disk."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# Bytes read per block: large enough to stream at disk speed, small beside any machine's memory.
BLOCK_BYTES = 64 << 20


def first_failing_row(vectors: np.ndarray, row_ok: Callable[[np.ndarray], np.ndarray]) -> int | None:
    """The index of the first row for which ``row_ok`` (block -> one bool per row) is False, or None."""
    step = max(1, BLOCK_BYTES // max(1, vectors.itemsize * int(np.prod(vectors.shape[1:]))))
    for start in range(0, vectors.shape[0], step):
        ok = row_ok(np.asarray(vectors[start : start + step]))
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def first_non_finite_row(vectors: np.ndarray) -> int | None:
    """The index of the first row holding NaN or an infinity, or None when every value is finite."""
    return first_failing_row(vectors, lambda block: np.isfinite(block).all(axis=tuple(range(1, block.ndim))))
