"""FAISS index: the auto rule, exact neighbours, tuning, save/load with its sidecar, and every refusal."""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from dlpipe.core.errors import ArtifactError, ConfigError, DependencyError, DlpipeError, InputDataError, StorageError
from dlpipe.retrieval import index as ix
from tests.conftest import tree_digest

MB = 2**20
# six unit vectors in a plane, at these angles (degrees) from the first
ANGLES = (0.0, 10.0, 30.0, 60.0, 100.0, 180.0)


def unit_vectors() -> np.ndarray:
    """The six hand-made vectors (padded to 4-d); neighbours of the first are rows 0..5 in order."""
    radians = np.radians(ANGLES)
    return np.stack([np.cos(radians), np.sin(radians), np.zeros(6), np.zeros(6)], axis=1).astype(np.float32)


def planted(count: int = 3000, dimension: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Random unit vectors plus five planted at known cosines from a query; returns (vectors, query, cosines).

    The planted rows are 10..14, at cosine 0.99, 0.98, ... 0.95 from the query, far closer than any random row.
    """
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dimension))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    query = rng.standard_normal(dimension)
    query /= np.linalg.norm(query)
    cosines = [0.99, 0.98, 0.97, 0.96, 0.95]
    for row, cos in zip(range(10, 15), cosines, strict=True):
        other = rng.standard_normal(dimension)
        other -= other @ query * query
        other /= np.linalg.norm(other)
        vectors[row] = cos * query + math.sqrt(1 - cos**2) * other
    return vectors.astype(np.float32), query[None].astype(np.float32), cosines


def clustered(count: int, dimension: int = 16, centres: int = 20, seed: int = 0) -> np.ndarray:
    """L2-normalised Gaussian mixture: the kind of data an IVF index suits."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((centres, dimension))
    vectors = means[rng.integers(0, centres, count)] + 0.3 * rng.standard_normal((count, dimension))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny indices gain nothing from threads, and OpenMP spinning on a busy machine slows them many times."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(threads)


def assert_error(info: pytest.ExceptionInfo, cls: type[DlpipeError], fragment: str) -> None:
    assert type(info.value) is cls
    assert info.value.exit_code == cls.exit_code
    assert fragment in str(info.value)


# --- exact outcomes -------------------------------------------------------------------------------------------


def test_flat_returns_known_neighbours_in_order_with_known_scores() -> None:
    vectors = unit_vectors()
    index = ix.build_index(vectors, "Flat")
    scores, ids = ix.search(index, vectors[:1], 6)
    assert ids.tolist() == [[0, 1, 2, 3, 4, 5]]
    np.testing.assert_allclose(scores[0], np.cos(np.radians(ANGLES)), atol=1e-6)

    l2 = ix.build_index(vectors, "Flat", metric="l2")
    scores, ids = ix.search(l2, vectors[3:4], 3)
    assert ids.tolist() == [[3, 2, 4]]  # from 60 degrees: itself, then 30 degrees (row 2) and 40 degrees (row 4) away
    np.testing.assert_allclose(scores[0], 2 - 2 * np.cos(np.radians([0.0, 30.0, 40.0])), atol=1e-6)


@pytest.mark.parametrize(
    ("factory", "params", "atol"),
    [
        ("IVF16,Flat", {"nprobe": 2}, 1e-5),
        ("IVF16,SQfp16", {"nprobe": 2}, 1e-3),  # float16 keeps 11 significant bits
        ("HNSW16", {"efSearch": 16}, 1e-5),
    ],
)
def test_approximate_index_returns_planted_neighbours_in_order(factory: str, params: dict[str, int], atol: float) -> None:
    vectors, query, cosines = planted()
    index = ix.build_index(vectors, factory, deterministic=True)
    ix.set_search_params(index, params)
    scores, ids = ix.search(index, query, 5)
    assert ids.tolist() == [[10, 11, 12, 13, 14]]
    np.testing.assert_allclose(scores[0], cosines, atol=atol)


def test_scalar_codes_find_what_the_uncompressed_index_finds() -> None:
    vectors = clustered(4000, seed=12)
    queries = clustered(200, seed=13)
    _, true_ids = ix.exact_search(vectors, queries, 10)
    found = {}
    for codec in ("Flat", "SQfp16", "SQ8"):
        index = ix.build_index(vectors, f"IVF32,{codec}", seed=1)
        ix.set_search_params(index, {"nprobe": 4})
        found[codec] = ix.search(index, queries, 10)[1]
    recall = {codec: ix.recall_at_k(ids, true_ids, 10) for codec, ids in found.items()}
    # the same lists are probed; float16 scores are within 1e-3, so only near-ties may differ (measured 0.9995)
    assert ix.recall_at_k(found["SQfp16"], found["Flat"], 10) >= 0.99
    assert abs(recall["SQfp16"] - recall["Flat"]) <= 0.005
    # 8-bit steps swap more of the close calls (measured 0.984 of Flat's results, recall 0.936 vs 0.949)
    assert ix.recall_at_k(found["SQ8"], found["Flat"], 10) >= 0.97
    assert abs(recall["SQ8"] - recall["Flat"]) <= 0.03


def test_exact_search_matches_numpy_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = clustered(1000, seed=1)
    queries = clustered(7, seed=2)
    monkeypatch.setattr(ix, "CHUNK_BYTES", 64 * 16 * 4)  # 64 rows per chunk: 16 chunks
    for metric in ("inner_product", "l2"):
        scores, ids = ix.exact_search(vectors, queries, 10, metric)
        if metric == "inner_product":
            expected = queries @ vectors.T
            order = np.argsort(-expected, axis=1, kind="stable")[:, :10]
        else:
            expected = ((queries[:, None, :] - vectors[None]) ** 2).sum(axis=2)
            order = np.argsort(expected, axis=1, kind="stable")[:, :10]
        assert (ids == order).all()
        np.testing.assert_allclose(scores, np.take_along_axis(expected, order, axis=1), rtol=1e-4, atol=1e-5)


def test_recall_at_k_counts_overlap_and_ignores_missing() -> None:
    found = np.array([[1, 2, 3], [4, -1, -1]])
    true = np.array([[3, 1, 9], [4, 5, 6]])
    assert ix.recall_at_k(found, true, 3) == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert ix.recall_at_k(found, true, 1) == pytest.approx(0.5)


def test_memmap_input_is_added_in_chunks_with_row_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = clustered(2000, seed=3)
    np.save(tmp_path / "embeddings.npy", vectors)
    mapped = np.load(tmp_path / "embeddings.npy", mmap_mode="r")
    monkeypatch.setattr(ix, "CHUNK_BYTES", 300 * 16 * 4)
    index = ix.build_index(mapped, "IVF8,Flat")
    ix.set_search_params(index, {"nprobe": 8})
    assert index.ntotal == 2000
    _, ids = ix.search(index, vectors[[5, 1999]], 1)
    assert ids[:, 0].tolist() == [5, 1999]


# --- the auto rule ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "dimension", "budget_mb", "factory"),
    [
        (6, 4, 2048, "Flat"),
        (50_000, 128, 2048, "Flat"),  # 25 MB of vectors: brute force is fast
        (9_000, 2048, 2048, "Flat"),  # few vectors, even if wide
        (200_000, 128, 2048, "IVF1024,SQfp16"),  # 2 sqrt(N) = 894 -> 1024
        (60_000, 2048, 2048, "IVF512,SQfp16"),
        (1_000_000, 128, 2048, "IVF2048,SQfp16"),
        (1_000_000, 256, 2048, "IVF2048,SQfp16"),
        (1_000_000, 128, 200, "IVF2048,SQ8"),  # float16 needs 252 MB, one byte per component 130 MB
        (10_000_000, 128, 2048, "IVF8192,SQ8"),  # float16 needs 2.5 GB
        (10_000_000, 128, 1024, "IVF8192,PQ64x8"),  # even one byte per component needs 1.3 GB
        (10_000_000, 128, 256, "IVF8192,PQ16x8"),  # tighter budget: fewer bytes per vector
        (1_000_000, 100, 100, "IVF2048,PQ50x8"),
        (1_000_000, 100, 50, "IVF2048,PQ25x8"),
    ],
)
def test_choose_index_picks_by_size_and_budget(count: int, dimension: int, budget_mb: int, factory: str) -> None:
    choice = ix.choose_index(count, dimension, budget_mb * MB)
    assert choice.factory == factory
    assert choice.memory_bytes == ix.estimate_memory(factory, count, dimension) <= budget_mb * MB
    assert choice.reason and f"{count:,}" in choice.reason


@pytest.mark.parametrize("count", [1, 38, 39, 255, 256, 5_000, 10_001, 70_000, 300_000])
def test_choose_index_never_needs_more_training_vectors_than_it_has(count: int) -> None:
    for budget in (2048 * MB, 4 * MB, 64 * 1024):
        try:
            choice = ix.choose_index(count, 2048, budget)
        except ConfigError:
            continue  # budget too small for anything: refused, not an untrainable index
        index = faiss.index_factory(2048, choice.factory, faiss.METRIC_INNER_PRODUCT)
        assert ix.min_train_points(index) <= count, choice


def test_choose_index_refuses_a_budget_too_small() -> None:
    with pytest.raises(ConfigError) as info:
        ix.choose_index(1_000_000, 128, 8 * MB)  # even 1-byte codes need 1M x (1 + 8 id) bytes = 8.6 MB
    assert_error(info, ConfigError, "too small")
    assert "memory_budget_mb" in info.value.hint


def test_estimate_memory_is_close_to_the_serialized_size() -> None:
    vectors = clustered(4000, dimension=32, seed=4)
    for factory in ("Flat", "HNSW16", "IVF32,Flat", "IVF32,SQfp16", "IVF32,SQ8", "IVF32,PQ8x8", "IVF32,PQ8x8,RFlat"):
        actual = faiss.serialize_index(ix.build_index(vectors, factory)).nbytes
        estimate = ix.estimate_memory(factory, 4000, 32)
        assert 0.8 < estimate / actual < 1.25, (factory, estimate, actual)
    # other factory strings: FAISS's code size per vector (17 bytes for OPQ16,IVF64,PQ16) plus the 8-byte id
    assert ix.estimate_memory("OPQ16,IVF64,PQ16", 1000, 64) == 1000 * (17 + 8)
    with pytest.raises(ConfigError, match="cannot estimate"):
        ix.estimate_memory("HNSW32,SQ8", 10, 8)
    with pytest.raises(ConfigError, match="could not parse"):
        ix.estimate_memory("IVFx,Flat", 10, 8)


# --- tuning ----------------------------------------------------------------------------------------------------


def test_tune_finds_the_smallest_nprobe_reaching_the_target() -> None:
    vectors = clustered(4000, seed=5)
    queries = clustered(100, seed=6)
    _, true_ids = ix.exact_search(vectors, queries, 10)
    index = ix.build_index(vectors, "IVF64,Flat")
    tried: list[dict] = []
    params, recall = ix.tune_search_params(index, None, queries, true_ids, 10, 0.95, record=tried)
    # doubling passes the target at 8, bisection then tries 6 (reaches it) and 5 (misses)
    assert [rung["nprobe"] for rung in tried] == [1, 2, 4, 8, 6, 5]
    assert params == {"nprobe": 6} == ix.search_params(index) and recall == tried[4]["recall"] >= 0.95
    assert tried[5]["recall"] < 0.95 and tried[5]["seconds"] > 0
    # an unreachable target: the ladder stops where a doubling gains < 1% and keeps the smaller rung
    record: list[dict] = []
    params, recall = ix.tune_search_params(index, vectors, queries, None, 10, 1.01, record=record)
    assert params == {"nprobe": record[-2]["nprobe"]} and recall == record[-2]["recall"]
    assert record[-1]["recall"] < recall * (1 + ix.PLATEAU_GAIN)
    assert [rung["nprobe"] for rung in record] == [1, 2, 4, 8, 16, 32, 64][: len(record)]
    # PQ: compression bounds recall, so the ladder stops on its plateau long before nprobe = nlist
    pq = ix.build_index(vectors, "IVF64,PQ4x8")
    params, recall = ix.tune_search_params(pq, None, queries, true_ids, 10, 0.999)
    assert recall < 0.999 and params["nprobe"] < 64
    assert ix.tune_search_params(ix.build_index(vectors, "Flat"), vectors, queries, None, 10, 0.95) == ({}, 1.0)


def test_set_search_params_reaches_through_wrappers() -> None:
    vectors = clustered(1000, seed=7)
    wrapped = ix.build_index(vectors, "PCA8,IVF8,Flat")
    ix.set_search_params(wrapped, {"nprobe": 3})
    assert ix.search_params(wrapped) == {"nprobe": 3}
    refined = ix.build_index(vectors, "IVF8,PQ4x8,RFlat")
    ix.set_search_params(refined, {"nprobe": 2, "k_factor_rf": 4})
    assert ix.search_params(refined) == {"nprobe": 2, "k_factor_rf": 4}
    with pytest.raises(ConfigError, match="no search parameter 'efSearch'"):
        ix.set_search_params(refined, {"efSearch": 8})
    with pytest.raises(ConfigError, match="positive integer"):
        ix.set_search_params(refined, {"nprobe": 0})


def test_builds_are_reproducible_for_a_seed() -> None:
    vectors = clustered(3000, seed=8)
    for factory, kwargs in (("IVF16,PQ4x8", {}), ("IVF16,SQ8", {}), ("HNSW16", {"deterministic": True})):
        first = faiss.serialize_index(ix.build_index(vectors, factory, seed=3, **kwargs))
        second = faiss.serialize_index(ix.build_index(vectors, factory, seed=3, **kwargs))
        assert first.tobytes() == second.tobytes(), factory


# --- save and load ---------------------------------------------------------------------------------------------


def saved(folder: Path, factory: str = "IVF8,Flat", count: int = 500) -> tuple[faiss.Index, np.ndarray]:
    vectors = clustered(count, seed=9)
    index = ix.build_index(vectors, factory)
    if "IVF" in factory:
        ix.set_search_params(index, {"nprobe": 3})
    ix.save_index(index, folder, {"stage": "search", "factory": factory, "embeddings_sha256": "abc"})
    return index, vectors


def test_save_load_round_trip_gives_identical_results(tmp_path: Path) -> None:
    index, vectors = saved(tmp_path / "search")
    assert sorted(p.name for p in (tmp_path / "search").iterdir()) == ["index.faiss", "index.json"]  # no temp files
    loaded = ix.load_index(tmp_path / "search", {"dimension": 16, "embeddings_sha256": "abc"})
    info = loaded.info
    assert loaded.path == tmp_path / "search" / "index.faiss"
    assert (info["factory"], info["metric"], info["dimension"]) == ("IVF8,Flat", "inner_product", 16)
    assert info["count"] == 500 and info["stage"] == "search" and info["embeddings_sha256"] == "abc"
    assert info["search_params"] == {"nprobe": 3} == ix.search_params(loaded.index)
    assert info["index_bytes"] == loaded.path.stat().st_size and "faiss-cpu" in info["versions"]
    before, after = ix.search(index, vectors[:20], 5), ix.search(loaded.index, vectors[:20], 5)
    assert (before[1] == after[1]).all() and (before[0] == after[0]).all()


def test_failed_save_leaves_the_existing_index_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "search"
    saved(folder)
    digest = tree_digest(folder)

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StorageError, match="no space left") as caught:
        saved(folder, "Flat", count=300)
    assert caught.value.exit_code == 7
    assert tree_digest(folder) == digest  # nothing replaced, no temp file left
    monkeypatch.undo()
    assert ix.load_index(folder).index.ntotal == 500


@pytest.mark.parametrize(("key", "value"), [("count", 499), ("dimension", 15)])
def test_load_refuses_a_sidecar_that_disagrees_with_the_index(tmp_path: Path, key: str, value: int) -> None:
    saved(tmp_path)
    sidecar = tmp_path / "index.json"
    info = json.loads(sidecar.read_text())
    info[key] = value
    sidecar.write_text(json.dumps(info))
    with pytest.raises(ArtifactError) as err:
        ix.load_index(tmp_path)
    assert_error(err, ArtifactError, f"{key} {500 if key == 'count' else 16} but its sidecar")
    assert "rebuild" in err.value.hint


def test_load_refuses_an_unexpected_sidecar_value(tmp_path: Path) -> None:
    saved(tmp_path)
    with pytest.raises(ArtifactError) as err:
        ix.load_index(tmp_path, {"dimension": 16, "embeddings_sha256": "def"})
    assert_error(err, ArtifactError, "embeddings_sha256 is 'abc', expected 'def'")


def test_load_refuses_a_truncated_index_and_leaves_other_copies_alone(tmp_path: Path) -> None:
    saved(tmp_path / "a")
    saved(tmp_path / "b")
    original = tree_digest(tmp_path / "b")
    path = tmp_path / "a" / "index.faiss"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError) as err:
        ix.load_index(tmp_path / "a")
    assert_error(err, ArtifactError, "truncated")
    assert "sha256 mismatch" in str(err.value)
    assert tree_digest(tmp_path / "b") == original
    assert ix.load_index(tmp_path / "b").index.ntotal == 500


def test_load_refuses_a_replaced_index(tmp_path: Path) -> None:
    saved(tmp_path)
    path = tmp_path / "index.faiss"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as err:
        ix.load_index(tmp_path)
    assert_error(err, ArtifactError, "does not match its sidecar")


def test_load_refuses_missing_or_corrupt_files(tmp_path: Path) -> None:
    saved(tmp_path)
    (tmp_path / "index.faiss").unlink()
    with pytest.raises(ArtifactError) as err:
        ix.load_index(tmp_path)
    assert_error(err, ArtifactError, "index file not found")
    (tmp_path / "index.json").write_text("{broken")
    with pytest.raises(ArtifactError) as err:
        ix.load_index(tmp_path)
    assert_error(err, ArtifactError, "index sidecar is corrupt")
    (tmp_path / "index.json").unlink()
    with pytest.raises(ArtifactError) as err:
        ix.load_index(tmp_path)
    assert_error(err, ArtifactError, "index sidecar not found")


def test_load_refuses_bytes_faiss_cannot_read(tmp_path: Path) -> None:
    saved(tmp_path)
    junk = b"not an index" * 10
    (tmp_path / "index.faiss").write_bytes(junk)
    info = json.loads((tmp_path / "index.json").read_text())
    info.update(index_bytes=len(junk), index_sha256=hashlib.sha256(junk).hexdigest())
    (tmp_path / "index.json").write_text(json.dumps(info))
    with pytest.raises(ArtifactError) as err:
        ix.load_index(tmp_path)
    assert_error(err, ArtifactError, "FAISS cannot read")


# --- bad inputs ------------------------------------------------------------------------------------------------


def test_search_refuses_queries_of_another_dimension_and_k_too_large() -> None:
    index = ix.build_index(clustered(20, dimension=4), "Flat")
    with pytest.raises(InputDataError) as err:
        ix.search(index, np.ones((1, 5), np.float32), 3)
    assert_error(err, InputDataError, "queries have dimension 5 but the index has dimension 4")
    with pytest.raises(InputDataError) as err:
        ix.search(index, np.ones((1, 4), np.float32), 50)
    assert_error(err, InputDataError, "k=50 but the index holds 20 vectors")
    with pytest.raises(InputDataError) as err:
        ix.search(index, np.array([[1, 0, 0, 0], [np.nan, 0, 0, 0]], np.float32), 3)
    assert_error(err, InputDataError, "first at row 1")
    with pytest.raises(InputDataError) as err:
        ix.search(index, np.ones(4, np.float32), 3)
    assert_error(err, InputDataError, "2-D")


def test_build_refuses_empty_and_non_finite_embeddings() -> None:
    with pytest.raises(InputDataError) as err:
        ix.build_index(np.zeros((0, 8), np.float32), "Flat")
    assert_error(err, InputDataError, "empty")
    vectors = clustered(10, dimension=4)
    vectors[3, 2] = np.nan
    vectors[7, 0] = np.inf
    with pytest.raises(InputDataError) as err:
        ix.build_index(vectors, "Flat")
    assert_error(err, InputDataError, "first at row 3")
    with pytest.raises(InputDataError) as err:
        ix.build_index(np.zeros(8, np.float32), "Flat")
    assert_error(err, InputDataError, "2-D")


def test_float16_index_refuses_components_beyond_its_range() -> None:
    vectors = clustered(500, dimension=8) * 1000.0
    vectors[123, 5] = 70_000.0  # float16 ends at 65,504: stored, it would become inf
    with pytest.raises(InputDataError) as err:
        ix.build_index(vectors, "IVF4,SQfp16")
    assert_error(err, InputDataError, "float16's range")
    assert "row 123" in str(err.value) and "IVF<n>,Flat" in err.value.hint
    assert ix.build_index(vectors, "IVF4,Flat").ntotal == 500  # uncompressed types take them


def test_build_refuses_an_invalid_factory_with_faiss_message() -> None:
    with pytest.raises(ConfigError) as err:
        ix.build_index(unit_vectors(), "IVFx,Flat")
    assert_error(err, ConfigError, "invalid FAISS index 'IVFx,Flat'")
    assert "could not parse index string" in str(err.value)
    with pytest.raises(ConfigError, match="unknown metric"):
        ix.build_index(unit_vectors(), "Flat", metric="cosine")


def test_build_refuses_too_few_vectors_to_train() -> None:
    with pytest.raises(InputDataError) as err:
        ix.build_index(clustered(40), "IVF64,Flat")
    assert_error(err, InputDataError, "'IVF64,Flat' needs at least 64 vectors to train, but there are only 40")
    assert "Flat" in err.value.hint
    with pytest.raises(InputDataError, match="needs at least 256"):
        ix.build_index(clustered(200), "IVF2,PQ4x8")
    with pytest.raises(ConfigError, match="max_train=10"):
        ix.build_index(clustered(200), "IVF16,Flat", max_train=10)


@pytest.mark.skipif(faiss.get_num_gpus() > 0, reason="a GPU is present")
def test_use_gpu_without_a_gpu_is_a_dependency_error() -> None:
    with pytest.raises(DependencyError) as err:
        ix.build_index(unit_vectors(), "Flat", use_gpu=True)
    assert_error(err, DependencyError, "no GPU")
