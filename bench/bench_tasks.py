"""Benchmark: what each task head costs in training, and how well each learns against its baselines.

Measured in one run:

- **head cost**: ``finetune`` on the same images (the sample shapes), backbone (small_cnn at 64 px),
  batch and epochs (early stopping off), once per head: classification (the shapes' classes),
  regression (the box's x_min), bbox and regions (the box) and keypoints (the box's two corners as
  points). Training images per second as the stage's metrics state it (fit time, validation
  included), the median of ``--repeats``, and each head's ratio to classification. Augmentation
  is a flip for every head, so the numeric heads pay for moving their targets in the pipeline.
- **quality, and pretrained vs from scratch** (``--quality``): the demo's four task datasets at
  the demo's params (small_cnn from scratch; the same figures ``dvc repro`` writes, training is
  seeded), so regions' derived boxes sit beside the bbox head's; and road (steering) and
  shapes_boxes once more with the same head on a frozen ImageNet MobileNet (alpha 0.25 at 128 px,
  from ../shared/weights), in the same run.

    python bench/bench_tasks.py [--repeats 3] [--epochs 5] [--quality] [--quick]

Writes tasks.json (every raw figure, machine facts) and tasks.md (the tables for docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import statistics
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

from bench_text import make_project  # bench/ is on sys.path when a benchmark runs as a script

from machine import CpuShare, cpu_model

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WEIGHTS = REPO.parent / "shared" / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
HEADS = ("classification", "regression", "bbox", "regions", "keypoints")


def corners_csv(boxes: Path, out: Path) -> None:
    """The shapes' boxes as two named points (top_left, bottom_right), for a keypoints head on the same images."""
    with open(boxes, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with open(out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "top_left_x", "top_left_y", "bottom_right_x", "bottom_right_y"])
        writer.writerows([r["path"], r["label"], r["x_min"], r["y_min"], r["x_max"], r["y_max"]] for r in rows)


def head_datasets(shapes: Path) -> dict[str, dict[str, Any]]:
    """One dataset per head, all on the shapes' images."""
    corners_csv(shapes / "boxes.csv", shapes / "corners.csv")
    boxes = str(shapes / "boxes.csv")
    return {
        "classification": {"modality": "image", "source": str(shapes)},
        "regression": {
            "modality": "image",
            "task": "regression",
            "source": boxes,
            "targets": {"columns": ["x_min"], "flip_invariant": ["x_min"]},
        },
        "bbox": {"modality": "image", "task": "bbox", "source": boxes},
        "regions": {"modality": "image", "task": "regions", "source": boxes},
        "keypoints": {
            "modality": "image",
            "task": "keypoints",
            "source": str(shapes / "corners.csv"),
            "targets": {"points": ["top_left", "bottom_right"]},
        },
    }


def bench_heads(root: Path, epochs: int, repeats: int) -> dict[str, Any]:
    """Training images/s of every head on the same images, backbone, batch and epochs."""
    from dlpipe.core.config import SampleImagesConfig, load_project
    from dlpipe.data.sample import generate_images
    from dlpipe.stages import finetune, ingest

    generate_images(root / "shapes", SampleImagesConfig(per_class=150, size=96, jpeg_fraction=0.5), seed=42)
    params = make_project(
        root,
        head_datasets(root / "shapes"),
        **{"finetune.head_epochs": epochs, "finetune.early_stopping_patience": epochs + 1, "finetune.augment.rotation": 0.0},
    )
    project = load_project(params)
    rates: dict[str, list[float]] = {head: [] for head in HEADS}
    for name in HEADS:
        ingest.run(project, name)
    for _ in range(repeats):
        for name in HEADS:  # interleaved, so a change in the machine's load touches every head alike
            rates[name].append(finetune.run(project, name).metrics["train_images_per_second"])
    medians = {head: statistics.median(values) for head, values in rates.items()}
    return {
        "images": 600,
        "epochs": epochs,
        "backbone": "small_cnn at 64 px",
        "runs": rates,
        "train_images_per_second": medians,
        "ratio_to_classification": {head: medians[head] / medians["classification"] for head in HEADS},
    }


def bench_quality(root: Path) -> dict[str, Any]:
    """The demo's four task datasets at the demo's params, and steering and bbox on a frozen pretrained MobileNet."""
    from dlpipe.core.config import load_project
    from dlpipe.stages import finetune, ingest
    from dlpipe.stages import sample as sample_stage

    shipped = load_project(REPO / "params.yaml")
    sources = {"images": "shapes", "road": "road", "triangles": "triangles"}
    for kind, folder in sources.items():
        sample_stage.run(shipped, kind, root / "sample" / folder)
    demo = {
        name: shipped.params.datasets[name].model_dump(exclude_defaults=True)
        for name in ("road", "shapes_boxes", "shapes_regions", "triangles")
    }
    demo["road"]["source"] = str(root / "sample" / "road" / "steering.csv")
    demo["shapes_boxes"]["source"] = demo["shapes_regions"]["source"] = str(root / "sample" / "shapes" / "boxes.csv")
    demo["triangles"]["source"] = str(root / "sample" / "triangles" / "corners.csv")
    for name in ("road", "shapes_boxes"):  # the same head on a frozen ImageNet backbone
        demo[f"{name}_pretrained"] = {**demo[name], "overrides": {**demo[name].get("overrides", {}), **PRETRAINED}}
    project = load_project(make_project(root, demo))
    figures: dict[str, Any] = {}
    for name in demo:
        ingest.run(project, name)
        metrics = finetune.run(project.for_dataset(name), name).metrics  # with the dataset's overrides, as the CLI runs it
        figures[name] = {k: v for k, v in metrics.items() if k.startswith("test_") and not isinstance(v, dict)}
        figures[name].update(epochs=metrics["epochs"], train_seconds=metrics["train_seconds"], backbone=metrics["backbone"])
    return figures


# MobileNet v1 alpha 0.25 from the shared ImageNet file, at 128 px (the file loads at any size by path).
PRETRAINED = {
    "finetune.backbone.name": "mobilenet",
    "finetune.backbone.weights": str(WEIGHTS),
    "finetune.backbone.alpha": 0.25,
    "finetune.backbone.image_size": 128,
    "finetune.head_epochs": 30,
}


def markdown(result: dict[str, Any]) -> str:
    """The tables for docs/BENCHMARKS.md."""
    h = result["heads"]
    lines = [
        f"Training throughput per head: {h['images']} shape images, {h['backbone']}, batch 16, {h['epochs']} epochs, "
        f"median of {result['repeats']} (`bench/bench_tasks.py`, {result['date']}, {result['cpu_count']} cores, "
        f"other processes {result['cpu_share']['other_processes_share']:.0%} of the CPUs)",
        "",
        "| head | train images/s | ratio to classification |",
        "|---|---:|---:|",
        *(f"| {head} | {h['train_images_per_second'][head]:.1f} | {h['ratio_to_classification'][head]:.2f}x |" for head in HEADS),
    ]
    q = result.get("quality")
    if q:
        lines += ["", "Quality at the demo's params; *_pretrained: the same head on a frozen MobileNet (test split):", ""]
        lines += ["| dataset | backbone | figures |", "|---|---|---|"]
        for name, figures in q.items():
            shown = ", ".join(
                f"{k.removeprefix('test_')} {v:.3f}" for k, v in figures.items() if k.startswith("test_") and k != "test_count"
            )
            lines.append(f"| {name} | {figures['backbone']} | {shown} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quality", action="store_true", help="also train the demo's task datasets and the pretrained baselines")
    parser.add_argument("--quick", action="store_true", help="one repeat of one epoch: check the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs = 1, 1
    if args.quality and not WEIGHTS.is_file():
        parser.error(f"--quality needs the pretrained MobileNet at {WEIGHTS}")
    root = HERE / "data" / "tasks"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.chdir(root)
    cpu = CpuShare()
    result: dict[str, Any] = {
        "benchmark": "tasks",
        "date": date.today().isoformat(),
        "quick": args.quick,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "versions": {name: metadata.version(name) for name in ("tensorflow", "keras", "numpy")},
    }
    (root / "heads").mkdir()
    result["heads"] = bench_heads(root / "heads", args.epochs, args.repeats)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tasks.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")  # kept if --quality fails
    if args.quality:
        (root / "quality").mkdir()
        result["quality"] = bench_quality(root / "quality")
    result["cpu_share"] = cpu.stop()
    (args.out / "tasks.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    (args.out / "tasks.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
