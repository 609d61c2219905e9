"""FAISS indices whose inverted lists live on disk: same answers as in memory, memory-mapped loads, refusals."""

from __future__ import annotations

import ctypes
import json
import math
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from dlpipe.core.config import load_project
from dlpipe.core.errors import ArtifactError, ConfigError
from dlpipe.core.layout import INDEX_DATA_FILE, INDEX_FILE
from dlpipe.retrieval import index as ix
from tests.conftest import REPO
from tests.unit.test_index import clustered, one_thread  # noqa: F401  (autouse: FAISS on one thread here too)

MB = 2**20


@pytest.fixture
def mapped(tmp_path: Path) -> np.ndarray:
    """3,000 clustered 16-d unit vectors, memory-mapped from a .npy as the stages read embeddings."""
    np.save(tmp_path / "embeddings.npy", clustered(3000, seed=5))
    return np.load(tmp_path / "embeddings.npy", mmap_mode="r")


def ondisk(vectors: np.ndarray, factory: str, folder: Path, rows: int = 700) -> ix.OnDiskBuild:
    folder.mkdir(parents=True, exist_ok=True)
    return ix.build_ondisk_index(vectors, factory, folder, shard_rows=rows, seed=3)


@pytest.mark.parametrize("factory", ["IVF16,Flat", "IVF16,SQ8", "IVF16,PQ4x8"])
def test_shards_merged_on_disk_answer_exactly_like_the_index_in_memory(mapped: np.ndarray, tmp_path: Path, factory: str) -> None:
    in_memory = ix.build_index(mapped, factory, seed=3)
    built = ondisk(mapped, factory, tmp_path / "search")
    assert (built.shards, built.shard_rows, built.index.ntotal) == (5, 700, 3000)  # 4 x 700 rows, then 200
    # only the merged lists stay: the shard files were removed
    assert sorted(path.name for path in (tmp_path / "search").iterdir()) == [INDEX_DATA_FILE]
    queries = np.asarray(mapped[::97])
    for nprobe in (1, 4, 16):
        ix.set_search_params(in_memory, {"nprobe": nprobe})
        ix.set_search_params(built.index, {"nprobe": nprobe})
        expected, found = ix.search(in_memory, queries, 10), ix.search(built.index, queries, 10)
        assert np.array_equal(found[1], expected[1]) and np.array_equal(found[0], expected[0])


def test_tuning_and_recall_are_the_same_on_disk(mapped: np.ndarray, tmp_path: Path) -> None:
    in_memory = ix.build_index(mapped, "IVF32,SQ8", seed=3)
    built = ondisk(mapped, "IVF32,SQ8", tmp_path / "search", rows=1024)
    queries = np.asarray(mapped[1::50])
    tuned = [ix.tune_search_params(index, mapped, queries, None, 10, 0.9) for index in (in_memory, built.index)]
    assert tuned[0] == tuned[1] and tuned[0][0]["nprobe"] > 1


def test_saved_index_loads_memory_mapped_from_a_copied_read_only_folder(
    mapped: np.ndarray, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    staging = tmp_path / ".search.partial"
    built = ondisk(mapped, "IVF16,SQ8", staging)
    ix.set_search_params(built.index, {"nprobe": 4})
    expected = ix.search(built.index, np.asarray(mapped[:20]), 5)
    ix.save_index(built.index, staging, {"shards": built.shards})
    info = json.loads((staging / "index.json").read_text())
    lists_bytes = (staging / INDEX_DATA_FILE).stat().st_size
    assert info["storage"] == "ondisk" and info["shards"] == 5 and info["lists_bytes"] == lists_bytes == 3000 * (16 + 8)
    # moved (as a staging folder is swapped in), then copied elsewhere, read-only (as DVC's cache may be)
    final = tmp_path / "search"
    staging.rename(final)
    copy = tmp_path / "elsewhere" / "search"
    shutil.copytree(final, copy)
    shutil.rmtree(final)
    for path in copy.iterdir():
        path.chmod(0o444)
    capfd.readouterr()
    loaded = ix.load_index(copy)
    ctypes.CDLL(None).fflush(None)  # what C code printed may still sit in its stdout buffer
    assert capfd.readouterr().out == ""  # FAISS's note on where it found the lists stays off stdout (--json)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(loaded.index).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.read_only
    assert loaded.info["search_params"] == {"nprobe": 4}
    found = ix.search(loaded.index, np.asarray(mapped[:20]), 5)
    assert np.array_equal(found[1], expected[1]) and np.array_equal(found[0], expected[0])


def test_builds_on_disk_are_reproducible(mapped: np.ndarray, tmp_path: Path) -> None:
    digests = []
    for name in ("a", "b"):
        built = ondisk(mapped, "IVF16,SQ8", tmp_path / name)
        ix.save_index(built.index, tmp_path / name, {})
        info = json.loads((tmp_path / name / "index.json").read_text())
        digests.append((info["index_sha256"], info["lists_sha256"]))
    assert digests[0] == digests[1]


def saved(mapped: np.ndarray, folder: Path) -> Path:
    built = ondisk(mapped, "IVF16,SQ8", folder)
    ix.save_index(built.index, folder, {})
    return folder


def test_missing_lists_file_is_an_artifact_error_naming_it(mapped: np.ndarray, tmp_path: Path) -> None:
    folder = saved(mapped, tmp_path / "search")
    (folder / INDEX_DATA_FILE).unlink()
    with pytest.raises(ArtifactError, match=f"inverted lists not found: {folder / INDEX_DATA_FILE}") as caught:
        ix.load_index(folder)
    assert caught.value.exit_code == 5
    assert (folder / INDEX_FILE).is_file()  # nothing else was touched


def test_truncated_lists_file_is_an_artifact_error(mapped: np.ndarray, tmp_path: Path) -> None:
    folder = saved(mapped, tmp_path / "search")
    data = (folder / INDEX_DATA_FILE).read_bytes()
    (folder / INDEX_DATA_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated or replaced") as caught:
        ix.load_index(folder)
    assert caught.value.exit_code == 5


def test_sidecar_with_an_unknown_storage_is_refused(mapped: np.ndarray, tmp_path: Path) -> None:
    folder = saved(mapped, tmp_path / "search")
    info = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps(info | {"storage": "tape"}))
    with pytest.raises(ArtifactError, match="storage is 'tape'"):
        ix.load_index(folder)


def test_shards_are_sized_to_the_memory_budget(mapped: np.ndarray, tmp_path: Path) -> None:
    budget = 32 * 1024  # the trained IVF16,SQ8 takes ~1.3 KB; each row 16 code bytes and an 8-byte id
    built = ix.build_ondisk_index(mapped, "IVF16,SQ8", tmp_path, memory_budget_bytes=budget, seed=3)
    assert 1 < built.shards == math.ceil(3000 / built.shard_rows)
    assert budget - 4096 < built.shard_rows * (16 + 8) <= budget
    with pytest.raises(ConfigError, match="cannot hold the trained index") as caught:
        ix.build_ondisk_index(mapped, "IVF16,SQ8", tmp_path / "small", memory_budget_bytes=256, seed=3)
    assert caught.value.exit_code == 3


@pytest.mark.parametrize("factory", ["Flat", "HNSW8", "IVF16,Flat,RFlat"])
def test_only_inverted_files_without_refinement_go_on_disk(mapped: np.ndarray, tmp_path: Path, factory: str) -> None:
    assert not ix.supports_ondisk(factory, 16)
    with pytest.raises(ConfigError, match="cannot keep its lists on disk") as caught:
        ix.build_ondisk_index(mapped, factory, tmp_path, shard_rows=1000)
    assert caught.value.exit_code == 3
    assert list(tmp_path.glob("*.ivfdata")) == []


def test_a_budget_too_small_in_memory_chooses_lists_on_disk_and_says_why() -> None:
    count, dimension, budget = 10_000_000, 128, 64 * MB  # even PQ1 needs 86 MB
    with pytest.raises(ConfigError) as caught:
        ix.choose_index(count, dimension, budget)  # storage "memory": refused, as before
    assert "search.storage" in caught.value.hint
    choice = ix.choose_index(count, dimension, budget, storage="auto")
    assert (choice.factory, choice.storage) == ("IVF8192,SQ8", "ondisk")
    assert "exceed the 64 MB budget in memory" in choice.reason and INDEX_DATA_FILE in choice.reason
    assert choice.memory_bytes == 4 * dimension * 8192  # the centroids stay in memory
    # what fits in memory is still chosen in memory under auto
    assert ix.choose_index(count, dimension, 2048 * MB, storage="auto") == ix.choose_index(count, dimension, 2048 * MB)
    asked = ix.choose_index(50_000, 128, 2048 * MB, storage="ondisk")
    assert (asked.factory, asked.storage) == ("IVF512,SQ8", "ondisk") and "as asked" in asked.reason
    with pytest.raises(ConfigError, match="cannot hold the 8192 centroids"):
        ix.choose_index(count, dimension, 2 * MB, storage="auto")
    with pytest.raises(ConfigError, match="unknown index storage"):
        ix.choose_index(count, dimension, budget, storage="tape")


def test_params_refuse_on_disk_storage_for_an_index_without_lists() -> None:
    with pytest.raises(ConfigError, match="search.*index must be auto or an IVF factory") as caught:
        load_project(REPO / "params.yaml", ["search.storage=ondisk", "search.index=HNSW32"])
    assert caught.value.exit_code == 3
    project = load_project(REPO / "params.yaml", ["search.storage=ondisk", "search.index=IVF64,SQ8"])
    assert project.params.search.storage == "ondisk"
