"""Benchmark: dlpipe against what a user would write by hand (issue 19), every comparison in one run.

Each section compares dlpipe with its baseline in the same run, on the same data, and reports the ratio:

- **finetune** (peers_images.py): ``dlpipe finetune`` against the plain transfer-learning script of Keras'
  guide, both on dlpipe's split of the demo's shapes, MobileNet (alpha 0.25, ImageNet weights from
  ../shared/weights) frozen at 224 px, batch 32, the same epochs and learning rate, with no augmentation
  and with the guide's (flip + rotation 0.1): train images/s over ``fit`` (validation included) and
  test accuracy, seed = repeat on both sides;
- **embed**: ``dlpipe embed`` against ``model.predict`` over ``image_dataset_from_directory`` with the
  same trained network, images/s after the first (tracing) call on both sides;
- **word2vec**: ``dlpipe word2vec train`` against gensim direct (``corpus_file`` and an iterator) on an
  800k-token corpus at the shipped params (bench_word2vec.py), then each mode at 1 and 2 workers;
- **kmeans**: dlpipe's ``kmeans`` against scikit-learn's ``KMeans`` per iteration from random starts
  (bench_cluster.py), and each with its own defaults;
- **search**: dlpipe's ``index: auto`` choice against the index autofaiss chooses for the same vectors
  and memory budget (autofaiss runs in a venv of its own: it pins numpy < 2), both tuned to recall@10 >= 0.95;
- **text**: dlpipe's text CNN against the plain ``TextVectorization`` script (bench_text.py);
- **overhead**: each stage's command in a fresh process (cold) against the same stage's ``run()`` the
  second time in one process (its core work: every import done, every JIT-compiled function compiled);
  target ``cold <= 1.5 x core + 3 s``;
- **demo** (peers_demo.py): ``dvc repro`` of a fresh clone, its wall time split into the stages' work,
  process start-up and imports, and DVC; target wall <= 1.3 x work.

    python bench/bench_peers.py [--repeats 3] [--only finetune,embed,...] [--quick] [--out bench/results]

Writes peers.json (every raw figure, machine facts, per section its date, repeats and the CPU share of
other processes) and peers.md (the tables for docs/BENCHMARKS.md). ``--only`` reruns some sections and
keeps the others' figures. ``--quick`` shrinks data, epochs and repeats to check that the script runs
(nothing is written).
"""

from __future__ import annotations

import argparse
import functools
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

import numpy as np
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
started = time.perf_counter()
from dlpipe.core.config import load_project
from dlpipe.stages import {module} as stage
imported = time.perf_counter()
project = load_project(sys.argv[1]).for_dataset(sys.argv[2])
stage.run(project, sys.argv[2])  # lazy imports, model loading, tracing, JIT compilation, first-touch caches
first = time.perf_counter()
stage.run(project, sys.argv[2])
print(json.dumps({{"import_seconds": imported - started, "first_run_seconds": first - imported,
                  "core_seconds": time.perf_counter() - first}}))
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


def prepare(root: Path, every_stage: bool) -> None:
    """Generate the samples and ingest them; with ``every_stage``, run every stage once, untimed, so each timed stage finds its inputs."""
    for kind, folder in (("images", "shapes"), ("audio", "sounds"), ("text", "news")):
        dlpipe(root, "sample", kind, f"data/sample/{folder}")
        dlpipe(root, "ingest", "--dataset", folder)
    for command, dataset in STAGES if every_stage else ():
        dlpipe(root, *command.split(), "--dataset", dataset)


def warm_core_seconds(root: Path, command: str, dataset: str) -> dict[str, float]:
    """The stage module's import, its first run() and its second: the core work, without imports or JIT compilation."""
    module = MODULES.get(command, command)
    code = WARM_RUN.format(module=module)
    done = subprocess.run([sys.executable, "-c", code, "params.yaml", dataset], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"warm {command} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_overhead(root: Path, repeats: int) -> list[dict[str, Any]]:
    """Cold command wall time and warm core work of every stage, ``repeats`` times each, interleaved."""
    rows = []
    for command, dataset in STAGES:
        cold, warm = [], []
        for _ in range(repeats):
            cold.append(dlpipe(root, *command.split(), "--dataset", dataset))
            warm.append(warm_core_seconds(root, command, dataset))
        core = [figures["core_seconds"] for figures in warm]
        cold_median, core_median = statistics.median(cold), statistics.median(core)
        imports = statistics.median(figures["import_seconds"] for figures in warm)
        # What the first run() costs beyond the second: lazy imports, loading models, tracing, JIT compilation.
        first_extra = statistics.median(figures["first_run_seconds"] - figures["core_seconds"] for figures in warm)
        rows.append(
            {
                "stage": command,
                "dataset": dataset,
                "cold_seconds": [round(value, 3) for value in cold],
                "core_seconds": [round(value, 3) for value in core],
                "cold_median": round(cold_median, 2),
                "core_median": round(core_median, 2),
                "overhead_seconds": round(cold_median - core_median, 2),
                "stage_import_seconds": round(imports, 2),
                "first_run_extra_seconds": round(first_extra, 2),
                # The rest: interpreter start, the CLI and its params check, printing.
                "start_and_cli_seconds": round(cold_median - core_median - imports - first_extra, 2),
                "ratio": round(cold_median / core_median, 2),
                "target_met": cold_median <= 1.5 * core_median + 3.0,
            }
        )
        print(f"{command} {dataset}: cold {cold_median:.1f} s, core {core_median:.1f} s", flush=True)
    return rows


IMAGES_SCRIPT = HERE / "peers_images.py"
# Keras' transfer-learning guide's augmentation, and none (the configuration issue 19 measured).
AUGMENTATIONS = {
    "none": {"flip": False, "rotation": 0.0, "zoom": 0.0, "translation": 0.0, "contrast": 0.0},
    "flip + rotation 0.1": {"flip": True, "rotation": 0.1, "zoom": 0.0, "translation": 0.0, "contrast": 0.0},
}


def weights_file() -> Path:
    """The ImageNet MobileNet (alpha 0.25, 224 px) of ../shared/weights, or $DLPIPE_TEST_WEIGHTS_DIR."""
    folder = Path(os.environ.get("DLPIPE_TEST_WEIGHTS_DIR") or REPO.parent / "shared" / "weights")
    path = folder / "mobilenet_2_5_224_tf_no_top.h5"
    if not path.is_file():
        raise SystemExit(f"{path} not found: the finetune comparison needs ImageNet weights (see ../shared/weights/README.md)")
    return path


def transfer_project(root: Path, augment: dict[str, Any], epochs: int, seed: int) -> None:
    """Point root's params at a pretrained MobileNet (alpha 0.25, 224 px), ``augment``, ``epochs`` head epochs, ``seed``."""
    path = root / "params.yaml"
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params["base"]["seed"] = seed
    finetune = params["finetune"]
    finetune["backbone"] = {"name": "mobilenet", "weights": str(weights_file()), "alpha": 0.25, "image_size": 224}
    finetune.update(batch_size=32, head_epochs=epochs, fine_tune_epochs=0, early_stopping_patience=epochs, augment=augment)
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def plain(root: Path, side: str, dataset: str) -> dict[str, float]:
    """The hand-written script of ``side`` (peers_images.py) in a fresh process; its JSON line."""
    done = subprocess.run([sys.executable, str(IMAGES_SCRIPT), side, "params.yaml", dataset], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"plain {side} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def metrics_of(root: Path, dataset: str, stage: str) -> dict[str, Any]:
    return json.loads((root / "data" / dataset / "metrics" / f"{stage}.json").read_text(encoding="utf-8"))


def bench_finetune(root: Path, repeats: int, epochs: int) -> list[dict[str, Any]]:
    """dlpipe finetune vs the plain transfer-learning script: train images/s and test accuracy, seed = repeat."""
    rows = []
    for label, augment in AUGMENTATIONS.items():
        runs: dict[str, list[dict[str, float]]] = {"dlpipe": [], "plain": []}
        for seed in range(repeats):
            transfer_project(root, augment, epochs, seed)
            dlpipe(root, "finetune", "--dataset", "shapes")
            figures = metrics_of(root, "shapes", "finetune")
            runs["dlpipe"].append({key: figures[key] for key in ("train_images_per_second", "test_accuracy", "train_seconds")})
            runs["plain"].append(plain(root, "finetune", "shapes"))
            print(f"finetune ({label}) seed {seed}: dlpipe {runs['dlpipe'][-1]}, plain {runs['plain'][-1]}", flush=True)
        rate = {side: statistics.median(run["train_images_per_second"] for run in values) for side, values in runs.items()}
        accuracy = {side: statistics.median(run["test_accuracy"] for run in values) for side, values in runs.items()}
        rows.append(
            {
                "augmentation": label,
                "epochs": epochs,
                "runs": runs,
                "images_per_second": rate,
                "test_accuracy": accuracy,
                "ratio": round(rate["dlpipe"] / rate["plain"], 2),
                "target_met": rate["dlpipe"] >= 1.1 * rate["plain"] and accuracy["dlpipe"] >= accuracy["plain"],
            }
        )
    return rows


def bench_embed(root: Path, repeats: int) -> dict[str, Any]:
    """dlpipe embed (its own images/s, after tracing) vs ``model.predict`` over image_dataset_from_directory (its second call)."""
    runs: dict[str, list[float]] = {"dlpipe": [], "plain": []}
    for _ in range(repeats):
        dlpipe(root, "embed", "--dataset", "shapes")
        runs["dlpipe"].append(metrics_of(root, "shapes", "embed")["images_per_second"])
        runs["plain"].append(plain(root, "embed", "shapes")["images_per_second"])
    rate = {side: statistics.median(values) for side, values in runs.items()}
    return {
        "runs": runs,
        "images_per_second": rate,
        "ratio": round(rate["dlpipe"] / rate["plain"], 2),
        "target_met": rate["dlpipe"] >= rate["plain"],
    }


def bench_word2vec(root: Path, tokens: int, repeats: int) -> dict[str, Any]:
    """``dlpipe word2vec train`` vs gensim direct (corpus_file, iterator) at the shipped params; then each mode at 1 and 2 workers.

    The first part is bench_word2vec.py's comparison at the shipped ``workers`` on a corpus of ``tokens``; the
    second measures the rule dlpipe follows (corpus_file at every core count) against the iterator, 5 epochs per run.
    """
    import bench_word2vec

    root.mkdir(parents=True, exist_ok=True)
    shipped = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))["word2vec"]
    workdir = os.getcwd()
    os.chdir(root)  # bench_word2vec runs dlpipe in the current folder
    try:
        result = bench_word2vec.bench(root, tokens, shipped["epochs"], shipped["workers"], repeats)
    finally:
        os.chdir(workdir)
    rule: dict[str, dict[str, float]] = {}
    for workers in (1, 2):
        # Five epochs: words/s does not depend on the epoch count, and the shipped 20 would take minutes per run.
        params = {**result["gensim_params"], "workers": workers, "epochs": 5}
        for mode in ("corpus_file", "iterator"):
            rates = [bench_word2vec.direct(mode, root / "tokens.txt", params)["words_per_second"] for _ in range(repeats)]
            rule.setdefault(f"{workers} worker(s)", {})[mode] = statistics.median(rates)
    result["rule"] = rule
    return result


KMEANS_SIZES = [(200_000, 100), (20_000, 100), (20_000, 10)]


def bench_kmeans(repeats: int, quick: bool) -> list[dict[str, Any]]:
    """dlpipe's ``kmeans`` vs scikit-learn's ``KMeans`` per iteration from the same kind of start (bench_cluster.py's
    comparison), and each with its own defaults."""
    import bench_cluster
    from sklearn.cluster import KMeans

    from dlpipe.retrieval.clustering import inertia, kmeans

    rows = []
    for count, k in [(20_000, 20)] if quick else KMEANS_SIZES:
        row = bench_cluster.bench_kmeans(count, k, repeats, os.cpu_count() or 1, time_sklearn_init=False)
        vectors = bench_cluster.embeddings_like(count, k, bench_cluster.SEED)
        defaults: dict[str, list[float]] = {"sklearn_seconds": [], "sklearn_inertia": [], "dlpipe_seconds": [], "dlpipe_inertia": []}
        for seed in range(repeats):
            seconds, model = bench_cluster.timed(KMeans(n_clusters=k, random_state=seed).fit, vectors)
            defaults["sklearn_seconds"].append(seconds)
            defaults["sklearn_inertia"].append(inertia(vectors, model.cluster_centers_.astype(np.float32), model.labels_))
            seconds, result = bench_cluster.timed(kmeans, vectors, k, seed=seed)
            defaults["dlpipe_seconds"].append(seconds)
            defaults["dlpipe_inertia"].append(result.inertia)
        row["with_defaults"] = {key: statistics.median(values) for key, values in defaults.items()}
        rows.append(row)
        print(f"k-means {count} x {k}: per iteration {row['time_ratio_per_iteration']}", flush=True)
    return rows


def autofaiss_keys(count: int, dimension: int, budget_mb: int) -> str:
    """The index autofaiss would build for ``count`` x ``dimension`` vectors in ``budget_mb`` (its best key).

    autofaiss pins numpy < 2: installed here it would downgrade the tested numpy 2, so it lives in a venv of its own
    under bench/data (created on first use from the package registry).
    """
    venv = HERE / "data" / "autofaiss-venv"
    python = venv / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        # pyarrow 16+ needs numpy 2; autofaiss (through embedding_reader) imports it at start
        subprocess.run([str(python), "-m", "pip", "install", "-q", "autofaiss", "pyarrow<16"], check=True)
    code = (
        "import sys; from autofaiss.external.optimize import get_optimal_index_keys_v2 as keys; "
        "print(keys(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] + 'MB', make_direct_map=False, "
        "should_be_memory_mappable=False, use_gpu=False)[0])"
    )
    done = subprocess.run([str(python), "-c", code, str(count), str(dimension), str(budget_mb)], capture_output=True, text=True, check=True)
    return done.stdout.strip().splitlines()[-1]


def bench_search(count: int, budgets_mb: list[int], target: float) -> list[dict[str, Any]]:
    """Build and query dlpipe's ``index: auto`` choice and autofaiss's, each tuned to recall@10 >= ``target``."""
    import argparse as _argparse

    from dlpipe.retrieval import index as ix

    import bench_search

    xb, xq = bench_search.make_data("clustered", count, 1000, 128, 0)
    _, true_ids = ix.build_index(xb, "Flat").search(xq, bench_search.K)
    data = {"queries": xq, "true_ids": true_ids, "count": count}
    settings = _argparse.Namespace(target=target, single=200, single_exact=50)
    rows = []
    for budget in budgets_mb:
        choices = {"dlpipe": ix.choose_index(count, 128, budget * 2**20).factory, "autofaiss": autofaiss_keys(count, 128, budget)}
        measured, searchers = {}, {}
        for side, factory in choices.items():
            build = ix.build_index if side == "dlpipe" else _plain_build
            seconds, index = bench_search.timed(functools.partial(build, xb, factory, seed=0))
            measured[side] = bench_search.tune(side, factory, index, seconds, data, settings)
            searchers[side] = lambda q, index=index: index.search(q, bench_search.K)
        for side, rates in bench_search.measure_rates(searchers, {side: xq for side in searchers}, settings).items():
            measured[side].update(rates)
        rows.append({"count": count, "dimension": 128, "budget_mb": budget, "indexes": measured})
        print(f"search {count} @ {budget} MB: {[(m['factory'], round(m['qps_batched'])) for m in measured.values()]}", flush=True)
    return rows


def _plain_build(vectors: np.ndarray, factory: str, seed: int) -> Any:
    """``factory`` built as autofaiss builds it: inner product, trained on the vectors, every vector added (``seed`` unused)."""
    import faiss

    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.add(vectors)
    return index


def bench_text(root: Path, repeats: int, quick: bool) -> dict[str, Any]:
    """dlpipe's text CNN vs the plain TextVectorization script (bench_text.py's comparison, CNN only)."""
    import bench_text

    root.mkdir(parents=True, exist_ok=True)
    return bench_text.bench_training(root, 600 if quick else 3000, 1 if quick else 5, repeats, architectures=("cnn",))


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


def _met(flag: bool) -> str:
    return "met" if flag else "**not met**"


def markdown(result: dict[str, Any]) -> str:
    """The tables for docs/BENCHMARKS.md: one per section that ran."""
    sections = result["sections"]
    lines = [f"{result['date']}, {result['cpu_count']} x {result['cpu_model']}; repeats per figure in each table's note.", ""]
    if "finetune" in sections:
        lines += [
            "| finetune: MobileNet (alpha 0.25, ImageNet, frozen) at 224 px, shapes | epochs | plain Keras script images/s "
            "| dlpipe images/s "
            "| ratio | test accuracy plain / dlpipe | target >= 1.1x at equal or better accuracy |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in sections["finetune"]:
            rate, accuracy = row["images_per_second"], row["test_accuracy"]
            lines.append(
                f"| augmentation: {row['augmentation']} | {row['epochs']} | {rate['plain']:.0f} | {rate['dlpipe']:.0f} "
                f"| {row['ratio']:.2f}x "
                f"| {accuracy['plain']:.3f} / {accuracy['dlpipe']:.3f} | {_met(row['target_met'])} |"
            )
        lines.append("")
    if "embed" in sections:
        row = sections["embed"]
        lines += [
            "| embed: the finetuned model over every image | `model.predict` over image_dataset_from_directory, images/s "
            "| dlpipe images/s | ratio |",
            "|---|---|---|---|",
            f"| shapes, 224 px | {row['images_per_second']['plain']:.0f} | {row['images_per_second']['dlpipe']:.0f} "
            f"| {row['ratio']:.2f}x |",
            "",
        ]
    if "word2vec" in sections:
        row = sections["word2vec"]
        median = row["median_words_per_second"]
        lines += [
            f"| word2vec, {row['corpus_tokens_dlpipe']:,} tokens, shipped params | gensim corpus_file words/s | gensim iterator words/s "
            "| dlpipe words/s | dlpipe / best direct | whole command (s) | its training (s) |",
            "|---|---|---|---|---|---|---|",
            f"| workers {row['gensim_params']['workers']} | {median['corpus_file']:,.0f} | {median['iterator']:,.0f} "
            f"| {median['dlpipe']:,.0f} "
            f"| {median['dlpipe'] / max(median['corpus_file'], median['iterator']):.2f}x | {row['median_command_seconds']:.1f} "
            f"| {row['median_train_seconds']['dlpipe']:.1f} |",
            "",
            "| gensim direct, same corpus | corpus_file words/s | iterator words/s | corpus_file / iterator |",
            "|---|---|---|---|",
        ]
        for workers, modes in row["rule"].items():
            lines.append(
                f"| {workers} | {modes['corpus_file']:,.0f} | {modes['iterator']:,.0f} | {modes['corpus_file'] / modes['iterator']:.2f}x |"
            )
        lines.append("")
    if "kmeans" in sections:
        lines += [
            "| k-means, rows x 128, k | threads | per iteration, sklearn / dlpipe | inertia dlpipe vs sklearn | "
            "defaults: sklearn `KMeans()` s | dlpipe `kmeans()` s | defaults' inertia dlpipe vs sklearn |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in sections["kmeans"]:
            defaults = row["with_defaults"]
            for threads, ratio in row["time_ratio_per_iteration"].items():
                lines.append(
                    f"| {row['rows']:,} x {row['k']} | {threads} | {ratio:.2f}x | {100 * row['inertia_relative_difference']:+.2f}% | "
                    f"{defaults['sklearn_seconds']:.2f} | {defaults['dlpipe_seconds']:.2f} | "
                    f"{100 * (defaults['dlpipe_inertia'] / defaults['sklearn_inertia'] - 1):+.2f}% |"
                )
        lines.append("")
    if "search" in sections:
        lines += [
            "| search: vectors, budget | side | index | build (s) | search params | recall@10 | batched queries/s | bytes per vector |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in sections["search"]:
            for side, index in row["indexes"].items():
                lines.append(
                    f"| {row['count']:,} x {row['dimension']}, {row['budget_mb']} MB | {side} | `{index['factory']}` "
                    f"| {index['build_seconds']:.1f} | "
                    f"{index['search_params'] or 'exact'} | {index['recall_at_10']:.3f} | {index['qps_batched']:,.0f} "
                    f"| {index['bytes_per_vector']:.0f} |"
                )
        lines.append("")
    if "text" in sections:
        median = sections["text"]["median"]
        lines += [
            "| text finetune, CNN | plain `TextVectorization` script documents/s | dlpipe documents/s | ratio "
            "| test accuracy plain / dlpipe |",
            "|---|---|---|---|---|",
            f"| {sections['text']['documents']:,} documents, {sections['text']['epochs']} epochs "
            f"| {median['keras_script']['train_documents_per_second']:.0f} "
            f"| {median['cnn']['train_documents_per_second']:.0f} | {median['ratio_cnn_vs_keras_script']:.2f}x "
            f"| {median['keras_script']['test_accuracy']:.3f} / {median['cnn']['test_accuracy']:.3f} |",
            "",
        ]
    if "overhead" in sections:
        lines += [
            "| stage | dataset | command, cold (s) | core work, warm (s) | overhead (s): interpreter + CLI / stage imports / "
            "first run's extra | ratio | cold <= 1.5 x core + 3 s |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in sections["overhead"]:
            parts = f"{row['start_and_cli_seconds']:.1f} / {row['stage_import_seconds']:.1f} / {row['first_run_extra_seconds']:.1f}"
            lines.append(
                f"| {row['stage']} | {row['dataset']} | {row['cold_median']:.1f} | {row['core_median']:.1f} | "
                f"{row['overhead_seconds']:.1f}: {parts} | {row['ratio']:.2f}x | {_met(row['target_met'])} |"
            )
        lines.append("")
    if "demo" in sections:
        row = sections["demo"]
        lines += [
            "| demo (`dvc repro` in a fresh clone) | seconds | share of wall |",
            "|---|---|---|",
            f"| wall time | {row['wall_seconds']:.0f} | 100% |",
            f"| the stages' work (inside `run()`) | {row['work_seconds']:.0f} | {100 * row['work_seconds'] / row['wall_seconds']:.0f}% |",
            f"| process start-up and imports ({row['processes']} processes) | {row['startup_seconds']:.0f} | "
            f"{100 * row['startup_seconds'] / row['wall_seconds']:.0f}% |",
            f"| DVC itself (between and around the processes) | {row['dvc_seconds']:.0f} "
            f"| {100 * row['dvc_seconds'] / row['wall_seconds']:.0f}% |",
            f"| **wall / work** (target <= 1.3x) | {row['ratio']:.2f}x | {_met(row['target_met'])} |",
            "",
            "| command | processes | process seconds | work seconds | start-up and imports per process (s) |",
            "|---|---|---|---|---|",
        ]
        for command, figures in sorted(row["per_command"].items(), key=lambda item: -item[1]["process_seconds"]):
            startup = (figures["process_seconds"] - figures["run_seconds"]) / figures["processes"]
            lines.append(
                f"| {command} | {figures['processes']} | {figures['process_seconds']:.0f} | {figures['run_seconds']:.0f} | {startup:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


SECTIONS = ("finetune", "embed", "word2vec", "kmeans", "search", "text", "overhead", "demo")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run: {', '.join(SECTIONS)}; the others keep their figures from an earlier peers.json",
    )
    parser.add_argument("--quick", action="store_true", help="small samples, few epochs and one repeat, to check the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    chosen = [name for name in args.only.split(",") if name]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}: choose from {', '.join(SECTIONS)}")
    if args.quick:
        args.repeats = 1
    earlier = args.out / "peers.json"
    result: dict[str, Any] = json.loads(earlier.read_text(encoding="utf-8")) if earlier.is_file() and not args.quick else {}
    result.update(
        {
            "benchmark": "peers",
            "date": date.today().isoformat(),
            "quick": args.quick,
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "machine": platform.machine(),
            "versions": versions(),
        }
    )
    sections = result.setdefault("sections", {})
    data = HERE / "data" / "peers"
    root = data / "project"
    if set(chosen) & {"finetune", "embed", "overhead"}:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        make_project(root, args.quick)
        prepare(root, every_stage=False)
    for name in chosen:
        load = CpuShare()
        started = time.perf_counter()
        if name == "finetune":
            figures: Any = bench_finetune(root, args.repeats, 3 if args.quick else 10)
        elif name == "embed":
            figures = bench_embed(root, args.repeats)
        elif name == "word2vec":
            figures = bench_word2vec(data / "word2vec", 100_000 if args.quick else 800_000, args.repeats)
        elif name == "kmeans":
            figures = bench_kmeans(args.repeats, args.quick)
        elif name == "search":
            figures = bench_search(20_000 if args.quick else 200_000, [2048, 64], 0.95)
        elif name == "text":
            figures = bench_text(data / "text", args.repeats, args.quick)
        elif name == "overhead":
            make_project(root, args.quick)  # the demo's params again, after the finetune comparison changed them
            prepare(root, every_stage=True)
            figures = bench_overhead(root, args.repeats)
        else:
            from peers_demo import run_demo, summarize

            shutil.rmtree(data / "demo", ignore_errors=True)
            (data / "demo").mkdir(parents=True)
            wall = run_demo(data / "demo" / "clone", data / "demo" / "timings.jsonl")
            figures = summarize(wall, data / "demo" / "timings.jsonl")
        sections[name] = figures
        result.setdefault("run", {})[name] = {
            "date": date.today().isoformat(),
            "repeats": args.repeats,
            "seconds": round(time.perf_counter() - started, 1),
            "cpu_share": load.stop(),
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
        }
        args.out.mkdir(parents=True, exist_ok=True)
        if not args.quick:  # every finished section is kept, so a later failure loses nothing
            earlier.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    if not args.quick:
        (args.out / "peers.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
