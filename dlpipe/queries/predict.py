"""``predict``: the trained model's answer (top-k classes, values, a box, points) for image files or folders, or documents.

Not a pipeline stage (it answers questions about new inputs), but built like
one: ``run`` takes typed arguments and returns a Result; the CLI prints it.
A model trained on an audio dataset's spectrograms also takes audio clips: each
is cut into windows exactly as the spectrogram stage did, and the windows'
probabilities are averaged. A text model takes documents: the arguments themselves,
the lines of a file, or the lines of standard input (``-``).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlpipe.core.artifacts import write_csv
from dlpipe.core.config import EmbedConfig
from dlpipe.core.console import progress
from dlpipe.core.errors import ArtifactError, InputDataError
from dlpipe.data.files import path_kind, visible_files
from dlpipe.data.media import Rejected
from dlpipe.models.engines.base import Engine, InferenceJob
from dlpipe.models.file_inputs import DEFAULT_LIMITS, FileLimits, accepted_files, file_model_inputs
from dlpipe.models.heads.base import Answer
from dlpipe.models.store import TrainedModel, load_trained_model

_BATCH = 64
# Documents encoded per model call (token ids are small; this bounds memory for a huge stdin), and per forward pass.
_TEXT_CHUNK = 4096
_TEXT_BATCH = 256


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image (or audio clip), or why it could not be read."""

    path: str  # the file, or for a document where it came from: argument 2, reviews.txt:7, stdin:3
    answer: Answer  # the head's empty answer when the input could not be read
    error: str = ""
    windows: int = 1  # spectrogram windows averaged (audio clips)
    document: str | None = None  # a text model's input

    @property
    def text(self) -> str:
        """The answer as one line."""
        return self.answer.text

    def as_json(self) -> dict[str, object]:
        """The prediction for ``--json`` output."""
        extra = ({"windows": self.windows} if self.windows > 1 else {}) | ({"error": self.error} if self.error else {})
        source = {"path": self.path} if self.document is None else {"source": self.path, "document": self.document}
        return source | self.answer.as_json() | extra


@dataclass(frozen=True)
class Result:
    """Every prediction, in input order, and the CSV written (if any)."""

    model: Path
    predictions: list[Prediction]
    csv_path: Path | None
    answer_title: str  # what Prediction.text holds, for table headers
    modality: str = "image"  # the model's: image (files) or text (documents)


def run(
    model_location: Path,
    inputs: list[str],
    k: int,
    csv_path: Path | None = None,
    documents_file: Path | None = None,
    draw_dir: Path | None = None,
    engine_cfg: EmbedConfig | None = None,
    limits: FileLimits = DEFAULT_LIMITS,
) -> Result:
    """The model's answer for each input: the top ``k`` classes, or values, a box or points (in pixels of the input).

    Args:
        model_location: a model folder (``data/<dataset>/model``) or its ``model.keras``.
        inputs: for an image model, image files and/or folders searched recursively (and audio clips, for a
            model trained on spectrograms); for a text model, documents (``-`` reads one per line from stdin).
        k: how many classes per input (capped at the model's class count).
        csv_path: where to write a CSV of the predictions; None writes none.
        documents_file: a text model only: a UTF-8 file with one document per line (blank lines skipped).
        draw_dir: a folder to write each input image into with its answer drawn (a box, points, or the answer's
            text); None draws nothing. Text and audio inputs are not drawn.
        engine_cfg: the ``embed`` section whose ``engine`` (and ``ray``) settings run the model over image and
            audio files; None runs it in this process. Documents always run here.
        limits: ingest's checks, which every image and audio file must meet (the project's ``ingest``
            section; the shipped defaults outside a project).

    Raises:
        ArtifactError: the model or its sidecar is missing or inconsistent (or changed while a worker loaded it).
        DependencyError: ``engine_cfg`` asks for Ray, which is not installed or cannot start.
        InputDataError: an input does not exist, a named file is not a decodable image, a folder holds no
            image, a document has no token, a text model is given a file as a document (or an image model
            a documents file), or the documents file is not UTF-8.
    """
    trained = load_trained_model(model_location)
    if trained.modality == "text":
        return _predict_documents(trained, read_documents(inputs, documents_file, trained.path), k, csv_path)
    if documents_file is not None:
        raise InputDataError(
            f"--file {documents_file}: {trained.path} is an image model, it takes image files and folders",
            "pass the images as arguments, or use a model trained on a labelled text dataset",
        )
    return _predict_files(trained, [Path(item) for item in inputs], k, csv_path, draw_dir, engine_cfg, limits)


def read_documents(inputs: list[str], documents_file: Path | None, model: Path) -> list[tuple[str, str]]:
    """``(source, document)`` pairs from arguments, ``-`` (stdin lines) and a documents file, in that order.

    Raises:
        InputDataError: no document at all, an argument that names an existing file, or a file that is not UTF-8.
    """
    import sys

    documents: list[tuple[str, str]] = []
    for number, item in enumerate(inputs, start=1):
        if item == "-":
            documents += [(f"stdin:{n}", line) for n, line in enumerate(sys.stdin.read().split("\n"), start=1) if line.strip()]
        elif path_kind(item) == "file":
            raise InputDataError(
                f"'{item}' is a file, and {model} is a text model: it reads documents, not files",
                f"pass --file {item} to classify its lines (one document each), or the text itself in quotes",
            )
        else:
            documents.append((f"argument {number}", item))
    if documents_file is not None:
        documents += _file_documents(documents_file)
    if not documents:
        raise InputDataError("no document to predict", "pass documents as arguments, --file FILE (one per line) or - for stdin")
    return documents


def _file_documents(path: Path) -> list[tuple[str, str]]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputDataError(f"no such file: {path}") from None
    except UnicodeDecodeError as exc:
        raise InputDataError(
            f"{path} is not UTF-8 (cannot decode the byte at offset {exc.start})", "convert it to UTF-8, e.g. iconv -f cp1252 -t utf-8"
        ) from None
    return [(f"{path}:{number}", line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]


def _predict_documents(trained: TrainedModel, documents: list[tuple[str, str]], k: int, csv_path: Path | None) -> Result:
    from dlpipe.text.encoding import encode_documents

    k = min(k, len(trained.classes))
    predictions: list[Prediction] = []
    with progress(len(documents), "predict", "documents") as advance:
        for start in range(0, len(documents), _TEXT_CHUNK):
            chunk = documents[start : start + _TEXT_CHUNK]
            encoded = encode_documents(trained, [document for _, document in chunk])
            outputs = trained.model.predict(encoded.ids, verbose=0, batch_size=_TEXT_BATCH)
            for (source, document), length, output in zip(chunk, encoded.lengths, outputs, strict=True):
                if length == 0:
                    answer, error = trained.head.no_answer(), "empty_document: no token after tokenisation"
                else:
                    answer, error = trained.head.answer(output[None], trained.classes, k), ""
                predictions.append(Prediction(source, answer, error, document=document))
            advance(len(chunk))
    if len(documents) == 1 and predictions[0].error:
        raise InputDataError(f"{predictions[0].path} has no token after tokenisation", "pass a document with words in it")
    if csv_path is not None:
        _write(csv_path, predictions, trained.head.csv_columns(k), with_documents=True)
    return Result(trained.path, predictions, csv_path, trained.head.answer_title, modality="text")


def _predict_files(
    trained: TrainedModel,
    inputs: list[Path],
    k: int,
    csv_path: Path | None,
    draw_dir: Path | None,
    engine_cfg: EmbedConfig | None,
    limits: FileLimits,
) -> Result:
    drawn = Drawings(trained, draw_dir) if draw_dir is not None else None
    files, from_folders = _expand(inputs)
    k = min(k, len(trained.classes))
    named = frozenset(str(path) for path in files if path not in from_folders)
    recipe = PredictorRecipe(trained.path, trained.sidecar["model_sha256"], k, named, limits)
    job = InferenceJob(recipe, [str(path) for path in files], _BATCH, local=FilePredictor(trained, k, named, limits))
    predictions: list[Prediction] = []
    with progress(len(files), "predict", "files") as advance, _engine(engine_cfg) as engine:
        placed: list[Prediction | None] = [None] * len(files)
        for first, block in engine.map(job):
            placed[first : first + len(block)] = block
            advance(len(block))
        predictions = [p for p in placed if p is not None]
    if drawn is not None:
        for prediction in predictions:
            if not prediction.error and prediction.windows == 1:
                drawn.add(Path(prediction.path), prediction.answer)
    if csv_path is not None:
        _write(csv_path, predictions, trained.head.csv_columns(k))
    return Result(trained.path, predictions, csv_path, trained.head.answer_title)


def _engine(cfg: EmbedConfig | None) -> Engine:
    from dlpipe.models.engines.local import LocalEngine
    from dlpipe.models.engines.registry import open_engine

    return open_engine(cfg) if cfg is not None else LocalEngine()


@dataclass(frozen=True)
class PredictorRecipe:
    """How an engine's worker rebuilds :class:`FilePredictor` from the model folder (small and picklable).

    Attributes:
        model: the model file the driver loaded.
        model_sha256: its hash then: a worker that finds another model refuses it (exit 5).
        k: classes per answer.
        named: the files named on the command line, whose rejection is an error (a folder's files are skipped).
        limits: the checks every file must meet.
    """

    model: Path
    model_sha256: str
    k: int
    named: frozenset[str]
    limits: FileLimits

    def build(self) -> FilePredictor:
        """Load the model (once per worker) and check it is the driver's."""
        trained = load_trained_model(self.model)
        if trained.sidecar["model_sha256"] != self.model_sha256:
            raise ArtifactError(f"{self.model} changed while predict was running", "run predict again")
        return FilePredictor(trained, self.k, self.named, self.limits)


class FilePredictor:
    """The engines' worker for ``predict``: image files (or audio clips) in, one :class:`Prediction` each.

    A file from a folder that cannot be read becomes a prediction with its error; a file named on
    the command line that cannot be read stops the run (InputDataError).
    """

    width = None  # results are Prediction objects

    def __init__(self, trained: TrainedModel, k: int, named: frozenset[str], limits: FileLimits) -> None:
        self.trained, self.k, self.named, self.limits = trained, k, named, limits

    def run(self, items: list[str]) -> Iterator[list[Prediction]]:
        """Predictions for ``items`` in order, ``_BATCH`` files per model call."""
        trained = self.trained
        for start in range(0, len(items), _BATCH):
            chunk = [Path(item) for item in items[start : start + _BATCH]]
            arrays: list[np.ndarray] = []
            spans: list[tuple[Path, int]] = []
            rejected: dict[Path, str] = {}
            for path in chunk:
                try:
                    inputs_of_file = file_model_inputs(path, trained.image_size, trained.transform, self.limits)
                except Rejected as rejection:
                    if str(path) in self.named:
                        raise InputDataError(
                            f"cannot predict {path}: {rejection.detail}", f"pass {accepted_files(trained.transform)}"
                        ) from None
                    rejected[path] = f"{rejection.reason}: {rejection.detail}"
                    continue
                arrays.extend(inputs_of_file)
                spans.append((path, len(inputs_of_file)))
            answered: dict[Path, Prediction] = {}
            if arrays:
                outputs = trained.model.predict(np.stack(arrays), verbose=0)
                offset = 0
                for path, count in spans:
                    answer = trained.head.answer(outputs[offset : offset + count], trained.classes, self.k, _size(trained, path, count))
                    answered[path] = Prediction(str(path), answer, windows=count)
                    offset += count
            yield [
                answered[path] if path in answered else Prediction(str(path), trained.head.no_answer(), error=rejected[path])
                for path in chunk
            ]


def _size(trained: TrainedModel, path: Path, windows: int) -> tuple[int, int] | None:
    """An image's displayed size when the head answers in pixels (None for audio clips and other heads)."""
    from dlpipe.data.media.images import displayed_size

    if not trained.head.item_sizes_needed() or trained.transform is not None and windows != 1:
        return None
    try:
        return displayed_size(path)
    except Rejected:
        return None  # a clip of a spectrogram model: no pixels to answer in


class Drawings:
    """``predict --out FOLDER``: each image written again with its answer drawn, under a name not yet taken."""

    def __init__(self, trained: TrainedModel, folder: Path) -> None:
        self.trained, self.folder, self.taken = trained, Path(folder), set()
        self.folder.mkdir(parents=True, exist_ok=True)

    def add(self, path: Path, answer: Answer) -> None:
        """Draw one answered image (an audio clip has none to draw and is skipped)."""
        from dlpipe.core.artifacts import atomic_write_bytes
        from dlpipe.data.media.images import load_rgb

        try:
            image = load_rgb(path, 1 << 40)
        except Rejected:
            return
        name, number = f"{path.stem}.png", 1
        while name in self.taken:
            number += 1
            name = f"{path.stem}_{number}.png"
        self.taken.add(name)
        buffer = io.BytesIO()
        self.trained.head.annotate(image, answer).save(buffer, format="PNG")
        atomic_write_bytes(self.folder / name, buffer.getvalue())


def _expand(inputs: list[Path]) -> tuple[list[Path], set[Path]]:
    """Files to predict, and which of them came from a folder (those may fail without stopping the run)."""
    files: list[Path] = []
    from_folders: set[Path] = set()
    for item in inputs:
        kind = path_kind(item)
        if kind == "folder":
            found = visible_files(item)
            if not found:
                raise InputDataError(f"no files in folder {item}")
            files.extend(found)
            from_folders.update(found)
        elif kind == "file":
            files.append(item)
        else:
            raise InputDataError(
                f"no such file or folder: {item}", "this model takes images; documents go to a model trained on a labelled text dataset"
            )
    return files, from_folders


def _write(path: Path, predictions: list[Prediction], answer_columns: list[str], with_documents: bool = False) -> None:
    if with_documents:
        rows = [{"source": p.path, "document": p.document, "error": p.error} | p.answer.csv_row() for p in predictions]
        write_csv(path, ["source", "document", *answer_columns, "error"], rows)
        return
    rows = [{"path": p.path, "error": p.error} | p.answer.csv_row() for p in predictions]
    write_csv(path, ["path", *answer_columns, "error"], rows)
