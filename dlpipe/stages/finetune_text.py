"""``finetune`` on a labelled text dataset: a word-sequence classifier (``finetune.text``) trained from scratch.

The documents are tokenised with word2vec's tokeniser (``word2vec.tokenize``), so a
vocabulary built here agrees with word vectors trained by ``dlpipe word2vec``. The vocabulary
comes from the training split only; documents become ``max_length`` token ids (longer ones are
cut and counted). The network is ``models.sequence_network`` (a ConvNet over word windows, or a
GRU / LSTM), its embedding layer optionally started from a word2vec folder. Training is one
phase with early stopping and gradient clipping, resumable like the image recipe.

Outputs match the image stage's: ``model/`` (model.keras, vocabulary.txt, model.json,
training_log.csv), DVCLive curves, the head's confusion matrix, and the most confidently
wrong test documents as ``top_losses.csv`` and ``top_losses.md``.

``finetune.distribute: mirrored`` trains under ``tf.distribute.MirroredStrategy`` as for images
(``models.training.distribution``), with ``finetune.text.batch_size`` as the global batch.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from dlpipe.core.artifacts import (
    atomic_dir,
    atomic_write_json,
    library_versions,
    sha256_file,
    sha256_json,
    sidecar,
    stage_lock,
    write_metrics,
)
from dlpipe.core.config import Project
from dlpipe.core.console import info
from dlpipe.core.errors import ConfigError
from dlpipe.core.layout import MODEL_FILE, MODEL_SIDECAR, TRAINING_LOG
from dlpipe.data.manifest import Manifest, load_text_manifest
from dlpipe.models.heads.base import Evaluation, Head
from dlpipe.models.heads.registry import head_class
from dlpipe.models.inputs import array_splits
from dlpipe.models.network import EMBEDDING_LAYER
from dlpipe.models.sequence_network import build_text_network
from dlpipe.models.store import save_model
from dlpipe.models.training import (
    Distribution,
    FinetuneResult,
    History,
    Phase,
    check_evaluation_splits,
    distribution,
    predict_split,
    resume_folder,
    train_single_phase,
    write_log,
)
from dlpipe.models.vocabulary import VOCABULARY_FILE, Encoded, Vocabulary, build_vocabulary, encode, save_vocabulary
from dlpipe.reports.figures import write_history_plot
from dlpipe.reports.live import write_live_history
from dlpipe.reports.tables import write_table
from dlpipe.text.tokens import iter_tokens
from dlpipe.text.word_vectors import StartingVectors, starting_vectors

STAGE = "finetune"
TOP_LOSSES_COLUMNS = ("rank", "row", "path", "truth", "predicted", "confidence", "loss", "document")


def run(project: Project, dataset: str, extra_callbacks: Sequence[Any] = ()) -> FinetuneResult:
    """Train ``finetune.text.architecture`` on labelled text dataset ``dataset`` and evaluate it on the test split.

    Args:
        project: validated params and the project root.
        dataset: an ingested labelled text dataset.
        extra_callbacks: Keras callbacks added to ``fit`` (tests use one to interrupt training).

    Raises:
        ConfigError: the dataset is not labelled text, or ``word2vec.tokenize.phrases`` is on, or the
            word2vec vectors were tokenised differently, or ``finetune.text.batch_size`` is not a multiple
            of the replica count under ``finetune.distribute: mirrored``.
        ArtifactError: the dataset has not been ingested (or changed since), or the word2vec folder is not
            what its stage wrote.
        InputDataError: a class has no training document, the validation or test split is empty, or a
            split is too small to share between the replicas of ``finetune.distribute: mirrored``.
    """
    cfg = project.params.finetune
    text = cfg.text
    tokenize = project.params.word2vec.tokenize
    seed = project.params.base.seed
    if tokenize.phrases:
        raise ConfigError(
            "word2vec.tokenize.phrases: true joins word pairs learnt over a whole corpus; "
            "the text classifier tokenises each document on its own and cannot join them the same way",
            f"set word2vec.tokenize.phrases: false (for this dataset only: datasets.text.{dataset}.overrides)",
        )
    head = head_class("classification")()
    manifest = load_text_manifest(project, dataset)
    head.check_training_data(manifest)
    check_evaluation_splits(manifest)
    layout = project.layout(dataset)
    names = head.output_names(manifest)

    documents = [list(iter_tokens(document, tokenize)) for document in manifest.documents or []]
    vocabulary = build_vocabulary((documents[i] for i in manifest.split("train")), text.min_count, text.max_vocabulary)
    encoded = encode(vocabulary, documents, text.max_length)
    vectors = None
    if text.word2vec != "none":
        vectors = starting_vectors(project.resolve(text.word2vec), vocabulary, tokenize.model_dump(), text.embedding_dim, seed)
        info(f"finetune {dataset}: {vectors.found:,} of {len(vocabulary) - 2:,} words start from word2vec, {vectors.missing:,} at random")
    info(
        f"finetune {dataset}: {len(vocabulary):,} words in the vocabulary, "
        f"{encoded.truncated:,} of {len(documents):,} documents cut at {text.max_length} tokens"
    )
    params = _params_read(project)
    params_hash = sha256_json({"params": params, "seed": seed, "vectors": vectors.source if vectors else None})
    resume_key = sha256_json([params_hash, manifest.sha256, names])[:16]
    devices = distribution(cfg.distribute, text.batch_size, "finetune.text.batch_size")

    with stage_lock(layout.root, STAGE):
        resume_dir = resume_folder(layout.resume_dir(STAGE), resume_key)
        keras.utils.set_random_seed(seed)
        tf.config.experimental.enable_op_determinism()
        splits = array_splits(encoded.ids, head.targets(manifest.rows, names), manifest, text.batch_size, seed)
        class_weight = head.balanced_weights(splits.train_targets, len(names)) if cfg.class_weight == "balanced" else None
        with devices.scope():
            model = build_text_network(text, cfg.rnn, head, len(vocabulary), len(names), seed, vectors.matrix if vectors else None)
            phase = Phase(
                model, head, splits, text.batch_size, resume_dir, text.clipnorm, cfg.early_stopping_patience, class_weight, extra_callbacks
            )
            started = time.perf_counter()
            history = train_single_phase(phase, text.lr, text.epochs)
            train_seconds = time.perf_counter() - started
            predictions = predict_split(model, splits.test, len(splits.test_targets), text.batch_size)
        evaluation = head.evaluate(predictions, splits.test_targets, names)

        metrics = {
            **evaluation.metrics,
            **history.figures(splits.train_count, train_seconds, "documents"),
            "vocabulary": len(vocabulary),
            "truncated_documents": encoded.truncated,
            "oov_token_fraction": round(encoded.oov_tokens / max(encoded.tokens, 1), 6),
            "word2vec_missing_words": vectors.missing if vectors else 0,
            "replicas": devices.replicas,
        }
        with atomic_dir(layout.model_dir) as staging:
            save_model(model, staging / MODEL_FILE)
            save_vocabulary(vocabulary, staging / VOCABULARY_FILE)
            write_log(staging / TRAINING_LOG, history.epochs)
            atomic_write_json(
                staging / MODEL_SIDECAR,
                _model_sidecar(project, dataset, head, names, manifest, model, staging, vocabulary, encoded, vectors, params_hash, devices),
            )
        with atomic_dir(layout.plots(STAGE)) as staging:
            _write_plots(staging, head, history, evaluation, names, manifest, cfg.top_losses)
        write_metrics(layout.metrics(STAGE), metrics)
        shutil.rmtree(resume_dir, ignore_errors=True)
    return FinetuneResult(
        dataset, layout.model_dir, layout.plots(STAGE), layout.metrics(STAGE), metrics, history.resumed_from, head.summary(metrics)
    )


def _write_plots(
    folder: Path, head: Head, history: History, evaluation: Evaluation, names: list[str], manifest: Manifest, top_losses: int
) -> None:
    """DVCLive curves, the head's reports, training curves and the top-losses table."""
    write_live_history(folder / "live", history.epochs)
    head.write_reports(folder, evaluation, names)
    write_history_plot(history.epochs, folder / "history.png", title="training curves")
    test_rows = manifest.split("test")
    worst = np.argsort(-evaluation.losses, kind="stable")[:top_losses]
    rows = [
        {
            "rank": rank,
            "row": test_rows[i],
            "path": manifest.rows[test_rows[i]]["path"],
            "truth": evaluation.truth[i],
            "predicted": evaluation.predicted[i],
            "confidence": round(float(evaluation.confidence[i]), 4),
            "loss": round(float(evaluation.losses[i]), 4),
            "document": (manifest.documents or [])[test_rows[i]],
        }
        for rank, i in enumerate(worst, start=1)
    ]
    write_table(rows, TOP_LOSSES_COLUMNS, folder / "top_losses.csv", folder / "top_losses.md", "test documents with the highest loss")


def _params_read(project: Project) -> dict[str, Any]:
    """The params this stage reads (dvc.yaml's finetune_text stage declares the same)."""
    cfg = project.params.finetune
    return {
        "finetune": {
            "text": cfg.text.model_dump(),
            "rnn": cfg.rnn.model_dump(),
            "early_stopping_patience": cfg.early_stopping_patience,
            "class_weight": cfg.class_weight,
            "top_losses": cfg.top_losses,
            "distribute": cfg.distribute,
        },
        "word2vec": {"tokenize": project.params.word2vec.tokenize.model_dump()},
    }


def _model_sidecar(
    project: Project,
    dataset: str,
    head: Head,
    names: list[str],
    manifest: Manifest,
    model: keras.Model,
    folder: Path,
    vocabulary: Vocabulary,
    encoded: Encoded,
    vectors: StartingVectors | None,
    params_hash: str,
    devices: Distribution,
) -> dict[str, Any]:
    cfg = project.params.finetune
    return sidecar(
        STAGE,
        dataset=dataset,
        task=head.name,
        modality="text",
        classes=names,
        architecture=cfg.text.architecture,
        input=f"int32 token ids, {cfg.text.max_length} per document: 0 pads the end, 1 is a word outside the vocabulary",
        max_length=cfg.text.max_length,
        tokenize=project.params.word2vec.tokenize.model_dump(),
        vocabulary={"file": VOCABULARY_FILE, "sha256": sha256_file(folder / VOCABULARY_FILE), "words": len(vocabulary)},
        documents={
            "count": len(encoded.lengths),
            "truncated": encoded.truncated,
            "longest_tokens": int(encoded.lengths.max(initial=0)),
            "oov_tokens": encoded.oov_tokens,
            "tokens": encoded.tokens,
        },
        word2vec=None if vectors is None else {**vectors.source, "found_words": vectors.found, "missing_words": vectors.missing},
        frozen_embeddings=bool(vectors is not None and cfg.text.freeze_embeddings),
        embedding_layer=EMBEDDING_LAYER,
        embedding_dim=int(model.get_layer(EMBEDDING_LAYER).output.shape[-1]),
        model_sha256=sha256_file(folder / MODEL_FILE),
        manifest_sha256=manifest.sha256,
        params_hash=params_hash,
        params=_params_read(project),
        distribute=devices.record(),
        seed=project.params.base.seed,
        versions=library_versions("tensorflow", "keras", "numpy"),
    )
