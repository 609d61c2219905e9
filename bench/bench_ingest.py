"""Benchmark: parallel ingest vs a single-process loop doing the same decode.

Both sides inspect the same >= 2,000 generated sample images with the same
function (read, sha256, full Pillow decode, RGB normalisation); only the number
of processes differs. Each configuration runs `--repeats` times, interleaved,
after one warm-up pass that fills the page cache; the median time of each is reported
(this machine's timings vary by ±15% from run to run).

    python bench/bench_ingest.py [--per-class 500] [--size 128] [--repeats 5]

Writes bench/results/ingest.json and prints a Markdown row for docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import yaml

from dlpipe.core.config import SampleImagesConfig, load_project
from dlpipe.core.parallel import parallel_map
from dlpipe.data.sample import generate_images
from dlpipe.stages import ingest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def prepare(per_class: int, size: int, seed: int) -> tuple[Path, Path]:
    """Generate the images once (cached under bench/data) and a params.yaml pointing at them."""
    workdir = HERE / "data" / f"ingest-{per_class}x{size}-{seed}"
    images = workdir / "shapes"
    if not images.exists():
        generate_images(images, SampleImagesConfig(per_class=per_class, size=size, jpeg_fraction=0.5), seed)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    from dlpipe.core.config import group_datasets
    params["datasets"] = group_datasets({"bench": {"modality": "image", "source": "shapes"}})
    params["base"]["data_dir"] = "out"
    params_path = workdir / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return workdir, params_path


def time_decode(project, workers: int) -> float:
    """Seconds for the decode phase alone: enumerate, then inspect every file."""
    spec = project.dataset("bench")
    candidates, _ = ingest.enumerate_candidates(project.resolve(spec.source), spec, "bench")
    inspect = ingest.inspector(spec, project.params.ingest)
    start = time.perf_counter()
    if workers == 1:
        outcomes = [inspect(candidate) for candidate in candidates]  # the plain single-process loop
    else:
        outcomes = parallel_map(inspect, candidates, workers, "bench", "images")
    elapsed = time.perf_counter() - start
    assert len(outcomes) == len(candidates) and all(o.accepted for o in outcomes)
    return elapsed


def time_stage(params_path: Path, workers: int) -> float:
    """Seconds for the whole ingest stage (decode, dedup, split, write outputs)."""
    project = load_project(params_path, [f"ingest.workers={workers}"])
    start = time.perf_counter()
    ingest.run(project, "bench")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=500, help="images per class (4 classes)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes of the parallel side")
    args = parser.parse_args()

    workdir, params_path = prepare(args.per_class, args.size, seed=0)
    project = load_project(params_path)
    n_images = 4 * args.per_class
    time_decode(project, 1)  # warm-up: page cache, lazy imports
    decode = {"serial": [], "parallel": []}
    stage = {"serial": [], "parallel": []}
    for _ in range(args.repeats):
        decode["serial"].append(time_decode(project, 1))
        decode["parallel"].append(time_decode(project, args.workers))
        stage["serial"].append(time_stage(params_path, 1))
        stage["parallel"].append(time_stage(params_path, args.workers))

    def rate(seconds: list[float]) -> float:
        return n_images / statistics.median(seconds)

    result = {
        "benchmark": "ingest",
        "images": n_images,
        "image_size": args.size,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "decode_images_per_s": {"serial_loop": rate(decode["serial"]), "parallel": rate(decode["parallel"])},
        "decode_speedup": statistics.median(decode["serial"]) / statistics.median(decode["parallel"]),
        "stage_images_per_s": {"workers_1": rate(stage["serial"]), "parallel": rate(stage["parallel"])},
        "stage_speedup": statistics.median(stage["serial"]) / statistics.median(stage["parallel"]),
        "target_speedup": 1.6,
        "raw_seconds": {"decode": decode, "stage": stage},
    }
    out = HERE / "results" / "ingest.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "raw_seconds"}, indent=2))
    print(
        f"| ingest decode, {n_images} images {args.size}px | serial loop {rate(decode['serial']):,.0f} img/s "
        f"| {args.workers} processes {rate(decode['parallel']):,.0f} img/s | **{result['decode_speedup']:.2f}x** |"
    )
    print(
        f"| ingest stage end to end | workers=1 {rate(stage['serial']):,.0f} img/s "
        f"| workers={args.workers} {rate(stage['parallel']):,.0f} img/s | **{result['stage_speedup']:.2f}x** |"
    )


if __name__ == "__main__":
    main()
