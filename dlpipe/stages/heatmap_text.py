"""``heatmap`` on a labelled text dataset: which words carry the class, by word occlusion.

Chosen test documents (``heatmap.per_class`` per class, then the ``heatmap.top_losses``
highest-loss others), or documents given on the command line, are explained for their
predicted class (or ``--class``): every span of ``heatmap.word_span`` words is masked in
turn, in one batch per document (:mod:`dlpipe.explain.word_occlusion`). The evidence is the
deletion curve over words against a random order, as for images.

Writes ``heatmap/``: words.html and words.png (each document's words shaded by their drop),
words.csv (every word's drop), documents.csv (per document: label, prediction, deletion
AUCs), deletion.csv (the mean curves) and heatmap.json; metrics/heatmap.json.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dlpipe.core.artifacts import atomic_dir, atomic_write_json, library_versions, sidecar, stage_lock, write_csv, write_metrics
from dlpipe.core.config import Project
from dlpipe.core.console import progress
from dlpipe.core.errors import ConfigError, InputDataError
from dlpipe.core.layout import HEATMAP_SIDECAR
from dlpipe.core.results import StageResult
from dlpipe.data.manifest import Manifest, load_text_manifest
from dlpipe.explain import word_occlusion
from dlpipe.explain.evidence import area_under
from dlpipe.models.store import TrainedModel, load_model_trained_on
from dlpipe.models.vocabulary import OOV_ID
from dlpipe.reports.text_heatmaps import ExplainedDocument, write_words_html, write_words_png
from dlpipe.text.encoding import document_tokens, encode_documents

STAGE = "heatmap"
_BATCH = 256


@dataclass(frozen=True)
class Result(StageResult):
    """What a text heatmap run produced."""

    images: int  # documents explained (named as the image stage's field, which the CLI prints)


@dataclass(frozen=True)
class _Chosen:
    name: str
    label: str
    text: str


def run(project: Project, dataset: str, documents: Sequence[str] | None = None, target_class: str | None = None) -> Result:
    """Explain chosen test documents of ``dataset`` (or ``documents``) by word occlusion.

    Args:
        project: validated params and the project root.
        dataset: an ingested labelled text dataset with a trained text model.
        documents: texts to explain instead of the test-split choice.
        target_class: explain this class for every document (default: each one's predicted class).

    Raises:
        ConfigError: an unknown class, or nothing to explain (per_class and top_losses both 0).
        InputDataError: no test document, or a given document with no token.
        ArtifactError: no model or manifest, or a model trained on another manifest.
    """
    cfg = project.params.heatmap
    seed = project.params.base.seed
    manifest = load_text_manifest(project, dataset)
    layout = project.layout(dataset)
    with stage_lock(layout.root, STAGE):
        trained = load_model_trained_on(layout.model_dir, manifest)
        target_index = trained.class_index(target_class)
        chosen = _given(documents) if documents else _from_test(cfg.per_class, cfg.top_losses, trained, manifest)
        encoded = encode_documents(trained, [item.text for item in chosen])
        tokens = document_tokens(trained, [item.text for item in chosen])
        empty = [item.name for item, length in zip(chosen, encoded.lengths, strict=True) if length == 0]
        if empty:
            raise InputDataError(f"{empty[0]} has no token after tokenisation: there is no word to explain", "pass a document with words")
        probabilities = trained.model.predict(encoded.ids, batch_size=_BATCH, verbose=0)
        predicted, confidence = trained.head.explained_units(probabilities)
        targets = predicted if target_index is None else np.full(len(chosen), target_index)
        rng = np.random.default_rng(seed)
        items, curves, aucs = [], {"occlusion": [], "random": []}, {"occlusion": [], "random": []}
        started = time.perf_counter()
        with progress(len(chosen), f"heatmap {dataset}", "documents") as advance:
            for i, item in enumerate(chosen):
                length = min(int(encoded.lengths[i]), encoded.ids.shape[1])
                ids, target = encoded.ids[i], int(targets[i])
                importance = word_occlusion.word_importance(trained.model, ids, length, target, cfg.word_span, _BATCH)
                for method, order in (("occlusion", word_occlusion.importance_order(importance)), ("random", rng.permutation(length))):
                    curve = word_occlusion.deletion_curve(trained.model, ids, order, target, _BATCH)
                    curves[method].append(curve)
                    aucs[method].append(area_under(curve))
                items.append(
                    ExplainedDocument(
                        name=item.name,
                        true_label=item.label,
                        predicted=trained.classes[predicted[i]],
                        probability=float(confidence[i]),
                        target=trained.classes[target],
                        tokens=tokens[i][:length],
                        known=[int(token_id) != OOV_ID for token_id in ids[:length]],
                        importance=importance,
                        truncated=int(encoded.lengths[i]) - length,
                    )
                )
                advance(1)
        seconds = (time.perf_counter() - started) / len(chosen)
        out_dir = layout.stage_dir(STAGE)
        with atomic_dir(out_dir) as staging:
            title = f"{dataset}: word occlusion ({len(items)} documents, span {cfg.word_span})"
            write_words_html(items, staging / "words.html", title)
            write_words_png(items, staging / "words.png", title)
            _write_tables(staging, items, aucs, curves)
            atomic_write_json(
                staging / HEATMAP_SIDECAR,
                sidecar(
                    STAGE,
                    dataset=dataset,
                    modality="text",
                    model=trained.recorded_path,
                    model_sha256=trained.sidecar["model_sha256"],
                    manifest_sha256=manifest.sha256,
                    classes=trained.classes,
                    target=target_class or "predicted",
                    method="word occlusion (masked as padding)",
                    params={"per_class": cfg.per_class, "top_losses": cfg.top_losses, "word_span": cfg.word_span},
                    seed=seed,
                    order="documents.csv",
                    versions=library_versions("tensorflow", "keras", "numpy"),
                ),
            )
        metrics = {
            "documents": len(items),
            "word_span": cfg.word_span,
            "occlusion_deletion_auc": round(float(np.mean(aucs["occlusion"])), 6),
            "random_deletion_auc": round(float(np.mean(aucs["random"])), 6),
            "occlusion_seconds_per_document": round(seconds, 5),
        }
        write_metrics(layout.metrics(STAGE), metrics)
    return Result(dataset, out_dir, layout.metrics(STAGE), metrics, images=len(items))


def _given(documents: Sequence[str]) -> list[_Chosen]:
    return [_Chosen(f"argument {number}", "?", text) for number, text in enumerate(documents, start=1)]


def _from_test(per_class: int, top_losses: int, trained: TrainedModel, manifest: Manifest) -> list[_Chosen]:
    """``per_class`` test documents of each class (manifest order), then the ``top_losses`` highest-loss others."""
    test = manifest.split("test")
    if not test:
        raise InputDataError(f"dataset '{manifest.dataset}' has no test-split documents to explain", "set ingest.test_fraction > 0")
    if per_class == 0 and top_losses == 0:
        raise ConfigError("heatmap.per_class and heatmap.top_losses are both 0: no document to explain", "set one of them above 0")
    documents = manifest.documents or []
    picked: list[int] = []
    for label in manifest.classes:
        picked.extend([i for i in test if manifest.rows[i]["label"] == label][:per_class])
    if top_losses:
        encoded = encode_documents(trained, [documents[i] for i in test])
        outputs = trained.model.predict(encoded.ids, batch_size=_BATCH, verbose=0)
        losses = trained.head.item_losses(outputs, trained.head.targets([manifest.rows[i] for i in test], trained.classes))
        taken = set(picked)
        others = [int(i) for i in np.asarray(test)[np.argsort(-losses, kind="stable")] if i not in taken]
        picked.extend(others[:top_losses])
    return [_Chosen(manifest.rows[i]["path"], manifest.rows[i]["label"], documents[i]) for i in picked]


def _write_tables(folder, items: list[ExplainedDocument], aucs: dict[str, list[float]], curves: dict[str, list[np.ndarray]]) -> None:
    write_csv(
        folder / "words.csv",
        ("document", "position", "word", "in_vocabulary", "drop"),
        (
            {"document": d, "position": p, "word": token, "in_vocabulary": int(known), "drop": round(float(value), 6)}
            for d, item in enumerate(items)
            for p, (token, known, value) in enumerate(zip(item.tokens, item.known, item.importance, strict=True))
        ),
    )
    rows: list[dict[str, Any]] = [
        {
            "index": d,
            "source": item.name,
            "label": item.true_label,
            "predicted": item.predicted,
            "probability": round(item.probability, 6),
            "target": item.target,
            "words": len(item.tokens),
            "occlusion_deletion_auc": round(aucs["occlusion"][d], 6),
            "random_deletion_auc": round(aucs["random"][d], 6),
        }
        for d, item in enumerate(items)
    ]
    write_csv(folder / "documents.csv", list(rows[0]), rows)
    mean = {method: np.mean(np.stack(values), axis=0) for method, values in curves.items()}
    steps = word_occlusion.CURVE_POINTS
    write_csv(
        folder / "deletion.csv",
        ("removed_fraction", "occlusion", "random"),
        (
            {"removed_fraction": round(step / (steps - 1), 6), "occlusion": round(float(mean["occlusion"][step]), 6),
             "random": round(float(mean["random"][step]), 6)}
            for step in range(steps)
        ),
    )
