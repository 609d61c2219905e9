"""Benchmark: FAISS index types vs exact search (FAISS Flat and plain numpy) on 1M generated vectors.

For each data set -- 128-d and 256-d, uniform on the sphere and clustered (a
Gaussian mixture of 1,000 centres with log-normal weights and spreads of 0.5
to 1.0 of the centre's norm, then L2-normalised), ``--count`` database vectors
plus ``--queries`` held-out queries drawn from the same distribution, float32,
seeded -- it measures:

1. **exact baselines**: FAISS ``Flat`` (inner product; its results are the
   ground truth) and numpy (a matrix product plus ``argpartition`` over 65,536-row
   chunks of the database; batched on the first ``--numpy-queries`` queries),
   batched and one query at a time.
2. **each index type** built with ``dlpipe.retrieval.index.build_index`` (train + add,
   timed whole): ``HNSW32``; with ``nlist`` = ``nlist_for(N)`` (about 2 sqrt N)
   ``IVF{nlist},Flat`` (uncompressed), ``IVF{nlist},SQfp16``, ``IVF{nlist},SQ8``,
   ``IVF{nlist},PQ{D/4}x8`` and the same with an exact re-ranking of
   ``k_factor_rf`` = 4 times k candidates (``,RFlat``); ``SQfp16`` with sqrt N
   and 4 sqrt N lists; plus whatever ``choose_index`` picks for ``--budget-mb``
   (the stage's ``memory_budget_mb``). The plain IVF-PQ row is
   the refined index's own ``base_index`` searched without re-ranking (one build
   serves both rows; its bytes per vector are the base index's alone).
   Each is tuned with ``tune_search_params`` to the smallest nprobe / efSearch
   on a doubling ladder that reaches recall@10 >= ``--target``, and measured at
   that operating point, so every comparison is at (at least) equal recall. Every
   rung tuning tried is recorded too (recall, and queries/s of that one batched run).

Queries per second: batched = all queries in one ``search`` call; one at a time
= a loop of single-query searches over the first ``--single`` queries
(``--single-exact`` for the two exact baselines, whose single queries each scan
the whole database). After every index of a set is built and tuned, all of them
and both baselines are timed in 3 interleaved rounds and each rate is the
fastest round's: on a shared machine, other processes then slow every
contender alike rather than whichever ran at a busy moment.
Bytes per vector = serialized index size / N.

Only the 128-d clustered set (the one the targets are stated on) runs every
type; the others run the baselines and the auto pick, to stay within ~30
minutes on 2 cores (``--all-types`` runs everything everywhere).

    python bench/bench_search.py [--count 1000000] [--dims 128 256] [--kinds clustered uniform]

Writes bench/results/search.json (every number, machine facts, load average
before and after, the CPU share other processes took) and
bench/results/search.md (tables for docs/BENCHMARKS.md and the verdict on each
target). The machine may be shared: a busy one lowers every rate, and the
ratios less so.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from dlpipe.retrieval import index as ix

from machine import CpuShare  # bench/ is on sys.path when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
K = 10
CENTRES = 1000
NUMPY_CHUNK = 65_536
# interleaved timing rounds; each rate is the fastest round's
ROUNDS = 3
TARGET_SPEEDUP_VS_FLAT = 30.0
TARGET_VS_BEST = 0.8
TARGET_SET = ("clustered", 128)
REFINE_K_FACTOR = 4  # the refined IVF-PQ re-ranks 4k candidates with exact distances


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_data(kind: str, count: int, queries: int, dimension: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(database, queries), float32, L2-normalised, from one seeded stream; queries are extra draws."""
    rng = np.random.default_rng([seed, dimension, 0 if kind == "uniform" else 1])
    total = count + queries
    data = np.empty((total, dimension), np.float32)
    if kind == "clustered":
        centres = rng.standard_normal((CENTRES, dimension)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        weights = rng.lognormal(0.0, 1.0, CENTRES)
        weights /= weights.sum()
        spread = rng.uniform(0.5, 1.0, CENTRES).astype(np.float32) / math.sqrt(dimension)
    for start in range(0, total, 100_000):
        rows = min(total, start + 100_000) - start
        block = rng.standard_normal((rows, dimension), dtype=np.float32)
        if kind == "clustered":
            label = rng.choice(CENTRES, rows, p=weights)
            block = centres[label] + spread[label, None] * block
        data[start : start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return data[:count], data[count:]


def numpy_search(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids by inner product in plain numpy: matrix product and argpartition, chunk by chunk."""
    best_scores = np.full((len(queries), k), -np.inf, np.float32)
    best_ids = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(vectors), NUMPY_CHUNK):
        scores = queries @ vectors[start : start + NUMPY_CHUNK].T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if scores.shape[1] > k else np.argsort(-scores, axis=1)
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, top, axis=1)], axis=1)
        merged_ids = np.concatenate([best_ids, top + start], axis=1)
        keep = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best_ids = np.take_along_axis(merged_ids, keep, axis=1)
    order = np.argsort(-best_scores, axis=1, kind="stable")
    return np.take_along_axis(best_ids, order, axis=1)


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = run()
    return time.perf_counter() - start, result


def types_for(kind: str, dimension: int, count: int, budget: int, all_types: bool) -> dict[str, str]:
    """Label -> factory of the approximate types to run on one data set (the auto pick always included)."""
    auto = ix.choose_index(count, dimension, budget).factory
    if not all_types and (kind, dimension) != TARGET_SET:
        return {"auto": auto}
    nlist = ix.nlist_for(count)

    def lists(per_sqrt_n: int) -> int:
        return max(1, 2 ** round(math.log2(per_sqrt_n * math.sqrt(count))))

    return {
        "HNSW32": "HNSW32",
        "IVF-Flat": f"IVF{nlist},Flat",
        "IVF-SQfp16": f"IVF{nlist},SQfp16",
        "IVF-SQfp16 sqrt(N)": f"IVF{lists(1)},SQfp16",
        "IVF-SQfp16 4 sqrt(N)": f"IVF{lists(4)},SQfp16",
        "IVF-SQ8": f"IVF{nlist},SQ8",
        "IVF-PQ + RFlat": f"IVF{nlist},PQ{dimension // 4}x8,RFlat",
        "auto": auto,
    }


def tune(label: str, factory: str, index: faiss.Index, build_s: float | None, data: dict[str, Any], args) -> dict:
    """Tune ``index`` to the target recall (recording every rung) and measure its size; rates come later."""
    xq, true_ids, count = data["queries"], data["true_ids"], data["count"]
    rungs: list[dict[str, Any]] = []
    tune_s, (params, recall) = timed(
        lambda: ix.tune_search_params(index, None, xq, true_ids, K, args.target, record=rungs)
    )
    log(f"  {label}: tuned to {params or 'exact'}, recall@10 {recall:.4f} ({tune_s:.1f} s)")
    return {
        "factory": factory,
        "build_seconds": build_s,
        "search_params": params,
        "recall_at_10": recall,
        "reaches_target": recall >= args.target,
        "bytes_per_vector": faiss.serialize_index(index).nbytes / count,
        "tune_seconds": tune_s,
        "ladder": [{**rung, "qps": len(xq) / rung["seconds"]} for rung in rungs],
    }


def measure_rates(searchers: dict[str, Callable[[np.ndarray], Any]], queries: dict[str, np.ndarray], args) -> dict:
    """Batched and single-query rates of every searcher, measured in interleaved rounds; the fastest round counts.

    Interleaving puts every index, and the exact baselines it is compared with, under the same load, so
    other processes on a shared machine slow all of them alike instead of whichever ran at a busy moment.
    """
    batched: dict[str, list[float]] = {label: [] for label in searchers}
    single: dict[str, list[float]] = {label: [] for label in searchers}
    for _ in range(ROUNDS):
        for label, run in searchers.items():
            batch = queries[label]
            batched[label].append(timed(functools.partial(run, batch))[0])
            ones = batch[: args.single_exact if label in ("Flat", "numpy") else args.single]
            start = time.perf_counter()
            for row in range(len(ones)):
                run(ones[row : row + 1])
            single[label].append((time.perf_counter() - start) / len(ones))
    return {
        label: {
            "qps_batched": len(queries[label]) / min(batched[label]),
            "qps_single": 1 / min(single[label]),
            "batched_seconds": batched[label],
            "single_seconds_per_query": single[label],
            "batched_queries": len(queries[label]),
        }
        for label in searchers
    }


def bench_dataset(kind: str, dimension: int, args: argparse.Namespace) -> dict[str, Any]:
    """Build and tune every type on one data set, then time them all (and the exact baselines) interleaved."""
    cpu = CpuShare()
    queries = args.queries if kind == "clustered" else args.queries_uniform
    log(f"{kind} {dimension}-d: generating {args.count:,} + {queries} vectors")
    gen_s, (xb, xq) = timed(lambda: make_data(kind, args.count, queries, dimension, args.seed))
    budget = args.budget_mb * 2**20
    choice = ix.choose_index(args.count, dimension, budget)
    flat_build_s, flat = timed(lambda: ix.build_index(xb, "Flat"))
    truth_s, (_, true_ids) = timed(lambda: flat.search(xq, K))
    log(f"  Flat: ground truth in {truth_s:.1f} s")
    numpy_xq = xq[: args.numpy_queries]
    exact = {"search_params": {}, "recall_at_10": 1.0, "reaches_target": True, "ladder": []}
    results: dict[str, Any] = {
        "Flat": {**exact, "factory": "Flat", "build_seconds": flat_build_s, "bytes_per_vector": 4.0 * dimension},
        "numpy": {
            **exact,
            "factory": None,
            "build_seconds": 0.0,
            "bytes_per_vector": 4.0 * dimension,
            "recall_at_10": ix.recall_at_k(numpy_search(xb, numpy_xq, K), true_ids[: len(numpy_xq)], K),
        },
    }
    searchers: dict[str, Callable[[np.ndarray], Any]] = {
        "Flat": lambda q: flat.search(q, K),
        "numpy": lambda q: numpy_search(xb, q, K),
    }
    batches = {"Flat": xq, "numpy": numpy_xq}
    data = {"queries": xq, "true_ids": true_ids, "count": args.count}
    built: dict[str, str] = {"Flat": "Flat"}  # an auto pick of Flat is the exact baseline
    for label, factory in types_for(kind, dimension, args.count, budget, args.all_types).items():
        twin = next((other for other, built_factory in built.items() if built_factory == factory), None)
        if twin:  # the auto pick is usually one of the types above: built and measured once
            results[label] = {"same_as": twin}
            continue
        log(f"  {label}: building {factory}")
        build_s, index = timed(functools.partial(ix.build_index, xb, factory, seed=args.seed))
        log(f"  {label}: built in {build_s:.1f} s")
        built[label] = factory
        indexes = {label: (factory, index, build_s)}
        if factory.endswith(",RFlat"):
            ix.set_search_params(index, {"k_factor_rf": REFINE_K_FACTOR})
            base = faiss.downcast_index(index.base_index)
            indexes["IVF-PQ"] = (factory.removesuffix(",RFlat"), base, None)
        for name, (name_factory, name_index, name_build_s) in indexes.items():
            results[name] = tune(name, name_factory, name_index, name_build_s, data, args)
            searchers[name] = functools.partial(name_index.search, k=K)
            batches[name] = xq
        if "IVF-PQ" in indexes:
            results["IVF-PQ"]["note"] = "the refined index's base_index searched without re-ranking (built with it)"
    log(f"  timing {len(searchers)} searchers in {ROUNDS} interleaved rounds")
    for label, rates in measure_rates(searchers, batches, args).items():
        results[label].update(rates)
        log(f"  {label}: {rates['qps_batched']:,.1f} q/s batched, {rates['qps_single']:,.1f} q/s one at a time")
    for label, row in results.items():
        if "same_as" in row:
            results[label] = {**results[row["same_as"]], "same_as": row["same_as"]}
    for row in results.values():
        row["speedup_vs_flat_batched"] = row["qps_batched"] / results["Flat"]["qps_batched"]
        row["speedup_vs_flat_single"] = row["qps_single"] / results["Flat"]["qps_single"]
    return {
        "kind": kind,
        "dimension": dimension,
        "count": args.count,
        "queries": queries,
        "generate_seconds": gen_s,
        "ground_truth_seconds": truth_s,
        "auto": {"factory": choice.factory, "reason": choice.reason, "memory_bytes": choice.memory_bytes},
        "indexes": results,
        "cpu_share": cpu.stop(),
    }


def verdict(target_set: dict[str, Any], target: float) -> dict[str, Any]:
    """The issue's targets on the 128-d clustered set, from the measured numbers."""
    rows = target_set["indexes"]
    auto = rows["auto"]
    at_target = {label: row for label, row in rows.items() if row["reaches_target"] and label not in ("Flat", "numpy")}
    best_label = max(at_target, key=lambda label: at_target[label]["qps_batched"]) if at_target else None
    best_single = max(at_target, key=lambda label: at_target[label]["qps_single"]) if at_target else None
    return {
        "auto_factory": auto["factory"],
        "auto_recall_at_10": auto["recall_at_10"],
        "auto_reaches_recall": auto["recall_at_10"] >= target,
        "auto_speedup_vs_flat_batched": auto["speedup_vs_flat_batched"],
        "auto_speedup_vs_flat_single": auto["speedup_vs_flat_single"],
        "speedup_target_met": auto["recall_at_10"] >= target and auto["speedup_vs_flat_batched"] >= TARGET_SPEEDUP_VS_FLAT,
        "best_at_target_batched": best_label,
        "auto_vs_best_batched": auto["qps_batched"] / at_target[best_label]["qps_batched"] if best_label else None,
        "best_at_target_single": best_single,
        "auto_vs_best_single": auto["qps_single"] / at_target[best_single]["qps_single"] if best_single else None,
        "vs_best_target_met": bool(best_label) and auto["qps_batched"] >= TARGET_VS_BEST * at_target[best_label]["qps_batched"],
    }


def fmt_params(params: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "exact"


def rule_notes(result: dict[str, Any]) -> list[str]:
    """What the numbers say about the auto rule: float16 vs uncompressed IVF, HNSW, nlist, SQ8, PQ; uniform data."""
    lines = []
    target = next((d for d in result["datasets"] if "HNSW32" in d["indexes"]), None)
    if target:
        rows = target["indexes"]
        half, flat, hnsw, small, large, sq8, pq, refined = (
            rows[key]
            for key in (
                "IVF-SQfp16", "IVF-Flat", "HNSW32", "IVF-SQfp16 sqrt(N)", "IVF-SQfp16 4 sqrt(N)", "IVF-SQ8", "IVF-PQ",
                "IVF-PQ + RFlat",
            )
        )

        def rate(row: dict[str, Any]) -> str:
            return f"{row['qps_batched'] / half['qps_batched']:.2f}x"

        lines += [
            (
                f"**The auto rule, from these numbers** ({target['kind']} {target['dimension']}-d): at recall@10 >= "
                f"{result['target_recall']}, IVF with float16 codes and 2 sqrt(N) lists (`{half['factory']}`, "
                f"{fmt_params(half['search_params'])}, recall {half['recall_at_10']:.3f}) serves "
                f"{half['qps_batched'] / flat['qps_batched']:.2f}x the batched and "
                f"{half['qps_single'] / flat['qps_single']:.2f}x the single-query rate of the same index uncompressed "
                f"(`{flat['factory']}`, {fmt_params(flat['search_params'])}, recall {flat['recall_at_10']:.3f}) in "
                f"{half['bytes_per_vector']:,.0f} bytes per vector against {flat['bytes_per_vector']:,.0f}: both probe "
                "the same lists, and the scan is bound by memory bandwidth. Against HNSW32 "
                f"({fmt_params(hnsw['search_params'])}) it serves {half['qps_batched'] / hnsw['qps_batched']:.1f}x the "
                f"batched and {half['qps_single'] / hnsw['qps_single']:.1f}x the single-query rate, built in "
                f"{half['build_seconds']:,.0f} s against {hnsw['build_seconds']:,.0f} s (deterministically; HNSW is not). "
                f"With sqrt(N) lists (`{small['factory']}`) it needs {fmt_params(small['search_params'])} and runs at "
                f"{rate(small)}; with 4 sqrt(N) lists (`{large['factory']}`, FAISS's guideline) it needs "
                f"{fmt_params(large['search_params'])}, builds in {large['build_seconds']:,.0f} s and runs at "
                f"{rate(large)}. One byte per component (`{sq8['factory']}`) needs {fmt_params(sq8['search_params'])} "
                f"(recall {sq8['recall_at_10']:.3f}) and runs at {rate(sq8)} in {sq8['bytes_per_vector']:,.0f} bytes per "
                "vector: the fallback when float16 does not fit. "
                f"IVF-PQ alone stops at recall {pq['recall_at_10']:.3f} ({fmt_params(pq['search_params'])}, "
                f"{pq['bytes_per_vector']:,.0f} bytes per vector): the choice only when not even one byte per "
                f"component fits. Re-ranking it (`RFlat`) reaches {refined['recall_at_10']:.3f} at {rate(refined)} but "
                f"keeps the raw vectors as well ({refined['bytes_per_vector']:,.0f} bytes per vector), so it never fits "
                "where the others do not."
            ),
            "",
        ]
    uniform = [d for d in result["datasets"] if d["kind"] == "uniform"]
    if uniform:
        parts = [
            f"{d['dimension']}-d: {fmt_params(d['indexes']['auto']['search_params'])}, recall "
            f"{d['indexes']['auto']['recall_at_10']:.3f}, {d['indexes']['auto']['speedup_vs_flat_batched']:.2f}x Flat batched"
            for d in uniform
        ]
        lines += [
            (
                "**Uniform data** has no structure an index can use: in high dimension a point's nearest neighbours "
                "are barely closer than any other point, so reaching the recall target takes a near-exhaustive scan ("
                + "; ".join(parts)
                + "), hardly better than brute force. Real embeddings are clustered."
            ),
            "",
        ]
    return lines


def markdown(result: dict[str, Any]) -> str:
    """Tables for docs/BENCHMARKS.md plus the verdict, all from ``result``."""
    lines = [
        "## Search: FAISS index types vs exact search",
        "",
        (
            f"`bench/bench_search.py`: {result['count']:,} generated float32 vectors per set (L2-normalised; uniform on the "
            f"sphere, or a Gaussian mixture of {CENTRES:,} centres), {result['queries']:,} held-out queries from the same "
            f"distribution ({result['queries_uniform']:,} for the uniform sets), k = 10, inner product. "
            "Ground truth = FAISS `Flat`. Each approximate index is tuned "
            f"(`tune_search_params`, doubling ladder) to the smallest nprobe / efSearch reaching recall@10 >= "
            f"{result['target_recall']}, and measured there. Batched = all queries in one call; single = one query per call "
            f"({result['single_queries']} queries; {result['single_exact_queries']} for the exact baselines). "
            "All contenders of a set are timed in 3 interleaved rounds; each rate is the fastest round's. "
            f"numpy = matrix product + argpartition over 65,536-row chunks ({result['numpy_queries']} queries). "
            f"`auto` = `choose_index(N, D, {result['budget_mb']} MB)`. {result['threads']} FAISS threads."
        ),
        "",
    ]
    for data_set in result["datasets"]:
        lines += [
            (
                f"**{data_set['kind']}, {data_set['dimension']}-d, {data_set['count']:,} vectors** "
                f"(auto picks `{data_set['auto']['factory']}`: {data_set['auto']['reason']})"
            ),
            "",
            "| index | build s | bytes/vector | search param | recall@10 | batched q/s | vs Flat | single q/s | vs Flat |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, row in data_set["indexes"].items():
            name = f"{label} (`{row['factory']}`)" if row["factory"] and row["factory"] != label else label
            if "same_as" in row:
                lines.append(f"| {name} | same index as {row['same_as']} | | | | | | | |")
                continue
            build = "-" if row["build_seconds"] is None else f"{row['build_seconds']:,.1f}"
            lines.append(
                f"| {name} | {build} | {row['bytes_per_vector']:,.1f} | {fmt_params(row['search_params'])} "
                f"| {row['recall_at_10']:.3f} | {row['qps_batched']:,.0f} | {row['speedup_vs_flat_batched']:,.1f}x "
                f"| {row['qps_single']:,.0f} | {row['speedup_vs_flat_single']:,.1f}x |"
            )
        share = data_set["cpu_share"] or {}
        other = share.get("other_processes_share", float("nan"))
        seconds = share.get("wall_seconds", 0)
        lines += ["", f"Other processes used {other:.0%} of the CPUs during this set ({seconds:,.0f} s).", ""]
    v = result.get("verdict")
    if v:
        met = {True: "**met**", False: "**not met**"}
        lines += [
            (
                "**Targets** (128-d clustered, 2 cores): the index `auto` picks, "
                f"`{v['auto_factory']}`, reaches recall@10 {v['auto_recall_at_10']:.3f} at "
                f"{v['auto_speedup_vs_flat_batched']:,.0f}x FAISS Flat's batched queries per second "
                f"({v['auto_speedup_vs_flat_single']:,.0f}x one query at a time): target recall >= {result['target_recall']} "
                f"at >= {TARGET_SPEEDUP_VS_FLAT:.0f}x {met[v['speedup_target_met']]}. Among the types that reach the "
                f"recall, the fastest batched is {v['best_at_target_batched']}; auto runs at "
                f"{v['auto_vs_best_batched']:.2f}x its rate (target >= {TARGET_VS_BEST}x: {met[v['vs_best_target_met']]}); "
                f"one query at a time the fastest is {v['best_at_target_single']} and auto runs at "
                f"{v['auto_vs_best_single']:.2f}x."
            ),
            "",
        ]
    lines += [
        (
            "**Reading the batched ratios**: batched Flat is a BLAS matrix product whose threads wait for each "
            "other, so of all contenders it loses most when another process takes a core; batched ratios against "
            "it grow with the other-process share printed under each table. Compare sets measured at similar shares."
        ),
        "",
    ]
    lines += rule_notes(result)
    lines += [
        (
            f"Load average {result['load_average_before']} before, {result['load_average_after']} after "
            f"({result['cpu_count']} CPUs); faiss {result['faiss']}, numpy {result['numpy']}; "
            f"total {result['total_seconds'] / 60:,.1f} min. Raw numbers, every ladder rung: `bench/results/search.json`."
        ),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1_000_000, help="database vectors per set (report from 1M)")
    parser.add_argument("--queries", type=int, default=1000, help="held-out queries of the clustered sets")
    parser.add_argument(
        "--queries-uniform", type=int, default=300, help="queries of the uniform sets (they need near-exhaustive search)"
    )
    parser.add_argument("--single", type=int, default=200, help="queries timed one at a time (approximate types)")
    parser.add_argument("--single-exact", type=int, default=20, help="queries timed one at a time (Flat, numpy)")
    parser.add_argument("--numpy-queries", type=int, default=250, help="queries of the numpy batched baseline")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--kinds", nargs="+", choices=["clustered", "uniform"], default=["clustered", "uniform"])
    parser.add_argument("--budget-mb", type=int, default=2048, help="the stage's memory_budget_mb for the auto pick")
    parser.add_argument("--target", type=float, default=0.95, help="recall@10 each index is tuned to")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--all-types", action="store_true", help="every index type on every set (slow)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for search.json and search.md")
    parser.add_argument("--markdown-only", action="store_true", help="rewrite search.md from an existing search.json")
    args = parser.parse_args()
    if args.markdown_only:
        result = json.loads((args.out / "search.json").read_text(encoding="utf-8"))
        (args.out / "search.md").write_text(markdown(result), encoding="utf-8")
        return

    faiss.omp_set_num_threads(args.threads)
    load_before = os.getloadavg()
    cpu = CpuShare()
    start = time.perf_counter()
    datasets = [bench_dataset(kind, dim, args) for dim in args.dims for kind in args.kinds]
    result: dict[str, Any] = {
        "benchmark": "search",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "count": args.count,
        "queries": args.queries,
        "queries_uniform": args.queries_uniform,
        "single_queries": args.single,
        "single_exact_queries": args.single_exact,
        "numpy_queries": args.numpy_queries,
        "budget_mb": args.budget_mb,
        "target_recall": args.target,
        "threads": args.threads,
        "seed": args.seed,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_share": cpu.stop(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "total_seconds": time.perf_counter() - start,
        "datasets": datasets,
    }
    target_set = next((d for d in datasets if (d["kind"], d["dimension"]) == TARGET_SET and "HNSW32" in d["indexes"]), None)
    result["verdict"] = verdict(target_set, args.target) if target_set else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (args.out / "search.md").write_text(markdown(result), encoding="utf-8")
    print(markdown(result))


if __name__ == "__main__":
    main()
