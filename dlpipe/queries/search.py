"""``search query``: the nearest neighbours of new images or audio clips, or of items already in the dataset.

New images are embedded with exactly the model and preprocessing recorded in the
index's sidecar (it refuses when they are gone or differ); an item already in the
manifest is looked up by its manifest path and uses its stored embedding. For an
audio dataset, whose index holds spectrogram windows, a clip is cut into windows
as the spectrogram stage cut the training clips; the query is the normalised
mean of its windows' embeddings, and the neighbours are windows. For a labelled text dataset
the queries are strings, encoded and embedded by the text model the index records; the answers
carry each neighbour's document, and the sheet is a table (CSV and Markdown) instead of a picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dlpipe.audio.transform import RecordedTransform, from_record
from dlpipe.core.config import Project
from dlpipe.core.errors import ArtifactError, InputDataError
from dlpipe.core.layout import SPECTROGRAM_SIDECAR
from dlpipe.data.manifest import Manifest
from dlpipe.data.media import Rejected
from dlpipe.reports.sheets import RIGHT, Tile, contact_sheet
from dlpipe.retrieval import index as faiss_index
from dlpipe.retrieval.embeddings import load_embeddings

if TYPE_CHECKING:
    from dlpipe.models.file_inputs import FileLimits

_BATCH = 64


@dataclass(frozen=True)
class Neighbour:
    """One search hit: manifest path, label and similarity score (inner product, or L2 distance)."""

    rank: int
    path: str
    label: str
    score: float
    document: str | None = None  # a text dataset's neighbour


@dataclass(frozen=True)
class Answer:
    """The neighbours of one query, best first."""

    query: str
    neighbours: list[Neighbour] = field(default_factory=list)
    windows: int = 1  # spectrogram windows averaged into the query (audio clips)


@dataclass(frozen=True)
class Result:
    """Every answer, in query order, and the sheet written (if any)."""

    index: Path
    metric: str
    answers: list[Answer]
    sheet: Path | None


def run(
    project: Project,
    dataset: str,
    queries: list[str],
    items: list[str],
    k: int,
    sheet_path: Path | None = None,
) -> Result:
    """Find the ``k`` nearest neighbours of each query and each manifest item.

    Args:
        project: the loaded params.
        dataset: whose index to search.
        queries: image files to embed and search for (audio clips too, for an audio dataset); for a
            labelled text dataset, the query strings themselves.
        items: manifest paths (as in manifest.csv) whose stored embeddings to search for.
        k: neighbours per query (an item's own row is left out of its answer).
        sheet_path: write a contact sheet there (each row: the query, then its neighbours); for text, a
            table as ``sheet_path`` with suffix .csv and .md.

    Raises:
        ArtifactError: no index, an index inconsistent with its sidecar, or one built from embeddings
            that have changed since; the recorded model is missing or differs.
        InputDataError: no query, an unknown item, an undecodable file, or k larger than the collection.
    """
    if not queries and not items:
        raise InputDataError("nothing to search for", "pass image files (query strings for a text dataset) and/or --item PATH")
    layout = project.layout(dataset)
    folder = layout.search_dir
    loaded = faiss_index.load_index(folder)
    embeddings = load_embeddings(project, dataset)
    if loaded.info.get("embeddings_sha256") != embeddings.sidecar["embeddings_sha256"]:
        raise ArtifactError(
            f"the index in {folder} was built from other embeddings than those in {embeddings.path.parent}",
            f"rebuild it with `dlpipe search build --dataset {dataset}` (or `dvc repro`)",
        )
    manifest = embeddings.manifest
    names, vectors, own_rows, windows, thumbnails = [], [], [], [], {}
    text = manifest.documents is not None
    if queries and text:
        vectors.append(_embed_documents(layout.model_dir, dataset, loaded.info["query_embedding"], queries))
        names += queries
        own_rows += [-1] * len(queries)
        windows += [1] * len(queries)
    elif queries:
        images = [Path(query) for query in queries]
        # The images were made from audio: replay the transform the spectrogram stage recorded for them.
        transform = from_record(manifest.spectrogram, manifest.source_root / SPECTROGRAM_SIDECAR) if manifest.spectrogram else None
        from dlpipe.models.file_inputs import FileLimits

        limits = FileLimits.of(project.params.ingest)
        embedded = _embed_files(layout.model_dir, dataset, loaded.info["query_embedding"], images, transform, limits)
        names += [str(path) for path in images]
        vectors.append(embedded.vectors)
        own_rows += [-1] * len(images)
        windows += embedded.windows
        thumbnails = dict(zip(names, embedded.thumbnails, strict=True))
    if items:
        rows = _item_rows(manifest, items)
        names += items
        vectors.append(np.asarray(embeddings.vectors[rows], dtype=np.float32))
        own_rows += rows
        windows += [1] * len(items)
    queries = np.concatenate(vectors)
    # One extra neighbour so an item's own row can be dropped and k remain.
    extra = 1 if items and k < loaded.index.ntotal else 0
    scores, ids = faiss_index.search(loaded.index, queries, k + extra)
    answers = [_answer(*query, manifest, k) for query in zip(names, scores, ids, own_rows, windows, strict=True)]
    if sheet_path is None:
        sheet = None
    elif text:
        sheet = _write_table(sheet_path, answers)
    else:
        sheet = _write_sheet(sheet_path, answers, thumbnails, manifest)
    return Result(loaded.path, loaded.info["metric"], answers, sheet)


def _embed_documents(model_dir: Path, dataset: str, recorded: dict, documents: list[str]) -> np.ndarray:
    """Query strings embedded by the text model that embedded the index's documents."""
    from dlpipe.models.extractor import normalize_rows
    from dlpipe.models.network import embedding_model
    from dlpipe.models.store import load_trained_model
    from dlpipe.text.encoding import encode_documents

    trained = load_trained_model(model_dir)
    if trained.sidecar["model_sha256"] != recorded.get("model_sha256"):
        raise ArtifactError(
            f"the model in {model_dir} changed after the embeddings were computed",
            f"rerun `dlpipe embed --dataset {dataset}` and `dlpipe search build --dataset {dataset}` (or `dvc repro`)",
        )
    encoded = encode_documents(trained, documents)
    empty = [document for document, length in zip(documents, encoded.lengths, strict=True) if length == 0]
    if empty:
        raise InputDataError(f"query '{empty[0]}' has no token after tokenisation", "search with words")
    vectors = embedding_model(trained.model).predict(encoded.ids, verbose=0, batch_size=_BATCH).astype(np.float32)
    return normalize_rows(vectors) if recorded.get("normalized") else vectors


def _write_table(path: Path, answers: list[Answer]) -> Path:
    """Each query's neighbours as rows (CSV at ``path``.csv, Markdown at ``path``.md); returns the Markdown file."""
    from dlpipe.reports.tables import write_table

    rows = [
        {"query": a.query, "rank": n.rank, "path": n.path, "label": n.label, "score": n.score, "document": n.document}
        for a in answers
        for n in a.neighbours
    ]
    markdown = path.with_suffix(".md")
    write_table(rows, ("query", "rank", "path", "label", "score", "document"), path.with_suffix(".csv"), markdown, "nearest neighbours")
    return markdown


@dataclass(frozen=True)
class _EmbeddedFiles:
    """Query vectors of files, one per file; the windows behind each; a picture of each for the sheet."""

    vectors: np.ndarray
    windows: list[int]
    thumbnails: list[Path | np.ndarray]


def _embed_files(
    model_dir: Path, dataset: str, recorded: dict, files: list[Path], transform: RecordedTransform | None, limits: FileLimits
) -> _EmbeddedFiles:
    """Embed query files exactly as the indexed vectors were embedded; a clip is the mean of its windows."""
    import tensorflow as tf

    from dlpipe.models.extractor import normalize_rows, recorded_extractor
    from dlpipe.models.file_inputs import accepted_files, file_model_inputs

    what = accepted_files(transform)
    inputs: list[list[np.ndarray]] = []
    for path in files:
        if not path.is_file():
            raise InputDataError(f"no such file: {path}", f"pass {what}")
        try:
            inputs.append(file_model_inputs(path, recorded["image_size"], transform, limits))
        except Rejected as rejection:
            raise InputDataError(f"cannot search with {path}: {rejection.detail}", f"pass {what}") from None
    arrays = [array for per_file in inputs for array in per_file]
    extractor = recorded_extractor(model_dir, dataset, recorded)
    out = [extractor.model(tf.constant(np.stack(arrays[i : i + _BATCH])), training=False).numpy() for i in range(0, len(arrays), _BATCH)]
    per_window = np.concatenate(out).astype(np.float32)
    normalized = recorded.get("normalized")
    if normalized:
        per_window = normalize_rows(per_window)
    bounds = np.cumsum([0] + [len(per_file) for per_file in inputs])
    vectors = np.stack([per_window[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    if normalized:
        vectors = normalize_rows(vectors)  # the mean of unit vectors is shorter than one
    # a photo shows as itself; for an audio dataset, the first window the model saw
    thumbnails = [path if transform is None else per_file[0].astype(np.uint8) for path, per_file in zip(files, inputs, strict=True)]
    return _EmbeddedFiles(vectors, [len(per_file) for per_file in inputs], thumbnails)



def _item_rows(manifest: Manifest, items: list[str]) -> list[int]:
    row_of = {row["path"]: i for i, row in enumerate(manifest.rows)}
    missing = [item for item in items if item not in row_of]
    if missing:
        raise InputDataError(
            f"not in the manifest of dataset '{manifest.dataset}': {', '.join(missing)}",
            "give the path exactly as in the manifest.csv 'path' column, e.g. " + manifest.rows[0]["path"],
        )
    return [row_of[item] for item in items]


def _answer(
    name: str, scores: np.ndarray, ids: np.ndarray, own_row: int, windows: int, manifest: Manifest, k: int
) -> Answer:
    hits = [(float(s), int(i)) for s, i in zip(scores, ids, strict=True) if i != own_row and i >= 0][:k]
    documents = manifest.documents
    neighbours = [
        Neighbour(rank, manifest.rows[i]["path"], manifest.rows[i]["label"], round(s, 6), None if documents is None else documents[i])
        for rank, (s, i) in enumerate(hits, start=1)
    ]
    return Answer(name, neighbours, windows)


def _write_sheet(path: Path, answers: list[Answer], thumbnails: dict[str, Path | np.ndarray], manifest: Manifest) -> Path:
    """Each query (a file, or a clip's first window; or an item), then its neighbours."""
    k = max((len(a.neighbours) for a in answers), default=1)
    tiles: list[Tile] = []
    for answer in answers:
        source = thumbnails[answer.query] if answer.query in thumbnails else manifest.resolve(answer.query)
        tiles.append(Tile(source, f"query\n{Path(answer.query).name}", RIGHT))
        tiles += [Tile(manifest.resolve(n.path), f"{n.label}\n{n.score:.3f}") for n in answer.neighbours]
        tiles += [Tile(np.full((8, 8, 3), 255, np.uint8), "") for _ in range(k - len(answer.neighbours))]
    return contact_sheet(tiles, path, columns=k + 1, tile_size=112, title=f"{manifest.dataset}: queries and their nearest neighbours")
