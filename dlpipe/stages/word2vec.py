"""``word2vec``: word vectors (CBOW or skip-gram) from an ingested text corpus, evaluated and exported.

The corpus that ingest wrote (``ingest/corpus.txt``, checked against ingest's
manifest) is tokenised once, streaming, into ``corpus_tokens.txt``: gensim's
``corpus_file`` format, which its C code reads on every worker thread without the
Python iterator that limits multi-core speed otherwise. gensim ``Word2Vec`` then
trains from that file in a process whose PYTHONHASHSEED is the stage's seed
(:mod:`dlpipe.text.training`), with the per-epoch loss when ``workers: 1``.
Outputs, in one folder swapped in whole: the vectors (``vectors.npy`` and
``vocab.csv``, data that cannot run code when loaded), the full model (a gensim
pickle, for continued training; dlpipe never loads it), the word2vec text format, TensorBoard
projector TSVs, a labelled UMAP map, a FAISS index and the sidecar. The benchmark
scores (analogies, word similarity) go to the metrics beside the folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlpipe.core.artifacts import (
    atomic_dir,
    atomic_write_json,
    library_versions,
    read_json,
    sha256_file,
    sidecar,
    stage_lock,
    write_metrics,
)
from dlpipe.core.config import Project, Word2vecConfig
from dlpipe.core.console import info, warn
from dlpipe.core.errors import ArtifactError, ConfigError, InputDataError
from dlpipe.core.layout import VECTORS_FILE, VOCAB_FILE, WORD2VEC_SIDECAR
from dlpipe.core.parallel import resolve_workers
from dlpipe.core.results import StageResult
from dlpipe.data.manifest import load_manifest
from dlpipe.reports.live import write_live_history
from dlpipe.text import export as export
from dlpipe.text.tokens import TokenStats, tokenize_file
from dlpipe.text.training import FLOAT32_EXACT_LIMIT, TrainResult, TrainSpec, train_isolated
from dlpipe.text.vectors import evaluate, read_vectors, vector_files

STAGE = "word2vec"
TOKENS_FILE = "corpus_tokens.txt"
MODEL_FILE = "model.w2v"


@dataclass(frozen=True)
class Result(StageResult):
    """What a word2vec run produced."""

    plots_dir: Path
    vocabulary: int


def run(project: Project, dataset: str) -> Result:
    """Tokenise, train, evaluate and export word vectors of text dataset ``dataset``.

    Raises:
        ConfigError: ``dataset`` is not a text dataset.
        ArtifactError: ingest has not run, or its corpus differs from what it recorded.
        InputDataError: no token left after tokenisation, or every word below ``word2vec.min_count``.
    """
    cfg = project.params.word2vec
    modality = project.dataset(dataset).modality
    if modality != "text":
        raise ConfigError(
            f"dataset '{dataset}': word2vec needs a corpus (datasets.corpus), this one is {modality}", "pass --dataset with a corpus"
        )
    layout = project.layout(dataset)
    out_dir = layout.stage_dir(STAGE)
    metrics_path = layout.metrics(STAGE)
    plots_dir = layout.plots(STAGE)

    with stage_lock(layout.root, STAGE):
        corpus, manifest_sha256 = _ingested_corpus(project, dataset)
        with atomic_dir(out_dir) as staging:
            info(f"word2vec {dataset}: tokenising {corpus}")
            stats = _tokenize(corpus, staging / TOKENS_FILE, cfg, dataset)
            _check_vocabulary(stats, cfg, dataset)
            trained = train_isolated(
                TrainSpec(
                    corpus_file=str(staging / TOKENS_FILE),
                    model_path=str(staging / MODEL_FILE),
                    vectors_folder=str(staging),
                    params=gensim_params(cfg),
                    hash_seed=cfg.seed,
                    description=f"word2vec {dataset}",
                )
            )
            kv = read_vectors(staging)
            info(f"word2vec {dataset}: evaluating on {len(kv):,} words")
            scores = evaluate(kv, cfg.evaluate.restrict_vocab)
            exported = _export(staging, kv, cfg, dataset)
            vocabulary = _vocabulary_stats(stats, kv)
            atomic_write_json(
                staging / WORD2VEC_SIDECAR,
                sidecar(
                    STAGE,
                    dataset=dataset,
                    manifest_sha256=manifest_sha256,
                    tokens_sha256=sha256_file(staging / TOKENS_FILE),
                    params=cfg.model_dump(),
                    gensim_params=gensim_params(cfg),
                    hash_seed=cfg.seed,
                    trained_in_child_process=trained.in_child_process,
                    vocabulary=vocabulary,
                    vector_files={path.name: sha256_file(path) for path in vector_files(staging)},
                    text_format_sha256=sha256_file(staging / export.TEXT_FILE),
                    files={"model": MODEL_FILE, "vectors": VECTORS_FILE, "tokens": TOKENS_FILE, **exported},
                    versions=library_versions("gensim", "numpy", "faiss-cpu", "umap-learn"),
                ),
            )
        metrics = _metrics(dataset, cfg, stats, trained, vocabulary, scores)
        with atomic_dir(plots_dir) as staging:
            _write_plots(staging, trained)
        write_metrics(metrics_path, metrics)
    return Result(dataset, out_dir, metrics_path, metrics, plots_dir=plots_dir, vocabulary=len(kv))


def gensim_params(cfg: Word2vecConfig) -> dict[str, Any]:
    """Keyword arguments of ``gensim.models.Word2Vec`` for ``cfg`` (negative sampling, no hierarchical softmax)."""
    return {
        "sg": int(cfg.architecture == "skipgram"),
        "vector_size": cfg.vector_size,
        "window": cfg.window,
        "min_count": cfg.min_count,
        "negative": cfg.negative,
        "hs": 0,
        "sample": cfg.sample,
        "epochs": cfg.epochs,
        "workers": resolve_workers(cfg.workers),
        "seed": cfg.seed,
    }


def _ingested_corpus(project: Project, dataset: str) -> tuple[Path, str]:
    """ingest's corpus.txt and manifest sha256, after checking both against the ingest sidecar.

    The sidecar records the sha256 of the manifest (checked by load_manifest) and of the corpus, so a
    corpus edited, truncated or corrupted after ingest is refused, even a same-length word swap.
    """
    manifest = load_manifest(project, dataset)
    folder = project.layout(dataset).ingest_dir
    corpus = folder / "corpus.txt"
    rerun = f"rerun `dlpipe ingest --dataset {dataset}` (or dvc repro)"
    if not corpus.is_file():
        raise ArtifactError(f"ingested corpus not found: {corpus}", rerun)
    recorded = read_json(folder / "manifest.json", f"the ingest sidecar of dataset '{dataset}'").get("corpus_sha256")
    if recorded is None:
        raise ArtifactError(f"{folder / 'manifest.json'} records no corpus_sha256 (written by an older ingest)", rerun)
    if sha256_file(corpus) != recorded:
        raise ArtifactError(f"{corpus} changed after ingest wrote it (sha256 differs from manifest.json)", rerun)
    return corpus, manifest.sha256


def _tokenize(corpus: Path, out: Path, cfg: Word2vecConfig, dataset: str) -> TokenStats:
    stats = tokenize_file(corpus, out, cfg.tokenize)
    if stats.tokens == 0:
        raise InputDataError(
            f"dataset '{dataset}': no token left after tokenisation of {corpus}",
            "the corpus holds only punctuation or numbers; see word2vec.tokenize.punctuation and .numbers",
        )
    info(
        f"word2vec {dataset}: {stats.tokens:,} tokens in {stats.sentences:,} sentences, {len(stats.counts):,} distinct "
        f"({stats.seconds:.1f} s)" + (f", {stats.bigrams:,} bigrams joined" if cfg.tokenize.phrases else "")
    )
    return stats


def _check_vocabulary(stats: TokenStats, cfg: Word2vecConfig, dataset: str) -> None:
    most = max(stats.counts.values())
    if most < cfg.min_count:
        raise InputDataError(
            f"dataset '{dataset}': every word occurs fewer than word2vec.min_count={cfg.min_count} times "
            f"(the most frequent, '{stats.counts.most_common(1)[0][0]}', occurs {most} times): the vocabulary is empty",
            f"lower word2vec.min_count to at most {most}, or use a larger corpus",
        )


def _export(folder: Path, kv: Any, cfg: Word2vecConfig, dataset: str) -> dict[str, Any]:
    """Every export beside the vectors; returns what the sidecar records about them."""
    export.write_text_format(folder / export.TEXT_FILE, kv)
    projector_rows = export.write_projector(folder / export.PROJECTOR_DIR, kv, cfg.export.projector_words)
    export.write_index(folder, kv, {"stage": STAGE, "dataset": dataset, "vectors_sha256": sha256_file(folder / VECTORS_FILE)})
    map_words = 0
    if cfg.export.map_words:
        map_words = export.write_word_map(
            folder / export.MAP_FILE,
            kv,
            cfg.export.map_words,
            cfg.seed,
            f"{dataset}: the {cfg.export.map_words} most frequent words (UMAP, cosine)",
        )
        if not map_words:
            warn(f"only {len(kv)} words in the vocabulary: no {export.MAP_FILE} (it needs {export.MIN_MAP_WORDS})")
    return {
        "vocab": VOCAB_FILE,
        "text_format": export.TEXT_FILE,
        "projector": {"folder": export.PROJECTOR_DIR, "rows": projector_rows},
        "index": "index.faiss",
        "word_map": {"file": export.MAP_FILE, "words": map_words} if map_words else None,
    }


def _vocabulary_stats(stats: TokenStats, kv: Any) -> dict[str, Any]:
    retained = sum(kv.get_vecattr(word, "count") for word in kv.index_to_key)
    return {
        "words": len(kv),
        "distinct_tokens": len(stats.counts),
        "singletons": sum(1 for count in stats.counts.values() if count == 1),
        "tokens": stats.tokens,
        "sentences": stats.sentences,
        "retained_tokens": int(retained),
        "retained_token_fraction": round(retained / stats.tokens, 6),
        "bigrams": stats.bigrams,
    }


def _metrics(
    dataset: str, cfg: Word2vecConfig, stats: TokenStats, trained: TrainResult, vocabulary: dict[str, Any], scores: dict[str, Any]
) -> dict[str, Any]:
    metrics: dict[str, Any] = {
        "dataset": dataset,
        "architecture": cfg.architecture,
        "vector_size": cfg.vector_size,
        "epochs": cfg.epochs,
        "workers": resolve_workers(cfg.workers),
        "vocabulary": vocabulary["words"],
        "tokens": vocabulary["tokens"],
        "retained_token_fraction": vocabulary["retained_token_fraction"],
        "tokenize_seconds": round(stats.seconds, 3),
        "build_vocab_seconds": trained.build_vocab_seconds,
        "train_seconds": trained.train_seconds,
        "words_per_second": trained.words_per_second,
        "effective_words": trained.effective_words,
    }
    if trained.epoch_losses:
        metrics["first_epoch_loss"] = round(trained.epoch_losses[0], 3)
        metrics["final_loss"] = round(trained.epoch_losses[-1], 3)
        if max(trained.epoch_losses) >= FLOAT32_EXACT_LIMIT:
            metrics["loss_note"] = "an epoch's loss passed 2**24: gensim's float32 tally undercounts it (gensim #2735)"
            warn(metrics["loss_note"])
    else:
        metrics["loss_note"] = "not computed: with workers > 1 gensim's threads overwrite each other's loss (gensim #2743)"
    return metrics | scores


def _write_plots(folder: Path, trained: TrainResult) -> None:
    """The per-epoch loss as a DVCLive metric (``dvc plots show``); a note when it was not computed."""
    write_live_history(folder / "live", {"loss": trained.epoch_losses})
    if not trained.epoch_losses:
        (folder / "NO_LOSS.txt").write_text(
            "The per-epoch loss is computed only with word2vec.workers: 1 (gensim #2743).\n", encoding="utf-8"
        )
