"""Benchmark: the text classifier (and the audio sequence model) against what a user would write by hand.

Data: news sentences of gensim's lee_background.cor against as many 20-word passages of its
stemmed Wikipedia sample (head500.noblanks.cor), written once as a fastText file and ingested
by dlpipe (not timed). Measured in one run, each figure the median of ``--repeats``:

- **training throughput per architecture**: ``finetune`` on that dataset for cnn, gru, lstm and
  bilstm at the same max_length, batch and epochs (early stopping off): training documents per
  second, as the stage's metrics state it (fit time, validation included);
- **dlpipe vs a plain Keras script**: the script a user writes from the Keras text-classification
  example: ``TextVectorization`` adapted on the training split and mapped over a ``tf.data``
  pipeline, the same CNN layers (embedding, Conv1D per width, 1-max pooling, dropout, softmax),
  Adam with the same learning rate and clipping, ``fit`` with validation for the same epochs on
  the same split; training documents per second and test accuracy, ratio dlpipe / script;
- **predict**: ``dlpipe predict`` (query API: tokenise, encode, predict, answers) over every
  document vs ``model.predict`` on the same documents already encoded, same batch size;
- **word2vec start vs random start** on the 200-sentence polarity sample (the demo's reviews),
  started from the demo's news vectors, over ``--seeds`` seeds each;
- **audio CNN vs GRU** on the sample sounds (``--audio``): test accuracy and training time.

    python bench/bench_text.py [--repeats 3] [--epochs 5] [--seeds 5] [--audio] [--quick]

Writes text.json (every raw figure, machine facts) and text.md (the tables for docs/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import time
from datetime import date
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from machine import CpuShare, cpu_model  # bench/ is on sys.path when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ARCHITECTURES = ("cnn", "gru", "lstm", "bilstm")
PASSAGE_WORDS = 20


def gensim_file(name: str) -> Path:
    """A file of gensim's bundled test data."""
    import gensim

    return Path(gensim.__file__).parent / "test" / "test_data" / name


def build_dataset(path: Path, limit: int) -> int:
    """News sentences vs encyclopedia passages (``limit`` per class at most) as fastText lines; return the count."""
    text = gensim_file("lee_background.cor").read_text(encoding="utf-8")
    news = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.split()) >= 6][:limit]
    tokens = gensim_file("head500.noblanks.cor").read_text(encoding="utf-8").split()
    step = max(PASSAGE_WORDS, len(tokens) // len(news))
    wiki = [" ".join(tokens[i : i + PASSAGE_WORDS]) for i in range(0, step * len(news), step)]
    lines = [f"__label__news {s}" for s in news] + [f"__label__encyclopedia {s}" for s in wiki]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def make_project(root: Path, datasets: dict[str, Any], **overrides: Any) -> Path:
    """The shipped params with these datasets (name -> entry with its modality); ``overrides`` are dotted keys."""
    from dlpipe.core.config import group_datasets

    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["datasets"] = group_datasets(datasets)
    params["ingest"]["workers"] = 1
    for key, value in overrides.items():
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = value
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def plain_keras(manifest: Any, cfg: Any, epochs: int, seed: int) -> dict[str, float]:
    """The hand-written script: TextVectorization + the same CNN layers + fit; docs/s and test accuracy."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    documents = manifest.documents
    classes = manifest.classes
    labels = np.array([classes.index(row["label"]) for row in manifest.rows])

    def split(name: str) -> tuple[list[str], np.ndarray]:
        rows = manifest.split(name)
        return [documents[i] for i in rows], labels[rows]

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split("train"), split("val"), split("test")
    vectorize = keras.layers.TextVectorization(max_tokens=cfg.max_vocabulary, output_sequence_length=cfg.max_length)
    vectorize.adapt(tf.data.Dataset.from_tensor_slices(train_x).batch(256))

    def pipeline(x: list[str], y: np.ndarray, shuffle: bool) -> tf.data.Dataset:
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            dataset = dataset.shuffle(len(x), seed=seed)
        return dataset.batch(cfg.batch_size).map(lambda t, label: (vectorize(t), label)).cache().prefetch(tf.data.AUTOTUNE)

    inputs = keras.Input((cfg.max_length,), dtype="int64")
    x = keras.layers.Embedding(cfg.max_vocabulary, cfg.embedding_dim)(inputs)
    convolutions = [keras.layers.Conv1D(cfg.cnn.filters, w, padding="same", activation="relu")(x) for w in cfg.cnn.widths]
    pooled = [keras.layers.GlobalMaxPooling1D()(c) for c in convolutions]
    x = keras.layers.Dropout(cfg.dropout)(keras.layers.Concatenate()(pooled))
    model = keras.Model(inputs, keras.layers.Dense(len(classes), activation="softmax")(x))
    model.compile(
        optimizer=keras.optimizers.Adam(cfg.lr, clipnorm=cfg.clipnorm or None), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    train, val, test = pipeline(train_x, train_y, True), pipeline(val_x, val_y, False), pipeline(test_x, test_y, False)
    started = time.perf_counter()
    model.fit(train, validation_data=val, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - started
    accuracy = float((model.predict(test, verbose=0).argmax(axis=1) == test_y).mean())
    return {"train_documents_per_second": len(train_x) * epochs / seconds, "test_accuracy": accuracy}


def bench_training(root: Path, count: int, epochs: int, repeats: int, architectures: tuple[str, ...] = ARCHITECTURES) -> dict[str, Any]:
    """Throughput per architecture (``cnn`` among them), and dlpipe's CNN against the plain Keras script."""
    from dlpipe.core.config import load_project
    from dlpipe.data.manifest import load_text_manifest
    from dlpipe.stages import finetune_text, ingest

    source = root / "corpora.txt"
    build_dataset(source, count // 2)
    params = make_project(
        root,
        {"corpora": {"modality": "text", "labels": "fasttext", "source": str(source)}},
        **{"finetune.text.epochs": epochs, "finetune.early_stopping_patience": epochs + 1, "finetune.text.max_length": 64},
    )
    ingest.run(load_project(params), "corpora")
    figures: dict[str, list[dict[str, float]]] = {name: [] for name in (*architectures, "keras_script")}
    for repeat in range(repeats):
        for architecture in architectures:
            metrics = finetune_text.run(load_project(params, [f"finetune.text.architecture={architecture}"]), "corpora").metrics
            figures[architecture].append(
                {"train_documents_per_second": metrics["train_documents_per_second"], "test_accuracy": metrics["test_accuracy"]}
            )
        project = load_project(params)
        figures["keras_script"].append(plain_keras(load_text_manifest(project, "corpora"), project.params.finetune.text, epochs, repeat))
    # Leave the CNN model in place for the predict benchmark.
    finetune_text.run(load_project(params), "corpora")
    summary = {
        name: {key: statistics.median(run[key] for run in runs) for key in runs[0]} for name, runs in figures.items()
    }
    rate = "train_documents_per_second"
    summary["ratio_cnn_vs_keras_script"] = summary["cnn"][rate] / summary["keras_script"][rate]
    return {"documents": count, "epochs": epochs, "runs": figures, "median": summary, "params": str(params)}


def bench_predict(root: Path, repeats: int) -> dict[str, Any]:
    """dlpipe predict over every document vs model.predict on the same documents pre-encoded."""
    from dlpipe.core.config import load_project
    from dlpipe.data.manifest import load_text_manifest
    from dlpipe.models.store import load_trained_model
    from dlpipe.queries import predict
    from dlpipe.text.encoding import encode_documents

    project = load_project(root / "params.yaml")
    documents = load_text_manifest(project, "corpora").documents
    model_dir = project.layout("corpora").model_dir
    trained = load_trained_model(model_dir)
    ids = encode_documents(trained, documents).ids
    trained.model.predict(ids[:256], batch_size=256, verbose=0)  # trace once, outside both timings
    dlpipe_rates, model_rates = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        predict.run(model_dir, documents, k=1)
        dlpipe_rates.append(len(documents) / (time.perf_counter() - started))
        started = time.perf_counter()
        trained.model.predict(ids, batch_size=256, verbose=0)
        model_rates.append(len(documents) / (time.perf_counter() - started))
    d, m = statistics.median(dlpipe_rates), statistics.median(model_rates)
    return {"documents": len(documents), "dlpipe_documents_per_second": d, "model_documents_per_second": m, "ratio": d / m}


def bench_word2vec_start(root: Path, seeds: int) -> dict[str, Any]:
    """Test accuracy on the polarity sample, embeddings from the demo's news vectors vs from scratch, per seed."""
    from dlpipe.core.config import load_project
    from dlpipe.data.sample import generate_reviews, generate_text
    from dlpipe.stages import finetune_text, ingest, word2vec

    generate_text(root / "news")
    generate_reviews(root / "reviews")
    reviews = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["datasets"]["text"]["reviews"] | {"modality": "text"}
    # The shipped dataset names the demo's vectors in its overrides; here the start is what varies.
    overrides = {key: value for key, value in reviews["overrides"].items() if key != "finetune.text.word2vec"}
    params = make_project(
        root,
        {
            "news": {"modality": "text", "source": str(root / "news" / "lee_background.cor")},
            "reviews": reviews | {"source": str(root / "reviews" / "pang_lee_polarity.cor"), "overrides": overrides},
        },
    )
    project = load_project(params)
    ingest.run(project, "news")
    ingest.run(project.for_dataset("reviews"), "reviews")
    vectors = word2vec.run(project, "news").out_dir
    accuracy: dict[str, list[float]] = {"word2vec": [], "random": []}
    for seed in range(seeds):
        for start, setting in (("word2vec", str(vectors)), ("random", "none")):
            run = load_project(params, [f"base.seed={seed}", f"finetune.text.word2vec={setting}"]).for_dataset("reviews")
            accuracy[start].append(finetune_text.run(run, "reviews").metrics["test_accuracy"])
    return {
        "seeds": seeds,
        "accuracy": accuracy,
        "mean": {key: statistics.mean(values) for key, values in accuracy.items()},
        "stdev": {key: statistics.pstdev(values) for key, values in accuracy.items()},
    }


def bench_audio(root: Path) -> dict[str, Any]:
    """The sample sounds: the image CNN on each window vs a GRU over its mel frames."""
    from dlpipe.core.config import load_project
    from dlpipe.data.sample import generate_audio
    from dlpipe.stages import finetune, ingest, spectrogram

    shipped = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["datasets"]["audio"]
    params = make_project(root, {"sounds": shipped["sounds"] | {"modality": "audio", "source": str(root / "sounds")}})
    project = load_project(params)
    generate_audio(root / "sounds", project.params.sample.audio, project.params.base.seed)
    ingest.run(project.for_dataset("sounds"), "sounds")
    spectrogram.run(project.for_dataset("sounds"), "sounds")
    found = {}
    for architecture in ("none", "gru"):
        run = load_project(params, [f"finetune.audio_sequence.architecture={architecture}"]).for_dataset("sounds")
        metrics = finetune.run(run, "sounds").metrics
        found["cnn" if architecture == "none" else architecture] = {
            key: metrics[key] for key in ("test_accuracy", "test_count", "epochs", "train_seconds", "train_images_per_second")
        }
    return found


def markdown(result: dict[str, Any]) -> str:
    """The tables for docs/BENCHMARKS.md."""
    t = result["training"]["median"]
    others = result["cpu_share"]["other_processes_share"] if result["cpu_share"] else float("nan")
    lines = [
        f"Text classifier ({result['date']}, {result['cpu_count']} cores, {result['cpu_model']}; "
        f"{result['training']['documents']} documents, {result['training']['epochs']} epochs, max_length 64, batch 64; "
        f"median of {result['repeats']}; other processes' CPU share {others}):",
        "",
        "| model | train documents/s | test accuracy |",
        "|---|---|---|",
        *(f"| dlpipe {name} | {t[name]['train_documents_per_second']:,.0f} | {t[name]['test_accuracy']:.3f} |" for name in ARCHITECTURES),
        f"| plain Keras script (TextVectorization + the same CNN) | {t['keras_script']['train_documents_per_second']:,.0f} | "
        f"{t['keras_script']['test_accuracy']:.3f} |",
        f"| **ratio dlpipe cnn / script** | **{t['ratio_cnn_vs_keras_script']:.2f}x** | |",
        "",
    ]
    p = result["predict"]
    lines += [
        f"predict over {p['documents']} documents: dlpipe {p['dlpipe_documents_per_second']:,.0f} documents/s, "
        f"model.predict on pre-encoded ids {p['model_documents_per_second']:,.0f}: **{p['ratio']:.2f}x**.",
        "",
    ]
    w = result["word2vec_start"]
    lines += [
        f"Polarity sample (200 sentences, 30 test), over {w['seeds']} seeds: word2vec start "
        f"{w['mean']['word2vec']:.3f} ± {w['stdev']['word2vec']:.3f}, random start {w['mean']['random']:.3f} ± {w['stdev']['random']:.3f}.",
        "",
    ]
    if result.get("audio"):
        a = result["audio"]
        lines += [
            "Sample sounds, test windows: " + "; ".join(
                f"{name} accuracy {v['test_accuracy']:.3f} of {v['test_count']} in {v['epochs']} epochs, {v['train_seconds']:.0f} s"
                for name, v in a.items()
            ) + ".",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--documents", type=int, default=3000, help="documents in the throughput dataset (both classes)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--audio", action="store_true", help="also compare the audio CNN and GRU (a few minutes)")
    parser.add_argument("--quick", action="store_true", help="one repeat, one epoch, two seeds: check the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs, args.seeds, args.documents = 1, 1, 2, 600
    root = HERE / "data" / "text"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    os.chdir(root)
    cpu = CpuShare()
    result: dict[str, Any] = {
        "benchmark": "text",
        "date": date.today().isoformat(),
        "quick": args.quick,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "versions": {name: metadata.version(name) for name in ("tensorflow", "keras", "numpy", "gensim")},
    }
    (root / "throughput").mkdir()
    result["training"] = bench_training(root / "throughput", args.documents, args.epochs, args.repeats)
    result["predict"] = bench_predict(root / "throughput", args.repeats)
    (root / "polarity").mkdir()
    result["word2vec_start"] = bench_word2vec_start(root / "polarity", args.seeds)
    if args.audio:
        (root / "audio").mkdir()
        result["audio"] = bench_audio(root / "audio")
    result["cpu_share"] = cpu.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    (args.out / "text.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
