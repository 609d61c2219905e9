"""Benchmark: memory and throughput of ingest, embed, search build and cluster as the dataset grows.

Two parts, each step in a fresh process whose memory is sampled every 50 ms (the process and its
children, from /proc): peak resident memory in all (``rss``) and its anonymous part (``anon``: heap
and buffers, what cannot be dropped; ``rss`` also counts pages of memory-mapped files, which the
kernel reclaims under pressure). Both are proportional (``Pss``, ``Pss_Anon``): a page that forked
workers still share with their parent is counted once, not once per process.

1. **Images** (``--images``, e.g. 10k, 50k, 200k generated PNGs of 4 classes at ``--image-size`` px):
   the real stages through the CLI, as ``dvc repro`` runs them: ``ingest``, ``embed`` (a pretrained
   MobileNet alpha 0.25 at 32 px from ../shared/weights, passed by path, so no training is needed),
   ``search build`` and ``cluster``. ``embed`` also runs with ``embed.engine=ray`` (a local Ray on this
   machine) and its throughput is compared with the local engine's in the same run.
2. **Vectors** (``--vectors``, e.g. 1M and 5M clustered vectors of ``--dimension`` d, float32, in a
   memory-mapped .npy): the index build ``search build`` runs (``dlpipe.retrieval.index.build_index``
   with the ``index: auto`` choice for ``--budget-mb``, and for the largest set also with its lists on
   disk for ``--ondisk-budget-mb``), called directly, since a manifest of millions of generated rows
   would measure the manifest (Python rows, O(N)) rather than the index. Recall@10 of the built index
   against exact search on 200 queries, after tuning nprobe to 0.95, is reported beside it.

For each step: wall seconds, items per second, peak rss and anon; then per stage the slope of peak
anon memory against N (bytes per item, least squares), to compare with what each item inherently
needs (its embedding row, its manifest row, its index code).

    python bench/bench_scale.py [--images 10000 50000 200000] [--vectors 1000000 5000000] [--budget-mb 1024]

Writes bench/results/scale.json and bench/results/scale.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from machine import CpuShare, cpu_model  # bench/ is on sys.path when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WEIGHTS_FILE = "mobilenet_2_5_224_tf_no_top.h5"
CLASSES = ("circle", "square", "bar", "ring")
SAMPLE_SECONDS = 0.05


def weights_path() -> Path | None:
    """The shared MobileNet weights file, or None when it is not on this machine."""
    folder = Path(os.environ.get("DLPIPE_TEST_WEIGHTS_DIR", REPO.parent / "shared" / "weights"))
    path = folder / WEIGHTS_FILE
    return path if path.is_file() else None


def tree_memory(pid: int) -> tuple[int, int]:
    """(rss, anonymous rss) in bytes of a process and all its descendants, proportional to sharing, read from /proc."""
    total = anon = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in rollup.splitlines()[1:] if ":" in line)
        total += int(fields.get("Pss", "0 kB").split()[0]) * 1024
        anon += int(fields.get("Pss_Anon", "0 kB").split()[0]) * 1024
        pending += [int(child) for child in children]
    return total, anon


def measured(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``command``; its wall seconds and peak memory (rss, anon) over its whole process tree."""
    peak = [0, 0]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            rss, anon = tree_memory(process.pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], anon)
            done.wait(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, errors = process.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{errors[-3000:]}")
    return {"seconds": round(wall, 2), "peak_rss_mb": round(peak[0] / 2**20, 1), "peak_anon_mb": round(peak[1] / 2**20, 1)}


def generate_images(folder: Path, count: int, size: int, seed: int) -> None:
    """``count`` PNGs of four shape classes (one folder each), a shape of random colour, place and size each."""
    rng = np.random.default_rng(seed)
    for name in CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(count):
        label = CLASSES[i % len(CLASSES)]
        image = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 90, 3)))
        draw = ImageDraw.Draw(image)
        r = rng.uniform(0.2, 0.4) * size
        cx, cy = rng.uniform(r, size - r, 2)
        colour = tuple(int(v) for v in rng.integers(150, 256, 3))
        box = (cx - r, cy - r, cx + r, cy + r)
        if label == "circle":
            draw.ellipse(box, fill=colour)
        elif label == "square":
            draw.rectangle(box, fill=colour)
        elif label == "bar":
            draw.rectangle((cx - r, cy - r / 4, cx + r, cy + r / 4), fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=max(2, size // 12))
        image.save(folder / label / f"{i:07d}.png")


def image_project(root: Path, count: int, size: int, weights: Path) -> Path:
    """A project folder with ``count`` generated images and a params.yaml for the stages; its params path."""
    generate_images(root / "images", count, size, seed=count)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    from dlpipe.core.config import group_datasets
    params["datasets"] = group_datasets({"scale": {"modality": "image", "source": "images"}})
    params["embed"]["source"] = "backbone"
    params["embed"]["backbone"] = {"name": "mobilenet", "weights": str(weights), "alpha": 0.25, "image_size": size}
    params["embed"]["batch_size"] = 256
    params["search"]["examples"] = 0
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def images_part(sizes: list[int], image_size: int, ray: bool) -> list[dict]:
    """Every stage at every size; embed also on the Ray engine when ``ray``."""
    weights = weights_path()
    if weights is None:
        print(f"images part skipped: {WEIGHTS_FILE} not found (set DLPIPE_TEST_WEIGHTS_DIR)")
        return []
    dlpipe = str(Path(sys.executable).with_name("dlpipe"))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    rows = []
    for count in sizes:
        with tempfile.TemporaryDirectory(prefix="dlpipe-scale-") as folder:
            root = Path(folder)
            started = time.perf_counter()
            image_project(root, count, image_size, weights)
            print(f"{count} images generated in {time.perf_counter() - started:.0f} s", flush=True)
            steps = [
                ("ingest", [dlpipe, "ingest"]),
                ("embed", [dlpipe, "embed"]),
                ("search build", [dlpipe, "search", "build"]),
                ("cluster", [dlpipe, "cluster"]),
            ]
            if ray:
                steps.append(("embed (ray)", [dlpipe, "embed", "--set", "embed.engine=ray"]))
            for name, command in steps:
                result = measured(command, root, env)
                result.update(stage=name, count=count, items_per_second=round(count / result["seconds"], 1))
                if name.startswith("embed"):
                    metrics = json.loads((root / "data/scale/metrics/embed.json").read_text())
                    result["stage_images_per_second"] = metrics["images_per_second"]
                rows.append(result)
                print(json.dumps(result), flush=True)
    return rows


def clustered_vectors(path: Path, count: int, dimension: int, seed: int, chunk: int = 250_000) -> None:
    """``count`` unit vectors around 1,000 random centres, written chunk by chunk into a .npy (never all in memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((1000, dimension)).astype(np.float32)
    output = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(count, dimension))
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        block = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.standard_normal((n, dimension)).astype(np.float32)
        output[start : start + n] = block / np.linalg.norm(block, axis=1, keepdims=True)
    output.flush()
    del output


BUILD_SCRIPT = """
import json, sys, tempfile, time
from pathlib import Path
import numpy as np
from dlpipe.retrieval import index as faiss_index
path, budget, storage, out = sys.argv[1], int(sys.argv[2]) * 2**20, sys.argv[3], sys.argv[4]
vectors = np.load(path, mmap_mode="r")
choice = faiss_index.choose_index(vectors.shape[0], vectors.shape[1], budget, storage)
with tempfile.TemporaryDirectory(dir=Path(path).parent) as folder:
    start = time.perf_counter()
    if choice.storage == "ondisk":
        built = faiss_index.build_ondisk_index(vectors, choice.factory, Path(folder), memory_budget_bytes=budget, seed=0)
        index, shards, lists_mb = built.index, built.shards, round(built.lists_path.stat().st_size / 2**20, 1)
    else:
        index, shards, lists_mb = faiss_index.build_index(vectors, choice.factory, seed=0), 1, 0.0
    build = time.perf_counter() - start
    rng = np.random.default_rng(1)
    queries = np.ascontiguousarray(vectors[np.sort(rng.choice(vectors.shape[0], 200, replace=False))])
    true_ids = faiss_index.exact_search(vectors, queries, 10, "inner_product")[1]
    params, recall = faiss_index.tune_search_params(index, None, queries, true_ids, 10, 0.95)
json.dump({"factory": choice.factory, "storage": choice.storage, "shards": shards, "lists_on_disk_mb": lists_mb,
           "reason": choice.reason, "estimated_index_mb": round(choice.memory_bytes / 2**20, 1),
           "build_seconds": round(build, 2), "search_params": params, "recall_at_10": round(recall, 4)}, open(out, "w"))
"""


def vectors_part(sizes: list[int], dimension: int, budget_mb: int, ondisk_budget_mb: int, folder: Path) -> list[dict]:
    """Build the auto-chosen index over each size of vectors (and, for the largest, one with its lists on disk)."""
    rows = []
    for count in sizes:
        path = folder / f"vectors-{count}.npy"
        started = time.perf_counter()
        clustered_vectors(path, count, dimension, seed=count)
        print(f"{count} vectors written in {time.perf_counter() - started:.0f} s", flush=True)
        builds = [("search build (index)", budget_mb, "auto")]
        if count == max(sizes):
            builds.append(("search build (lists on disk)", ondisk_budget_mb, "ondisk"))
        for stage, budget, storage in builds:
            out = folder / "build.json"
            result = measured([sys.executable, "-c", BUILD_SCRIPT, str(path), str(budget), storage, str(out)], REPO)
            result.update(json.loads(out.read_text()), stage=stage, count=count, dimension=dimension, budget_mb=budget)
            result["items_per_second"] = round(count / result["build_seconds"], 1)
            result["matrix_mb"] = round(count * dimension * 4 / 2**20, 1)
            rows.append(result)
            print(json.dumps(result), flush=True)
        path.unlink()
    return rows


def slopes(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per stage, the least-squares slope of peak anon (and rss) memory against N, in bytes per item."""
    fitted = {}
    for stage in sorted({row["stage"] for row in rows}):
        points = [row for row in rows if row["stage"] == stage]
        if len(points) < 2:
            continue
        n = np.array([row["count"] for row in points], dtype=float)
        fitted[stage] = {
            key: round(float(np.polyfit(n, np.array([row[f"peak_{key}_mb"] for row in points]) * 2**20, 1)[0]), 1)
            for key in ("anon", "rss")
        }
    return fitted


def markdown(rows: list[dict], fitted: dict[str, dict[str, float]], load: dict | None) -> str:
    lines = [
        "| stage | N | seconds | items/s | peak anon MB | peak rss MB | notes |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        notes = ""
        if "factory" in row:
            notes = (
                f"{row['factory']} ({row['storage']}, {row['shards']} shard(s)), budget {row['budget_mb']} MB, est. index in memory "
                f"{row['estimated_index_mb']} MB, lists on disk {row['lists_on_disk_mb']} MB, matrix {row['matrix_mb']} MB, "
                f"recall@10 {row['recall_at_10']} at {row['search_params']}"
            )
        elif "stage_images_per_second" in row:
            notes = f"stage-reported {row['stage_images_per_second']} images/s"
        lines.append(
            f"| {row['stage']} | {row['count']:,} | {row['seconds']} | {row['items_per_second']:,} | "
            f"{row['peak_anon_mb']} | {row['peak_rss_mb']} | {notes} |"
        )
    lines += ["", "| stage | anon bytes per item | rss bytes per item |", "|---|---:|---:|"]
    lines += [f"| {stage} | {value['anon']} | {value['rss']} |" for stage, value in fitted.items()]
    lines += ["", f"CPU: {cpu_model()}, {os.cpu_count()} cores; load from other processes: {load}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, nargs="*", default=[10_000, 50_000, 200_000])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--vectors", type=int, nargs="*", default=[1_000_000, 5_000_000])
    parser.add_argument("--dimension", type=int, default=128)
    parser.add_argument("--budget-mb", type=int, default=1024, help="search.memory_budget_mb for the vector builds")
    parser.add_argument("--ondisk-budget-mb", type=int, default=128, help="budget of the largest set's build with its lists on disk")
    parser.add_argument("--no-ray", action="store_true", help="skip embed on the Ray engine")
    args = parser.parse_args()
    load = CpuShare()
    rows = images_part(args.images, args.image_size, not args.no_ray)
    folder = Path(tempfile.mkdtemp(prefix="dlpipe-scale-vectors-"))
    try:
        rows += vectors_part(args.vectors, args.dimension, args.budget_mb, args.ondisk_budget_mb, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    fitted = slopes(rows)
    load_share = load.stop()
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    record = {"rows": rows, "slopes_bytes_per_item": fitted, "load": load_share, "cpu": cpu_model(), "cores": os.cpu_count()}
    (results / "scale.json").write_text(json.dumps(record, indent=2) + "\n")
    (results / "scale.md").write_text(markdown(rows, fitted, load_share))
    print(markdown(rows, fitted, load_share))


if __name__ == "__main__":
    main()
