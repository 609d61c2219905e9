"""Saving a trained model reproducibly, and loading it together with its sidecar, refusing any inconsistency.

Every consumer of ``model.keras`` (embed, predict, search, heatmap) goes through
:func:`load_trained_model`, so a missing, corrupt or mismatched model is caught
in one place with one clear message. Every producer saves through :func:`save_model`,
so the same weights give the same bytes.
"""

from __future__ import annotations

import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlpipe.audio.transform import RecordedTransform, from_record
from dlpipe.core.artifacts import malformed_is_damage, read_json, sha256_file
from dlpipe.core.errors import ArtifactError, ConfigError
from dlpipe.core.layout import MODEL_FILE, MODEL_SIDECAR
from dlpipe.data.manifest import Manifest
from dlpipe.models.heads.base import Head
from dlpipe.models.heads.registry import HEADS, head_from_record
from dlpipe.models.vocabulary import Vocabulary, load_vocabulary

# A fixed zip entry time (zip's epoch): Keras stamps the weights entry with the time of saving.
_ENTRY_TIME = (1980, 1, 1, 0, 0, 0)
_SHARED_OBJECT_ID = re.compile(r'"shared_object_id": (\d+)')
_REQUIRED_KEYS = ("classes", "embedding_layer", "model_sha256", "manifest_sha256")
# What a model of each input kind records besides (sidecars before text models had no modality: images).
_MODALITY_KEYS = {"image": ("image_size", "backbone", "spectrogram"), "text": ("vocabulary", "tokenize", "max_length")}


def save_model(model: Any, path: Path) -> None:
    """Save a Keras model as ``path`` (``.keras``) so that equal weights and architecture give equal bytes.

    Keras writes three run facts into the archive: the time of saving (``metadata.json`` and the
    weights entry's zip timestamp) and ``shared_object_id``, a Python object's memory address, in
    ``config.json``. The archive is rewritten with a fixed time, no date, and those ids numbered in
    order of appearance (they only pair the references to one shared object, which numbering keeps).
    """
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    temporary = path.with_name(path.name + ".canonical")
    with zipfile.ZipFile(temporary, "w") as archive:
        for info, data in entries:
            if info.filename == "metadata.json":
                data = json.dumps({key: value for key, value in json.loads(data).items() if key != "date_saved"}).encode()
            elif info.filename == "config.json":
                data = _numbered_shared_objects(data.decode("utf-8")).encode("utf-8")
            entry = zipfile.ZipInfo(info.filename, date_time=_ENTRY_TIME)
            entry.compress_type, entry.external_attr = info.compress_type, info.external_attr
            archive.writestr(entry, data)
    temporary.replace(path)


def _numbered_shared_objects(config: str) -> str:
    numbers: dict[str, int] = {}
    return _SHARED_OBJECT_ID.sub(lambda match: f'"shared_object_id": {numbers.setdefault(match[1], len(numbers) + 1)}', config)


@dataclass(frozen=True)
class TrainedModel:
    """A trained Keras network, its task head and what its sidecar says about it."""

    model: Any
    sidecar: dict[str, Any]
    path: Path
    head: Head
    # How audio became this model's training images (model.json's record), or None for a photo model.
    transform: RecordedTransform | None
    # A text model's word ids (vocabulary.txt beside the model), or None for an image model.
    vocabulary: Vocabulary | None = None

    @property
    def recorded_path(self) -> str:
        """The model as sidecars record it: relative to its dataset's folder (``model/model.keras``), so
        a rerun elsewhere writes the same bytes; its hash (``model_sha256``) says which model it was."""
        return f"{self.path.parent.name}/{self.path.name}"

    @property
    def modality(self) -> str:
        """``image`` (photos and spectrograms: RGB input) or ``text`` (token ids)."""
        return str(self.sidecar.get("modality", "image"))

    @property
    def classes(self) -> list[str]:
        """The names of the output units (the classes, for classification)."""
        return list(self.sidecar["classes"])

    def class_index(self, name: str | None) -> int | None:
        """The output unit of class ``name`` (None stays None: the predicted class).

        Raises:
            ConfigError: the model does not know the class (the known ones are listed), or it has no classes.
        """
        if name is None:
            return None
        if self.head.name != "classification":
            raise ConfigError(
                f"--class {name}: the model in {self.path.parent} is a {self.head.name} model, it has no classes",
                "leave --class out: its maps explain the model's answer",
            )
        if name not in self.classes:
            raise ConfigError(
                f"--class {name}: the model in {self.path.parent} does not know this class", f"known classes: {', '.join(self.classes)}"
            )
        return self.classes.index(name)

    @property
    def image_size(self) -> int:
        """The side of the square RGB input."""
        return int(self.sidecar["image_size"])


def model_file(location: Path) -> Path:
    """``location`` may be the model folder or the ``model.keras`` file itself."""
    location = Path(location)
    return location / MODEL_FILE if location.is_dir() or location.suffix != ".keras" else location


def load_trained_model(location: Path) -> TrainedModel:
    """Load ``model.keras`` and check it against ``model.json`` beside it.

    Raises:
        ArtifactError: the model or sidecar is missing or corrupt, the file's hash differs from
            the sidecar's, the sidecar names a task this dlpipe has no head for, or the model's
            input size or class count disagrees with the sidecar.
    """
    with malformed_is_damage(location, "the model folder", "retrain with `dlpipe finetune`"):
        import keras

        import dlpipe.models.layers  # noqa: F401  (registers dlpipe's layers for deserialisation)

        path = model_file(location)
        if not path.is_file():
            raise ArtifactError(f"model not found: {path}", "train one with `dlpipe finetune` (or `dvc repro`)")
        sidecar = read_json(path.with_name(MODEL_SIDECAR), "model sidecar")
        modality = sidecar.get("modality", "image")
        if modality not in _MODALITY_KEYS:
            raise ArtifactError(f"model sidecar {path.with_name(MODEL_SIDECAR)} names modality '{modality}'", "retrain the model")
        missing = [key for key in (*_REQUIRED_KEYS, *_MODALITY_KEYS[modality]) if key not in sidecar]
        if missing:
            raise ArtifactError(f"model sidecar {path.with_name(MODEL_SIDECAR)} lacks {', '.join(missing)}", "retrain the model")
        # Models from before the head seam were all classifiers and do not record their task.
        task = sidecar.get("task", "classification")
        if task not in HEADS:
            raise ArtifactError(
                f"model sidecar {path.with_name(MODEL_SIDECAR)} names task '{task}', which this dlpipe has no head for",
                f"use a dlpipe that knows it, or retrain with datasets.<name>.task one of: {', '.join(HEADS)}",
            )
        if sha256_file(path) != sidecar["model_sha256"]:
            raise ArtifactError(
                f"{path} does not match its sidecar (sha256 differs): the model was replaced or modified",
                "retrain with `dlpipe finetune`, or put back the model.keras that model.json describes",
            )
        try:
            # safe_mode (the default, stated): a Lambda layer or other code in the archive is refused, never run.
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:  # Keras raises many types for a damaged archive
            raise ArtifactError(f"cannot load model {path}: {exc}", "the file is corrupt: retrain with `dlpipe finetune`") from None
        record = sidecar.get("spectrogram")
        transform = None if record is None else from_record(record, path.with_name(MODEL_SIDECAR))
        vocabulary = _checked_vocabulary(path, sidecar["vocabulary"]) if modality == "text" else None
        try:
            head = head_from_record(task, sidecar.get("targets") or {})
        except (KeyError, TypeError, ValueError) as exc:
            damaged = f"model sidecar {path.with_name(MODEL_SIDECAR)}: its targets record is damaged ({exc!r})"
            raise ArtifactError(damaged, "retrain the model") from None
        trained = TrainedModel(model, sidecar, path, head, transform, vocabulary)
        _check_shapes(trained)
        return trained


def load_model_trained_on(location: Path, manifest: Manifest, hint: str = "") -> TrainedModel:
    """:func:`load_trained_model`, refused when the model was trained on another version of ``manifest``.

    Raises:
        ArtifactError: as load_trained_model, the model's task is not the manifest's, or the manifest's
            sha256 differs from the one in model.json (``hint`` adds another way out to the retraining advice).
    """
    trained = load_trained_model(location)
    if trained.head.name != manifest.task:
        raise ArtifactError(
            f"the model in {trained.path.parent} is a {trained.head.name} model, and dataset '{manifest.dataset}' is task {manifest.task}",
            f"retrain it with `dlpipe finetune --dataset {manifest.dataset}`, or use the dataset it was trained on",
        )
    if trained.sidecar["manifest_sha256"] != manifest.sha256:
        dataset = manifest.dataset
        raise ArtifactError(
            f"dataset '{dataset}' was re-ingested after the model in {trained.path.parent} was trained "
            "(the manifest's sha256 differs from the one in model.json)",
            f"retrain with `dlpipe finetune --dataset {dataset}` (or `dvc repro`)" + (f", {hint}" if hint else ""),
        )
    return trained


def _checked_vocabulary(path: Path, record: dict[str, Any]) -> Vocabulary:
    vocabulary_path = path.with_name(record["file"])
    if not vocabulary_path.is_file() or sha256_file(vocabulary_path) != record["sha256"]:
        raise ArtifactError(
            f"{vocabulary_path} is missing or does not match {path.with_name(MODEL_SIDECAR)}",
            "copy the whole model folder, or retrain with `dlpipe finetune`",
        )
    return load_vocabulary(vocabulary_path)


def _check_shapes(trained: TrainedModel) -> None:
    output_units = trained.model.output_shape[-1]
    if trained.modality == "text":
        expected, what = (int(trained.sidecar["max_length"]),), "max_length"
        input_shape = tuple(trained.model.input_shape[1:])
    else:
        expected, what = (trained.image_size, trained.image_size), "image_size"
        input_shape = tuple(trained.model.input_shape[1:3])
    if input_shape != expected:
        raise ArtifactError(f"{trained.path}: input {input_shape} differs from the sidecar's {what} {expected}", "retrain the model")
    if trained.vocabulary is not None and trained.model.get_layer("word_embedding").input_dim != len(trained.vocabulary):
        raise ArtifactError(f"{trained.path}: the embedding's rows differ from the vocabulary's words", "retrain the model")
    if output_units != len(trained.classes):
        raise ArtifactError(
            f"{trained.path}: {output_units} output classes, but the sidecar lists {len(trained.classes)}",
            "retrain the model",
        )
