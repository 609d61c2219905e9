"""k-means, choice of k, agreement metrics and raw-pixel features on tiny data with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from dlpipe.core.errors import ArtifactError, ConfigError, DlpipeError, InputDataError
from dlpipe.retrieval import clustering
from dlpipe.retrieval.clustering import agreement, choose_k, cluster_label_table, inertia, kmeans, raw_pixel_features


def blobs(k: int, per: int = 30, dim: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``k`` tight Gaussian blobs 14 units apart (centres on the axes), and the blob name of each row."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(k), per)
    vectors = 10.0 * np.eye(dim)[truth] + rng.normal(0.0, 0.5, (k * per, dim))
    return vectors.astype(np.float32), np.array([f"blob{i}" for i in truth])


def numpy_inertia(vectors: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    diff = vectors.astype(np.float64) - centroids.astype(np.float64)[labels]
    return float(np.sum(diff**2))


def test_three_blobs_are_recovered_exactly() -> None:
    vectors, truth = blobs(3)
    result = kmeans(vectors, 3, seed=0)
    assert result.labels.dtype == np.int64 and result.labels.shape == (90,)
    assert result.centroids.dtype == np.float32 and result.centroids.shape == (3, 8)
    assert sorted(result.sizes) == [30, 30, 30]
    assert agreement(truth, result.labels) == {"nmi": 1.0, "ari": 1.0, "purity": 1.0}


@pytest.mark.parametrize(
    ("rows", "dim", "k"),
    [(200, 8, 5), (3300, 64, 20)],  # below and above the size where FAISS goes multi-threaded
)
def test_kmeans_is_deterministic_for_a_seed(rows: int, dim: int, k: int) -> None:
    vectors = np.random.default_rng(3).normal(size=(rows, dim)).astype(np.float32)
    first, second = kmeans(vectors, k, niter=10, seed=7), kmeans(vectors, k, niter=10, seed=7)
    assert np.array_equal(first.labels, second.labels)
    assert np.array_equal(first.centroids, second.centroids)
    assert first.inertia == second.inertia
    assert not np.array_equal(first.centroids, kmeans(vectors, k, niter=10, seed=8).centroids)


def test_inertia_labels_and_sizes_match_a_numpy_recomputation() -> None:
    vectors = np.random.default_rng(1).normal(size=(300, 16)).astype(np.float32)
    result = kmeans(vectors, 6, nredo=2)
    distances = ((vectors[:, None, :].astype(np.float64) - result.centroids[None].astype(np.float64)) ** 2).sum(axis=2)
    assert np.array_equal(result.labels, distances.argmin(axis=1))
    assert result.inertia == pytest.approx(numpy_inertia(vectors, result.centroids, result.labels), rel=1e-12)
    assert result.sizes == np.bincount(result.labels, minlength=6).tolist()
    assert sum(result.sizes) == 300


def test_subsampled_training_still_assigns_and_scores_every_row() -> None:
    vectors, truth = blobs(4, per=500)
    result = kmeans(vectors, 4, max_points_per_centroid=20)  # centroids trained on 80 of 2,000 rows
    assert result.labels.shape == (2000,)
    assert result.inertia == pytest.approx(numpy_inertia(vectors, result.centroids, result.labels), rel=1e-12)
    assert agreement(truth, result.labels)["ari"] == 1.0


def test_inertia_helper_sums_over_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    vectors = np.random.default_rng(2).normal(size=(51, 3)).astype(np.float32)
    centroids = vectors[:4].copy()
    labels = np.arange(51) % 4
    expected = numpy_inertia(vectors, centroids, labels)
    assert inertia(vectors, centroids, labels) == pytest.approx(expected, rel=1e-12)
    monkeypatch.setattr(clustering, "BLOCK_VALUES", 12)  # 4 rows per block, the last one partial
    assert inertia(vectors, centroids, labels) == pytest.approx(expected, rel=1e-12)


def test_few_points_per_centroid_print_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    vectors, _ = blobs(3, per=4)
    kmeans(vectors, 3)
    captured = capfd.readouterr()
    assert captured.err == "" and captured.out == ""


@pytest.mark.parametrize("k", [3, 5])
def test_choose_k_finds_the_number_of_blobs(k: int) -> None:
    vectors, _ = blobs(k)
    # nredo=3 as params.yaml ships: one k-means++ start in ~25 lands in a local minimum on 5-8 blobs.
    choice = choose_k(vectors, 2, 8, nredo=3)
    assert choice.k == k
    assert sorted(choice.silhouette) == list(range(2, 9))
    assert max(choice.silhouette.values()) == choice.silhouette[k]


def test_choose_k_clips_k_max_to_rows_minus_one_and_samples_rows() -> None:
    vectors, _ = blobs(2, per=3)
    assert sorted(choose_k(vectors, 2, 10).silhouette) == [2, 3, 4, 5]
    many, _ = blobs(3, per=100)
    assert choose_k(many, 2, 4, sample_size=50).k == 3


def test_agreement_on_a_hand_made_example() -> None:
    labels = ["a", "a", "a", "b", "b", "c"]
    clusters = np.array([0, 0, 1, 1, 1, 2])
    # Cluster 0 holds a, a (2 right); cluster 1 holds a, b, b (2 right); cluster 2 holds c (1 right): 5 of 6.
    scores = agreement(labels, clusters)
    assert scores["purity"] == round(5 / 6, 4) == 0.8333
    assert scores["nmi"] == round(normalized_mutual_info_score(labels, clusters), 4)
    assert scores["ari"] == round(adjusted_rand_score(labels, clusters), 4)
    assert agreement(labels, np.array([7, 7, 3, 3, 3, 0])) == scores  # cluster ids are only names


def test_cluster_label_table_names_each_clusters_majority() -> None:
    labels = np.array(["cat", "cat", "dog", "dog", "dog", "cat", "bird"])
    clusters = np.array([2, 2, 0, 0, 0, 0, 5])
    assert cluster_label_table(labels, clusters) == [
        {"cluster": 0, "size": 4, "majority_label": "dog", "majority_share": 0.75},
        {"cluster": 2, "size": 2, "majority_label": "cat", "majority_share": 1.0},
        {"cluster": 5, "size": 1, "majority_label": "bird", "majority_share": 1.0},
    ]


def write_images(folder: Path) -> list[Path]:
    """Five small images of different sizes and modes, all with a saturated red channel."""
    rng = np.random.default_rng(0)
    paths = []
    for i, (width, height, mode) in enumerate([(20, 20, "RGB"), (37, 23, "RGB"), (8, 8, "RGBA"), (50, 16, "RGB"), (12, 30, "P")]):
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        pixels[..., 0] = 255
        image = Image.fromarray(pixels)
        if mode == "RGBA":
            image.putalpha(255)
        elif mode == "P":
            image = image.quantize(colors=256)
        paths.append(folder / f"image_{i}.png")
        image.save(paths[-1])
    return paths


def test_raw_pixel_features_are_standardised_per_feature(tmp_path: Path) -> None:
    paths = write_images(tmp_path)
    features = raw_pixel_features(paths, 4, workers=1)
    assert features.shape == (5, 4 * 4 * 3) and features.dtype == np.float32
    assert np.allclose(features.mean(axis=0), 0.0, atol=1e-5)
    std = features.std(axis=0)
    red = np.arange(0, 48, 3)  # RGB interleaved: every third feature is red, constant 255 here (after quantizing too)
    assert np.all(features[:, red] == 0.0)
    others = np.setdiff1d(np.arange(48), red)
    assert np.allclose(std[others], 1.0, atol=1e-5)


def test_raw_pixel_features_average_blocks_in_row_major_rgb_order(tmp_path: Path) -> None:
    # 8x8 images made of four flat 4x4 blocks: a 2x2 box downscale gives exactly the block colours.
    colours = np.random.default_rng(5).integers(0, 256, (3, 2, 2, 3), dtype=np.uint8)
    paths = []
    for i, blocks in enumerate(colours):
        paths.append(tmp_path / f"blocks_{i}.png")
        Image.fromarray(np.kron(blocks, np.ones((4, 4, 1), dtype=np.uint8))).save(paths[-1])
    raw = colours.reshape(3, -1).astype(np.float64) / 255
    std = raw.std(axis=0)
    expected = (raw - raw.mean(axis=0)) / np.where(std == 0, 1, std)
    assert np.allclose(raw_pixel_features(paths, 2, workers=1), expected, atol=1e-5)


def expect_error(error: type[DlpipeError], fragment: str, call, *args, **kwargs) -> DlpipeError:
    with pytest.raises(error) as caught:
        call(*args, **kwargs)
    assert fragment in str(caught.value)
    return caught.value


@pytest.mark.parametrize(
    ("vectors", "k", "fragment"),
    [
        (np.zeros((5, 2)), 6, "k=6 clusters but vectors has only 5 rows"),
        (np.zeros((5, 2)), 1, "k >= 2 clusters, got k=1"),
        (np.where(np.arange(10)[:, None] == 3, np.nan, np.ones((10, 2))), 2, "row 3 contains NaN"),
        (np.where(np.arange(10)[:, None] == 7, np.inf, np.ones((10, 2))), 2, "row 7 contains NaN, infinity"),
        (np.full((4, 2), 1e20), 2, "row 0 contains NaN, infinity or a value beyond"),
        (np.zeros((0, 4)), 2, "is empty"),
        (np.zeros(10), 2, "expected 2-D"),
    ],
    ids=["k_above_n", "k_below_2", "nan_row", "inf_row", "overflowing_row", "empty", "not_2d"],
)
def test_kmeans_rejects_bad_input(vectors: np.ndarray, k: int, fragment: str) -> None:
    error = expect_error(InputDataError, fragment, kmeans, vectors, k)
    assert error.exit_code == 4 and error.hint


def test_kmeans_names_the_source_in_errors() -> None:
    vectors = np.ones((3, 2))
    vectors[2, 1] = np.nan
    expect_error(InputDataError, "embed/embeddings.npy row 2", kmeans, vectors, 2, source="embed/embeddings.npy")


@pytest.mark.parametrize(
    ("k_min", "k_max", "fragment"),
    [(5, 3, "cluster.k_min=5, cluster.k_max=3"), (1, 4, "cluster.k_min=1")],
)
def test_choose_k_rejects_a_bad_range(k_min: int, k_max: int, fragment: str) -> None:
    vectors, _ = blobs(3)
    error = expect_error(ConfigError, fragment, choose_k, vectors, k_min, k_max)
    assert error.exit_code == 3


@pytest.mark.parametrize(
    ("rows", "k_min", "fragment"),
    [(2, 2, "has 2 rows; choosing k needs at least 3"), (4, 4, "cluster.k_min=4 needs at least 5 rows")],
)
def test_choose_k_rejects_too_few_rows(rows: int, k_min: int, fragment: str) -> None:
    vectors = np.random.default_rng(0).normal(size=(rows, 3))
    error = expect_error(InputDataError, fragment, choose_k, vectors, k_min, 6)
    assert error.exit_code == 4


def test_raw_pixel_features_name_an_undecodable_file(tmp_path: Path) -> None:
    paths = write_images(tmp_path)
    bad = tmp_path / "notes.png"
    bad.write_text("this is text, not a PNG\n", encoding="utf-8")
    error = expect_error(
        InputDataError, f"cannot read image {bad}: not_an_image", raw_pixel_features, [*paths, bad], 4, workers=1
    )
    assert error.exit_code == 4


def test_agreement_rejects_mismatched_lengths() -> None:
    error = expect_error(ArtifactError, "3 labels but 2 cluster assignments", agreement, ["a", "b", "a"], np.array([0, 1]))
    assert error.exit_code == 5
