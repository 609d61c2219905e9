"""``predict``: the trained model's answer (top-k classes) for image files or folders.

Not a pipeline stage (it answers questions about new images), but built like
one: ``run`` takes typed arguments and returns a Result; the CLI prints it.
A model trained on an audio dataset's spectrograms also takes audio clips: each
is cut into windows exactly as the spectrogram stage did, and the windows'
probabilities are averaged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlpipe.core.artifacts import write_csv
from dlpipe.core.console import progress
from dlpipe.core.errors import InputDataError
from dlpipe.data.files import visible_files
from dlpipe.data.media import Rejected
from dlpipe.models.file_inputs import accepted_files, file_model_inputs
from dlpipe.models.heads.base import Answer
from dlpipe.models.store import load_trained_model

_BATCH = 64


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one image (or audio clip), or why it could not be read."""

    path: str
    answer: Answer  # the head's empty answer when the file could not be read
    error: str = ""
    windows: int = 1  # spectrogram windows averaged (audio clips)

    @property
    def text(self) -> str:
        """The answer as one line."""
        return self.answer.text

    def as_json(self) -> dict[str, object]:
        """The prediction for ``--json`` output."""
        extra = ({"windows": self.windows} if self.windows > 1 else {}) | ({"error": self.error} if self.error else {})
        return {"path": self.path} | self.answer.as_json() | extra


@dataclass(frozen=True)
class Result:
    """Every prediction, in input order, and the CSV written (if any)."""

    model: Path
    predictions: list[Prediction]
    csv_path: Path | None
    answer_title: str  # what Prediction.text holds, for table headers


def run(model_location: Path, inputs: list[Path], k: int, csv_path: Path | None = None) -> Result:
    """The model's answer (the top ``k`` classes) for each image in ``inputs`` (files, or folders searched recursively).

    Args:
        model_location: a model folder (``data/<dataset>/model``) or its ``model.keras``.
        inputs: image files and/or folders (and audio clips, for a model trained on spectrograms).
        k: how many classes per image (capped at the model's class count).
        csv_path: where to write a CSV of the predictions; None writes none.

    Raises:
        ArtifactError: the model or its sidecar is missing or inconsistent.
        InputDataError: an input does not exist, a named file is not a decodable image, or a folder holds no image.
    """
    trained = load_trained_model(model_location)
    transform = trained.transform
    files, from_folders = _expand(inputs)
    k = min(k, len(trained.classes))
    predictions: list[Prediction] = []
    with progress(len(files), "predict", "files") as advance:
        for start in range(0, len(files), _BATCH):
            chunk = files[start : start + _BATCH]
            arrays: list[np.ndarray] = []
            spans: list[tuple[Path, int]] = []
            for path in chunk:
                try:
                    inputs_of_file = file_model_inputs(path, trained.image_size, transform)
                except Rejected as rejection:
                    if path not in from_folders:
                        raise InputDataError(
                            f"cannot predict {path}: {rejection.detail}", f"pass {accepted_files(transform)}"
                        ) from None
                    predictions.append(Prediction(str(path), trained.head.no_answer(), error=f"{rejection.reason}: {rejection.detail}"))
                    continue
                arrays.extend(inputs_of_file)
                spans.append((path, len(inputs_of_file)))
            if arrays:
                outputs = trained.model.predict(np.stack(arrays), verbose=0)
                offset = 0
                for path, count in spans:
                    answer = trained.head.answer(outputs[offset : offset + count], trained.classes, k)
                    predictions.append(Prediction(str(path), answer, windows=count))
                    offset += count
            advance(len(chunk))
    order = {str(path): i for i, path in enumerate(files)}
    predictions.sort(key=lambda p: order[p.path])
    if csv_path is not None:
        _write(csv_path, predictions, trained.head.csv_columns(k))
    return Result(trained.path, predictions, csv_path, trained.head.answer_title)


def _expand(inputs: list[Path]) -> tuple[list[Path], set[Path]]:
    """Files to predict, and which of them came from a folder (those may fail without stopping the run)."""
    files: list[Path] = []
    from_folders: set[Path] = set()
    for item in inputs:
        if item.is_dir():
            found = visible_files(item)
            if not found:
                raise InputDataError(f"no files in folder {item}")
            files.extend(found)
            from_folders.update(found)
        elif item.is_file():
            files.append(item)
        else:
            raise InputDataError(f"no such file or folder: {item}")
    return files, from_folders


def _write(path: Path, predictions: list[Prediction], answer_columns: list[str]) -> None:
    rows = [{"path": p.path, "error": p.error} | p.answer.csv_row() for p in predictions]
    write_csv(path, ["path", *answer_columns, "error"], rows)
