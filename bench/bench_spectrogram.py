"""Benchmark: the spectrogram stage's process pool vs a serial loop of the same calls.

Clips come from the sample-audio generator (4 classes, mixed 16/22.05/44.1 kHz,
mono and stereo, PCM_16/PCM_24/FLOAT). Per clip, both sides make the same calls
(read, sha256 check, decode, mix to mono, resample, STFT + mel + dB per window,
PNG encode and write); only the number of processes differs. The ceiling is
decode-only throughput (read, check, decode, mix, resample) with the same pool.
The whole stage (including the manifest and the class-means montage) is timed
with workers=1 and workers=N as well. Configurations run interleaved, after a
warm-up pass; medians are reported, with how busy other processes kept the CPUs.

    python bench/bench_spectrogram.py [--per-class 100] [--duration 5] [--repeats 3]

Writes bench/results/spectrogram.json and .md (rows for docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from dlpipe.audio.spectrogram import prepare as prepare_transform
from dlpipe.core.config import SampleAudioConfig, load_project
from dlpipe.core.parallel import parallel_map
from dlpipe.data.manifest import load_manifest
from dlpipe.data.sample import generate_audio
from dlpipe.stages import ingest, spectrogram

from machine import CpuShare  # bench/ is on sys.path when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def prepare(per_class: int, duration: float, seed: int) -> Path:
    """Generate and ingest the clips once (cached under bench/data); return the params path."""
    workdir = HERE / "data" / f"spectrogram-{per_class}x{duration:g}s-{seed}"
    clips = workdir / "sounds"
    if not clips.exists():
        generate_audio(clips, SampleAudioConfig(per_class=per_class, duration=duration, sample_rates=[16000, 22050, 44100]), seed)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    from dlpipe.core.config import group_datasets
    params["datasets"] = group_datasets({"bench": {"modality": "audio", "source": "sounds"}})
    params["base"]["data_dir"] = "out"
    params_path = workdir / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    if not (workdir / "out/bench/ingest/manifest.csv").exists():
        ingest.run(load_project(params_path), "bench")
    return params_path


class DecodeOnly:
    """Picklable: the decode half of a clip's work (read, sha256 check, decode, mono, resample)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg

    def __call__(self, job) -> int:
        return spectrogram.decode_checked(job, self.cfg).size


def time_calls(function, jobs: list, workers: int) -> float:
    """Seconds to apply ``function`` to every job: a plain loop (workers=1) or the stage's process pool."""
    start = time.perf_counter()
    if workers == 1:
        results = [function(job) for job in jobs]
    else:
        results = parallel_map(function, jobs, workers, "bench", "clips")
    elapsed = time.perf_counter() - start
    assert len(results) == len(jobs)
    return elapsed


def time_transform(cfg, jobs: list, workers: int, labels: set[str], beside: Path) -> float:
    """Seconds for the per-clip work including PNG writes, into a fresh scratch folder on the stage's file system."""
    scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=beside))
    try:
        for label in labels:
            (scratch / "images" / label).mkdir(parents=True)
        transform = spectrogram.TransformClip(cfg, scratch, (cfg.db_min, cfg.db_max))
        return time_calls(transform, jobs, workers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def time_stage(params_path: Path, workers: int) -> float:
    project = load_project(params_path, [f"spectrogram.workers={workers}"])
    start = time.perf_counter()
    spectrogram.run(project, "bench")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=100, help="clips per class (4 classes)")
    parser.add_argument("--duration", type=float, default=5.0, help="mean clip length in seconds (±25%%)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes of the parallel side")
    args = parser.parse_args()

    params_path = prepare(args.per_class, args.duration, seed=0)
    project = load_project(params_path)
    cfg = project.params.spectrogram
    manifest = load_manifest(project, "bench")
    jobs = [spectrogram.ClipJob(manifest.resolve(row["path"]), row) for row in manifest.rows]
    labels = {row["label"] for row in manifest.rows}
    audio_seconds = sum(float(row["duration"]) for row in manifest.rows)
    prepare_transform(cfg)
    decode = DecodeOnly(cfg)
    time_transform(cfg, jobs, 1, labels, params_path.parent)  # warm-up: page cache, lazy imports, filter bank

    runs: dict[str, list[float]] = {
        key: []
        for key in ("transform_serial", "transform_parallel", "decode_serial", "decode_parallel", "stage_workers_1", "stage_parallel")
    }
    load = CpuShare()
    for _ in range(args.repeats):
        runs["transform_serial"].append(time_transform(cfg, jobs, 1, labels, params_path.parent))
        runs["transform_parallel"].append(time_transform(cfg, jobs, args.workers, labels, params_path.parent))
        runs["decode_serial"].append(time_calls(decode, jobs, 1))
        runs["decode_parallel"].append(time_calls(decode, jobs, args.workers))
        runs["stage_workers_1"].append(time_stage(params_path, 1))
        runs["stage_parallel"].append(time_stage(params_path, args.workers))
    machine_load = load.stop()

    rate = {name: round(audio_seconds / statistics.median(seconds), 1) for name, seconds in runs.items()}
    result = {
        "benchmark": "spectrogram",
        "clips": len(jobs),
        "seconds_of_audio": round(audio_seconds, 1),
        "windows_per_run": json.loads((params_path.parent / "out/bench/metrics/spectrogram.json").read_text())["windows"],
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "params": cfg.model_dump(exclude={"workers"}),
        "audio_seconds_per_second": rate,
        "parallel_vs_serial_transform": round(rate["transform_parallel"] / rate["transform_serial"], 2),
        "parallel_vs_serial_stage": round(rate["stage_parallel"] / rate["stage_workers_1"], 2),
        "transform_vs_decode_ceiling": round(rate["transform_parallel"] / rate["decode_parallel"], 2),
        "target_parallel_vs_serial": 1.7,
        "machine_load": machine_load,
        "raw_seconds": runs,
    }
    out = HERE / "results" / "spectrogram.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    rows = [
        "| what | serial (1 process) | parallel | ratio |",
        "|---|---|---|---|",
        f"| per-clip work (decode, mel, PNG) | {rate['transform_serial']:,.0f} s/s | {args.workers} processes "
        f"{rate['transform_parallel']:,.0f} s/s | **{result['parallel_vs_serial_transform']:.2f}x** |",
        f"| whole stage (plus manifest, montage) | workers=1 {rate['stage_workers_1']:,.0f} s/s | workers={args.workers} "
        f"{rate['stage_parallel']:,.0f} s/s | **{result['parallel_vs_serial_stage']:.2f}x** |",
        f"| decode only (the ceiling) | {rate['decode_serial']:,.0f} s/s | {rate['decode_parallel']:,.0f} s/s | "
        f"transform at **{result['transform_vs_decode_ceiling']:.2f}** of it |",
    ]
    (HERE / "results" / "spectrogram.md").write_text("\n".join(rows) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k not in ("raw_seconds", "params")}, indent=2))
    print("\n".join(rows))


if __name__ == "__main__":
    main()
