"""FAISS indices: choose, build, tune, save and load with a sidecar, query; GPU when present.

The ``index: auto`` rule (:func:`choose_index`) picks, for ``N`` vectors of
dimension ``D`` and a memory budget, the first of these that applies:

1. **Exact ``Flat``** when the raw vectors take at most 32 MiB (``N * D <= 2**23``
   floats, e.g. 65,536 x 128-d or 8,192 x 1024-d) or there are fewer than 10,000
   of them, and they fit the budget. A brute-force scan of 32 MiB takes a few
   milliseconds per query on two cores, is exact and needs no training, so an
   approximate index would only add build time and lose recall.
2. **``IVF{nlist},SQfp16``** when the vectors stored as 16-bit floats plus the
   inverted lists' ids (``N * (2 D + 8)`` bytes) fit the budget. Float16 keeps 11
   significant bits, so a score moves by about 1e-3 at most and recall is that of
   uncompressed IVF-Flat at every ``nprobe``, in half its memory. Scanning the
   probed lists is bound by memory bandwidth, so half the bytes is a faster scan:
   on 1M clustered 128-d vectors and 2 cores (bench/results/search.md), at
   recall@10 >= 0.95 it served 1.7x the batched queries per second of
   ``IVF{nlist},Flat`` and 15x those of ``HNSW32`` (49x exact ``Flat``), built in 12 s,
   deterministically for a seed, and on a GPU when there is one (HNSW builds are
   neither). Vectors with a component beyond float16's range (65,504) are
   refused by :func:`build_index`; unit-normalised embeddings never are.
3. **``IVF{nlist},SQ8``** when one byte per component (``N * (D + 8)``) fits but
   two do not: each dimension is quantized to 256 steps over its trained range,
   which costs a little recall (the same benchmark needs ``nprobe`` 6 instead of
   5 for 0.95), far less than product quantization does.
4. **``IVF{nlist},PQ{m}x8``** when not even that fits: each vector is
   stored as ``m`` bytes (``m`` the largest divisor of ``D`` that is at most 64
   and ``D / 2`` and lets ``N * (m + 8)`` bytes plus the quantizers fit the
   budget). Recall is then bounded by the compression (no refinement,
   since refining needs the raw vectors that do not fit).

``nlist`` is the power of two nearest ``2 * sqrt(N)``, capped at ``N / 39`` so
that k-means has the 39 points per centroid FAISS asks for. Why 2: a query
compares itself with all ``nlist`` centroids, then scans ``nprobe`` lists of
about ``N / nlist`` vectors, so its cost ``nlist + nprobe * N / nlist`` is
smallest at ``nlist = sqrt(nprobe * N)``; the ``nprobe`` that reaches recall@10
>= 0.95 on clustered embeddings is about 4 (measured on 1M vectors: 5 with 2,048
lists, 10 with 4,096), which puts the balance at ``2 sqrt(N)``. FAISS's own
guideline, ``4 to 16 sqrt(N)``, assumes the larger ``nprobe`` of higher recall
targets (and HNSW or GPU coarse quantizers, whose centroid search is cheap).
No choice ever needs more training vectors than ``N``.

**Storage** (``storage`` of :func:`choose_index`). In memory, a budget too small even for the
smallest PQ code is a :class:`ConfigError`. With ``storage="auto"`` (the stage's default) such a
collection gets ``IVF{nlist},SQ8`` with its inverted lists on disk instead (:func:`build_ondisk_index`):
in ``index.ivfdata`` beside ``index.faiss``, memory-mapped when loaded. Memory then holds the trained
quantizers (``4 D nlist`` bytes of centroids) and, while building, one shard of lists; the lists
themselves are pages of the kernel's page cache, read as queries probe them (counted in the
process's resident memory while mapped, but the kernel's to drop under pressure). SQ8, because what a
query costs on disk is the bytes of the lists it probes: a quarter of float32's, at nearly its
recall. ``storage="ondisk"`` asks for that layout whatever the size.

The on-disk index is FAISS's ``OnDiskInvertedLists``, merged from shards by
``faiss.contrib.ondisk.merge_ondisk`` (as in FAISS's ``demos/demo_ondisk_ivf.py``), rather than N
shard files searched together through ``IndexShards``: the merged index is one ordinary ``IndexIVF``,
so a query is quantized once (not once per shard), nprobe is tuned and searched by the same code as
in memory, and for the same factory, seed and vectors it holds the same lists in the same order as
the in-memory index, hence returns the same neighbours and scores. Shards exist only while building,
one range of rows each, so building holds one shard's lists, never all of them. The lists' file is
recorded by name only and found beside ``index.faiss`` at load (``IO_FLAG_ONDISK_SAME_DIR``), so the
folder can be built in a staging folder, swapped in, moved or copied whole.

Reproducibility: the training sample is drawn with ``seed`` and the k-means of
the IVF quantizer and of the PQ codebooks are seeded with it too, so IVF, SQ and PQ
builds on the CPU give the same bytes for the same input and seed. HNSW builds
insert vectors from several threads and are not bit-reproducible; pass
``deterministic=True`` to :func:`build_index` to build with one thread (slower).

This module imports FAISS at the top: the CLI never imports it at start-up,
only the stages that search do.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import math
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from dlpipe.core.arrays import first_failing_row, first_non_finite_row, row_blocks, rows_per_block, take_rows
from dlpipe.core.artifacts import atomic_write_bytes, atomic_write_json, library_versions, malformed_is_damage, read_json, sha256_file
from dlpipe.core.errors import ArtifactError, ConfigError, InputDataError
from dlpipe.core.layout import INDEX_DATA_FILE, INDEX_FILE, INDEX_SIDECAR
from dlpipe.retrieval.faiss_runtime import faiss_threads, gpu_wanted

METRICS = {"inner_product": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}

# auto rule thresholds (see the module docstring)
FLAT_MAX_FLOATS = 2**23
FLAT_MAX_COUNT = 10_000
NLIST_PER_SQRT_N = 2
# the scalar codecs auto tries before PQ, most exact first: (factory codec, bytes per component, what it keeps)
SCALAR_CODECS = (
    ("SQfp16", 2, "float16 keeps scores within about 1e-3 of exact in half the memory of float32"),
    ("SQ8", 1, "8-bit steps over each dimension's range keep near-exact scores in a quarter of float32's memory"),
)
FLOAT16_MAX = 65504.0
MIN_POINTS_PER_CENTROID = 39  # FAISS warns below this many training points per k-means centroid
PQ_MAX_CODE_BYTES = 64  # beyond this, PQ scans cost more than they gain; IVF-Flat or SQ8 would be the better tool
# default training sample per k-means centroid: FAISS asks for 39 to 256; training time on 2 cores grows with it
TRAIN_POINTS_PER_CENTROID = 40
# rows added (and scanned by exact search) per call, so a memory-mapped input is read in bounded pieces
CHUNK_BYTES = 64 << 20
# the codec auto gives lists on disk: a query reads the bytes of its probed lists, and SQ8 reads a quarter of float32's
ONDISK_CODEC = "SQ8"
STORAGES = ("auto", "memory", "ondisk")
# a doubling of nprobe/efSearch that raises recall by less than this fraction ends the tuning ladder
PLATEAU_GAIN = 0.01
# tuning bisects between the last doubling rung that misses the target and the first that reaches it, to 1/8
BISECT_FRACTION = 8
EF_SEARCH_LADDER = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
ID_BYTES = 8


@dataclass(frozen=True)
class IndexChoice:
    """What ``index: auto`` picked.

    Attributes:
        factory: FAISS ``index_factory`` string, e.g. ``"Flat"``, ``"IVF1024,Flat"``, ``"IVF4096,PQ32x8"``.
        reason: one sentence for the sidecar and the log: why this index for this size and budget.
        memory_bytes: estimated size of the built index in memory (:func:`estimate_memory`); for lists on
            disk, of what stays in memory (the trained quantizers).
        storage: ``"memory"``, or ``"ondisk"``: build with :func:`build_ondisk_index`.
    """

    factory: str
    reason: str
    memory_bytes: int
    storage: str = "memory"


@dataclass(frozen=True)
class LoadedIndex:
    """An index read back from disk, checked against its sidecar.

    Attributes:
        index: the FAISS index, with the sidecar's search parameters applied.
        info: the sidecar (``index.json``) as a dict.
        path: the ``index.faiss`` file it was read from.
    """

    index: faiss.Index
    info: dict[str, Any]
    path: Path


def nlist_for(count: int) -> int:
    """Inverted lists for ``count`` vectors: the power of two nearest ``2 * sqrt(count)``, capped at ``count / 39``."""
    target = 2 ** round(math.log2(NLIST_PER_SQRT_N * math.sqrt(max(count, 1))))
    return max(1, min(target, count // MIN_POINTS_PER_CENTROID))


def choose_index(count: int, dimension: int, memory_budget_bytes: int, storage: str = "memory") -> IndexChoice:
    """The ``index: auto`` rule: Flat when small, else IVF with float16, 8-bit or PQ codes, the most exact that fits.

    See the module docstring for the rule and its reasons.

    Args:
        count: number of vectors to index.
        dimension: their dimension.
        memory_budget_bytes: the most the index may take in memory.
        storage: ``"memory"`` (refuse a budget too small for every index), ``"auto"`` (then put the lists
            on disk) or ``"ondisk"`` (always ``IVF{nlist},SQ8`` with its lists on disk).

    Returns:
        The chosen factory string, a one-sentence reason, its estimated size and where its lists live.

    Raises:
        InputDataError: ``count`` or ``dimension`` is below 1.
        ConfigError: an unknown ``storage``, a budget that is not positive, too small for even the most compact
            index in memory (storage ``"memory"``), or too small for the centroids an index on disk keeps in memory.
    """
    if storage not in STORAGES:
        raise ConfigError(f"unknown index storage '{storage}'", f"use one of: {', '.join(STORAGES)}")
    if count < 1 or dimension < 1:
        raise InputDataError(
            f"cannot index {count} vectors of dimension {dimension}", "embed at least one item before building an index"
        )
    if memory_budget_bytes <= 0:
        raise ConfigError(
            f"memory budget must be positive, got {memory_budget_bytes} bytes", "set memory_budget_mb > 0"
        )
    budget_mb = memory_budget_bytes / 2**20
    size = f"{count:,} x {dimension}-d vectors"
    if storage == "ondisk":
        return _ondisk_choice(count, dimension, memory_budget_bytes, f"{size} keep their lists on disk as asked (storage: ondisk)")
    flat = estimate_memory("Flat", count, dimension)
    if flat <= memory_budget_bytes and (count * dimension <= FLAT_MAX_FLOATS or count < FLAT_MAX_COUNT):
        return IndexChoice(
            "Flat",
            f"{size} take {flat / 2**20:,.1f} MB: an exact brute-force scan is already fast, "
            "needs no training and loses no recall",
            flat,
        )
    nlist = nlist_for(count)
    for codec, bytes_per_component, how in SCALAR_CODECS:
        factory = f"IVF{nlist},{codec}"
        scalar_bytes = estimate_memory(factory, count, dimension)
        if scalar_bytes <= memory_budget_bytes:
            return IndexChoice(
                factory,
                f"{size} fit the {budget_mb:,.0f} MB budget as {bytes_per_component}-byte components "
                f"({scalar_bytes / 2**20:,.0f} MB): {how}, scanned through {nlist} inverted lists (about 2 sqrt(N))",
                scalar_bytes,
            )
    one_byte = scalar_bytes  # the last and smallest scalar codec's size
    if count >= max(nlist, 256):
        for code_bytes in range(min(PQ_MAX_CODE_BYTES, max(1, dimension // 2)), 0, -1):
            if dimension % code_bytes:
                continue
            factory = f"IVF{nlist},PQ{code_bytes}x8"
            pq_bytes = estimate_memory(factory, count, dimension)
            if pq_bytes <= memory_budget_bytes:
                return IndexChoice(
                    factory,
                    f"{size} need {one_byte / 2**20:,.0f} MB even as 1-byte components, over the {budget_mb:,.0f} MB budget: "
                    f"product quantization stores each in {code_bytes} bytes ({pq_bytes / 2**20:,.0f} MB in all), "
                    f"searched through {nlist} inverted lists; recall is bounded by the compression",
                    pq_bytes,
                )
    too_large = f"{one_byte / 2**20:,.1f} MB as 1-byte components, and no product-quantized index fits"
    if storage == "auto":
        why = f"{size} exceed the {budget_mb:,.0f} MB budget in memory ({too_large})"
        return _ondisk_choice(count, dimension, memory_budget_bytes, why)
    raise ConfigError(
        f"a memory budget of {budget_mb:,.1f} MB is too small to index {size} ({too_large})",
        "raise memory_budget_mb, keep the lists on disk (search.storage: auto or ondisk), or index fewer vectors",
    )


def _ondisk_choice(count: int, dimension: int, memory_budget_bytes: int, why: str) -> IndexChoice:
    """``IVF{nlist},SQ8`` with its lists on disk, once its centroids (what stays in memory) fit the budget."""
    nlist = nlist_for(count)
    factory = f"IVF{nlist},{ONDISK_CODEC}"
    resident = estimate_memory(factory, 0, dimension)
    if resident >= memory_budget_bytes:
        raise ConfigError(
            f"a memory budget of {memory_budget_bytes / 2**20:,.1f} MB cannot hold the {nlist} centroids "
            f"({resident / 2**20:,.1f} MB) that index '{factory}' keeps in memory with its lists on disk",
            "raise memory_budget_mb",
        )
    on_disk = estimate_memory(factory, count, dimension) - resident
    return IndexChoice(
        factory,
        f"{why}: the inverted lists ({on_disk / 2**20:,.0f} MB of 1-byte components and ids) live on disk in {INDEX_DATA_FILE}, "
        f"memory-mapped, built in shards that each fit the budget and searched through {nlist} inverted lists",
        resident,
        "ondisk",
    )


_IVF = re.compile(r"^IVF(?P<nlist>\d+)(?:_HNSW(?P<qm>\d+))?$")
_HNSW = re.compile(r"^HNSW(?P<m>\d+)$")
_PQ = re.compile(r"^PQ(?P<m>\d+)(?:x(?P<bits>\d+))?$")
_SQ_BYTES_PER_DIM = {"SQ8": 1.0, "SQ4": 0.5, "SQfp16": 2.0, "Flat": 4.0}


def estimate_memory(factory: str, count: int, dimension: int, *, metric: str = "inner_product") -> int:
    """Estimate the in-memory size in bytes of a ``factory`` index holding ``count`` vectors of ``dimension``.

    For ``Flat``, ``HNSW{M}[,Flat]``, ``IVF{n}[_HNSW{M}],{Flat|SQ8|SQ4|SQfp16|PQ{m}[x{bits}]}`` and a
    trailing ``,RFlat`` (refinement keeps the raw vectors too) it counts vectors, codes, ids, graph links and
    quantizer centroids; allocator slack is not included. Any other factory string is sized from FAISS's
    own code size per vector (plus 8-byte ids for inverted files), without its quantizers or graph.

    Raises:
        ConfigError: an invalid factory string (FAISS's message included), or one FAISS cannot size.
    """
    parts = factory.split(",")
    total = 0
    if parts[-1] in ("RFlat", "Refine(Flat)"):
        total += 4 * dimension * count
        parts = parts[:-1]
    hnsw = _HNSW.match(parts[0])
    ivf = _IVF.match(parts[0])
    if parts == ["Flat"]:
        return total + 4 * dimension * count
    if hnsw and parts[1:] in ([], ["Flat"]):
        # level 0 holds 2M links per vector, upper levels about one more on average; plus offsets and levels
        return total + count * (4 * dimension + 4 * (2 * int(hnsw["m"]) + 1) + 12)
    if ivf and len(parts) == 2:
        nlist = int(ivf["nlist"])
        total += 4 * dimension * nlist + count * ID_BYTES
        if ivf["qm"]:
            total += nlist * (4 * (2 * int(ivf["qm"]) + 1) + 12)
        codec = parts[1]
        if codec in _SQ_BYTES_PER_DIM:
            return total + math.ceil(_SQ_BYTES_PER_DIM[codec] * dimension) * count
        pq = _PQ.match(codec)
        if pq and dimension % int(pq["m"]) == 0:
            m, bits = int(pq["m"]), int(pq["bits"] or 8)
            total += math.ceil(m * bits / 8) * count + 4 * dimension * 2**bits
            if metric == "l2":
                total += 4 * nlist * m * 2**bits  # IVF-PQ precomputes distance tables for L2 residuals
            return total
    index = _make_index(factory, dimension, metric)
    try:
        code_bytes = index.sa_code_size()
    except RuntimeError:
        raise ConfigError(
            f"cannot estimate the memory of index '{factory}'",
            "use Flat, HNSW32, IVF<n>,Flat, IVF<n>,SQ8 or IVF<n>,PQ<m>x8 (optionally ,RFlat), or index: auto",
        ) from None
    return count * (code_bytes + (ID_BYTES if faiss.try_extract_index_ivf(index) is not None else 0))


def _metric(metric: str) -> int:
    if metric not in METRICS:
        raise ConfigError(f"unknown metric '{metric}'", f"use one of: {', '.join(METRICS)}")
    return METRICS[metric]


def _metric_name(index: faiss.Index) -> str:
    return next(name for name, value in METRICS.items() if value == index.metric_type)


def _layers(index: faiss.Index) -> Iterator[faiss.Index]:
    """The index and the indices it wraps (pre-transform, id map, refinement), outermost first."""
    while index is not None:
        index = faiss.downcast_index(index)
        yield index
        inner = getattr(index, "base_index", None) or getattr(index, "index", None)
        index = inner


def _hnsw(index: faiss.Index) -> Any:
    return next((layer.hnsw for layer in _layers(index) if hasattr(layer, "hnsw")), None)


def _refine(index: faiss.Index) -> Any:
    return next((layer for layer in _layers(index) if hasattr(layer, "k_factor")), None)


def _stores_float16(index: faiss.Index) -> bool:
    """Whether the index keeps its vectors as float16 (``SQfp16``), whose range ends at 65,504."""
    return any(
        hasattr(layer, "sq") and layer.sq.qtype == faiss.ScalarQuantizer.QT_fp16 for layer in _layers(index)
    )


def min_train_points(index: faiss.Index) -> int:
    """The fewest training vectors FAISS accepts: one per k-means centroid of the IVF and PQ quantizers."""
    needed = 1 if not index.is_trained else 0
    for layer in _layers(index):
        if hasattr(layer, "nlist"):
            needed = max(needed, layer.nlist)
        if hasattr(layer, "pq"):
            needed = max(needed, layer.pq.ksub)
    return needed


def _chunk_rows(dimension: int) -> int:
    return rows_per_block(dimension, 4, CHUNK_BYTES)


def _as_float32(block: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(block, dtype=np.float32)


def _check_shape(vectors: np.ndarray, what: str) -> None:
    """Raise InputDataError unless ``vectors`` is a non-empty 2-D float array."""
    if vectors.ndim != 2:
        raise InputDataError(f"{what} must be a 2-D array (count x dimension), got shape {vectors.shape}")
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise InputDataError(f"{what} are empty (shape {vectors.shape})", "embed at least one item first")
    if vectors.dtype.kind != "f":
        raise InputDataError(f"{what} must be floating point, got {vectors.dtype}")


def _check_values(vectors: np.ndarray, what: str, *, float16_index: str | None = None) -> None:
    """Raise InputDataError at the first row with NaN/inf (read in blocks, so a memmap is fine).

    Args:
        float16_index: the factory of an index that stores float16; rows beyond its range are refused too.
    """
    row = first_non_finite_row(vectors)
    if row is not None:
        raise InputDataError(
            f"{what} contain NaN or infinite values (first at row {row})",
            "re-run the stage that produced them; a NaN usually comes from a diverged model or a blank input",
        )
    if float16_index is not None:
        row = first_failing_row(vectors, lambda block: (np.abs(block) <= FLOAT16_MAX).all(axis=1))
        if row is not None:
            raise InputDataError(
                f"{what} have a component beyond float16's range (+-{FLOAT16_MAX:,.0f}) at row {row}, "
                f"which index '{float16_index}' stores as float16",
                "normalise the embeddings, or set search.index to an IVF<n>,Flat or IVF<n>,SQ8 index",
            )


def _make_index(factory: str, dimension: int, metric: str) -> faiss.Index:
    try:
        return faiss.index_factory(dimension, factory, _metric(metric))
    except RuntimeError as exc:
        raise ConfigError(
            f"invalid FAISS index '{factory}' ({str(exc).strip().splitlines()[-1]})",
            "use e.g. Flat, HNSW32, IVF1024,Flat or IVF4096,PQ32x8, or index: auto",
        ) from None


def _prepare_training(index: faiss.Index, seed: int) -> None:
    """Seed the k-means of the IVF quantizer and of the PQ codebooks; skip polysemous training."""
    for layer in _layers(index):
        if hasattr(layer, "cp"):
            layer.cp.seed = seed
        if hasattr(layer, "pq"):
            layer.pq.cp.seed = seed
        if hasattr(layer, "do_polysemous_training"):
            # an annealing that takes minutes and only serves Hamming-threshold search, which dlpipe never uses
            layer.do_polysemous_training = False


def _gpu_capable(index: faiss.Index) -> bool:
    """Whether FAISS has a GPU version of this type (flat and inverted-file indices, unwrapped)."""
    return isinstance(index, faiss.IndexFlat | faiss.IndexIVFFlat | faiss.IndexIVFPQ | faiss.IndexIVFScalarQuantizer)


def build_index(
    vectors: np.ndarray,
    factory: str,
    *,
    metric: str = "inner_product",
    seed: int = 0,
    max_train: int | None = None,
    use_gpu: bool | None = None,
    deterministic: bool = False,
) -> faiss.Index:
    """Build a FAISS index of ``vectors``; their ids are their row numbers.

    Args:
        vectors: float (N, D) array, usually float32; a memory-mapped ``.npy`` is read through its file
            in 64 MiB chunks (to check for NaN/inf, to add), so memory holds the index, the training
            sample and one chunk, and none of the mapping's pages stay resident.
        factory: FAISS ``index_factory`` string (see :func:`choose_index`).
        metric: ``"inner_product"`` (cosine similarity when the vectors are L2-normalised) or ``"l2"``.
        seed: seeds the training sample and the k-means of the IVF and PQ quantizers.
        max_train: most training vectors, drawn at random with ``seed``; default 40 per k-means centroid
            (``40 * nlist``, and at least ``40 * 256`` for PQ), all of them when ``N`` is smaller.
        use_gpu: None uses a GPU when FAISS sees one and the type has a GPU version (Flat, IVF);
            True requires one. The returned index is always a CPU index (it loads anywhere).
        deterministic: build with a single thread, so that HNSW graphs are identical from run to run.

    Returns:
        The trained CPU index holding all N vectors.

    Raises:
        InputDataError: empty, non-2-D or non-finite vectors (naming the first bad row), a component
            beyond float16's range for an ``SQfp16`` index, or fewer vectors than the factory needs to train.
        ConfigError: an invalid factory string or metric, or ``max_train`` below the training minimum.
        DependencyError: ``use_gpu=True`` but FAISS sees no GPU.
    """
    _check_shape(vectors, "embeddings")
    index = _make_index(factory, vectors.shape[1], metric)
    _check_values(vectors, "embeddings", float16_index=factory if _stores_float16(index) else None)
    gpu = gpu_wanted(use_gpu) and _gpu_capable(index)
    with faiss_threads(1 if deterministic else None):
        if not index.is_trained:
            _train(index, vectors, factory, seed, max_train, gpu)
        return _add(index, vectors, gpu)


@dataclass(frozen=True)
class OnDiskBuild:
    """An index built by :func:`build_ondisk_index`.

    Attributes:
        index: the trained IVF index holding every row, its lists memory-mapped from ``lists_path``.
        lists_path: the ``index.ivfdata`` file of its inverted lists.
        shards: how many row ranges were built one at a time and merged.
        shard_rows: rows per shard (the last may hold fewer).
    """

    index: faiss.Index
    lists_path: Path
    shards: int
    shard_rows: int


def supports_ondisk(factory: str, dimension: int) -> bool:
    """Whether ``factory`` can keep its lists on disk: an inverted-file index whose vectors all live in its lists
    (no refinement, which keeps raw vectors or their residual codes in memory)."""
    index = _make_index(factory, dimension, "l2")
    return faiss.try_extract_index_ivf(index) is not None and _refine(index) is None


def build_ondisk_index(
    vectors: np.ndarray,
    factory: str,
    folder: Path,
    *,
    memory_budget_bytes: int | None = None,
    shard_rows: int | None = None,
    metric: str = "inner_product",
    seed: int = 0,
    max_train: int | None = None,
    use_gpu: bool | None = None,
) -> OnDiskBuild:
    """Build an IVF index of ``vectors`` with its inverted lists in ``folder/index.ivfdata``; ids are row numbers.

    The quantizers are trained once, on the same sample and seed as :func:`build_index`. Each range of
    ``shard_rows`` rows is then added to an empty copy of the trained index (a shard: the only lists in
    memory at a time) and written to ``folder``; FAISS merges the shards' lists into ``index.ivfdata``
    (``merge_ondisk``) and the shard files are removed. Within each list the rows stay in row order,
    so the index answers exactly as :func:`build_index`'s of the same factory, seed and vectors.
    Pass the result's ``index`` to :func:`save_index` with the same ``folder``.

    Args:
        vectors: float (N, D) array; a memory-mapped ``.npy`` is read in 64 MiB chunks through its file.
        factory: an IVF factory string that :func:`supports_ondisk`.
        folder: where ``index.ivfdata`` is written (a staging folder: shard files pass through it).
        memory_budget_bytes: size shards so that the trained index plus one shard's codes and ids fit it.
        shard_rows: rows per shard, instead of a budget.
        metric, seed, max_train, use_gpu: as for :func:`build_index`.

    Raises:
        InputDataError: as for :func:`build_index`.
        ConfigError: an invalid factory, one that cannot keep its lists on disk, or a budget too small for
            the trained index itself.
        DependencyError: ``use_gpu=True`` but FAISS sees no GPU.
    """
    from faiss.contrib.ondisk import merge_ondisk

    if (memory_budget_bytes is None) == (shard_rows is None):
        raise ValueError("build_ondisk_index needs exactly one of memory_budget_bytes and shard_rows")
    _check_shape(vectors, "embeddings")
    count, dimension = vectors.shape
    if not supports_ondisk(factory, dimension):
        raise ConfigError(
            f"index '{factory}' cannot keep its lists on disk: only an inverted-file index without refinement can",
            "use e.g. IVF1024,SQ8 or IVF1024,PQ32x8, or search.storage: memory",
        )
    index = _make_index(factory, dimension, metric)
    _check_values(vectors, "embeddings", float16_index=factory if _stores_float16(index) else None)
    gpu = gpu_wanted(use_gpu) and _gpu_capable(index)
    folder = Path(folder)
    lists_path = folder / INDEX_DATA_FILE
    if not index.is_trained:
        _train(index, vectors, factory, seed, max_train, gpu)
    rows = shard_rows or _shard_rows(index, factory, memory_budget_bytes or 0)
    shard_paths = []
    for number, start in enumerate(range(0, count, rows)):
        shard = _add(faiss.clone_index(index), vectors, gpu, start, min(start + rows, count))
        shard_paths.append(folder / f".shard-{number:05d}.faiss")
        faiss.write_index(shard, str(shard_paths[-1]))
        del shard  # one shard's lists in memory at a time
    with _c_stdout_silenced():
        merge_ondisk(index, [str(path) for path in shard_paths], str(lists_path))
    for path in shard_paths:
        path.unlink()
    return OnDiskBuild(index, lists_path, len(shard_paths), rows)


def _shard_rows(index: faiss.Index, factory: str, memory_budget_bytes: int) -> int:
    """Rows per shard such that the trained index and one shard's codes and ids fit the budget."""
    resident = int(faiss.serialize_index(index).nbytes)
    rows = (memory_budget_bytes - resident) // (faiss.extract_index_ivf(index).code_size + ID_BYTES)
    if rows < 1:
        raise ConfigError(
            f"a memory budget of {memory_budget_bytes / 2**20:,.1f} MB cannot hold the trained index '{factory}' "
            f"({resident / 2**20:,.1f} MB of centroids and codec tables) and any of its lists",
            "raise memory_budget_mb, or use fewer inverted lists",
        )
    return int(rows)


def _ondisk_lists(index: faiss.Index) -> Any:
    """The index's ``OnDiskInvertedLists``, or None when its lists (if any) are in memory."""
    ivf = faiss.try_extract_index_ivf(index)
    lists = faiss.downcast_InvertedLists(ivf.invlists) if ivf is not None else None
    return lists if isinstance(lists, faiss.OnDiskInvertedLists) else None


@contextlib.contextmanager
def _c_stdout_silenced() -> Iterator[None]:
    """Discard what C code prints to stdout inside the block.

    FAISS's on-disk lists printf() a line when they resize or are found beside their index; on stdout it
    would corrupt the CLI's ``--json`` output, so file descriptor 1 points to /dev/null meanwhile.
    """
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    try:
        yield
    finally:
        libc.fflush(None)  # C's stdout buffer holds what was printed until flushed: flush it to /dev/null
        os.dup2(saved, 1)
        os.close(saved)


def _train(index: faiss.Index, vectors: np.ndarray, factory: str, seed: int, max_train: int | None, gpu: bool) -> None:
    count = vectors.shape[0]
    needed = min_train_points(index)
    if count < needed:
        raise InputDataError(
            f"index '{factory}' needs at least {needed} vectors to train, but there are only {count}",
            f"use a smaller index (e.g. IVF{max(1, count // MIN_POINTS_PER_CENTROID)},Flat) or Flat, or index: auto",
        )
    if max_train is not None and max_train < needed:
        raise ConfigError(f"max_train={max_train} is below the {needed} training vectors '{factory}' needs")
    size = min(count, max_train or TRAIN_POINTS_PER_CENTROID * needed)
    rows = np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))
    sample = _as_float32(take_rows(vectors, rows))  # sorted rows: sequential reads from a memmap
    _prepare_training(index, seed)
    ivf = faiss.try_extract_index_ivf(index)
    resources = faiss.StandardGpuResources() if gpu and ivf is not None else None
    if resources is not None:
        # the IVF k-means (the expensive part of training) runs on the GPU; the seeded CPU parameters still apply
        ivf.clustering_index = faiss.index_cpu_to_gpu(resources, 0, faiss.IndexFlat(index.d, index.metric_type))
    try:
        index.train(sample)
    except RuntimeError as exc:
        raise InputDataError(f"training index '{factory}' on {size} vectors failed: {str(exc).strip()}") from None
    finally:
        if resources is not None:
            ivf.clustering_index = None


def _add(index: faiss.Index, vectors: np.ndarray, gpu: bool, start: int = 0, stop: int | None = None) -> faiss.Index:
    """Add rows ``start:stop`` in chunks (ids = row numbers), on a GPU copy when ``gpu``; return the CPU index."""
    resources = faiss.StandardGpuResources() if gpu else None
    target = index
    if resources is not None:
        try:
            target = faiss.index_cpu_to_gpu(resources, 0, index)
        except RuntimeError:  # e.g. a PQ code size the GPU kernels lack: add on the CPU instead
            resources = None
    for first, block in row_blocks(vectors, _chunk_rows(vectors.shape[1]), start, stop):
        if target.ntotal == first:  # sequential ids are the row numbers (Flat and HNSW take no others)
            target.add(_as_float32(block))
        else:  # a shard of a later range of rows
            target.add_with_ids(_as_float32(block), np.arange(first, first + len(block), dtype=np.int64))
    return faiss.index_gpu_to_cpu(target) if resources is not None else target


def set_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    """Set search-time parameters, e.g. ``{"nprobe": 16}`` or ``{"efSearch": 64}``, through any wrappers.

    Raises:
        ConfigError: a value is not a positive integer, or the index has no such parameter.
    """
    space = faiss.ParameterSpace()
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ConfigError(f"search parameter {name} must be a positive integer, got {value!r}")
        try:
            space.set_index_parameter(index, name, int(value))
        except RuntimeError:
            raise ConfigError(
                f"index {type(faiss.downcast_index(index)).__name__} has no search parameter '{name}'",
                "IVF indices take nprobe, HNSW indices efSearch, refined indices k_factor_rf; Flat takes none",
            ) from None


def search_params(index: faiss.Index) -> dict[str, int]:
    """The index's current search-time parameters (what :func:`save_index` records)."""
    params: dict[str, int] = {}
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        params["nprobe"] = int(ivf.nprobe)
    hnsw = _hnsw(index)
    if hnsw is not None:
        params["efSearch"] = int(hnsw.efSearch)
    refine = _refine(index)
    if refine is not None:
        params["k_factor_rf"] = int(refine.k_factor)
    return params


def _ladder(index: faiss.Index) -> tuple[str, list[int]] | None:
    """The parameter that trades speed for recall and the doubling values to try, or None for exact types."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        values = [2**i for i in range(int(math.log2(ivf.nlist)) + 1)]
        return "nprobe", values + ([ivf.nlist] if values[-1] != ivf.nlist else [])
    if _hnsw(index) is not None:
        return "efSearch", list(EF_SEARCH_LADDER)
    return None


def tune_search_params(
    index: faiss.Index,
    vectors: np.ndarray | None,
    queries: np.ndarray,
    true_ids: np.ndarray | None,
    k: int,
    target_recall: float,
    *,
    record: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, int], float]:
    """Find the smallest ``nprobe`` (IVF) or ``efSearch`` (HNSW) whose recall@k reaches ``target_recall``.

    A doubling ladder (nprobe 1, 2, 4 ... nlist; efSearch 16 ... 4096) finds the first rung that reaches
    the target; bisection between it and the rung below then narrows the value to within 1/8 (exactly,
    for values up to 16), since a doubling can overshoot the cost by up to 2x.

    Recall@k is measured against ``true_ids`` (exact neighbours of ``queries``); when that is None it is
    computed from ``vectors`` with :func:`exact_search`. Queries should not be rows of the index, or each
    finds itself and recall looks better than it is. The chosen parameters are left applied to ``index``.

    Args:
        record: when given, one ``{param: value, "recall": r, "seconds": s}`` is appended per value tried,
            in order (``s`` = time of the batched search), e.g. to report the speed/recall trade-off.

    Returns:
        ``(params, recall)`` at the value found. When no rung reaches the target, the ladder stops at its
        top or at a plateau, where a doubling raises recall by less than 1% of itself (e.g. PQ, whose
        compression bounds recall; on uniform data recall stays low but keeps doubling, so it goes on),
        and the best rung is returned, the smaller one on a plateau; the caller decides whether to warn.
        ``({}, recall)`` for types without such a parameter (Flat, plain PQ).
    """
    if true_ids is None:
        if vectors is None:
            raise ValueError("tune_search_params needs true_ids or the vectors to compute them from")
        true_ids = exact_search(vectors, queries, k, _metric_name(index))[1]
    ladder = _ladder(index)
    if ladder is None:
        return {}, recall_at_k(search(index, queries, k)[1], true_ids, k)
    name, values = ladder

    def recall_with(value: int) -> float:
        set_search_params(index, {name: value})
        start = time.perf_counter()
        found = search(index, queries, k)[1]
        seconds = time.perf_counter() - start
        recall = recall_at_k(found, true_ids, k)
        if record is not None:
            record.append({name: value, "recall": recall, "seconds": seconds})
        return recall

    best = ({name: values[0]}, -1.0)
    for value in values:
        recall = recall_with(value)
        if recall >= target_recall:
            missed = best[0][name] if best[1] >= 0 else None
            best = ({name: value}, recall)
            while missed is not None and value - missed > max(1, missed // BISECT_FRACTION):
                middle = (missed + value) // 2
                recall = recall_with(middle)
                if recall >= target_recall:
                    value, best = middle, ({name: middle}, recall)
                else:
                    missed = middle
            break
        if recall < best[1] * (1 + PLATEAU_GAIN):
            break  # a plateau: keep the smaller rung
        best = ({name: value}, recall)
    set_search_params(index, best[0])
    return best


def exact_search(
    vectors: np.ndarray, queries: np.ndarray, k: int, metric: str = "inner_product"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours by brute force, reading ``vectors`` in chunks (a memmap is fine).

    Returns:
        ``(scores, ids)``, each (len(queries), k): inner products (highest first) or squared L2
        distances (lowest first), as FAISS reports them.
    """
    queries = _as_float32(queries)
    count, dimension = vectors.shape
    if not 1 <= k <= count:
        raise InputDataError(f"k={k} but there are {count} vectors", f"use 1 <= k <= {count}")
    heap = faiss.ResultHeap(len(queries), k, keep_max=metric == "inner_product")
    for start, block in row_blocks(vectors, _chunk_rows(dimension)):
        chunk = _as_float32(block)
        scores, ids = faiss.knn(queries, chunk, min(k, len(chunk)), _metric(metric))
        heap.add_result(scores, ids + start)
    heap.finalize()
    return heap.D, heap.I


def recall_at_k(found_ids: np.ndarray, true_ids: np.ndarray, k: int) -> float:
    """Mean over queries of ``|found[:k] & true[:k]| / k`` (missing results, id -1, never count)."""
    if found_ids.shape[0] != true_ids.shape[0] or min(found_ids.shape[1], true_ids.shape[1]) < k:
        raise ValueError(f"recall@{k} needs two id arrays with the same rows and >= {k} columns")
    found, true = found_ids[:, :k], true_ids[:, :k]
    hits = ((found[:, :, None] == true[:, None, :]) & (found[:, :, None] >= 0)).any(axis=2)
    return float(hits.sum(axis=1).mean() / k)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Search ``index`` for the ``k`` nearest neighbours of each query, after checking the queries and k.

    Returns:
        ``(scores, ids)``, each (len(queries), k); ids are row numbers of the indexed vectors and -1 where
        an approximate index found fewer than k candidates (raise nprobe/efSearch).

    Raises:
        InputDataError: queries not 2-D floats with ``index.d`` columns, NaN/inf in a query, or k outside
            1..``index.ntotal``.
    """
    if queries.ndim != 2 or queries.dtype.kind != "f":
        raise InputDataError(
            f"queries must be a 2-D float array (count x dimension), got {queries.dtype} {queries.shape}"
        )
    if queries.shape[1] != index.d:
        raise InputDataError(
            f"queries have dimension {queries.shape[1]} but the index has dimension {index.d}",
            "embed the queries with the same backbone and layer as the indexed collection",
        )
    bad = first_non_finite_row(queries)
    if bad is not None:
        raise InputDataError(f"queries contain NaN or infinite values (first at row {bad})")
    if not 1 <= k <= index.ntotal:
        raise InputDataError(f"k={k} but the index holds {index.ntotal} vectors", f"use 1 <= k <= {index.ntotal}")
    return index.search(_as_float32(queries), k)


def save_index(index: faiss.Index, folder: Path, info: dict[str, Any]) -> Path:
    """Write ``folder/index.faiss`` and its sidecar ``folder/index.json``, each atomically.

    The sidecar holds the caller's ``info`` (e.g. stage, embeddings_sha256, how the index was chosen)
    plus what is measured from the index, which wins over same-named keys: factory (``info["factory"]``
    when given, else FAISS's description), metric, dimension, count, index_sha256, index_bytes,
    search_params, storage (``"memory"``, or ``"ondisk"`` with ``lists_sha256`` and ``lists_bytes`` of
    ``index.ivfdata``) and library versions. The index file is written first: an interrupted save leaves
    either the old pair or a new index whose hash the old sidecar refuses at load.

    An index from :func:`build_ondisk_index` must be saved to the folder it was built in, where its
    lists already are; ``index.faiss`` then names them ``index.ivfdata``, without a folder.

    Returns:
        The path of ``index.faiss``.

    Raises:
        ValueError: the index keeps its lists on disk outside ``folder``.
    """
    from faiss.contrib.factory_tools import reverse_index_factory

    folder = Path(folder)
    lists = _ondisk_lists(index)
    storage: dict[str, Any] = {"storage": "memory"}
    if lists is None:
        data = faiss.serialize_index(index)  # a uint8 array, written and hashed as it is (no second copy)
    else:
        lists_path = folder / INDEX_DATA_FILE
        if Path(lists.filename).resolve() != lists_path.resolve():
            raise ValueError(f"the index keeps its lists in {lists.filename}, not in {lists_path}: save it where it was built")
        built_at, lists.filename = lists.filename, INDEX_DATA_FILE
        try:
            data = faiss.serialize_index(index)
        finally:
            lists.filename = built_at
        storage = {"storage": "ondisk", "lists_sha256": sha256_file(lists_path), "lists_bytes": lists_path.stat().st_size}
    record = {
        **info,
        "factory": info.get("factory") or reverse_index_factory(index),
        "metric": _metric_name(index),
        "dimension": int(index.d),
        "count": int(index.ntotal),
        "index_sha256": hashlib.sha256(data).hexdigest(),
        "index_bytes": int(data.nbytes),
        "search_params": search_params(index),
        **storage,
        "versions": library_versions("faiss-cpu", "numpy"),
    }
    path = folder / INDEX_FILE
    atomic_write_bytes(path, memoryview(data))
    atomic_write_json(folder / INDEX_SIDECAR, record)
    return path


def load_index(folder: Path, expected: dict[str, Any] | None = None) -> LoadedIndex:
    """Read ``folder/index.faiss``, check it against ``index.json`` and ``expected``, apply its search params.

    An index stored on disk (sidecar ``storage: ondisk``) is read with its lists memory-mapped, read-only,
    from ``index.ivfdata`` beside it. That file is checked by size, not hashed: hashing would read the
    whole collection at every load, which is what keeping it on disk avoids (its sha256 is in the sidecar).

    Args:
        folder: the folder :func:`save_index` wrote.
        expected: sidecar keys the caller requires, e.g. ``{"dimension": 128, "embeddings_sha256": ...}``.

    Raises:
        ArtifactError: a file missing (``index.ivfdata`` too, for an index on disk), the sidecar corrupt or
            incomplete, the index file's sha256 or the lists' size not the sidecar's (truncated or replaced),
            FAISS unable to read it, its count or dimension not the sidecar's, or a key of ``expected`` that
            differs from the sidecar.
    """
    with malformed_is_damage(folder, "the index", "rebuild the index (dlpipe search build, or dvc repro)"):
        folder = Path(folder)
        path, sidecar_path = folder / INDEX_FILE, folder / INDEX_SIDECAR
        rebuild = "rebuild the index (dlpipe search, or dvc repro)"
        info = read_json(sidecar_path, "index sidecar")
        required = ("count", "dimension", "index_sha256", "index_bytes")
        missing = [key for key in required if key not in info] if isinstance(info, dict) else list(required)
        if missing:
            raise ArtifactError(f"index sidecar {sidecar_path} lacks {', '.join(missing)}", rebuild)
        if not path.is_file():
            raise ArtifactError(f"index file not found: {path} (its sidecar {sidecar_path} exists)", rebuild)
        size = path.stat().st_size
        if size < info["index_bytes"]:
            raise ArtifactError(
                f"index file {path} is truncated: {size} bytes, its sidecar says {info['index_bytes']} (sha256 mismatch)",
                rebuild,
            )
        digest = sha256_file(path)
        if digest != info["index_sha256"]:
            raise ArtifactError(
                f"index file {path} does not match its sidecar (sha256 {digest[:12]}..., sidecar says "
                f"{info['index_sha256'][:12]}...): it was replaced or modified after the sidecar was written",
                rebuild,
            )
        flags = _lists_on_disk(folder, info, sidecar_path, rebuild)
        try:
            with _c_stdout_silenced() if flags else contextlib.nullcontext():
                index = faiss.read_index(str(path), flags)
        except RuntimeError as exc:
            raise ArtifactError(f"FAISS cannot read {path}: {str(exc).strip().splitlines()[-1]}", rebuild) from None
        for key, actual in (("count", index.ntotal), ("dimension", index.d)):
            if info[key] != actual:
                raise ArtifactError(
                    f"index file {path} holds {key} {actual} but its sidecar {sidecar_path} says {info[key]}", rebuild
                )
        for key, value in (expected or {}).items():
            if info.get(key) != value:
                raise ArtifactError(
                    f"index sidecar {sidecar_path}: {key} is {info.get(key)!r}, expected {value!r}",
                    "the index was built from other embeddings or settings; " + rebuild,
                )
        try:
            set_search_params(index, info.get("search_params", {}))
        except ConfigError as exc:
            raise ArtifactError(f"index sidecar {sidecar_path}: {exc.message}", rebuild) from None
        return LoadedIndex(index, info, path)


def _lists_on_disk(folder: Path, info: dict[str, Any], sidecar_path: Path, rebuild: str) -> int:
    """FAISS's read flags for the sidecar's storage, after checking an on-disk index's lists file is whole."""
    storage = info.get("storage", "memory")
    if storage == "memory":
        return 0
    if storage != "ondisk":
        raise ArtifactError(f"index sidecar {sidecar_path}: storage is {storage!r}, expected 'memory' or 'ondisk'", rebuild)
    if "lists_bytes" not in info:
        raise ArtifactError(f"index sidecar {sidecar_path} lacks lists_bytes (the size of index.ivfdata)", rebuild)
    lists_path = folder / INDEX_DATA_FILE
    if not lists_path.is_file():
        raise ArtifactError(f"inverted lists not found: {lists_path} (the index {folder / INDEX_FILE} keeps them there)", rebuild)
    size = lists_path.stat().st_size
    if size != info["lists_bytes"]:
        raise ArtifactError(
            f"inverted lists {lists_path} hold {size} bytes, the sidecar {sidecar_path} says {info['lists_bytes']} "
            "(truncated or replaced)",
            rebuild,
        )
    # the lists are found beside index.faiss wherever the folder is now, and mapped read-only (DVC's cache may be)
    return faiss.IO_FLAG_ONDISK_SAME_DIR | faiss.IO_FLAG_READ_ONLY
