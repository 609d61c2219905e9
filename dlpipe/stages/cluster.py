"""``cluster``: k-means on the deep embeddings, judged against a baseline, with UMAP pictures.

The classic comparison: cluster the images by their downscaled raw pixels (documents:
by their TF-IDF bag of words, reduced by LSA) and by the network's embeddings with the
same k-means and the same k, and measure how well each grouping agrees with the labels
(NMI, ARI, purity). Alongside: a seeded UMAP map (CSV, PNG by label and by cluster, the
fitted reducer for projecting new points) and one contact sheet per cluster (documents: a
table of each cluster's members nearest its centroid), so a person can see what it holds.

The embeddings are never read whole (see :mod:`dlpipe.retrieval.clustering`): k-means trains on a
sample and assigns block by block, the silhouette and the baseline use a sample of rows
(``cluster.silhouette_sample``, ``cluster.baseline_sample``), and UMAP is fitted on
``cluster.umap.sample`` rows and places the rest with ``transform``; umap.png draws the fitted rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.arrays import take_rows
from dlpipe.core.artifacts import (
    atomic_dir,
    atomic_write_bytes,
    atomic_write_json,
    library_versions,
    sidecar,
    stage_lock,
    write_csv,
    write_metrics,
)
from dlpipe.core.config import ClusterConfig, Project
from dlpipe.core.console import info
from dlpipe.core.errors import InputDataError
from dlpipe.core.layout import CLUSTER_SIDECAR
from dlpipe.core.results import StageResult
from dlpipe.reports.cluster_plots import write_silhouette_plot, write_umap_png
from dlpipe.reports.sheets import RIGHT, WRONG, Tile, contact_sheet
from dlpipe.reports.tables import write_table
from dlpipe.retrieval import clustering
from dlpipe.retrieval.embeddings import Embeddings, load_embeddings

STAGE = "cluster"
REDUCER_FILE = "umap_reducer.pkl"


@dataclass(frozen=True)
class Result(StageResult):
    """What a cluster run produced."""

    k: int


def run(project: Project, dataset: str) -> Result:
    """Cluster ``dataset``'s embeddings and its raw pixels; write assignments, pictures and metrics.

    Raises:
        ArtifactError: embeddings missing, stale or corrupt (see :func:`dlpipe.retrieval.embeddings.load_embeddings`).
        InputDataError: fewer items than clusters, or an image that no longer decodes.
    """
    cfg = project.params.cluster
    seed = project.params.base.seed
    embeddings = load_embeddings(project, dataset)
    vectors = embeddings.vectors  # memory-mapped, and read in blocks through the file: never whole
    count = vectors.shape[0]
    if count < 3:
        raise InputDataError(f"dataset '{dataset}' has {count} embeddings; clustering needs at least 3", "ingest more images")
    layout = project.layout(dataset)
    out_dir = layout.stage_dir(STAGE)
    metrics_path = layout.metrics(STAGE)
    labels = [row["label"] for row in embeddings.manifest.rows]
    labelled = embeddings.manifest.labelled
    if not labelled:
        info(
            f"cluster {dataset}: no labels (task {embeddings.manifest.task}): agreement with labels (NMI, ARI, purity), "
            "the UMAP by label and the sheets' label colours are left out"
        )

    with stage_lock(layout.root, STAGE), atomic_dir(out_dir) as staging:
        classes = len({label for label in labels if label}) if labelled else 0
        k, silhouette, k_reason = _choose_k(vectors, cfg, seed, classes)
        if silhouette:
            curve = ({"k": key, "silhouette": value} for key, value in silhouette.items())
            write_csv(staging / "silhouette.csv", ("k", "silhouette"), curve)
            write_silhouette_plot(silhouette, k, staging / "silhouette.png", f"{dataset}: choosing k by silhouette")
        info(f"k-means with k={k} on {count} embeddings of dimension {vectors.shape[1]}")
        deep = clustering.kmeans(vectors, k, niter=cfg.niter, nredo=cfg.nredo, seed=seed)
        distances = deep.distances
        metrics: dict[str, Any] = {
            "dataset": dataset,
            "count": count,
            "dimension": int(vectors.shape[1]),
            "k": k,
            "k_source": "auto" if cfg.k == "auto" else "params",
            "k_reason": k_reason,
            "silhouette": _silhouette_at(vectors, deep.labels, cfg.silhouette_sample, seed),
            "inertia": round(deep.inertia, 6),
            "cluster_sizes": deep.sizes,
        }
        if len(set(labels)) >= 2:
            metrics.update(_judge_against_baseline(embeddings, labels, deep.labels, k, cfg, seed))
        _write_tables(staging, embeddings, labels, deep.labels, distances)
        metrics["umap_seconds"], metrics["umap_fit_rows"] = _write_umap(
            staging, vectors, labels if labelled else None, deep.labels, cfg, seed, embeddings.normalized, dataset
        )
        if embeddings.manifest.documents is None:
            _write_sheets(staging / "sheets", embeddings, labels if labelled else None, deep.labels, distances, cfg.thumbnails)
        else:
            _write_document_table(staging, embeddings, labels, deep.labels, distances, cfg.thumbnails)
        atomic_write_json(
            staging / CLUSTER_SIDECAR,
            sidecar(
                STAGE,
                dataset=dataset,
                embeddings_sha256=embeddings.sidecar["embeddings_sha256"],
                manifest_sha256=embeddings.manifest.sha256,
                k=k,
                k_reason=k_reason,
                params=cfg.model_dump(),
                seed=seed,
                reducer=REDUCER_FILE,
                versions=library_versions("faiss-cpu", "umap-learn", "scikit-learn", "numpy"),
            ),
        )
    write_metrics(metrics_path, metrics)
    return Result(dataset, out_dir, metrics_path, metrics, k=k)


def _choose_k(vectors: np.ndarray, cfg: ClusterConfig, seed: int, classes: int) -> tuple[int, dict[int, float], str]:
    """(k, silhouette score per k tried, why this k); the scores are empty when k comes from params.

    With labels, the range of k tried reaches past the number of classes (``classes``), so that a
    dataset of more classes than ``cluster.k_max`` can still be clustered by class.
    """
    count = vectors.shape[0]
    if cfg.k != "auto":
        if cfg.k > count:
            raise InputDataError(f"cluster.k is {cfg.k} but the dataset has only {count} items", "lower cluster.k or use auto")
        return cfg.k, {}, "cluster.k in params"
    top, raised = cfg.k_max, ""
    if classes >= cfg.k_max:  # the range could not reach past the classes
        top, raised = classes + 2, f"; cluster.k_max={cfg.k_max} raised to {classes + 2}: the labels have {classes} classes"
    top = min(top, count - 1)
    choice = clustering.choose_k(vectors, cfg.k_min, top, niter=cfg.niter, nredo=cfg.nredo, seed=seed, sample_size=cfg.silhouette_sample)
    reason = f"the best mean silhouette for k in {cfg.k_min}..{top}{raised}"
    return choice.k, {key: round(value, 6) for key, value in choice.silhouette.items()}, reason


def _silhouette_at(vectors: np.ndarray, clusters: np.ndarray, sample: int, seed: int) -> float:
    from sklearn.metrics import silhouette_score
    from sklearn.utils import check_random_state

    # the rows silhouette_score(sample_size=, random_state=seed) would draw, read without loading the rest
    rows = check_random_state(seed).permutation(vectors.shape[0])[:sample]
    points = np.ascontiguousarray(take_rows(vectors, rows), dtype=np.float32)
    return round(float(silhouette_score(points, clusters[rows])), 6)


def _judge_against_baseline(
    embeddings: Embeddings, labels: list[str], deep_clusters: np.ndarray, k: int, cfg: ClusterConfig, seed: int
) -> dict[str, Any]:
    """Agreement with the labels of the deep clustering and of the baseline features clustered the same way.

    The baseline is raw pixels for images, a TF-IDF bag of words (LSA) for documents; the metric names say which.
    It is computed on at most ``cluster.baseline_sample`` rows (``<baseline>_rows``, drawn with the seed), and
    the NMI gain compares it with the deep clustering on those same rows.
    """
    manifest = embeddings.manifest
    count = len(labels)
    rows = np.arange(count)
    if count > cfg.baseline_sample:
        rows = np.sort(np.random.default_rng(seed).choice(count, size=cfg.baseline_sample, replace=False))
    if manifest.documents is None:
        paths = [manifest.resolve(manifest.rows[i]["path"]) for i in rows]
        baseline, features = "raw_pixels", clustering.raw_pixel_features(paths, cfg.raw_pixels_side)
    else:
        baseline, features = "bag_of_words", clustering.bag_of_words_features([manifest.documents[i] for i in rows], seed)
    raw = clustering.kmeans(features, k, niter=cfg.niter, nredo=cfg.nredo, seed=seed)
    truth = [labels[i] for i in rows]
    deep_scores = clustering.agreement(labels, deep_clusters)
    raw_scores = clustering.agreement(truth, raw.labels)
    deep_on_rows = deep_scores if len(rows) == count else clustering.agreement(truth, deep_clusters[rows])
    info(f"NMI against the labels: deep features {deep_scores['nmi']:.3f}, {baseline.replace('_', ' ')} {raw_scores['nmi']:.3f}")
    return {
        **deep_scores,
        **{f"{baseline}_{key}": value for key, value in raw_scores.items()},
        f"{baseline}_rows": len(rows),
        f"nmi_gain_over_{baseline}": round(deep_on_rows["nmi"] - raw_scores["nmi"], 4),
    }


def _write_tables(folder: Path, embeddings: Embeddings, labels: list[str], clusters: np.ndarray, distances: np.ndarray) -> None:
    rows = embeddings.manifest.rows
    write_csv(
        folder / "assignments.csv",
        ("path", "label", "split", "cluster", "distance_to_centroid"),
        (
            {
                "path": row["path"],
                "label": row["label"],
                "split": row["split"],
                "cluster": int(c),
                "distance_to_centroid": round(float(d), 6),
            }
            for row, c, d in zip(rows, clusters, distances, strict=True)
        ),
    )
    write_csv(
        folder / "clusters.csv",
        ("cluster", "size", "majority_label", "majority_share"),
        clustering.cluster_label_table(labels, clusters),
    )


def _write_umap(
    folder: Path,
    vectors: np.ndarray,
    labels: list[str] | None,
    clusters: np.ndarray,
    cfg: ClusterConfig,
    seed: int,
    normalized: bool,
    dataset: str,
) -> tuple[float, int]:
    """Fit the seeded 2-D UMAP (on ``cluster.umap.sample`` rows at most), write umap.csv (every row), umap.png
    (the fitted rows, by label and by cluster; by cluster only when ``labels`` is None) and the pickled reducer;
    return the seconds it took and the rows it was fitted on."""
    start = time.perf_counter()
    mapped = clustering.umap_map(
        vectors,
        sample=cfg.umap.sample,
        n_neighbors=cfg.umap.n_neighbors,
        min_dist=cfg.umap.min_dist,
        metric="cosine" if normalized else "euclidean",
        seed=seed,
    )
    seconds = time.perf_counter() - start
    coords, drawn = mapped.coords, mapped.fitted_rows
    write_csv(
        folder / "umap.csv",
        ("index", "label", "cluster", "x", "y"),
        (
            {"index": i, "label": label, "cluster": int(c), "x": round(float(x), 5), "y": round(float(y), 5)}
            for i, (label, c, (x, y)) in enumerate(zip(labels or [""] * len(coords), clusters, coords, strict=True))
        ),
    )
    title = f"{dataset}: UMAP of {len(coords)} embeddings"
    if len(drawn) < len(coords):
        title = f"{dataset}: UMAP of {len(coords):,} embeddings, the {len(drawn):,} it was fitted on drawn"
        labels = None if labels is None else [labels[i] for i in drawn]
    write_umap_png(coords[drawn], labels, clusters[drawn], folder / "umap.png", title)
    # The reducer can place new points on this map: pickle.load(...).transform(new_vectors).
    atomic_write_bytes(folder / REDUCER_FILE, clustering.reducer_pickle(mapped.reducer))
    return round(seconds, 3), len(drawn)


def _write_document_table(
    folder: Path, embeddings: Embeddings, labels: list[str], clusters: np.ndarray, distances: np.ndarray, per_cluster: int
) -> None:
    """``cluster_documents.csv`` / ``.md``: per cluster, the documents closest to its centroid and whether each has its majority label."""
    documents = embeddings.manifest.documents or []
    rows = []
    for entry in clustering.cluster_label_table(labels, clusters):
        members = np.flatnonzero(clusters == entry["cluster"])
        nearest = members[np.argsort(distances[members], kind="stable")][:per_cluster]
        rows += [
            {
                "cluster": entry["cluster"],
                "size": entry["size"],
                "majority_label": entry["majority_label"],
                "rank": rank,
                "label": labels[i],
                "distance_to_centroid": round(float(distances[i]), 4),
                "document": documents[i],
            }
            for rank, i in enumerate(nearest, start=1)
        ]
    columns = ("cluster", "size", "majority_label", "rank", "label", "distance_to_centroid", "document")
    title = f"{embeddings.manifest.dataset}: the documents nearest each cluster's centroid"
    write_table(rows, columns, folder / "cluster_documents.csv", folder / "cluster_documents.md", title)


def _write_sheets(
    folder: Path, embeddings: Embeddings, labels: list[str] | None, clusters: np.ndarray, distances: np.ndarray, per_cluster: int
) -> None:
    """One contact sheet per cluster: the members closest to its centroid, green when of the majority label.

    Without labels (None) tiles are captioned with their file names and not coloured.
    """
    manifest = embeddings.manifest
    for entry in clustering.cluster_label_table(labels or [""] * len(clusters), clusters):
        cluster = entry["cluster"]
        members = np.flatnonzero(clusters == cluster)
        nearest = members[np.argsort(distances[members], kind="stable")][:per_cluster]
        paths = {i: manifest.resolve(manifest.rows[i]["path"]) for i in nearest}
        if labels is None:
            tiles = [Tile(paths[i], paths[i].name) for i in nearest]
            title = f"cluster {cluster}: {entry['size']} items"
        else:
            tiles = [Tile(paths[i], labels[i], RIGHT if labels[i] == entry["majority_label"] else WRONG) for i in nearest]
            title = f"cluster {cluster}: {entry['size']} items, {entry['majority_share']:.0%} {entry['majority_label']}"
        contact_sheet(tiles, folder / f"cluster_{cluster:02d}.png", columns=min(6, max(len(tiles), 1)), tile_size=96, title=title)
