"""Benchmark: dlpipe's embed pipeline vs the bare model, a naive loop, and training.

For each of two extractors -- ``small_cnn`` at 64 px (random init: speed does not
depend on the weights) and MobileNet v1 alpha 0.25 at 224 px with its real
ImageNet weights, built through dlpipe's registry exactly as a user's
``embed.source: backbone`` would -- on the same >= 1,000 generated sample images
(4 classes, 96 px, half PNG, half JPEG), it measures:

1. **dlpipe end to end**: the real stage ``embed.run`` (load the manifest, build
   the model, read, decode, resize, forward, L2-normalise, write a memory-mapped
   ``embeddings.npy`` plus its sidecar), timed whole because that is what a user
   waits for; and ``write_embeddings`` alone (the streaming pipeline, model
   already built). The pipeline's throughput is the time ``write_embeddings``
   reports: read, decode, resize, forward, normalise and write of every image,
   after its one-time graph tracing (which is reported separately as wall minus
   reported time).
2. **model-only ceiling**: the same extractor's forward pass,
   ``model(images, training=False)`` in a traced ``tf.function``, over the same
   images already decoded and resized into float32 tensors in memory (one per
   batch, so no conversion is timed), same batch size. Ratio = pipeline rate /
   model-only rate (target >= 0.9).
3. **naive loop**: per image, Pillow decode + resize, then
   ``model.predict(image[None], verbose=0)``. It is slow, so it runs on a subset
   (``--naive-images``) and its rate is extrapolated. Ratio = dlpipe / naive
   (expected >= 10x).
4. **input pipeline alone**: iterating dlpipe's ``image_dataset`` batches with no
   model (read, decode, resize, batch), to tell whether decoding or the model
   bounds the end-to-end rate.
5. **training vs inference** (small_cnn only): images/s of one ``model.fit`` epoch
   over the same images (``build_network`` from params.yaml's finetune section,
   weights none, batch ``--train-batch-size``, compiled as finetune compiles it,
   the tf.data input finetune uses) vs the model-only inference rate of (2).

Every measurement is warmed up once (page cache, graph tracing), then repeated
``--repeats`` times, interleaved; medians are reported. Timings on a shared
2-core machine vary, so the load average is recorded with the results.

    python bench/bench_embed.py [--per-class 250] [--size 96] [--repeats 3] [--batch-size 64]

Writes bench/results/embed.json (every raw timing) and prints Markdown rows for
docs/BENCHMARKS.md. The MobileNet part needs ``mobilenet_2_5_224_tf_no_top.h5``
in ``$DLPIPE_TEST_WEIGHTS_DIR`` or ``<repo>/../shared/weights/``; without it that
model is skipped with a message.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's start-up chatter out of the results

import argparse
import contextlib
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import yaml
from PIL import Image

from dlpipe.core.config import BackboneConfig, SampleImagesConfig, load_project
from dlpipe.data.manifest import load_manifest
from dlpipe.data.sample import generate_images
from dlpipe.models.backbones import OFFLINE_ENV, get_spec, imagenet_weights_file
from dlpipe.models.extractor import write_embeddings
from dlpipe.models.heads.registry import head_class
from dlpipe.models.inputs import image_dataset, needs_pillow
from dlpipe.models.network import backbone_embedding_model, build_network
from dlpipe.stages import embed, ingest

from machine import CpuShare  # bench/ is on sys.path when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DATASET = "bench"
WEIGHTS_ENV = "DLPIPE_TEST_WEIGHTS_DIR"

# name -> embed.backbone settings
MODELS = {
    "small_cnn": {"name": "small_cnn", "weights": "none", "alpha": 1.0, "image_size": 64},
    "mobilenet_0.25": {"name": "mobilenet", "weights": "imagenet", "alpha": 0.25, "image_size": 224},
}


def prepare(per_class: int, size: int, seed: int) -> Path:
    """Generate the images once (cached under bench/data), write params.yaml, ingest; return the params path."""
    workdir = HERE / "data" / f"embed-{per_class}x{size}-{seed}"
    images = workdir / "shapes"
    if not images.exists():
        generate_images(images, SampleImagesConfig(per_class=per_class, size=size, jpeg_fraction=0.5), seed)
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    from dlpipe.core.config import group_datasets
    params["datasets"] = group_datasets({DATASET: {"modality": "image", "source": "shapes"}})
    params["base"]["data_dir"] = "out"
    params["base"]["seed"] = seed
    params["embed"]["source"] = "backbone"
    params_path = workdir / "params.yaml"
    params_path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    ingest.run(load_project(params_path), DATASET)
    return params_path


def weights_dir() -> Path:
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else REPO.parent / "shared" / "weights"


@contextlib.contextmanager
def keras_home_with(backbone: dict) -> Iterator[str | None]:
    """A temporary KERAS_HOME whose models/ holds the ImageNet file ``backbone`` needs.

    Yields None when no weights are needed, or a reason string when the file is unavailable.
    """
    if backbone["weights"] != "imagenet":
        yield None
        return
    file = imagenet_weights_file(BackboneConfig(**backbone), "embed.backbone")
    source = weights_dir() / file
    if not source.is_file():
        yield f"{file} not found in {weights_dir()} (set {WEIGHTS_ENV})"
        return
    saved = {key: os.environ.get(key) for key in ("KERAS_HOME", OFFLINE_ENV)}
    with tempfile.TemporaryDirectory(prefix="dlpipe-bench-keras-") as home:
        (Path(home) / "models").mkdir()
        shutil.copyfile(source, Path(home) / "models" / file)
        os.environ["KERAS_HOME"] = home
        os.environ[OFFLINE_ENV] = "1"  # never try a download: the file must come from the cache, as for a user offline
        try:
            yield None
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def overrides(backbone: dict, batch_size: int) -> list[str]:
    return [f"embed.backbone.{key}={value}" for key, value in backbone.items()] + [f"embed.batch_size={batch_size}"]


def decode_all(manifest, image_size: int, batch_size: int) -> list[tf.Tensor]:
    """Every image decoded and resized by dlpipe's own input pipeline, as float32 tensors, one per batch."""
    batches = image_dataset(manifest.paths(), [needs_pillow(r) for r in manifest.rows], image_size, batch_size)
    return [tf.identity(batch) for batch in batches]


def time_model_only(forward, batches: list[tf.Tensor]) -> float:
    """Seconds for the forward pass over pre-decoded float32 tensors, batch by batch, results fetched to numpy."""
    start = time.perf_counter()
    for batch in batches:
        forward(batch).numpy()
    return time.perf_counter() - start


def traced_forward(model, image_size: int):
    """model(images, training=False) in a tf.function, traced before any timing."""
    forward = tf.function(
        lambda images: model(images, training=False),
        input_signature=[tf.TensorSpec((None, image_size, image_size, 3), tf.float32)],
    )
    forward.get_concrete_function()
    return forward


def time_input_only(manifest, image_size: int, batch_size: int) -> float:
    """Seconds to iterate dlpipe's image_dataset as embed builds it (read, decode, resize, batch) with no model."""
    paths, pillow = manifest.paths(), [needs_pillow(r) for r in manifest.rows]
    batches = image_dataset(paths, pillow, image_size, batch_size, dtype=tf.uint8)
    start = time.perf_counter()
    for _ in batches:
        pass
    return time.perf_counter() - start


def time_naive(model, paths: list[Path], image_size: int) -> float:
    """Seconds for the naive loop: Pillow decode + resize, then model.predict on a batch of one, per image."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB").resize((image_size, image_size), Image.BILINEAR), dtype=np.float32)
        model.predict(pixels[None], verbose=0)
    return time.perf_counter() - start


def time_write(extractor, manifest, batch_size: int, normalize: bool, folder: Path) -> tuple[float, float]:
    """(wall seconds, seconds embed reports) for ``write_embeddings`` into a fresh .npy."""
    path = folder / "embeddings.npy"
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    inner, _ = write_embeddings(path, extractor, manifest, batch_size, normalize)
    return time.perf_counter() - start, inner


def time_stage(params_path: Path, backbone: dict, batch_size: int) -> tuple[float, float]:
    """(wall seconds, seconds embed reports for its pipeline) for the whole ``embed.run``."""
    project = load_project(params_path, overrides(backbone, batch_size))
    start = time.perf_counter()
    result = embed.run(project, DATASET)
    wall = time.perf_counter() - start
    return wall, result.count / result.metrics["images_per_second"]


def bench_model(label: str, backbone: dict, params_path: Path, args) -> dict:
    """All embed measurements of one extractor; raw seconds plus derived rates."""
    project = load_project(params_path, overrides(backbone, args.batch_size))
    cfg = project.params.embed
    manifest = load_manifest(project, DATASET)
    n = len(manifest.rows)
    size = cfg.backbone.image_size
    keras.utils.set_random_seed(project.params.base.seed)
    model = backbone_embedding_model(cfg.backbone, key="embed.backbone")
    spec = get_spec(cfg.backbone.name)
    extractor = embed.Extractor(model, size, {"source": "backbone", "preprocessing": spec.preprocessing})
    images = decode_all(manifest, size, args.batch_size)
    naive_paths = manifest.paths()[: min(args.naive_images, n)]
    forward = traced_forward(model, size)
    raw: dict[str, list[float]] = {
        "stage_wall": [], "stage_reported": [], "write_wall": [], "write_reported": [],
        "model_only": [], "input_only": [], "naive_subset": [],
    }
    with tempfile.TemporaryDirectory(prefix="dlpipe-bench-embed-") as scratch:
        # warm-up: page cache, lazy imports, tracing of the long-lived tf.function and of predict
        time_stage(params_path, backbone, args.batch_size)
        time_write(extractor, manifest, args.batch_size, cfg.normalize, Path(scratch))
        time_model_only(forward, images)
        time_input_only(manifest, size, args.batch_size)
        time_naive(model, naive_paths[:2], size)
        for repeat in range(args.repeats):
            for key, value in zip(("stage_wall", "stage_reported"), time_stage(params_path, backbone, args.batch_size), strict=True):
                raw[key].append(value)
            for key, value in zip(
                ("write_wall", "write_reported"),
                time_write(extractor, manifest, args.batch_size, cfg.normalize, Path(scratch)),
                strict=True,
            ):
                raw[key].append(value)
            raw["model_only"].append(time_model_only(forward, images))
            raw["input_only"].append(time_input_only(manifest, size, args.batch_size))
            raw["naive_subset"].append(time_naive(model, naive_paths, size))
            print(f"{label}: repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)

    def rate(key: str, count: int = n) -> float:
        return count / statistics.median(raw[key])

    rates = {
        "stage": rate("stage_wall"),
        "pipeline": rate("write_reported"),
        "write_embeddings_wall": rate("write_wall"),
        "model_only": rate("model_only"),
        "input_only": rate("input_only"),
        "naive_extrapolated": rate("naive_subset", len(naive_paths)),
    }
    return {
        "backbone": backbone,
        "images": n,
        "image_size": size,
        "dimension": int(model.output_shape[-1]),
        "naive_subset_images": len(naive_paths),
        "images_per_s": rates,
        # fastest repeat of each: a check on the medians where other jobs share the machine
        "images_per_s_best": {
            key: (len(naive_paths) if key == "naive_subset" else n) / min(values) for key, values in raw.items()
            if not key.endswith("_reported")
        },
        "ratio_pipeline_vs_model_only": rates["pipeline"] / rates["model_only"],
        "ratio_stage_vs_model_only": rates["stage"] / rates["model_only"],
        "tracing_seconds": statistics.median(raw["write_wall"]) - statistics.median(raw["write_reported"]),
        "ratio_pipeline_vs_naive": rates["pipeline"] / rates["naive_extrapolated"],
        "ratio_stage_vs_naive": rates["stage"] / rates["naive_extrapolated"],
        "raw_seconds": raw,
    }


def bench_training(params_path: Path, args) -> dict:
    """Seconds per model.fit epoch of small_cnn over every image, as finetune trains it."""
    project = load_project(
        params_path,
        [
            "finetune.backbone.name=small_cnn", "finetune.backbone.weights=none", "finetune.backbone.image_size=64",
            f"finetune.batch_size={args.train_batch_size}",
        ],
    )
    cfg = project.params.finetune
    seed = project.params.base.seed
    manifest = load_manifest(project, DATASET)
    classes = {label: i for i, label in enumerate(manifest.classes)}
    keras.utils.set_random_seed(seed)
    model, _ = build_network(cfg, head_class("classification")(), len(classes), seed)
    model.compile(optimizer=keras.optimizers.Adam(cfg.head_lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    data = image_dataset(
        manifest.paths(), [needs_pillow(r) for r in manifest.rows], cfg.backbone.image_size, cfg.batch_size,
        [classes[r["label"]] for r in manifest.rows], shuffle_seed=seed, cache=True,  # finetune caches what fits
    )
    model.fit(data, epochs=1, verbose=0, shuffle=False)  # warm-up: tracing, fills the cache
    epochs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        epochs.append(time.perf_counter() - start)
    return {
        "images": len(manifest.rows),
        "image_size": cfg.backbone.image_size,
        "batch_size": cfg.batch_size,
        "images_per_s": len(manifest.rows) / statistics.median(epochs),
        "raw_seconds": {"epoch": epochs},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=250, help="images per class (4 classes)")
    parser.add_argument("--size", type=int, default=96, help="side of the generated images in pixels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64, help="embed batch size (params.yaml embed.batch_size)")
    parser.add_argument("--naive-images", type=int, default=100, help="images the naive per-image loop runs on")
    parser.add_argument("--train-batch-size", type=int, default=32, help="batch size of the training comparison")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args()

    load_before = os.getloadavg()
    cpu_total = CpuShare()
    params_path = prepare(args.per_class, args.size, seed=0)
    models: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for label in args.models:
        with keras_home_with(MODELS[label]) as reason:
            if reason:
                skipped[label] = reason
                print(f"skipping {label}: {reason}", file=sys.stderr)
                continue
            cpu = CpuShare()
            models[label] = bench_model(label, MODELS[label], params_path, args)
            models[label]["cpu_share"] = cpu.stop()
    training = None
    if "small_cnn" in models:
        cpu = CpuShare()
        training = bench_training(params_path, args)
        training["cpu_share"] = cpu.stop()
    load_after = os.getloadavg()
    cpu_share = cpu_total.stop()

    result = {
        "benchmark": "embed",
        "images": 4 * args.per_class,
        "source_image_size": args.size,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpu_share": cpu_share,
        "target_ratio_vs_model_only": 0.9,
        "target_ratio_vs_naive": 10.0,
        "models": models,
        "skipped": skipped,
        "training_small_cnn": training,
    }
    if training:
        inference = models["small_cnn"]["images_per_s"]["model_only"]
        result["inference_vs_training_small_cnn"] = inference / training["images_per_s"]
    out = HERE / "results" / "embed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")

    def strip(node):
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "raw_seconds"}
        return node

    print(json.dumps(strip(result), indent=2))
    if cpu_share and cpu_share["other_processes_share"] > 0.05:
        print(
            f"WARNING: other processes used {cpu_share['other_processes_share']:.0%} of the CPUs during the run "
            "(timings are disturbed; rerun on an idle machine)",
            file=sys.stderr,
        )
    for label, m in models.items():
        r, what = m["images_per_s"], f"{m['images']:,} images, {label} {m['image_size']} px"
        print(
            f"| embed pipeline vs model only, {what} | model only {r['model_only']:,.0f} img/s "
            f"| pipeline {r['pipeline']:,.0f} img/s (`embed.run` wall {r['stage']:,.0f}; input alone {r['input_only']:,.0f}) "
            f"| **{m['ratio_pipeline_vs_model_only']:.2f}** ({m['ratio_stage_vs_model_only']:.2f}) |"
        )
        print(
            f"| embed pipeline vs naive predict loop, {what} | naive {r['naive_extrapolated']:,.1f} img/s "
            f"({m['naive_subset_images']} images, extrapolated) | {r['pipeline']:,.0f} img/s "
            f"| **{m['ratio_pipeline_vs_naive']:.0f}x** ({m['ratio_stage_vs_naive']:.0f}x) |"
        )
    if training:
        print(
            f"| small_cnn training vs inference, {training['images']:,} images 64 px | training "
            f"{training['images_per_s']:,.0f} img/s (batch {training['batch_size']}) "
            f"| inference {models['small_cnn']['images_per_s']['model_only']:,.0f} img/s "
            f"| **{result['inference_vs_training_small_cnn']:.1f}x** |"
        )


if __name__ == "__main__":
    main()
