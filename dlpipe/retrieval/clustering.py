"""k-means, the choice of k, agreement with the true labels, the raw-pixel baseline, and the UMAP map.

The cluster stage runs the same k-means on two feature sets, the deep embeddings
and downscaled raw pixels, and compares how well each recovers the labels
("unsupervised clustering on raw images vs on deep features"). k-means is FAISS's
(on the GPU when the GPU build of FAISS sees one); scikit-learn provides the
metrics. This module computes and returns; the stage plots and writes files.

Large inputs stream: a memory-mapped embeddings file is read in blocks through the file
(:func:`dlpipe.core.arrays.row_blocks`), never whole. k-means trains on at most
``k * max_points_per_centroid`` rows (FAISS's own limit, 256 per centroid by default; a seeded
sample beyond it) and then assigns every row block by block; UMAP fits on a sample and places
the other rows with ``transform``. Memory holds the samples, one block, and a label, a distance
and two coordinates per row. With no more rows than the samples, everything is computed on all
rows at once, as it always was.
"""

from __future__ import annotations

import copyreg
import functools
import io
import pickle
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
from PIL import Image
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_score
from sklearn.metrics.cluster import contingency_matrix

from dlpipe.core.arrays import first_failing_row, row_blocks, rows_per_block, take_rows
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
# Values per block read, assigned and scored at a time: 16 MiB as float32, 32 MiB in float64 for the inertia.
BLOCK_VALUES = 1 << 22
# FAISS's default k-means training sample per centroid (Clustering.max_points_per_centroid); it asks for at least 39.
MAX_POINTS_PER_CENTROID = 256
# Rows UMAP places per transform call: its memory grows with the rows, while fewer, larger calls save little time.
UMAP_BLOCK_ROWS = 8_192
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
        distances: float32 (N,), the L2 distance of each row to its centroid.
    """

    labels: np.ndarray
    centroids: np.ndarray
    inertia: float
    sizes: list[int]
    distances: np.ndarray


@dataclass(frozen=True)
class KChoice:
    """The k that :func:`choose_k` picked and the mean silhouette score of each k tried."""

    k: int
    silhouette: dict[int, float]


@dataclass(frozen=True)
class UmapMap:
    """A 2-D UMAP of N rows.

    Attributes:
        coords: (N, 2) coordinates of every row.
        fitted_rows: int64, sorted: the rows UMAP was fitted on (all of them when N <= the sample); the
            others were placed by ``reducer.transform``.
        reducer: the fitted ``umap.UMAP``; its ``transform`` places new points on this map.
    """

    coords: np.ndarray
    fitted_rows: np.ndarray
    reducer: Any


def load_umap() -> Any:
    """The ``umap`` module, imported without TensorFlow, its compiled functions cached on disk.

    umap-learn imports its parametric module, and with it all of TensorFlow, whenever TensorFlow is
    installed; dlpipe uses ``umap.UMAP`` only. Marking TensorFlow absent during the import makes umap
    skip that module (it catches the ImportError); an ``import tensorflow`` afterwards works as usual.

    Most of umap's numba functions are compiled afresh in every process (they are not declared
    ``cache=True``), which costs a DVC stage seconds each run; :func:`_cache_compiled` keeps them.
    """
    if "umap" not in sys.modules and "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None  # while set, "import tensorflow" raises ImportError
        try:
            import umap
        finally:
            if sys.modules.get("tensorflow", 0) is None:
                del sys.modules["tensorflow"]
    import umap

    _cache_compiled(("umap", "pynndescent"))
    return umap


def _cache_compiled(packages: Sequence[str]) -> None:
    """Have numba keep the machine code of ``packages``' module-level jitted functions on disk.

    The same as declaring them ``cache=True``: numba keys each entry on the function's source file
    and the CPU, stores it beside the module (or under ``NUMBA_CACHE_DIR``) and recompiles when either
    changes; the results are the same bits.
    """
    from numba.core.dispatcher import Dispatcher

    for name in [module for module in sys.modules if module.split(".")[0] in packages]:
        for value in list(vars(sys.modules[name]).values()):
            if isinstance(value, Dispatcher):
                try:
                    value.enable_caching()  # a function already declared cache=True keeps the same store
                except RuntimeError:
                    return  # no writable cache folder here (numba says so): compile in memory, as before


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
    rows (FAISS's own objective covers only its training sample, in float32), in
    blocks of :data:`BLOCK_VALUES` values, so a memory-mapped input is never read whole.

    Args:
        vectors: (N, D) numbers (a memory-mapped ``.npy`` is fine); converted to float32 block by block.
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
    x = _checked(vectors, source)
    model = _trained(x, k, niter, nredo, seed, max_points_per_centroid, use_gpu, init, source)
    centroids = np.ascontiguousarray(model.centroids, dtype=np.float32)
    labels = np.empty(len(x), dtype=np.int64)
    distances = np.empty(len(x), dtype=np.float32)
    total = 0.0
    for start, block in row_blocks(x, _block_rows(x.shape[1])):
        rows = np.ascontiguousarray(block, dtype=np.float32)
        stop = start + len(rows)
        labels[start:stop] = _nearest(model, rows)
        distances[start:stop] = np.linalg.norm(rows - centroids[labels[start:stop]], axis=1)
        total += _block_inertia(rows, centroids, labels[start:stop])
    return KMeansResult(
        labels=labels,
        centroids=centroids,
        inertia=total,
        sizes=np.bincount(labels, minlength=k).tolist(),
        distances=distances,
    )


def inertia(vectors: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    """Return the sum of squared L2 distances of each row to its centroid, accumulated in float64.

    Computed as the direct difference (not ``|x|² + |c|² - 2x·c``, which loses
    precision), in blocks of :data:`BLOCK_VALUES` values so memory stays small for large N.
    """
    total = 0.0
    for start, block in row_blocks(vectors, _block_rows(vectors.shape[1])):
        total += _block_inertia(block, centroids, labels[start : start + len(block)])
    return total


def _block_inertia(block: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    diff = block.astype(np.float64) - centroids[labels].astype(np.float64)
    return float(np.einsum("ij,ij->", diff, diff))


def _block_rows(dimension: int) -> int:
    return rows_per_block(dimension, 4, 4 * BLOCK_VALUES)  # float32 rows of BLOCK_VALUES values


def _trained(
    x: np.ndarray,
    k: int,
    niter: int,
    nredo: int,
    seed: int,
    max_points_per_centroid: int | None,
    use_gpu: bool | None,
    init: Init,
    source: str,
) -> Any:
    """A FAISS ``Kmeans`` trained on at most ``k * max_points_per_centroid`` rows of checked ``x`` (all rows when there
    are no more; else a seeded sample, read row by row), after checking k and the options."""
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
    limit = k * (max_points_per_centroid or MAX_POINTS_PER_CENTROID)
    # FAISS would draw the same-sized sample itself, but only from a matrix already in memory
    sample = _float32_rows(x, None if n <= limit else np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False)))
    model = faiss.Kmeans(d, k, **options)
    with _threads_for(len(sample) * k * d):
        model.train(sample)
    return model


def _nearest(model: Any, rows: np.ndarray) -> np.ndarray:
    """The nearest centroid of each row of a float32 block, as int64."""
    with _threads_for(rows.size * model.k):
        _, nearest = model.assign(rows)
    return nearest.astype(np.int64, copy=False)


def _threads_for(work: int) -> Any:
    return faiss_threads(1 if work < _SERIAL_WORK else faiss.omp_get_max_threads())


def _float32_rows(x: np.ndarray, rows: np.ndarray | None) -> np.ndarray:
    """The given rows of ``x`` (all when None) as one C-contiguous float32 array in memory."""
    if rows is not None:
        return np.ascontiguousarray(take_rows(x, rows), dtype=np.float32)
    if not isinstance(x, np.memmap):
        return np.ascontiguousarray(x, dtype=np.float32)
    whole = np.empty(x.shape, dtype=np.float32)
    for start, block in row_blocks(x):
        whole[start : start + len(block)] = block
    return whole


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
    ``sample_size`` rows (the silhouette costs O(sample² · D)); only those rows are
    assigned to the centroids :func:`kmeans` trains. The highest score wins; on a tie
    the smaller k. :func:`kmeans` with the same k and arguments reproduces the chosen
    clustering exactly (on the CPU).

    Args:
        vectors: (N, D) numbers (a memory-mapped ``.npy`` is fine).
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
    x = _checked(vectors, source)
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
    points = _float32_rows(x, sample)
    scores: dict[int, float] = {}
    for k in range(k_min, top + 1):
        labels = _nearest(_trained(x, k, niter, nredo, seed, None, None, "k-means++", source), points)
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


def umap_map(
    vectors: np.ndarray,
    *,
    sample: int,
    n_neighbors: int,
    min_dist: float,
    metric: str,
    seed: int,
    block_rows: int = UMAP_BLOCK_ROWS,
) -> UmapMap:
    """A seeded 2-D UMAP of every row: fitted on at most ``sample`` rows, the others placed by ``transform``.

    With N <= ``sample`` this is ``fit_transform`` on all rows. Beyond it UMAP is fitted on a seeded
    random sample (the fitted rows keep the coordinates of the fit) and the other rows are
    transformed ``block_rows`` at a time, read block by block.

    Args:
        vectors: (N, D) numbers, N >= 2 (a memory-mapped ``.npy`` is fine).
        sample: most rows UMAP is fitted on (at least 2).
        n_neighbors: UMAP's neighbourhood size, clipped to the fitted rows minus one.
        min_dist: how tightly UMAP may pack points.
        metric: ``cosine`` or ``euclidean`` (any metric UMAP knows).
        seed: seeds UMAP and the sample.
        block_rows: rows per ``transform`` call.
    """
    umap = load_umap()
    n = vectors.shape[0]
    fitted = np.arange(n) if n <= sample else np.sort(np.random.default_rng(seed).choice(n, size=sample, replace=False))
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, len(fitted) - 1),
        min_dist=min_dist,
        metric=metric,
        random_state=seed,
        n_jobs=1,  # a seeded UMAP runs single-threaded anyway; saying so keeps its warning away
    )
    if n <= sample:
        return UmapMap(reducer.fit_transform(_float32_rows(vectors, None)), fitted, reducer)
    reducer.fit(_float32_rows(vectors, fitted))
    coords = np.empty((n, 2), dtype=reducer.embedding_.dtype)
    coords[fitted] = reducer.embedding_
    placed = np.zeros(n, dtype=bool)
    placed[fitted] = True
    for start, block in row_blocks(vectors, block_rows):
        rest = ~placed[start : start + len(block)]
        if rest.any():
            coords[start : start + len(block)][rest] = reducer.transform(np.ascontiguousarray(block[rest], dtype=np.float32))
    return UmapMap(coords, fitted, reducer)


def reducer_pickle(reducer: Any) -> bytes:
    """A fitted UMAP as pickle bytes that are the same from run to run (``pickle.loads`` gives it back).

    UMAP keeps numba-compiled distance functions, and numba pickles each with an id drawn anew in every
    process. Pickled by reference instead (``umap.distances.euclidean``, as a plain function is),
    they load as the same functions and the bytes depend on the fit alone.
    """
    from numba.core.registry import CPUDispatcher

    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = copyreg.dispatch_table.copy()
    pickler.dispatch_table[CPUDispatcher] = lambda function: function.py_func.__qualname__  # a name: pickled as a global
    pickler.dump(reducer)
    return buffer.getvalue()


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
    (1.2 GB) at side 32. Meant for side 16-32; the cluster stage passes at most
    ``cluster.baseline_sample`` images.

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


def _checked(vectors: np.ndarray, source: str) -> np.ndarray:
    """``vectors`` as a numeric (N, D) array, N and D >= 1, of finite numbers within ±1e15 (checked block by block).

    A numeric array is returned as it is (a memory map stays one); anything else is converted to float32.
    """
    try:
        x = vectors if isinstance(vectors, np.ndarray) and vectors.dtype.kind in "fiu" else np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"{source} is not a numeric array: {exc}", "pass the embeddings as an (N, D) float array") from None
    if x.ndim != 2:
        raise InputDataError(f"{source} has shape {x.shape}; expected 2-D (rows, features)", "pass an (N, D) array")
    if x.size == 0:
        raise InputDataError(f"{source} is empty (shape {x.shape})", "check that the earlier stage produced vectors")
    # One comparison catches NaN (never <=), infinity and overflow-prone magnitudes, as float32 holds them.
    bad = first_failing_row(x, lambda block: (np.abs(block.astype(np.float32, copy=False)) <= _MAX_ABS_VALUE).all(axis=1))
    if bad is not None:
        raise InputDataError(
            f"{source} row {bad} contains NaN, infinity or a value beyond ±{_MAX_ABS_VALUE:g}",
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
