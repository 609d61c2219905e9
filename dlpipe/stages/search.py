"""``search build``: a FAISS index over a dataset's embeddings that evaluates itself.

The index holds every item (the collection users search). It is chosen by size
and memory budget (``search.index: auto``, see :func:`dlpipe.retrieval.index.choose_index`)
or given as a FAISS factory string. An approximate index gets the smallest search
effort (nprobe / efSearch) that reaches ``search.target_recall`` on queries from
the validation split; it is then judged on held-out queries from the test split:

- recall@k: the share of the exact top-k neighbours the index returns;
- precision@k: the share of returned neighbours that carry the query's label.

Each query's own row is left out of its results (it would always be first).

The embeddings are read in bounded blocks, never whole: the index is trained on a sample and filled
chunk by chunk, and exact neighbours for the evaluation are found by a block-by-block scan. When
no index fits ``search.memory_budget_mb`` in memory (or ``search.storage: ondisk`` asks for it),
the inverted lists are built in shards and merged into ``index.ivfdata`` on disk, beside
``index.faiss`` (see :mod:`dlpipe.retrieval.index`); tuning and evaluation are the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.arrays import take_rows
from dlpipe.core.artifacts import atomic_dir, stage_lock, write_metrics
from dlpipe.core.config import Project, SearchConfig
from dlpipe.core.console import info, warn
from dlpipe.core.errors import InputDataError
from dlpipe.core.results import StageResult
from dlpipe.reports.sheets import RIGHT, WRONG, Tile, contact_sheet
from dlpipe.reports.tables import write_table
from dlpipe.retrieval import index as faiss_index
from dlpipe.retrieval.embeddings import Embeddings, load_embeddings

STAGE = "search"
# Fields of the embeddings sidecar that say how a query must be embedded; copied into index.json.
RECORDED_FIELDS = ("source", "model_sha256", "backbone", "preprocessing", "image_size", "layer", "normalized", "dimension")


@dataclass(frozen=True)
class Result(StageResult):
    """What a search build produced."""

    factory: str


def run(project: Project, dataset: str) -> Result:
    """Build, tune and evaluate the index of ``dataset``'s embeddings; write it with its sidecar and metrics.

    Raises:
        ArtifactError: embeddings missing, stale or corrupt.
        InputDataError: too few items for the chosen index or for the requested k.
        ConfigError: an invalid FAISS factory string, one that cannot keep its lists on disk when asked to,
            or a memory budget too small for any index (with ``storage: memory``) or for the trained quantizers.
    """
    cfg = project.params.search
    seed = project.params.base.seed
    embeddings = load_embeddings(project, dataset)
    vectors = embeddings.vectors  # memory-mapped, and read in blocks through the file: never whole
    count, dimension = vectors.shape
    if count < cfg.k + 1:
        raise InputDataError(
            f"dataset '{dataset}' has {count} items; evaluating k={cfg.k} neighbours needs at least {cfg.k + 1}", "lower search.k"
        )
    metric = "inner_product" if embeddings.normalized else "l2"
    budget = cfg.memory_budget_mb * 1024 * 1024
    choice = _choose(cfg, count, dimension, budget)
    info(f"index {choice.factory} for {count} vectors of dimension {dimension}: {choice.reason}")
    layout = project.layout(dataset)
    out_dir = layout.stage_dir(STAGE)
    metrics_path = layout.metrics(STAGE)

    with stage_lock(layout.root, STAGE), atomic_dir(out_dir) as staging:
        start = time.perf_counter()
        storage: dict[str, Any] = {"storage": choice.storage}
        if choice.storage == "ondisk":
            built = faiss_index.build_ondisk_index(vectors, choice.factory, staging, memory_budget_bytes=budget, metric=metric, seed=seed)
            index = built.index
            storage |= {"shards": built.shards, "shard_rows": built.shard_rows, "lists_bytes": built.lists_path.stat().st_size}
        else:
            index = faiss_index.build_index(vectors, choice.factory, metric=metric, seed=seed)
        build_seconds = time.perf_counter() - start
        rng = np.random.default_rng(seed)
        tune_rows = _sample(embeddings.manifest.split("val") or embeddings.manifest.split("train"), cfg.eval_queries, rng)
        test_rows = _sample(embeddings.manifest.split("test") or embeddings.manifest.split("val"), cfg.eval_queries, rng)
        params, tuned_recall = _tune(index, vectors, tune_rows, cfg)
        evaluation = _evaluate(index, vectors, embeddings, test_rows, cfg.k, metric)
        if evaluation["recall_at_k"] < cfg.target_recall:
            warn(f"recall@{cfg.k} is {evaluation['recall_at_k']:.3f} on the test queries, below search.target_recall {cfg.target_recall}")
        recorded = {key: embeddings.sidecar.get(key) for key in RECORDED_FIELDS}
        saved = faiss_index.save_index(
            index,
            staging,
            {
                "dataset": dataset,
                "reason": choice.reason,
                "embeddings_sha256": embeddings.sidecar["embeddings_sha256"],
                "manifest_sha256": embeddings.manifest.sha256,
                "query_embedding": recorded,
                **storage,
            },
        )
        if embeddings.manifest.documents is None:
            _write_examples(staging / "examples.png", index, vectors, embeddings, test_rows[: cfg.examples], cfg.k)
        else:
            _write_document_examples(staging / "examples", index, vectors, embeddings, test_rows[: cfg.examples], cfg.k)
        metrics = {
            "dataset": dataset,
            "index": choice.factory,
            **storage,
            "count": count,
            "dimension": dimension,
            "metric": metric,
            "index_bytes": saved.stat().st_size,
            "build_seconds": round(build_seconds, 3),
            "search_params": params,
            "tuning_queries": len(tune_rows),
            "tuned_recall_at_k": round(tuned_recall, 4),
            "k": cfg.k,
            **evaluation,
        }
    write_metrics(metrics_path, metrics)
    return Result(dataset, out_dir, metrics_path, metrics, factory=choice.factory)


def _choose(cfg: SearchConfig, count: int, dimension: int, budget: int) -> faiss_index.IndexChoice:
    """The index and where its lists live: ``search.index`` (or the auto rule) and ``search.storage``.

    A factory from params keeps its lists on disk when asked, or under ``storage: auto`` when its estimated size
    exceeds the budget and it is an IVF index that can (others stay in memory, as the user chose them).
    """
    if cfg.index == "auto":
        return faiss_index.choose_index(count, dimension, budget, storage=cfg.storage)
    memory = faiss_index.estimate_memory(cfg.index, count, dimension)
    over_budget = cfg.storage == "auto" and memory > budget and faiss_index.supports_ondisk(cfg.index, dimension)
    if cfg.storage == "ondisk" or over_budget:
        why = "search.storage: ondisk" if cfg.storage == "ondisk" else f"{memory / 2**20:,.0f} MB in memory exceed search.memory_budget_mb"
        resident = faiss_index.estimate_memory(cfg.index, 0, dimension)
        return faiss_index.IndexChoice(cfg.index, f"set in params.yaml (search.index), its lists on disk ({why})", resident, "ondisk")
    return faiss_index.IndexChoice(cfg.index, "set in params.yaml (search.index)", memory)


def _sample(rows: list[int], limit: int, rng: np.random.Generator) -> list[int]:
    """At most ``limit`` of ``rows``, drawn without replacement and kept in manifest order."""
    if len(rows) <= limit:
        return rows
    return sorted(rng.choice(rows, size=limit, replace=False).tolist())


def _neighbours_without_self(ids: np.ndarray, rows: list[int], k: int) -> np.ndarray:
    """Drop each query's own row from its k+1 results (or the last result when it is absent)."""
    kept = np.empty((len(rows), k), dtype=np.int64)
    for i, (found, own) in enumerate(zip(ids, rows, strict=True)):
        others = found[found != own]
        kept[i] = others[:k]
    return kept


def _tune(index, vectors: np.ndarray, rows: list[int], cfg: SearchConfig) -> tuple[dict[str, int], float]:
    """Smallest search effort reaching the target recall on ``rows`` (self included on both sides)."""
    if not rows:
        return {}, 1.0
    return faiss_index.tune_search_params(index, vectors, take_rows(vectors, rows), None, cfg.k + 1, cfg.target_recall)


def _evaluate(index, vectors: np.ndarray, embeddings: Embeddings, rows: list[int], k: int, metric: str) -> dict[str, Any]:
    """recall@k against exact search and label precision@k on held-out queries; queries/s of the index."""
    if not rows:
        return {"queries": 0}
    queries = take_rows(vectors, rows)
    _, exact = faiss_index.exact_search(vectors, queries, k + 1, metric)
    start = time.perf_counter()
    _, found = faiss_index.search(index, queries, k + 1)
    seconds = time.perf_counter() - start
    exact, found = _neighbours_without_self(exact, rows, k), _neighbours_without_self(found, rows, k)
    figures = {
        "queries": len(rows),
        "recall_at_k": round(faiss_index.recall_at_k(found, exact, k), 4),
        "queries_per_second": round(len(rows) / max(seconds, 1e-9), 1),
    }
    if embeddings.manifest.labelled:  # without labels there is nothing for a neighbour to agree with
        manifest_rows = embeddings.manifest.rows
        found_labels = np.asarray([manifest_rows[i]["label"] for i in found.ravel()]).reshape(found.shape)
        query_labels = np.asarray([manifest_rows[i]["label"] for i in rows])
        figures["precision_at_k"] = round(float(np.mean(found_labels == query_labels[:, None])), 4)
    return figures


def _write_document_examples(path: Path, index, vectors: np.ndarray, embeddings: Embeddings, rows: list[int], k: int) -> None:
    """``examples.csv`` and ``examples.md``: per example query document, its k nearest documents (same label or not)."""
    manifest = embeddings.manifest
    documents = manifest.documents or []
    table = []
    if rows:
        scores, ids = faiss_index.search(index, take_rows(vectors, rows), k + 1)
        for row, row_scores, row_ids in zip(rows, scores, ids, strict=True):
            query = {"query": manifest.rows[row]["path"], "query_label": manifest.rows[row]["label"], "rank": 0}
            table.append(query | {"label": query["query_label"], "same_label": True, "score": "", "document": documents[row]})
            kept = [(s, i) for s, i in zip(row_scores, row_ids, strict=True) if i != row][:k]
            for rank, (score, neighbour) in enumerate(kept, start=1):
                label = manifest.rows[neighbour]["label"]
                same = label == query["query_label"]
                hit = {"rank": rank, "label": label, "same_label": same, "score": round(float(score), 4), "document": documents[neighbour]}
                table.append(query | hit)
    columns = ("query", "query_label", "rank", "label", "same_label", "score", "document")
    title = f"{manifest.dataset}: test queries (rank 0) and their {k} nearest documents"
    write_table(table, columns, path.with_suffix(".csv"), path.with_suffix(".md"), title)


def _write_examples(path: Path, index, vectors: np.ndarray, embeddings: Embeddings, rows: list[int], k: int) -> None:
    """A sheet with one row per example query: the query, then its k neighbours (green: same label; uncoloured
    and captioned with file names when the dataset has no labels)."""
    tiles: list[Tile] = []
    manifest = embeddings.manifest
    labelled = manifest.labelled
    if rows:
        scores, ids = faiss_index.search(index, take_rows(vectors, rows), k + 1)
        for row, row_scores, row_ids in zip(rows, scores, ids, strict=True):
            query_path = manifest.resolve(manifest.rows[row]["path"])
            query_label = manifest.rows[row]["label"]
            tiles.append(Tile(query_path, f"query\n{query_label if labelled else query_path.name}"))
            kept = [(s, i) for s, i in zip(row_scores, row_ids, strict=True) if i != row][:k]
            for score, neighbour in kept:
                found = manifest.resolve(manifest.rows[neighbour]["path"])
                label = manifest.rows[neighbour]["label"]
                colour = (RIGHT if label == query_label else WRONG) if labelled else None
                tiles.append(Tile(found, f"{label if labelled else found.name}\n{score:.3f}", colour))
    contact_sheet(tiles, path, columns=k + 1, tile_size=96, title=f"{manifest.dataset}: test queries and their {k} nearest neighbours")
