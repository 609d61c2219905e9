"""Benchmark: `dlpipe word2vec train` vs gensim called directly; corpus_file vs iterator mode.

Corpus: the sample corpus (gensim's lee_background.cor, ~60k tokens, 300 lines)
concatenated with its lines shuffled by a seeded generator until it holds at
least ``--tokens`` whitespace tokens (5 million by default), written once to
bench/data/. It is ingested once (not timed); then, interleaved, ``--repeats``
times each:

- **dlpipe**: the real command, ``dlpipe word2vec train --json`` in a fresh process
  (tokenisation, the training child process, evaluation and exports; no UMAP map);
- **gensim corpus_file**: a fresh process that builds the vocabulary from the same
  tokenised file dlpipe wrote and trains ``Word2Vec`` with the same parameters;
- **gensim iterator**: the same, through ``LineSentence`` (Python iterator) instead.

The figure compared is training words per second as both measure it: effective
words (after down-sampling) that ``Word2Vec.train`` reports, divided by the wall
time of that call. Tokenisation time (dlpipe's tokeniser over the ingested corpus)
is reported apart, as is dlpipe's whole-command wall time.

    python bench/bench_word2vec.py [--repeats 3] [--tokens 5000000] [--epochs 3] [--workers 2] [--quick]

Writes word2vec.json (every raw figure, machine facts) and word2vec.md (the table
for docs/BENCHMARKS.md) to ``--out``.
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

import numpy as np
import yaml

from machine import CpuShare, cpu_model  # bench/ is on sys.path when a benchmark runs as a script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SEED = 0
TARGET = 0.95


def build_corpus(path: Path, tokens: int) -> int:
    """Shuffled copies of the sample corpus' lines until ``tokens`` whitespace tokens; return the count."""
    from gensim.test.utils import datapath

    lines = Path(datapath("lee_background.cor")).read_text(encoding="utf-8").splitlines()
    rng = np.random.default_rng(SEED)
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < tokens:
            for index in rng.permutation(len(lines)):
                handle.write(lines[index] + "\n")
                written += len(lines[index].split())
    return written


def make_project(root: Path, corpus: Path, epochs: int, workers: int) -> Path:
    """A project with the dataset ``big`` (the corpus) and the shipped word2vec params, except the ones named."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    from dlpipe.core.config import group_datasets
    params["datasets"] = group_datasets({"big": {"modality": "text", "source": str(corpus)}})
    params["ingest"]["workers"] = 1
    params["word2vec"].update(epochs=epochs, workers=workers)
    params["word2vec"]["export"].update(map_words=0, projector_words=1000)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def dlpipe(*argv: str) -> tuple[float, str]:
    """Run the dlpipe CLI in a fresh process; (wall seconds, stdout)."""
    start = time.perf_counter()
    command = Path(sys.executable).parent / "dlpipe"  # the console script of the environment running this
    completed = subprocess.run([str(command), *argv], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if completed.returncode != 0:
        raise SystemExit(f"dlpipe {' '.join(argv)} failed:\n{completed.stderr}")
    return seconds, completed.stdout


def direct(mode: str, tokens_file: Path, params: dict[str, Any]) -> dict[str, float]:
    """gensim alone in a fresh process (this script with --direct); its measured figures."""
    completed = subprocess.run(
        [sys.executable, __file__, "--direct", mode, str(tokens_file), json.dumps(params)],
        capture_output=True, text=True, check=False,
        env=os.environ | {"PYTHONHASHSEED": str(params["seed"])},  # as dlpipe's training process has it
    )
    if completed.returncode != 0:
        raise SystemExit(f"direct gensim ({mode}) failed:\n{completed.stderr}")
    return json.loads(completed.stdout)


def train_directly(mode: str, tokens_file: str, params: dict[str, Any]) -> dict[str, float]:
    """What a user would write: Word2Vec(...), build_vocab, train; timed exactly as dlpipe times it."""
    from gensim.models import Word2Vec
    from gensim.models.word2vec import LineSentence

    model = Word2Vec(**params)
    source = {"corpus_file": tokens_file} if mode == "corpus_file" else {"corpus_iterable": LineSentence(tokens_file)}
    start = time.perf_counter()
    model.build_vocab(**source)
    vocab_seconds = time.perf_counter() - start
    start = time.perf_counter()
    effective, _raw = model.train(
        **source, total_examples=model.corpus_count, total_words=model.corpus_total_words, epochs=model.epochs,
        compute_loss=model.workers == 1,  # dlpipe computes the loss only with one worker
    )
    seconds = time.perf_counter() - start
    return {"words_per_second": effective / seconds, "train_seconds": seconds, "build_vocab_seconds": vocab_seconds,
            "effective_words": effective, "vocabulary": len(model.wv)}


def bench(root: Path, tokens: int, epochs: int, workers: int, repeats: int) -> dict[str, Any]:
    from dlpipe.core.config import load_project
    from dlpipe.stages.word2vec import gensim_params
    from dlpipe.text.tokens import tokenize_file

    corpus = root / "corpus.txt"
    print(f"writing a corpus of at least {tokens:,} tokens", file=sys.stderr)
    corpus_tokens = build_corpus(corpus, tokens)
    params_path = make_project(root, corpus, epochs, workers)
    options = ["--params", str(params_path)]
    dlpipe("ingest", *options)
    project = load_project(params_path)
    params = gensim_params(project.params.word2vec)
    ingested = root / "data/big/ingest/corpus.txt"
    tokens_copy = root / "tokens.txt"

    cpu = CpuShare()
    start = time.perf_counter()
    stats = tokenize_file(ingested, tokens_copy, project.params.word2vec.tokenize)
    tokenize_seconds = time.perf_counter() - start
    runs: dict[str, list[dict[str, float]]] = {"dlpipe": [], "corpus_file": [], "iterator": []}
    for repeat in range(repeats):
        print(f"repeat {repeat + 1}/{repeats}", file=sys.stderr)
        wall, stdout = dlpipe("word2vec", "train", "--json", *options)
        (metrics,) = json.loads(stdout)
        reported = ("words_per_second", "train_seconds", "build_vocab_seconds", "tokenize_seconds", "effective_words", "vocabulary")
        runs["dlpipe"].append({key: metrics[key] for key in reported} | {"command_seconds": wall})
        if repeat == 0:
            assert (root / "data/big/word2vec/corpus_tokens.txt").read_bytes() == tokens_copy.read_bytes()
        for mode in ("corpus_file", "iterator"):
            runs[mode].append(direct(mode, tokens_copy, params))
    share = cpu.stop()
    median = {name: statistics.median(r["words_per_second"] for r in rows) for name, rows in runs.items()}
    return {
        "corpus_tokens_whitespace": corpus_tokens,
        "corpus_tokens_dlpipe": stats.tokens,
        "corpus_bytes": ingested.stat().st_size,
        "gensim_params": params,
        "tokenize_seconds": tokenize_seconds,
        "tokenize_tokens_per_second": stats.tokens / tokenize_seconds,
        "runs": runs,
        "median_words_per_second": median,
        "median_command_seconds": statistics.median(r["command_seconds"] for r in runs["dlpipe"]),
        "median_train_seconds": {name: statistics.median(r["train_seconds"] for r in rows) for name, rows in runs.items()},
        "ratio_dlpipe_over_gensim": median["dlpipe"] / median["corpus_file"],
        "ratio_corpus_file_over_iterator": median["corpus_file"] / median["iterator"],
        "cpu_share": share,
    }


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in ("gensim", "numpy", "scipy"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


# Other processes' share of the CPUs above which the figures are not worth quoting.
SHARED_MACHINE_SHARE = 0.05


def markdown(result: dict[str, Any]) -> str:
    """The Word2vec section of docs/BENCHMARKS.md."""
    r = result["bench"]
    p = r["gensim_params"]
    median = r["median_words_per_second"]
    others = r["cpu_share"]["other_processes_share"] if r["cpu_share"] else float("nan")
    arch = "skip-gram" if p["sg"] else "CBOW"
    lines = [
        "## Word2vec: `dlpipe word2vec train` vs gensim directly; corpus_file vs iterator",
        "",
        (
            f"`bench/bench_word2vec.py`: the sample corpus (lee_background.cor) concatenated with shuffled lines to "
            f"{r['corpus_tokens_whitespace']:,} whitespace tokens ({r['corpus_bytes'] / 2**20:.0f} MiB; "
            f"{r['corpus_tokens_dlpipe']:,} tokens after dlpipe's tokenisation). {arch}, {p['vector_size']}-d, window "
            f"{p['window']}, negative {p['negative']}, sample {p['sample']}, min_count {p['min_count']}, {p['epochs']} epochs, "
            f"{p['workers']} worker threads, the same parameters and the same tokenised file on both sides. Words per second "
            "are effective words (after down-sampling) over the wall time of `Word2Vec.train`, as both sides measure it; "
            f"each side runs in a fresh process; medians of {result['repeats']} interleaved repeats (A/B/C)."
        ),
        "",
        f"| measurement | gensim directly | dlpipe | ratio (target ≥ {TARGET}x) |",
        "|---|---|---|---|",
        f"| training words/s (corpus_file) | {median['corpus_file']:,.0f} | {median['dlpipe']:,.0f} "
        f"| **{r['ratio_dlpipe_over_gensim']:.2f}x** |",
        "",
        "| measurement | corpus_file | iterator (`LineSentence`) | ratio |",
        "|---|---|---|---|",
        f"| gensim training words/s | {median['corpus_file']:,.0f} | {median['iterator']:,.0f} "
        f"| **{r['ratio_corpus_file_over_iterator']:.2f}x** |",
        "",
        (
            f"Tokenisation (dlpipe's streaming tokeniser, once per run, before training): {r['tokenize_seconds']:.1f} s, "
            f"{r['tokenize_tokens_per_second']:,.0f} tokens/s. The whole `dlpipe word2vec train` command took "
            f"{r['median_command_seconds']:.1f} s (median) against {r['median_train_seconds']['dlpipe']:.1f} s of training: "
            "the rest is the corpus check and tokenisation, starting the training process, evaluation and exports."
        ),
        "",
        (
            f"Measured {result['date']} on {result['cpu_count']} cores ({result['cpu_model']}); 1-minute load average "
            f"{result['load_average_before'][0]:.2f} before and {result['load_average_after'][0]:.2f} after; other processes "
            f"took {others:.0%} of the CPU time during the run"
            + (
                ". **The machine was shared while this ran: these figures must be re-measured on an idle machine before "
                "they are quoted.**"
                if others > SHARED_MACHINE_SHARE
                else " (an idle machine)."
            )
            + " Per-run figures are in bench/results/word2vec.json."
        ),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=5_000_000, help="whitespace tokens in the generated corpus")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="training threads on both sides")
    parser.add_argument("--quick", action="store_true", help="a 300k-token corpus and one repeat, to check the script runs")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--direct", nargs=3, metavar=("MODE", "TOKENS", "PARAMS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.direct:
        mode, tokens_file, params = args.direct
        print(json.dumps(train_directly(mode, tokens_file, json.loads(params))))
        return
    if args.quick:
        args.tokens, args.repeats = 300_000, 1
    root = HERE / "data" / "word2vec"
    shutil.rmtree(root / "data", ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    result = {
        "benchmark": "word2vec",
        "date": date.today().isoformat(),
        "quick": args.quick,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "machine": platform.machine(),
        "versions": versions(),
        "load_average_before": [round(x, 2) for x in load_before],
    }
    result["bench"] = bench(root, args.tokens, args.epochs, args.workers, args.repeats)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "word2vec.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    text = markdown(result)
    (args.out / "word2vec.md").write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
