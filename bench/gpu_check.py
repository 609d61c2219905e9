"""GPU check: the same FAISS index and k-means on the GPU build and on the CPU, results compared, both timed.

Needs a GPU and the GPU build of FAISS (``pip uninstall faiss-cpu && pip install '.[gpu]'``);
dlpipe itself never does. On the benchmark's data (bench_search's seeded Gaussian mixture,
``--count`` x ``--dimension``, L2-normalised, plus ``--queries`` held-out queries) it runs
each task twice, once with ``use_gpu=False`` and once with ``use_gpu=True``, through the
same dlpipe functions the stages call:

1. **index**: ``dlpipe.retrieval.index.build_index`` of the factory ``choose_index`` picks for the data
   (or ``--factory``). The CPU-built index is tuned to recall@10 >= ``--target`` and its
   ``nprobe`` is used on both sides. The GPU-built index (trained and filled on the GPU,
   returned in CPU form as the stage saves it) is searched on a GPU copy.
2. **exact search**: FAISS ``Flat`` on the CPU (the ground truth) and on the GPU.
3. **k-means**: ``dlpipe.retrieval.clustering.kmeans`` with the same k, iterations and seed.

The GPU results agree when: recall@10 of the GPU index against CPU exact search is at most
``RECALL_TOLERANCE`` below the CPU index's; GPU exact search finds the CPU's neighbours
(recall@10 >= ``EXACT_RECALL``, ties aside); k-means inertia is within 1% of the CPU's.
GPU k-means and IVF training are not bit-reproducible, hence tolerances rather than equality.

    python bench/gpu_check.py [--count 1000000] [--dimension 128] [--clusters 1024]

Prints both sides' timings and the verdict, writes ``--out``/gpu_check.json, and exits
0 when everything agrees, 1 when something does not, 2 when FAISS sees no GPU (nothing run).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from dlpipe.retrieval import index as ix
from dlpipe.retrieval.clustering import kmeans

from bench_search import make_data, timed  # bench/ is on sys.path when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
K = 10
RECALL_TOLERANCE = 0.01  # GPU k-means trains slightly different lists: allow this much less recall
EXACT_RECALL = 0.999  # exact search on either device: only ties may order differently
INERTIA_TOLERANCE = 0.01
NO_GPU_EXIT = 2


def device_copy(index: faiss.Index, use_gpu: bool) -> faiss.Index:
    """The index as it is searched on the device: a GPU copy (parameters carried over), or the index itself."""
    if not use_gpu:
        return index
    gpu_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    params = ix.search_params(index)
    if params:
        space = faiss.GpuParameterSpace()
        for name, value in params.items():
            space.set_index_parameter(gpu_index, name, value)
    return gpu_index


def run_side(
    vectors: np.ndarray,
    queries: np.ndarray,
    true_ids: np.ndarray,
    factory: str,
    params: dict[str, int],
    clusters: int,
    seed: int,
    use_gpu: bool,
) -> dict[str, Any]:
    """Build, search and cluster on one device; return timings, recall against ``true_ids`` and inertia.

    Args:
        true_ids: CPU exact neighbours of ``queries`` (the ground truth for both devices).
        params: search parameters for the built index (tuned on the CPU index).
        use_gpu: run every step on the GPU (needs the GPU build and a GPU) or on the CPU.
    """
    build_s, built = timed(lambda: ix.build_index(vectors, factory, seed=seed, use_gpu=use_gpu))
    ix.set_search_params(built, params)
    searcher = device_copy(built, use_gpu)
    search_s, (_, found) = timed(lambda: searcher.search(queries, K))
    exact = device_copy(ix.build_index(vectors, "Flat", use_gpu=use_gpu), use_gpu)
    exact_s, (_, exact_found) = timed(lambda: exact.search(queries, K))
    kmeans_s, clustered = timed(lambda: kmeans(vectors, clusters, seed=seed, use_gpu=use_gpu))
    return {
        "device": "gpu" if use_gpu else "cpu",
        "build_seconds": build_s,
        "search_qps": len(queries) / search_s,
        "recall_at_10": ix.recall_at_k(found, true_ids, K),
        "exact_qps": len(queries) / exact_s,
        "exact_recall_at_10": ix.recall_at_k(exact_found, true_ids, K),
        "kmeans_seconds": kmeans_s,
        "kmeans_inertia": clustered.inertia,
    }


def agreement(cpu: dict[str, Any], other: dict[str, Any]) -> dict[str, bool]:
    """Which of the three checks ``other`` (the GPU side) passes against ``cpu``."""
    return {
        "index_recall": other["recall_at_10"] >= cpu["recall_at_10"] - RECALL_TOLERANCE,
        "exact_search": other["exact_recall_at_10"] >= EXACT_RECALL,
        "kmeans_inertia": abs(other["kmeans_inertia"] / cpu["kmeans_inertia"] - 1) <= INERTIA_TOLERANCE,
    }


def report(result: dict[str, Any]) -> str:
    """Both sides' figures side by side, then the verdict of each check."""
    cpu, gpu = result["cpu"], result["gpu"]
    params = ", ".join(f"{name}={value}" for name, value in result["search_params"].items())
    rows = [
        ("index build s", "build_seconds", ",.1f"),
        ("index search q/s", "search_qps", ",.0f"),
        ("index recall@10", "recall_at_10", ".4f"),
        ("exact search q/s", "exact_qps", ",.0f"),
        ("exact recall@10", "exact_recall_at_10", ".4f"),
        ("k-means s", "kmeans_seconds", ",.1f"),
        ("k-means inertia", "kmeans_inertia", ",.2f"),
    ]
    lines = [
        f"{result['count']:,} x {result['dimension']}-d clustered vectors, {result['queries']} queries, "
        f"index {result['factory']} at {params or 'exact'}, k-means k={result['clusters']}",
        f"{'':18} {'CPU':>14} {'GPU':>14}",
    ]
    lines += [f"{label:18} {cpu[key]:>14{spec}} {gpu[key]:>14{spec}}" for label, key, spec in rows]
    lines += [f"{check}: {'agrees' if ok else 'DISAGREES'}" for check, ok in result["agreement"].items()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--dimension", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=1024, help="k of the k-means")
    parser.add_argument("--factory", help="FAISS factory string (default: what choose_index picks)")
    parser.add_argument("--budget-mb", type=int, default=2048, help="memory budget of the auto pick")
    parser.add_argument("--target", type=float, default=0.95, help="recall@10 the CPU index is tuned to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if faiss.get_num_gpus() == 0:
        print(
            f"FAISS {faiss.__version__} sees no GPU (the faiss-cpu build, or no device): nothing to compare. "
            "Run this on a GPU machine after `pip uninstall faiss-cpu && pip install '.[gpu]'`.",
            file=sys.stderr,
        )
        sys.exit(NO_GPU_EXIT)
    vectors, queries = make_data("clustered", args.count, args.queries, args.dimension, args.seed)
    factory = args.factory or ix.choose_index(args.count, args.dimension, args.budget_mb * 2**20).factory
    _, true_ids = ix.build_index(vectors, "Flat", use_gpu=False).search(queries, K)
    tuned = ix.build_index(vectors, factory, seed=args.seed, use_gpu=False)
    params, _ = ix.tune_search_params(tuned, None, queries, true_ids, K, args.target)
    sides = {
        side: run_side(vectors, queries, true_ids, factory, params, args.clusters, args.seed, use_gpu=side == "gpu")
        for side in ("cpu", "gpu")
    }
    result = {
        "check": "gpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "count": args.count,
        "dimension": args.dimension,
        "queries": args.queries,
        "clusters": args.clusters,
        "factory": factory,
        "search_params": params,
        "faiss": faiss.__version__,
        "gpus": faiss.get_num_gpus(),
        "cpu_threads": faiss.omp_get_max_threads(),
        "machine": platform.machine(),
        **sides,
        "agreement": agreement(sides["cpu"], sides["gpu"]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(report(result))
    sys.exit(0 if all(result["agreement"].values()) else 1)


if __name__ == "__main__":
    main()
