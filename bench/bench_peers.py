"""Benchmark: dlpipe against what a user would write by hand (issue 19). This version measures the first part:
what each stage's command costs beyond the stage's own work.

**Whole-stage overhead.** On the demo's images (shapes), sounds and news corpus at the demo's params,
each stage runs as a user runs it, ``dlpipe <stage> --dataset NAME`` in a fresh process (the cold
wall time: interpreter start, imports, JIT compilation, the work). Its **core work** is the same
stage's ``run()`` timed in a process that has already run it once, so every import is done and every
JIT-compiled function is compiled: what is left is the work itself. The difference is what a DVC
stage pays for being its own process; the target is ``cold <= 1.5 x core + 3 s``.

The other comparisons of issue 19 (finetune vs the plain Keras script, embed vs ``model.predict``,
word2vec vs gensim direct, k-means vs scikit-learn, search vs autofaiss's choice) are not in this
script yet; bench_cluster.py and bench_word2vec.py hold the k-means and word2vec ones for now.

    python bench/bench_peers.py [--repeats 3] [--quick] [--out bench/results]

Writes peers.json (every raw timing, machine facts) and peers.md (the table for docs/BENCHMARKS.md).
``--quick`` shrinks the samples and epochs to check that the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from machine import CpuShare, cpu_model  # bench/ is on sys.path when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# (command, dataset): every stage of the demo, on the dataset of its kind.
STAGES = [
    ("ingest", "shapes"),
    ("spectrogram", "sounds"),
    ("finetune", "shapes"),
    ("embed", "shapes"),
    ("cluster", "shapes"),
    ("search build", "shapes"),
    ("heatmap", "shapes"),
    ("word2vec train", "news"),
    ("report", "shapes"),
]
# A stage's module, run by the warm timer: the command's last word names it (``search build`` -> search).
MODULES = {"search build": "search", "word2vec train": "word2vec"}

WARM_RUN = """
import json, sys, time
from dlpipe.core.config import load_project
from dlpipe.stages import {module} as stage
project = load_project(sys.argv[1]).for_dataset(sys.argv[2])
stage.run(project, sys.argv[2])  # imports, JIT compilation, first-touch caches
started = time.perf_counter()
stage.run(project, sys.argv[2])
print(json.dumps({{"core_seconds": time.perf_counter() - started}}))
"""


def make_project(root: Path, quick: bool) -> Path:
    """The demo's params with its shapes, sounds and news datasets (samples smaller with ``quick``); return params.yaml."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    kinds = params["datasets"]
    params["datasets"] = {
        "image": {"shapes": kinds["image"]["shapes"]},
        "audio": {"sounds": kinds["audio"]["sounds"]},
        "text": {},
        "corpus": {"news": kinds["corpus"]["news"]},
    }
    if quick:
        params["sample"]["images"]["per_class"] = 30
        params["sample"]["audio"]["per_class"] = 10
        params["finetune"]["head_epochs"] = 3
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def dlpipe(root: Path, *argv: str) -> float:
    """Run the dlpipe command in ``root`` in a fresh process; return its wall time."""
    command = [str(Path(sys.executable).with_name("dlpipe")), *argv]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def prepare(root: Path) -> None:
    """Generate the samples and run every stage once, untimed, so each timed stage finds its inputs."""
    for kind, folder in (("images", "shapes"), ("audio", "sounds"), ("text", "news")):
        dlpipe(root, "sample", kind, f"data/sample/{folder}")
        dlpipe(root, "ingest", "--dataset", folder)
    for command, dataset in STAGES:
        dlpipe(root, *command.split(), "--dataset", dataset)


def warm_core_seconds(root: Path, command: str, dataset: str) -> float:
    """The stage's run() the second time in one process: its work without imports or JIT compilation."""
    module = MODULES.get(command, command)
    code = WARM_RUN.format(module=module)
    done = subprocess.run([sys.executable, "-c", code, "params.yaml", dataset], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"warm {command} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["core_seconds"]


def bench_overhead(root: Path, repeats: int) -> list[dict[str, Any]]:
    """Cold command wall time and warm core work of every stage, ``repeats`` times each, interleaved."""
    rows = []
    for command, dataset in STAGES:
        cold, core = [], []
        for _ in range(repeats):
            cold.append(dlpipe(root, *command.split(), "--dataset", dataset))
            core.append(warm_core_seconds(root, command, dataset))
        cold_median, core_median = statistics.median(cold), statistics.median(core)
        rows.append({
            "stage": command,
            "dataset": dataset,
            "cold_seconds": [round(value, 3) for value in cold],
            "core_seconds": [round(value, 3) for value in core],
            "cold_median": round(cold_median, 2),
            "core_median": round(core_median, 2),
            "overhead_seconds": round(cold_median - core_median, 2),
            "ratio": round(cold_median / core_median, 2),
            "target_met": cold_median <= 1.5 * core_median + 3.0,
        })
        print(f"{command} {dataset}: cold {cold_median:.1f} s, core {core_median:.1f} s", flush=True)
    return rows


def versions() -> dict[str, str]:
    """Versions of the libraries the stages load."""
    names = ("dlpipe", "tensorflow", "keras", "faiss-cpu", "umap-learn", "numba", "gensim", "librosa", "dvc")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def markdown(result: dict[str, Any]) -> str:
    """The tables for docs/BENCHMARKS.md."""
    share = result.get("cpu_share") or {}
    lines = [
        f"Whole-stage overhead, {result['date']}, {result['cpu_count']} x {result['cpu_model']}, median of "
        f"{result['repeats']}; other processes used {share.get('other_processes_share', 'n/a')} of the CPUs meanwhile.",
        "",
        "| stage | dataset | command, cold (s) | core work, warm (s) | overhead (s) | ratio | cold <= 1.5 x core + 3 s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["overhead"]:
        met = "met" if row["target_met"] else "not met"
        lines.append(
            f"| {row['stage']} | {row['dataset']} | {row['cold_median']:.1f} | {row['core_median']:.1f} | "
            f"{row['overhead_seconds']:.1f} | {row['ratio']:.2f}x | {met} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small samples, 3 epochs and one repeat, to check the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.repeats = 1
    root = HERE / "data" / "peers"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    make_project(root, args.quick)
    prepare(root)
    load = CpuShare()
    result: dict[str, Any] = {
        "benchmark": "peers",
        "date": date.today().isoformat(),
        "quick": args.quick,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "versions": versions(),
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
    }
    result["overhead"] = bench_overhead(root, args.repeats)
    result["cpu_share"] = load.stop()
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peers.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    (args.out / "peers.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
