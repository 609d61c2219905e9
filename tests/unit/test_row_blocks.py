"""Reading embeddings in blocks: the same values as numpy's indexing, and a memory map's pages left unmapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlpipe.core.arrays import first_non_finite_row, row_blocks, take_rows
from dlpipe.core.errors import ArtifactError


def saved(tmp_path: Path, array: np.ndarray) -> np.ndarray:
    np.save(tmp_path / "embeddings.npy", array)
    return np.load(tmp_path / "embeddings.npy", mmap_mode="r")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_and_rows_of_a_memory_map_are_numpys(tmp_path: Path, dtype: type) -> None:
    array = np.random.default_rng(0).normal(size=(103, 7)).astype(dtype)
    mapped = saved(tmp_path, array)
    blocks = [(start, block.copy()) for start, block in row_blocks(mapped, 10)]  # each block reuses one buffer
    assert [start for start, _ in blocks] == list(range(0, 103, 10))
    assert all(block.dtype == dtype and not isinstance(block, np.memmap) for _, block in blocks)
    assert np.array_equal(np.concatenate([block for _, block in blocks]), array)
    middle = [(start, block.copy()) for start, block in row_blocks(mapped, 4, start=21, stop=30)]
    assert [start for start, _ in middle] == [21, 25, 29] and np.array_equal(np.concatenate([b for _, b in middle]), array[21:30])
    rows = [5, 102, 0, 5, 64]  # any order, repeats allowed
    assert np.array_equal(take_rows(mapped, rows), array[rows])
    # a slice of a memory map is read through numpy (its offset is its parent's)
    assert np.array_equal(take_rows(mapped[10:20], [0, 9]), array[[10, 19]])
    assert np.array_equal(np.concatenate([b for _, b in row_blocks(mapped[10:20], 3)]), array[10:20])
    with pytest.raises(IndexError):
        take_rows(mapped, [103])


def test_first_non_finite_row_finds_the_row_across_blocks(tmp_path: Path) -> None:
    array = np.ones((50, 3), dtype=np.float32)
    array[37, 1] = np.nan
    mapped = saved(tmp_path, array)
    assert first_non_finite_row(mapped) == 37
    assert first_non_finite_row(mapped[:30]) is None


def test_a_file_truncated_under_the_reader_is_an_artifact_error(tmp_path: Path) -> None:
    mapped = saved(tmp_path, np.ones((100, 4), dtype=np.float32))
    with open(tmp_path / "embeddings.npy", "r+b") as handle:
        handle.truncate(1000)
    with pytest.raises(ArtifactError, match="ended early"):
        list(row_blocks(mapped, 10))


def resident_file_pages_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) / 1024
    pytest.skip("no RssFile in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux's /proc")
def test_reading_a_memory_map_in_blocks_leaves_its_pages_unmapped(tmp_path: Path) -> None:
    mapped = saved(tmp_path, np.ones((64 * 1024, 128), dtype=np.float32))  # 32 MiB
    before = resident_file_pages_mb()
    total = sum(float(block.sum()) for _, block in row_blocks(mapped, 4096))
    total += float(take_rows(mapped, np.arange(0, 64 * 1024, 7)).sum())
    assert total > 0 and resident_file_pages_mb() - before < 8
    np.asarray(mapped).sum()  # the same pass through the mapping maps every page: the check above can fail
    assert resident_file_pages_mb() - before > 24
