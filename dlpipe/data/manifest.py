"""Reading the ingest manifest: the one table every later stage reads.

``load_manifest`` checks that ``manifest.csv`` is the file ingest wrote (its
sha256 against the sidecar), so a stage never runs on a hand-edited or
half-copied manifest, and gives every consumer the same view of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dlpipe.core.artifacts import malformed_is_damage, read_json, sha256_file, write_csv
from dlpipe.core.config import Project
from dlpipe.core.errors import ArtifactError, ConfigError
from dlpipe.core.layout import CORPUS_FILE, MANIFEST_FILE, MANIFEST_SIDECAR, SPECTROGRAM_SIDECAR
from dlpipe.data.table import Table

# The columns image stages read; an audio dataset's spectrogram manifest has them too (plus its own).
IMAGE_MANIFEST_COLUMNS = ("path", "label", "split", "sha256", "size_bytes", "width", "height", "format", "mode", "conversion")
# rejected.csv of ingest and spectrogram: every item not taken, with a stable reason code.
REJECTED_COLUMNS = ("path", "label", "reason", "detail")


@dataclass(frozen=True)
class Manifest:
    """An ingested dataset: its rows in manifest order and where the files live."""

    dataset: str
    modality: str
    source_root: Path
    rows: Table  # row i as a dict (table[i]["path"]), held column by column
    sha256: str
    # For an audio dataset's spectrogram manifest: how its clips became these images
    # (the record :mod:`dlpipe.audio.transform` reads); None for photos.
    spectrogram: dict[str, Any] | None = None
    # For a labelled text dataset: each row's document (normal form), in manifest order.
    documents: list[str] | None = None
    # What a model learns from the rows (datasets.<name>.task when ingested) and, for a task other
    # than classification, the manifest columns holding its targets (pixels, or the CSV's units).
    task: str = "classification"
    target_columns: tuple[str, ...] = ()

    @property
    def labelled(self) -> bool:
        """True when the rows carry class labels (a regression or localisation CSV may have none)."""
        return any(self.rows.column("label"))

    @property
    def classes(self) -> list[str]:
        """Sorted class names: index i is the model's output unit i."""
        return sorted(set(self.rows.column("label")) - {""})

    def paths(self) -> list[Path]:
        """Absolute path of every item, in manifest order."""
        return [self.resolve(relpath) for relpath in self.rows.column("path")]

    def resolve(self, relpath: str) -> Path:
        """Absolute path of one manifest entry."""
        path = Path(relpath)
        return path if path.is_absolute() else self.source_root / path

    def split(self, name: str) -> list[int]:
        """Row indices of one split, in manifest order."""
        return [index for index, split in enumerate(self.rows.column("split")) if split == name]


def write_rejected(path: Path, items: Iterable[tuple[str, str, str, str]]) -> int:
    """Write ``rejected.csv`` from ``(path, label, reason, detail)`` tuples in the given order; return the count."""
    return write_csv(path, REJECTED_COLUMNS, (dict(zip(REJECTED_COLUMNS, item, strict=True)) for item in items))


def load_manifest(project: Project, dataset: str) -> Manifest:
    """Load ``<data_dir>/<dataset>/ingest/manifest.csv`` after checking it against its sidecar.

    Raises:
        ArtifactError: ingest has not run, or the manifest differs from what ingest wrote.
    """
    with malformed_is_damage(project.layout(dataset).ingest_dir, f"the ingest output of dataset '{dataset}'", _rerun_ingest(dataset)):
        spec = project.dataset(dataset)
        folder = project.layout(dataset).ingest_dir
        sidecar = read_json(folder / MANIFEST_SIDECAR, f"the ingest sidecar of dataset '{dataset}'")
        path = folder / MANIFEST_FILE
        if not path.is_file():
            raise ArtifactError(f"manifest not found: {path}", f"run `dlpipe ingest --dataset {dataset}` first")
        rows, digest = _rows_matching(
            path,
            sidecar,
            "changed after ingest wrote it (sha256 differs from manifest.json)",
            f"rerun `dlpipe ingest --dataset {dataset}` instead of editing the manifest",
        )
        source = project.resolve(spec.source)
        source_root = source.parent if source.is_file() else source
        task = sidecar.get("task", "classification")
        if task != spec.task:
            raise ArtifactError(
                f"dataset '{dataset}' was ingested for task {task}, params.yaml now says task {spec.task}",
                _rerun_ingest(dataset),
            )
        columns = tuple(sidecar.get("target_columns", ()))
        return Manifest(dataset, sidecar["modality"], source_root, rows, digest, task=task, target_columns=columns)


def load_text_manifest(project: Project, dataset: str) -> Manifest:
    """A labelled text dataset's manifest with its documents (ingest's corpus.txt, one per row), both checked.

    Raises:
        ConfigError: the dataset is not labelled text.
        ArtifactError: ingest has not run, or the manifest or corpus changed since.
    """
    with malformed_is_damage(project.layout(dataset).ingest_dir, f"the ingest output of dataset '{dataset}'", _rerun_ingest(dataset)):
        spec = project.dataset(dataset)
        if spec.modality != "text" or not spec.labelled:
            raise ConfigError(
                f"dataset '{dataset}' is not labelled text (modality {spec.modality}, labels {spec.labels})",
                "set datasets.<name>.labels to folders, csv or fasttext for a text classifier",
            )
        manifest = load_manifest(project, dataset)
        folder = project.layout(dataset).ingest_dir
        sidecar = read_json(folder / MANIFEST_SIDECAR, f"the ingest sidecar of dataset '{dataset}'")
        corpus = folder / CORPUS_FILE
        rerun = _rerun_ingest(dataset)
        if sidecar.get("labels", "none") == "none":
            raise ArtifactError(f"{folder} was ingested as an unlabelled corpus", rerun)
        if not corpus.is_file() or sha256_file(corpus) != sidecar.get("corpus_sha256"):
            raise ArtifactError(f"{corpus} is missing or changed after ingest wrote it", rerun)
        documents = corpus.read_text(encoding="utf-8").split("\n")[:-1]
        if len(documents) != len(manifest.rows):
            raise ArtifactError(f"{corpus} holds {len(documents)} documents, the manifest {len(manifest.rows)}", rerun)
        return replace(manifest, documents=documents)


def load_image_manifest(project: Project, dataset: str) -> Manifest:
    """The images an image stage (finetune, embed, cluster, search, heatmap) runs on.

    An image dataset's ingest manifest, or an audio dataset's spectrogram manifest
    (its windows as images, paths relative to the ``spectrogram`` folder), checked
    against the sidecar it was written with and against the ingest it came from.

    Raises:
        ConfigError: a text dataset (it has no images).
        ArtifactError: ingest or spectrogram has not run, or either changed since.
    """
    with malformed_is_damage(project.layout(dataset).root, f"the manifest of dataset '{dataset}'"):
        spec = project.dataset(dataset)
        if spec.modality == "image":
            return load_manifest(project, dataset)
        if spec.modality != "audio":
            raise ConfigError(
                f"dataset '{dataset}' is {spec.modality}; this stage needs images (or audio, through spectrogram)",
                "unlabelled text goes to `dlpipe word2vec`",
            )
        ingested = load_manifest(project, dataset)
        folder = project.layout(dataset).spectrogram_dir
        sidecar = read_json(folder / SPECTROGRAM_SIDECAR, f"the spectrogram sidecar of dataset '{dataset}'")
        if sidecar.get("ingest_manifest_sha256") != ingested.sha256:
            raise ArtifactError(
                f"{folder} was made from an earlier ingest of dataset '{dataset}'",
                f"rerun `dlpipe spectrogram --dataset {dataset}`",
            )
        rows, digest = _rows_matching(
            folder / MANIFEST_FILE,
            sidecar,
            "is missing or changed after spectrogram wrote it",
            f"rerun `dlpipe spectrogram --dataset {dataset}`",
        )
        spectrogram = {key: sidecar.get(key) for key in ("params", "db_min", "db_max", "image")}
        return Manifest(dataset, "image", folder, rows, digest, spectrogram)


def load_model_manifest(project: Project, dataset: str) -> Manifest:
    """The items a model stage reads: a labelled text dataset's documents, otherwise its images (see load_image_manifest).

    Raises:
        ConfigError: an unlabelled text corpus (it has no model; word2vec trains on it).
        ArtifactError: as load_text_manifest / load_image_manifest.
    """
    spec = project.dataset(dataset)
    if spec.modality == "text" and spec.labelled:
        return load_text_manifest(project, dataset)
    return load_image_manifest(project, dataset)


def _rerun_ingest(dataset: str) -> str:
    return f"rerun `dlpipe ingest --dataset {dataset}`"


def _rows_matching(path: Path, sidecar: dict[str, Any], problem: str, hint: str) -> tuple[Table, str]:
    """A manifest CSV's rows and sha256, refused (ArtifactError: ``path`` + ``problem``) unless the sidecar recorded that hash."""
    digest = sha256_file(path) if path.is_file() else ""
    if digest != sidecar.get("manifest_sha256"):
        raise ArtifactError(f"{path} {problem}", hint)
    return Table.read_csv(path), digest
