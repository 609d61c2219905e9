"""Benchmark: FAISS k-means (dlpipe.retrieval.clustering.kmeans) vs scikit-learn KMeans; UMAP time vs number of points.

k-means: seeded Gaussian-mixture vectors shaped like dlpipe embeddings (float32,
128-d, L2-normalised), clustered at the same k with the same number of Lloyd
iterations by both libraries, on all points (FAISS's subsampling is switched off
by ``max_points_per_centroid``), on the same number of threads. Both start from
``init="random"`` (k random rows, free in both), so the time is the iterations:
scikit-learn's default k-means++ is a greedy variant whose initialisation alone
can cost more than all the iterations (timed once here as evidence). The inertia
of both results is computed by the same function on all points. Each timing is the
median of ``--repeats`` runs, interleaved. Also timed: dlpipe's defaults
(k-means++, FAISS's 256 points per centroid), and one run of each from identical
starting centroids, which shows the two implementations compute the same thing.

UMAP: ``umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=seed)``
``fit_transform`` time vs N. A random_state makes UMAP single-threaded; one unseeded
run at the largest N shows what its parallel path gives. Numba compiles UMAP's
functions at their first call: warm-up runs come first and are reported apart.

    python bench/bench_cluster.py [--repeats 3] [--threads 2] [--quick] [--out bench/results]

Writes cluster.json (every raw timing, machine facts) and cluster.md (tables for
docs/BENCHMARKS.md) to ``--out``. ``--quick`` shrinks every size to smoke-test the script.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # `import umap` imports TensorFlow (parametric UMAP): keep its chatter out

import argparse
import importlib
import json
import math
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from dlpipe.retrieval.clustering import inertia, kmeans

from machine import CpuShare, cpu_model  # bench/ is on sys.path when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
SEED = 0
NITER = 25
DIM = 128
# (rows, k, time scikit-learn's k-means++ init too): the scale, where that init alone takes minutes,
# the same k on fewer rows, and a small dataset's embeddings.
KMEANS_SETTINGS = [(200_000, 100, False), (20_000, 100, True), (20_000, 10, True)]
UMAP_SIZES = [1_000, 2_000, 5_000, 10_000, 20_000]
QUICK_KMEANS_SETTINGS = [(20_000, 20, True), (5_000, 5, True)]
QUICK_UMAP_SIZES = [500, 1_000]
INERTIA_TARGET = 0.01


def embeddings_like(rows: int, components: int, seed: int) -> np.ndarray:
    """float32 (rows, DIM): a Gaussian mixture whose components overlap, each row L2-normalised."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((components, DIM), dtype=np.float32)
    vectors = centres[rng.integers(0, components, rows)]
    # Noise as large as the centres: neighbouring components overlap, so k-means has work to do.
    vectors += rng.standard_normal((rows, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def timed(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """Seconds ``function(*args, **kwargs)`` took, and its result."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def sklearn_kmeans(vectors: np.ndarray, k: int, init: str | np.ndarray, seed: int) -> KMeans:
    """scikit-learn's Lloyd k-means, exactly NITER iterations unless the labels stop changing."""
    model = KMeans(n_clusters=k, init=init, n_init=1, max_iter=NITER, tol=0.0, algorithm="lloyd", random_state=seed)
    return model.fit(vectors)


def faiss_from(vectors: np.ndarray, start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FAISS k-means (the class dlpipe wraps) from given centroids, on all points; (centroids, labels)."""
    k = len(start)
    model = faiss.Kmeans(DIM, k, niter=NITER, max_points_per_centroid=math.ceil(len(vectors) / k), min_points_per_centroid=1)
    model.train(vectors, init_centroids=start)
    _, labels = model.assign(vectors)
    return model.centroids, labels.astype(np.int64)


def relative(value: float, reference: float) -> float:
    return (value - reference) / reference


def bench_kmeans(rows: int, k: int, repeats: int, threads: int, time_sklearn_init: bool) -> dict[str, Any]:
    """All k-means measurements at one (rows, k); repeat r uses seed SEED + r in both libraries.

    Each library runs on ``threads`` threads and on one: on a shared machine, OpenMP threads that
    spin-wait for a descheduled partner can make the multi-threaded time say more about the neighbours
    than about the library, and the single-threaded pair is the contention-proof comparison.
    """
    vectors = embeddings_like(rows, k, SEED)
    all_points = math.ceil(rows / k)  # FAISS subsamples above k * max_points_per_centroid rows
    print(f"k-means: {rows:,} x {DIM}, k={k}, {NITER} iterations", file=sys.stderr)
    thread_counts = sorted({threads, 1}, reverse=True)
    seconds: dict[str, list[float]] = {}
    inertias: dict[str, list[float]] = {}
    sklearn_iterations: dict[str, list[int]] = {}

    def record(name: str, elapsed: float, value: float) -> None:
        seconds.setdefault(name, []).append(elapsed)
        inertias.setdefault(name, []).append(value)

    cpu = CpuShare()
    for seed in range(SEED, SEED + repeats):
        for count in thread_counts:
            faiss.omp_set_num_threads(count)
            with threadpool_limits(limits=count):
                elapsed, model = timed(sklearn_kmeans, vectors, k, "random", seed)
                record(
                    f"sklearn_random_{count}t",
                    elapsed,
                    inertia(vectors, model.cluster_centers_.astype(np.float32), model.labels_),
                )
                sklearn_iterations.setdefault(f"sklearn_random_{count}t", []).append(int(model.n_iter_))
                elapsed, result = timed(
                    kmeans, vectors, k, niter=NITER, seed=seed, init="random", max_points_per_centroid=all_points
                )
                record(f"dlpipe_random_{count}t", elapsed, result.inertia)
        faiss.omp_set_num_threads(threads)
        elapsed, result = timed(kmeans, vectors, k, niter=NITER, seed=seed)
        record(f"dlpipe_defaults_{threads}t", elapsed, result.inertia)
    share = cpu.stop()

    start = vectors[np.random.default_rng(SEED).choice(rows, k, replace=False)]
    same_sklearn_s, same_sklearn = timed(sklearn_kmeans, vectors, k, start.copy(), SEED)
    same_faiss_s, (centroids, labels) = timed(faiss_from, vectors, start)
    same_start = {
        "sklearn_seconds": same_sklearn_s,
        "faiss_seconds": same_faiss_s,
        "sklearn_inertia": inertia(vectors, same_sklearn.cluster_centers_.astype(np.float32), same_sklearn.labels_),
        "faiss_inertia": inertia(vectors, centroids, labels),
        "labels_ari": float(adjusted_rand_score(same_sklearn.labels_, labels)),
        "sklearn_iterations": int(same_sklearn.n_iter_),
    }
    same_start["inertia_relative_difference"] = relative(same_start["faiss_inertia"], same_start["sklearn_inertia"])

    sklearn_init_s = timed(kmeans_plusplus, vectors, k, random_state=SEED)[0] if time_sklearn_init else None
    faiss_init = faiss.Kmeans(
        DIM, k, niter=0, init_method=faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS, max_points_per_centroid=all_points
    )
    faiss_init_s, _ = timed(faiss_init.train, vectors)

    median = {name: statistics.median(values) for name, values in seconds.items()}
    # scikit-learn stops early once no label changes (tol=0 cannot prevent that); FAISS always runs NITER.
    per_iteration = {
        name: statistics.median(t / n for t, n in zip(seconds[name], sklearn_iterations[name], strict=True))
        for name in sklearn_iterations
    }
    per_iteration |= {name: median[name] / NITER for name in seconds if name.startswith("dlpipe_random")}
    reference = statistics.median(inertias[f"sklearn_random_{threads}t"])
    return {
        "rows": rows,
        "dimension": DIM,
        "k": k,
        "mixture_components": k,
        "niter": NITER,
        "threads": thread_counts,
        "faiss_max_points_per_centroid": all_points,
        "faiss_default_training_rows": min(rows, 256 * k),
        "sklearn_iterations_run": sklearn_iterations,
        "seconds": seconds,
        "median_seconds": median,
        "best_seconds": {name: min(values) for name, values in seconds.items()},
        "median_seconds_per_iteration": per_iteration,
        "time_ratio_sklearn_over_dlpipe": {
            f"{count}t": median[f"sklearn_random_{count}t"] / median[f"dlpipe_random_{count}t"] for count in thread_counts
        },
        "time_ratio_per_iteration": {
            f"{count}t": per_iteration[f"sklearn_random_{count}t"] / per_iteration[f"dlpipe_random_{count}t"]
            for count in thread_counts
        },
        "time_ratio_sklearn_over_dlpipe_defaults": median[f"sklearn_random_{threads}t"] / median[f"dlpipe_defaults_{threads}t"],
        "inertia": inertias,
        "inertia_relative_difference": relative(statistics.median(inertias[f"dlpipe_random_{threads}t"]), reference),
        "inertia_relative_difference_defaults": relative(statistics.median(inertias[f"dlpipe_defaults_{threads}t"]), reference),
        # How much one library's inertia varies with the seed alone: the scale a gap between the two is judged on.
        "inertia_seed_spread": {name: (max(v) - min(v)) / statistics.median(v) for name, v in inertias.items()},
        "same_start": same_start,
        "kmeans_plusplus_init_seconds": {"sklearn_greedy": sklearn_init_s, "faiss": faiss_init_s},
        "cpu_share": share,
    }


def umap_seconds(vectors: np.ndarray, seed: int | None) -> float:
    """Seconds for one 2-D UMAP fit_transform (single-threaded when seeded)."""
    import umap

    reducer = umap.UMAP(n_components=2, n_neighbors=15, min_dist=0.1, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "n_jobs overridden to 1 by setting random_state" on every seeded run
        elapsed, _ = timed(reducer.fit_transform, vectors)
    return elapsed


def bench_umap(sizes: list[int], repeats: int) -> dict[str, Any]:
    """UMAP warm-up (numba compilation), then ``repeats`` interleaved rounds: seeded at each N, unseeded at the largest."""
    print(f"UMAP: N in {sizes}", file=sys.stderr)
    import_s, _ = timed(importlib.import_module, "umap")
    vectors = embeddings_like(max(sizes), 10, SEED + 1)
    # Below 4,096 rows UMAP finds neighbours exactly, above with NN-descent: warm both, and the parallel layout.
    warm_rows = min(5_000, max(sizes))
    warm_up = {
        "import_seconds": import_s,
        "seeded_1000_seconds": umap_seconds(vectors[:1_000], SEED),
        f"seeded_{warm_rows}_seconds": umap_seconds(vectors[:warm_rows], SEED),
        f"unseeded_{warm_rows}_seconds": umap_seconds(vectors[:warm_rows], None),
    }
    cpu = CpuShare()
    seeded: dict[int, list[float]] = {n: [] for n in sizes}
    unseeded: list[float] = []
    for _ in range(repeats):
        for n in sizes:
            seeded[n].append(umap_seconds(vectors[:n], SEED))
        unseeded.append(umap_seconds(vectors, None))
    median = {n: statistics.median(values) for n, values in seeded.items()}
    return {
        "dimension": DIM,
        "mixture_components": 10,
        "params": {"n_components": 2, "n_neighbors": 15, "min_dist": 0.1, "random_state": SEED},
        "warm_up": warm_up,
        "seeded_seconds": seeded,
        "seeded_median_seconds": median,
        "unseeded_rows": max(sizes),
        "unseeded_seconds": unseeded,
        "unseeded_median_seconds": statistics.median(unseeded),
        "seeded_over_unseeded": median[max(sizes)] / statistics.median(unseeded),
        "cpu_share": cpu.stop(),
    }


def versions() -> dict[str, str]:
    names = ("faiss-cpu", "scikit-learn", "umap-learn", "numba", "pynndescent", "numpy")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return {"python": platform.python_version(), **found}


def setting(row: dict[str, Any]) -> str:
    return f"{row['rows']:,} x {row['dimension']}, k={row['k']}"


def markdown(result: dict[str, Any]) -> str:
    """Tables and a summary paragraph for docs/BENCHMARKS.md."""
    threads = result["threads"]
    lines = [
        "## Cluster: FAISS k-means vs scikit-learn KMeans; UMAP time vs N",
        "",
        f"`bench/bench_cluster.py`: seeded Gaussian-mixture vectors shaped like dlpipe embeddings (float32, {DIM}-d,",
        "L2-normalised; as many overlapping components as k). dlpipe's `kmeans` (FAISS) and scikit-learn's `KMeans`",
        f"(`algorithm=lloyd, n_init=1, max_iter={NITER}, tol=0`) run {NITER} Lloyd iterations at the same k on all points",
        "(FAISS's subsampling off), both from `init=random` (k random rows): scikit-learn's default k-means++ is a greedy",
        "variant whose initialisation alone costs more than the iterations (last table), so random starts keep the",
        "comparison to the iterations. scikit-learn stops early once no label changes (`tol=0` cannot prevent that),",
        "so the per-iteration ratio is the like-for-like one. Threads: FAISS through `faiss.omp_set_num_threads`,",
        f"scikit-learn's OpenMP and BLAS through threadpoolctl; {threads} threads, and 1. Medians of {result['repeats']}",
        f"interleaved repeats, seeds {SEED}..{SEED + result['repeats'] - 1} in both libraries.",
        "",
        "| rows x dim, k | threads | scikit-learn KMeans (iterations run) | dlpipe `kmeans` (FAISS, 25) "
        "| time ratio sklearn / dlpipe | per iteration |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["kmeans"]:
        median = row["median_seconds"]
        for count in row["threads"]:
            iterations = "/".join(str(n) for n in row["sklearn_iterations_run"][f"sklearn_random_{count}t"])
            lines.append(
                f"| {setting(row)} | {count} | {median[f'sklearn_random_{count}t']:.2f} s ({iterations}) "
                f"| {median[f'dlpipe_random_{count}t']:.2f} s | **{row['time_ratio_sklearn_over_dlpipe'][f'{count}t']:.2f}x** "
                f"| {row['time_ratio_per_iteration'][f'{count}t']:.2f}x |"
            )
    lines += [
        "",
        f"Inertia (sum of squared distances to the assigned centroid, recomputed in float64 by the same function for both;"
        f" medians over the seeds, {threads} threads), and one run of each from identical starting centroids:",
        "",
        f"| rows x dim, k | dlpipe vs sklearn (target within {INERTIA_TARGET:.0%}) | spread over seeds, sklearn / dlpipe "
        "| same start: dlpipe vs sklearn | same start: label agreement (ARI) |",
        "|---|---|---|---|---|",
    ]
    for row in result["kmeans"]:
        spread, same = row["inertia_seed_spread"], row["same_start"]
        lines.append(
            f"| {setting(row)} | {row['inertia_relative_difference']:+.2%} "
            f"| {spread[f'sklearn_random_{threads}t']:.2%} / {spread[f'dlpipe_random_{threads}t']:.2%} "
            f"| {same['inertia_relative_difference']:+.4%} | {same['labels_ari']:.4f} |"
        )
    lines += [
        "",
        "dlpipe's defaults (k-means++ start; FAISS trains on at most 256 points per centroid, then assigns every point)",
        "against scikit-learn above, and k-means++ initialisation alone:",
        "",
        "| rows x dim, k | trained on | dlpipe defaults | time ratio sklearn (random, all points) / dlpipe | inertia vs sklearn "
        "| sklearn k-means++ init | FAISS k-means++ init |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["kmeans"]:
        init = row["kmeans_plusplus_init_seconds"]
        sklearn_init = "not timed (minutes)" if init["sklearn_greedy"] is None else f"{init['sklearn_greedy']:.2f} s"
        lines.append(
            f"| {setting(row)} | {row['faiss_default_training_rows']:,} rows "
            f"| {row['median_seconds'][f'dlpipe_defaults_{threads}t']:.2f} s "
            f"| {row['time_ratio_sklearn_over_dlpipe_defaults']:.2f}x "
            f"| {row['inertia_relative_difference_defaults']:+.2%} | {sklearn_init} | {init['faiss']:.2f} s |"
        )
    umap_result = result["umap"]
    median = umap_result["seeded_median_seconds"]
    sizes = list(median)
    warm = umap_result["warm_up"]
    lines += [
        "",
        f"UMAP (`n_components=2, n_neighbors=15, min_dist=0.1, random_state={SEED}`) `fit_transform` on {DIM}-d",
        f"embeddings-like vectors (10 components), medians of {result['repeats']}. Numba compiles UMAP's functions at",
        "their first call: warm-up runs came first and are not in the table (the first fit in the process, 1,000 rows,",
        f"took {warm['seeded_1000_seconds']:.1f} s; `import umap` {warm['import_seconds']:.1f} s, as it also imports TensorFlow"
        " for parametric UMAP). Time is not monotonic in N: below 4,096 rows UMAP finds neighbours exactly, through",
        "scikit-learn's `pairwise_distances` with a metric called from Python once per pair (quadratic: 2 million calls",
        "at 2,000 rows), above it with NN-descent; and it runs 500 epochs up to 10,000 rows, 200 above.",
        "",
        "| rows | " + " | ".join(f"{n:,}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
        "| seeded (single-threaded) | " + " | ".join(f"{median[n]:.1f} s" for n in sizes) + " |",
        "",
        f"A random_state makes UMAP single-threaded. Unseeded (parallel, not reproducible) at {umap_result['unseeded_rows']:,}"
        f" rows on {result['cpu_count']} cores: {umap_result['unseeded_median_seconds']:.1f} s, a ratio seeded / unseeded of"
        f" {umap_result['seeded_over_unseeded']:.2f}x.",
        "",
        summary(result),
    ]
    return "\n".join(lines) + "\n"


def summary(result: dict[str, Any]) -> str:
    """One paragraph: the conditions, whether the inertia target holds, and the time ratios."""
    rows = result["kmeans"]
    threads = result["threads"]
    held = [abs(row["inertia_relative_difference"]) <= INERTIA_TARGET for row in rows]
    verdict = "holds everywhere" if all(held) else "holds nowhere" if not any(held) else "holds in part"
    gaps = ", ".join(
        f"{row['inertia_relative_difference']:+.2%} at {row['rows']:,} rows, k={row['k']} (seed spread "
        f"{max(row['inertia_seed_spread'][f'{lib}_random_{threads}t'] for lib in ('sklearn', 'dlpipe')):.2%})"
        for row in rows
    )
    same = max(abs(row["same_start"]["inertia_relative_difference"]) for row in rows)
    ratios = "; ".join(
        " and ".join(f"{row['time_ratio_per_iteration'][f'{count}t']:.2f}x on {count} thread(s)" for count in row["threads"])
        + f" at {row['rows']:,} rows, k={row['k']}"
        for row in rows
    )
    others = result["cpu_share"]["other_processes_share"] if result["cpu_share"] else float("nan")
    return (
        f"Measured {result['date']} on {result['cpu_count']} cores ({result['cpu_model']}); 1-minute load average "
        f"{result['load_average_before'][0]:.2f} before the run and {result['load_average_after'][0]:.2f} after; other "
        f"processes took {others:.0%} of the CPU time during the run (OMP_WAIT_POLICY {result['omp_wait_policy']}). "
        f"The {INERTIA_TARGET:.0%} inertia target {verdict}. Median inertia, dlpipe vs scikit-learn: {gaps}, where the "
        f"spread is how far one library's inertia moves with the seed alone. From identical starting centroids the two "
        f"differ by at most {same:.4%}: they compute the same iterations, and a"
        f" gap comes from where each random start leads (and, over many iterations on large data, from float32"
        f" rounding flipping near-tie assignments). Time ratio per iteration (scikit-learn / dlpipe; above 1 means "
        f"dlpipe is faster): {ratios}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of both k-means libraries")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for cluster.json and cluster.md")
    parser.add_argument("--render-only", action="store_true", help="rewrite cluster.md from the cluster.json in --out")
    args = parser.parse_args()
    if args.render_only:
        result = json.loads((args.out / "cluster.json").read_text(encoding="utf-8"))
        umap_result = result["umap"]
        for key in ("seeded_seconds", "seeded_median_seconds"):  # JSON turned the row counts into strings
            umap_result[key] = {int(n): value for n, value in umap_result[key].items()}
        (args.out / "cluster.md").write_text(markdown(result), encoding="utf-8")
        return

    load_before = os.getloadavg()
    cpu = CpuShare()
    warm = embeddings_like(20_000, 10, SEED)
    sklearn_kmeans(warm, 10, "random", SEED)  # warm-up: thread pools, lazy imports
    kmeans(warm, 10, niter=2)
    settings = QUICK_KMEANS_SETTINGS if args.quick else KMEANS_SETTINGS
    kmeans_results = [bench_kmeans(rows, k, args.repeats, args.threads, sklearn_init) for rows, k, sklearn_init in settings]
    umap_result = bench_umap(QUICK_UMAP_SIZES if args.quick else UMAP_SIZES, args.repeats)
    load_after = os.getloadavg()

    result = {
        "benchmark": "cluster",
        "date": date.today().isoformat(),
        "quick": args.quick,
        "repeats": args.repeats,
        "threads": args.threads,
        # libgomp threads spin while waiting unless this says PASSIVE: on a busy machine that decides FAISS's time.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "versions": versions(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpu_share": cpu.stop(),
        "inertia_target": INERTIA_TARGET,
        "kmeans": kmeans_results,
        "umap": umap_result,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cluster.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    (args.out / "cluster.md").write_text(text, encoding="utf-8")
    print(text)
    if result["cpu_share"] and result["cpu_share"]["other_processes_share"] > 0.05:
        print(
            f"WARNING: other processes used {result['cpu_share']['other_processes_share']:.0%} of the CPUs during the run "
            "(timings are disturbed; rerun on an idle machine)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
