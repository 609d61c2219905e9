"""k-means, the choice of k, agreement with the true labels, and the raw-pixel baseline.

The cluster stage runs the same k-means on two feature sets, the deep embeddings
and downscaled raw pixels, and compares how well each recovers the labels
("unsupervised clustering on raw images vs on deep features"). k-means is FAISS's
(on the GPU when the GPU build of FAISS sees one); scikit-learn provides the
metrics. This module computes and returns; the stage plots and writes files.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
from PIL import Image
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.metrics.cluster import contingency_matrix

from dlpipe.core.errors import ArtifactError, ConfigError, InputDataError
from dlpipe.core.parallel import parallel_map
from dlpipe.data.media import Rejected
from dlpipe.data.media.images import load_rgb
from dlpipe.retrieval.faiss_runtime import faiss_threads, gpu_wanted

Init = Literal["k-means++", "random"]

_INIT_METHODS = {
    "k-means++": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS,
    "random": faiss.ClusteringInitMethod_RANDOM,
}
# FAISS keeps its seed in a C int.
_FAISS_SEED_RANGE = 2**31 - 1
# Values per block (32 MiB in float64) when recomputing inertia.
_INERTIA_BLOCK_VALUES = 1 << 22
# Below this much work per iteration (rows x clusters x dimensions, ~1 ms on one core), FAISS runs on one
# thread: waking OpenMP threads costs more, and on a busy machine each parallel region can wait ~10 ms for a core.
_SERIAL_WORK = 1 << 22
# Ingest has already enforced ingest.image.max_pixels on every file the baseline reads.
_RAW_MAX_PIXELS = 1 << 31
# Beyond this, squared distances overflow float32 inside FAISS, which then aborts the whole process.
_MAX_ABS_VALUE = 1e15


@dataclass(frozen=True)
class KMeansResult:
    """One k-means clustering of N rows.

    Attributes:
        labels: int64 (N,), the cluster of each row (its nearest centroid).
        centroids: float32 (k, D).
        inertia: sum of squared L2 distances of each row to its centroid, over all rows
            (scikit-learn's ``inertia_``), computed in float64.
        sizes: points per cluster, indexed by cluster id (0 for a cluster no row is nearest to).
    """

    labels: np.ndarray
    centroids: np.ndarray
    inertia: float
    sizes: list[int]


@dataclass(frozen=True)
class KChoice:
    """The k that :func:`choose_k` picked and the mean silhouette score of each k tried."""

    k: int
    silhouette: dict[int, float]


def kmeans(
    vectors: np.ndarray,
    k: int,
    *,
    niter: int = 25,
    nredo: int = 1,
    seed: int = 0,
    max_points_per_centroid: int | None = None,
    use_gpu: bool | None = None,
    init: Init = "k-means++",
    source: str = "vectors",
) -> KMeansResult:
    """Cluster the rows of ``vectors`` into ``k`` groups with FAISS k-means (Lloyd iterations).

    On the CPU the result is deterministic for a given seed. Every row is assigned
    to its nearest final centroid, and the inertia is recomputed exactly over all
    rows (FAISS's own objective covers only its training sample, in float32).

    Args:
        vectors: (N, D) numbers; converted to float32.
        k: number of clusters, 2 <= k <= N.
        niter: Lloyd iterations (all of them run; there is no early stop).
        nredo: independent runs with different initialisations; the lowest training objective wins.
        seed: seed of the initialisation and of any subsampling.
        max_points_per_centroid: train the centroids on a seeded random sample of at most
            ``k * max_points_per_centroid`` rows; None keeps FAISS's default of 256. Assignment and
            inertia always cover every row.
        use_gpu: True to run on all GPUs (needs the GPU build of FAISS), False for the CPU;
            None picks the GPU when FAISS sees one. GPU results are not bit-for-bit reproducible.
        init: ``k-means++`` (D²-weighted seeding; costs about one iteration and avoids the bad
            local minima that random seeding falls into at small k) or ``random`` (k random rows).
        source: what ``vectors`` is (e.g. the embeddings file), used in error messages.

    Raises:
        InputDataError: ``vectors`` is not a non-empty 2-D array of finite numbers within ±1e15,
            or k < 2 or k > N.
        ConfigError: niter or nredo below 1, or an unknown ``init``.
        DependencyError: ``use_gpu=True`` but FAISS sees no GPU.
    """
    x = _as_matrix(vectors, source)
    n, d = x.shape
    if k < 2:
        raise InputDataError(f"k-means needs k >= 2 clusters, got k={k}", "set cluster.k to 2 or more (or auto)")
    if k > n:
        raise InputDataError(
            f"k={k} clusters but {source} has only {n} rows", "lower cluster.k to at most the number of rows, or add data"
        )
    if niter < 1 or nredo < 1:
        raise ConfigError(
            f"k-means needs niter >= 1 and nredo >= 1, got niter={niter}, nredo={nredo}", "check cluster.niter and cluster.nredo"
        )
    if init not in _INIT_METHODS:
        raise ConfigError(f"unknown k-means init {init!r}", f"use one of {', '.join(_INIT_METHODS)}")
    on_gpu = gpu_wanted(use_gpu)
    options: dict[str, Any] = {
        "niter": niter,
        "nredo": nredo,
        "seed": seed % _FAISS_SEED_RANGE,
        "init_method": _INIT_METHODS[init],
        # FAISS prints a warning to stderr below 39 points per centroid; small datasets are expected here.
        "min_points_per_centroid": 1,
    }
    if max_points_per_centroid is not None:
        options["max_points_per_centroid"] = max_points_per_centroid
    if on_gpu:
        options["gpu"] = True
    model = faiss.Kmeans(d, k, **options)
    with faiss_threads(1 if n * k * d < _SERIAL_WORK else faiss.omp_get_max_threads()):
        model.train(x)
        _, nearest = model.assign(x)
    labels = nearest.astype(np.int64, copy=False)
    centroids = np.ascontiguousarray(model.centroids, dtype=np.float32)
    return KMeansResult(
        labels=labels,
        centroids=centroids,
        inertia=inertia(x, centroids, labels),
        sizes=np.bincount(labels, minlength=k).tolist(),
    )


def inertia(vectors: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    """Return the sum of squared L2 distances of each row to its centroid, accumulated in float64.

    Computed as the direct difference (not ``|x|² + |c|² - 2x·c``, which loses
    precision), in blocks of rows so memory stays small for large N.
    """
    rows = max(1, _INERTIA_BLOCK_VALUES // max(1, vectors.shape[1]))
    total = 0.0
    for start in range(0, len(vectors), rows):
        stop = start + rows
        diff = vectors[start:stop].astype(np.float64) - centroids[labels[start:stop]].astype(np.float64)
        total += float(np.einsum("ij,ij->", diff, diff))
    return total


def choose_k(
    vectors: np.ndarray,
    k_min: int,
    k_max: int,
    *,
    niter: int = 25,
    nredo: int = 1,
    seed: int = 0,
    sample_size: int = 5000,
    source: str = "vectors",
) -> KChoice:
    """Pick k in ``[k_min, k_max]`` by the mean silhouette score of a k-means clustering at each k.

    ``k_max`` is clipped to N - 1 (the silhouette is undefined when every row is its
    own cluster). Every k is scored on the same seeded sample of at most
    ``sample_size`` rows (the silhouette costs O(sample² · D)). The highest score
    wins; on a tie the smaller k. :func:`kmeans` with the same k and arguments
    reproduces the chosen clustering exactly (on the CPU).

    Args:
        vectors: (N, D) numbers.
        k_min, k_max: the range of k tried, inclusive.
        niter, nredo, seed: passed to :func:`kmeans` for every k.
        sample_size: most rows the silhouette is computed on.
        source: what ``vectors`` is, used in error messages.

    Raises:
        ConfigError: k_min < 2, k_min > k_max or sample_size < 3.
        InputDataError: fewer than 3 rows, fewer than k_min + 1 rows, bad values (see :func:`kmeans`),
            or no k that splits the sample into at least 2 clusters (e.g. all rows identical).
    """
    if k_min < 2 or k_min > k_max:
        raise ConfigError(
            f"cluster.k_min={k_min}, cluster.k_max={k_max}: expected 2 <= k_min <= k_max", "fix the range of k tried by k: auto"
        )
    if sample_size < 3:
        raise ConfigError(f"cluster.silhouette_sample={sample_size}: expected at least 3 rows", "raise cluster.silhouette_sample")
    x = _as_matrix(vectors, source)
    n = len(x)
    if n < 3:
        raise InputDataError(f"{source} has {n} rows; choosing k needs at least 3", "add data, or set cluster.k explicitly")
    top = min(k_max, n - 1)
    if k_min > top:
        raise InputDataError(
            f"cluster.k_min={k_min} needs at least {k_min + 1} rows, {source} has {n}", "lower cluster.k_min or add data"
        )
    # The same rows for every k, so the scores are comparable.
    sample = np.sort(np.random.default_rng(seed).choice(n, size=min(sample_size, n), replace=False))
    points = x[sample]
    scores: dict[int, float] = {}
    for k in range(k_min, top + 1):
        labels = kmeans(x, k, niter=niter, nredo=nredo, seed=seed, source=source).labels[sample]
        distinct = len(np.unique(labels))
        # Duplicate rows can leave clusters empty; the silhouette needs 2..n-1 clusters in the sample.
        if 2 <= distinct <= len(sample) - 1:
            scores[k] = float(silhouette_score(points, labels))
    if not scores:
        raise InputDataError(
            f"no k in {k_min}..{top} splits {source} into 2 or more clusters", "check that the rows are not all identical"
        )
    best = max(scores, key=lambda k: (scores[k], -k))
    return KChoice(k=best, silhouette=scores)


def agreement(labels_true: Sequence[str] | np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """Compare clusters with the true labels.

    Returns:
        ``nmi`` (normalized mutual information, arithmetic mean normalisation), ``ari``
        (adjusted Rand index) and ``purity`` (the share of rows whose cluster's most
        frequent label is their own), each rounded to 4 decimals. 1.0 is a perfect
        match for all three; NMI and ARI do not reward many small clusters, purity does.

    Raises:
        InputDataError: no rows.
        ArtifactError: labels and clusters differ in length.
    """
    truth, groups = _paired(labels_true, clusters)
    table = contingency_matrix(truth, groups)
    purity = table.max(axis=0).sum() / len(truth)
    return {
        "nmi": round(float(normalized_mutual_info_score(truth, groups)), 4),
        "ari": round(float(adjusted_rand_score(truth, groups)), 4),
        "purity": round(float(purity), 4),
    }


def cluster_label_table(labels_true: Sequence[str] | np.ndarray, clusters: np.ndarray) -> list[dict[str, Any]]:
    """Describe each cluster by its most frequent true label.

    Returns:
        One row per cluster that has rows, by cluster id: ``cluster`` (int), ``size`` (int),
        ``majority_label`` (str; on a tie the label that sorts first) and ``majority_share``
        (its fraction of the cluster, rounded to 4 decimals).

    Raises:
        InputDataError: no rows.
        ArtifactError: labels and clusters differ in length.
    """
    truth, groups = _paired(labels_true, clusters)
    names, label_codes = np.unique(truth, return_inverse=True)
    ids, cluster_codes = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(ids), len(names)), dtype=np.int64)
    np.add.at(counts, (cluster_codes, label_codes), 1)
    rows = []
    for row, cluster in enumerate(ids):
        size = int(counts[row].sum())
        majority = int(counts[row].argmax())
        rows.append(
            {
                "cluster": int(cluster),
                "size": size,
                "majority_label": str(names[majority]),
                "majority_share": round(float(counts[row, majority]) / size, 4),
            }
        )
    return rows


def raw_pixel_features(paths: Sequence[Path], side: int, *, workers: int = 0) -> np.ndarray:
    """The classic baseline features: each image's pixels, downscaled and standardised.

    Each image is decoded exactly as ingest validated it (oriented 8-bit RGB),
    squeezed to ``side`` × ``side`` (aspect ratio not kept) with Pillow's box
    filter, which averages the pixels under each output pixel (antialiased), and
    flattened to ``side * side * 3`` values in [0, 1]. Then each feature is
    standardised over the dataset (zero mean, unit variance; a constant feature
    stays 0), so k-means weighs every pixel position alike, as it does the deep
    features' dimensions.

    Memory: N × side² × 3 float32, with a peak of about twice that while
    standardising: 307 MB at side 16 for 100,000 images, four times as much
    (1.2 GB) at side 32. Meant for side 16-32.

    Args:
        paths: the image files, in the order of the rows returned.
        side: output side in pixels.
        workers: decoding processes; 0 means one per CPU core, 1 decodes in this process.

    Raises:
        ConfigError: side < 1.
        InputDataError: no paths, or a file that cannot be read or decoded (named).
    """
    if side < 1:
        raise ConfigError(f"cluster.raw_pixels_side={side}: expected at least 1 pixel", "set cluster.raw_pixels_side to e.g. 16")
    if not paths:
        raise InputDataError("no images to compute raw-pixel features from", "check that the manifest lists images")
    decoded = parallel_map(functools.partial(_downscaled_pixels, side=side), list(paths), workers, "raw pixels", "images")
    for path, pixels in zip(paths, decoded, strict=True):
        if isinstance(pixels, str):
            raise InputDataError(
                f"cannot read image {path}: {pixels}",
                "check the file, then rerun ingest so the manifest lists only readable images",
            )
    features = np.stack(decoded).astype(np.float32)
    features /= 255
    features -= features.mean(axis=0, dtype=np.float64).astype(np.float32)
    std = np.sqrt(np.mean(np.square(features), axis=0, dtype=np.float64)).astype(np.float32)
    std[std == 0] = 1
    features /= std
    return features


def _downscaled_pixels(path: Path, side: int) -> np.ndarray | str:
    """Flattened uint8 RGB of one image at ``side`` × ``side``, or why it could not be read.

    The failure is returned as text, not raised: it crosses a process boundary, and
    an exception with extra constructor arguments does not survive pickling intact.
    """
    try:
        image = load_rgb(path, _RAW_MAX_PIXELS)
    except Rejected as exc:
        return str(exc)
    except OSError as exc:
        return f"unreadable: {exc}"
    small = image.resize((side, side), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.uint8).reshape(-1)


def _as_matrix(vectors: np.ndarray, source: str) -> np.ndarray:
    """``vectors`` as a C-contiguous float32 (N, D) array of finite numbers within ±1e15, N and D >= 1."""
    try:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"{source} is not a numeric array: {exc}", "pass the embeddings as an (N, D) float array") from None
    if x.ndim != 2:
        raise InputDataError(f"{source} has shape {x.shape}; expected 2-D (rows, features)", "pass an (N, D) array")
    if x.size == 0:
        raise InputDataError(f"{source} is empty (shape {x.shape})", "check that the earlier stage produced vectors")
    # One comparison catches NaN (never <=), infinity and overflow-prone magnitudes.
    usable = (np.abs(x) <= _MAX_ABS_VALUE).all(axis=1)
    if not usable.all():
        bad = int(np.argmin(usable))
        raise InputDataError(
            f"{source} row {bad} contains NaN, infinity or a value beyond ±{_MAX_ABS_VALUE:g} ({int((~usable).sum())} such rows)",
            "rerun the stage that produced the vectors; check its inputs for corrupt items",
        )
    return x


def _paired(labels_true: Sequence[str] | np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The labels and clusters as 1-D arrays of equal, non-zero length."""
    truth = np.asarray(labels_true).reshape(-1)
    groups = np.asarray(clusters).reshape(-1)
    if len(truth) != len(groups):
        raise ArtifactError(
            f"{len(truth)} labels but {len(groups)} cluster assignments",
            "the labels must come from the manifest the vectors were computed from; rerun the embed stage",
        )
    if len(truth) == 0:
        raise InputDataError("no rows to compare clusters with labels on", "check that the dataset is not empty")
    return truth, groups


# Dimensions of the bag-of-words baseline after LSA (Deerwester et al. suggest a few hundred for large corpora).
BAG_OF_WORDS_DIMENSIONS = 100


def bag_of_words_features(documents: Sequence[str], seed: int) -> np.ndarray:
    """The classic baseline for documents: TF-IDF word counts reduced by LSA (truncated SVD), rows L2-normalised.

    It plays the part raw pixels play for images: what k-means finds without a trained model.
    """
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import normalize

    counts = TfidfVectorizer(sublinear_tf=True).fit_transform(documents)
    dimensions = min(BAG_OF_WORDS_DIMENSIONS, counts.shape[1] - 1, counts.shape[0] - 1)
    if dimensions < 1:
        return normalize(counts.toarray()).astype(np.float32)
    reduced = TruncatedSVD(dimensions, random_state=seed).fit_transform(counts)
    return np.ascontiguousarray(normalize(reduced), dtype=np.float32)
