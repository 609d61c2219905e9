"""k-means and UMAP on inputs read in blocks: the same answers as all at once, every row placed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dlpipe.core.config import load_project
from dlpipe.core.errors import ConfigError
from dlpipe.retrieval import clustering
from dlpipe.retrieval.clustering import choose_k, kmeans, umap_map
from tests.conftest import REPO
from tests.unit.test_clustering import blobs, numpy_inertia


def mapped(tmp_path: Path, vectors: np.ndarray) -> np.ndarray:
    np.save(tmp_path / "embeddings.npy", vectors)
    return np.load(tmp_path / "embeddings.npy", mmap_mode="r")


def assert_same(first: clustering.KMeansResult, second: clustering.KMeansResult) -> None:
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.distances, second.distances)
    assert np.array_equal(first.centroids, second.centroids)
    assert first.sizes == second.sizes


def test_assigning_in_small_blocks_gives_what_assigning_all_at_once_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = np.random.default_rng(4).normal(size=(1000, 8)).astype(np.float32)
    whole = kmeans(vectors, 6, niter=10, seed=1)
    monkeypatch.setattr(clustering, "BLOCK_VALUES", 8 * 64)  # 64 rows per block, the last one partial
    blocked = kmeans(vectors, 6, niter=10, seed=1)
    assert_same(blocked, whole)
    assert blocked.inertia == pytest.approx(whole.inertia, rel=1e-12)
    assert whole.inertia == pytest.approx(numpy_inertia(vectors, whole.centroids, whole.labels), rel=1e-12)
    expected = np.linalg.norm(vectors - whole.centroids[whole.labels], axis=1)
    assert np.array_equal(whole.distances, expected)


def test_a_memory_mapped_input_clusters_exactly_like_the_array(tmp_path: Path) -> None:
    vectors, truth = blobs(4, per=300)
    on_disk = mapped(tmp_path, vectors)
    # k-means trains on 4 x 256 (FAISS's default) or 4 x 50 of the 1,200 rows: a sample drawn from the file, row by row
    for points in (None, 50):
        from_file = kmeans(on_disk, 4, seed=2, max_points_per_centroid=points)
        in_memory = kmeans(vectors, 4, seed=2, max_points_per_centroid=points)
        assert_same(from_file, in_memory)
        assert from_file.inertia == in_memory.inertia
        assert from_file.labels.shape == (1200,) and from_file.distances.shape == (1200,)
    assert clustering.agreement(truth, from_file.labels)["ari"] == 1.0
    assert choose_k(on_disk, 2, 6, sample_size=100) == choose_k(vectors, 2, 6, sample_size=100)


def test_umap_fitted_on_a_sample_places_every_row_beside_its_own() -> None:
    vectors, truth = blobs(3, per=30)
    mapped_all = umap_map(vectors, sample=90, n_neighbors=10, min_dist=0.1, metric="euclidean", seed=0)
    assert mapped_all.fitted_rows.tolist() == list(range(90))  # no more rows than the sample: fitted on all
    sampled = umap_map(vectors, sample=40, n_neighbors=10, min_dist=0.1, metric="euclidean", seed=0, block_rows=7)
    fitted = sampled.fitted_rows
    assert len(fitted) == 40 and np.array_equal(fitted, np.unique(fitted))
    assert sampled.coords.shape == (90, 2) and np.isfinite(sampled.coords).all()
    # the fitted rows keep their coordinates of the fit
    assert np.array_equal(sampled.coords[fitted], sampled.reducer.embedding_)
    # every other row lands in the cluster of the fitted rows of its own blob
    rest = np.setdiff1d(np.arange(90), fitted)
    gaps = np.linalg.norm(sampled.coords[rest][:, None] - sampled.coords[fitted][None], axis=2)
    assert np.mean(truth[fitted][gaps.argmin(axis=1)] == truth[rest]) >= 0.95
    # placed in one call, they are exactly what the saved reducer's transform gives
    one_call = umap_map(vectors, sample=40, n_neighbors=10, min_dist=0.1, metric="euclidean", seed=0, block_rows=90)
    assert np.array_equal(one_call.fitted_rows, fitted)
    assert np.allclose(one_call.coords[rest], one_call.reducer.transform(vectors[rest]))


def test_params_refuse_a_baseline_sample_smaller_than_k() -> None:
    with pytest.raises(ConfigError, match="baseline_sample .* is below k") as caught:
        load_project(REPO / "params.yaml", ["cluster.baseline_sample=30", "cluster.k_max=40"])
    assert caught.value.exit_code == 3
    with pytest.raises(ConfigError, match="cluster.umap.sample"):
        load_project(REPO / "params.yaml", ["cluster.umap.sample=5"])
