"""``ingest``: validate a dataset, record it in a manifest and split it.

Every file is decoded fully (in parallel across cores). A labelled text dataset's items are
documents (a file in a class folder, or a line of a fastText or CSV file, see
:mod:`dlpipe.data.documents`); ingest writes them in manifest order, one per line, to
``corpus.txt``, which is also what word2vec reads. Accepted items go to
``manifest.csv`` with their hash, size and per-modality facts; everything not
taken goes to ``rejected.csv`` with a reason. Exact duplicates are kept once, so
copies of one content can never straddle the train/val/test split. The user's
source folder is only ever read.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import itertools
import os
import sys
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.artifacts import (
    atomic_dir,
    atomic_write_json,
    library_versions,
    sha256_file,
    sidecar,
    stage_lock,
    write_csv,
    write_metrics,
)
from dlpipe.core.config import DatasetConfig, IngestConfig, Project, dataset_kind
from dlpipe.core.console import warn
from dlpipe.core.errors import InputDataError
from dlpipe.core.layout import CORPUS_FILE, MANIFEST_FILE, MANIFEST_SIDECAR, REJECTED_FILE
from dlpipe.core.parallel import parallel_map
from dlpipe.data.documents import normalize_document, read_csv_documents, read_fasttext
from dlpipe.data.files import is_hidden
from dlpipe.data.manifest import write_rejected
from dlpipe.data.media import Rejected
from dlpipe.data.media.text import TextInfo

STAGE = "ingest"
COMMON_COLUMNS = ("path", "label", "split", "sha256", "size_bytes")
MODALITY_COLUMNS = {
    "image": ("width", "height", "format", "mode", "conversion"),
    "audio": ("duration", "sample_rate", "channels", "frames", "format", "subtype"),
    "text": ("lines", "tokens", "chars", "encoding"),
}
UNITS = {"image": "images", "audio": "clips", "text": "files"}
# Dropped on purpose, not because the file is bad: not counted against max_reject_fraction.
DEDUPLICATION_REASONS = frozenset({"duplicate", "label_conflict", "duplicate_row"})


@dataclass(frozen=True, slots=True)  # slots: no per-instance dict, for folders of millions of files
class Candidate:
    """One item to inspect: the folder its path is relative to, its path as recorded, and its label.

    ``root`` is one string shared by every candidate of a folder (a path object per file would cost
    more than the rest of the candidate). A document read from a fastText or CSV file also has its
    line there (``relpath`` is then ``file:line``, ``root`` the file) and its text.
    """

    root: str
    relpath: str
    label: str
    line: int = 0
    document: str = ""
    targets: tuple[float, ...] = ()  # a regression or localisation row's values, in the CSV's units (pixels)

    @property
    def source(self) -> Path:
        """The file to read (an absolute ``relpath`` stands for itself)."""
        return Path(self.root) if self.line else Path(self.root, self.relpath)

    @property
    def sort_key(self) -> tuple[str, int]:
        """Manifest order: by path, then by line number (so line 10 follows line 9)."""
        return (self.relpath.rsplit(":", 1)[0], self.line) if self.line else (self.relpath, 0)


@dataclass(slots=True)
class Outcome:
    """The result of inspecting one candidate: facts for the manifest, or a rejection.

    ``facts`` is the modality's info record (ImageInfo, AudioInfo or TextInfo), whose fields are
    the manifest's modality columns.
    """

    candidate: Candidate
    sha256: str = ""
    size_bytes: int = 0
    facts: Any = None
    reason: str = ""
    detail: str = ""
    document: str = ""  # a labelled text document's normal form (written to corpus.txt, not the manifest)
    split: str = ""  # train, val or test once assigned (labelled datasets only)

    @property
    def accepted(self) -> bool:
        return not self.reason

    def findings(self) -> tuple:
        """Everything but the candidate: what a worker sends back to the parent, which holds the candidate already."""
        return (self.sha256, self.size_bytes, self.facts, self.reason, self.detail, self.document)


@dataclass(frozen=True)
class _Findings:
    """A picklable inspector that returns an outcome's findings, not the outcome (see :meth:`Outcome.findings`)."""

    inspect: Callable[[Candidate], Outcome]

    def __call__(self, candidate: Candidate) -> tuple:
        return self.inspect(candidate).findings()


def inspect_all(
    candidates: list[Candidate], inspect: Callable[[Candidate], Outcome], workers: int, description: str, unit: str
) -> list[Outcome]:
    """Inspect every candidate across ``workers`` processes; outcomes in candidate order."""
    findings = parallel_map(_Findings(inspect), candidates, workers, description, unit)
    return [Outcome(candidate, *found) for candidate, found in zip(candidates, findings, strict=True)]


@dataclass(frozen=True)
class Result:
    """What an ingest run produced."""

    dataset: str
    modality: str
    out_dir: Path
    metrics_path: Path
    accepted: int
    rejected: int
    ignored: int
    classes: dict[str, int]
    splits: dict[str, int]
    metrics: dict[str, Any]


def run(project: Project, dataset: str) -> Result:
    """Ingest one dataset of ``project`` into ``<data_dir>/<dataset>/ingest``.

    Args:
        project: validated params and the project root.
        dataset: a key of ``datasets`` in params.yaml.

    Returns:
        Result with output paths, counts and the metrics written.

    Raises:
        InputDataError: missing source, empty dataset, a single class, a class with no
            usable file, or more than ``ingest.max_reject_fraction`` bad items.
    """
    spec = project.dataset(dataset)
    cfg = project.params.ingest
    source = project.resolve(spec.source)
    layout = project.layout(dataset)
    out_dir = layout.ingest_dir
    metrics_path = layout.metrics(STAGE)

    with stage_lock(layout.root, STAGE):
        if spec.labels in ("csv", "fasttext"):
            outcomes, ignored = document_rows(source, spec, cfg, dataset), []
            candidates = [o.candidate for o in outcomes]
        elif spec.task != "classification":
            candidates, refused, ignored = target_candidates(source, spec, dataset)
            outcomes = inspect_all(candidates, inspector(spec, cfg), cfg.workers, f"ingest {dataset}", _units(spec)) + refused
            _check_inside_images(outcomes, spec)
            candidates = [o.candidate for o in outcomes]
        else:
            candidates, ignored = enumerate_candidates(source, spec, dataset)
            if not candidates:
                raise InputDataError(f"dataset '{dataset}': no files found in {source}", _layout_hint(spec))
            outcomes = inspect_all(candidates, inspector(spec, cfg), cfg.workers, f"ingest {dataset}", _units(spec))
        if spec.labelled:
            _deduplicate(outcomes)
        accepted = [o for o in outcomes if o.accepted]
        rejected = [o for o in outcomes if not o.accepted]
        _check_usable(dataset, spec, cfg, source, candidates, outcomes, accepted)
        if spec.labelled:
            _assign_splits(accepted, cfg, project.params.base.seed, _strata(accepted, spec))
        metrics = _metrics(dataset, spec, outcomes, accepted, rejected, ignored)
        if metrics["label_conflicts"]:
            warn(f"{metrics['label_conflicts']} files share content under different labels; none was kept (rejected.csv)")

        with atomic_dir(out_dir) as staging:
            _write_manifest(staging / MANIFEST_FILE, spec, accepted)
            write_rejected(staging / REJECTED_FILE, _rejected_items(rejected + ignored))
            if spec.labelled and spec.modality == "text":
                _write_documents(staging / CORPUS_FILE, accepted)
            elif spec.modality == "text":
                _write_corpus(staging / CORPUS_FILE, accepted, cfg.text.encoding)
            atomic_write_json(
                staging / MANIFEST_SIDECAR,
                sidecar(
                    STAGE,
                    dataset=dataset,
                    modality=spec.modality,
                    labels=spec.labels,
                    task=spec.task,
                    target_columns=spec.target_columns,
                    source=spec.source,
                    manifest_sha256=sha256_file(staging / MANIFEST_FILE),
                    # what word2vec checks the corpus against before it reads it
                    **({"corpus_sha256": sha256_file(staging / CORPUS_FILE)} if spec.modality == "text" else {}),
                    params={"seed": project.params.base.seed, **cfg.model_dump(exclude={"workers"})},
                    counts={k: metrics[k] for k in ("accepted", "rejected", "ignored")},
                    versions=library_versions("pillow", "soundfile", "numpy"),
                ),
            )
        write_metrics(metrics_path, metrics)
    return Result(
        dataset=dataset,
        modality=spec.modality,
        out_dir=out_dir,
        metrics_path=metrics_path,
        accepted=len(accepted),
        rejected=len(rejected),
        ignored=len(ignored),
        classes=metrics["classes"],
        splits=metrics["splits"],
        metrics=metrics,
    )


# --- finding the candidates -------------------------------------------------------------------


def _layout_hint(spec: DatasetConfig) -> str:
    key = f"datasets.{dataset_kind(spec)}.<name>"
    if spec.task != "classification":
        return f"point {key}.source at a CSV with a path column and the columns {', '.join(spec.target_columns)}"
    if spec.labels == "folders":
        return f"point {key}.source at a folder with one sub-folder of .txt documents per class"
    if spec.labels in ("csv", "fasttext"):
        return f"point {key}.source at a {spec.labels} file (see {key}.labels)"
    if spec.modality == "text":
        return f"point {key}.source at a text file or a folder of text files"
    return f"point {key}.source at a folder with one sub-folder per class, or a CSV with columns path,label"


def _units(spec: DatasetConfig) -> str:
    return "documents" if spec.labelled and spec.modality == "text" else UNITS[spec.modality]


def _walk(root: Path) -> list[tuple[str, bool]]:
    """Every entry under ``root`` as (relative POSIX path, is a folder), sorted by path.

    os.walk reuses the directory listing's file types, so this needs no stat per file.
    """
    entries = []
    for folder, dirnames, filenames in os.walk(root):
        prefix = Path(folder).relative_to(root).as_posix()
        prefix = "" if prefix == "." else prefix + "/"
        entries.extend((prefix + name, True) for name in dirnames)
        entries.extend((prefix + name, False) for name in filenames)
    return sorted(entries)


def enumerate_candidates(source: Path, spec: DatasetConfig, dataset: str) -> tuple[list[Candidate], list[Outcome]]:
    """List the files to inspect and those ignored outright (hidden files, stray top-level files)."""
    if not source.exists():
        raise InputDataError(f"dataset '{dataset}': source not found: {source}", _layout_hint(spec))
    by_folder = spec.labelled  # images, audio and text with labels: folders have one sub-folder per class
    if by_folder and source.is_file():
        if spec.modality == "text" or source.suffix.lower() != ".csv":
            raise InputDataError(f"dataset '{dataset}': source {source} is a file, not a folder of class folders", _layout_hint(spec))
        return _from_csv(source), []
    if source.is_file():
        return [Candidate(str(source.parent), source.name, "")], []
    root = str(source)
    candidates: list[Candidate] = []
    ignored: list[Outcome] = []
    class_dirs = []
    for relpath, is_dir in _walk(source):
        parts = relpath.split("/")
        hidden = any(is_hidden(part) for part in parts)
        if is_dir:
            if len(parts) == 1 and not hidden:
                class_dirs.append(relpath)
            continue
        label = sys.intern(parts[0]) if by_folder and len(parts) > 1 else ""  # one string per class, not per file
        if hidden:
            ignored.append(Outcome(Candidate(root, relpath, label), reason="hidden_file", detail="hidden file or folder"))
        elif by_folder and len(parts) == 1:
            ignored.append(Outcome(Candidate(root, relpath, ""), reason="outside_class_folder", detail="not inside a class folder"))
        else:
            candidates.append(Candidate(root, relpath, label))
    if by_folder:
        _check_classes(dataset, source, class_dirs, candidates)
    return candidates, ignored


def document_rows(source: Path, spec: DatasetConfig, cfg: IngestConfig, dataset: str) -> list[Outcome]:
    """The documents of a fastText or CSV source as outcomes: accepted, or rejected with the reason found.

    Raises:
        InputDataError: the source is missing or a folder, cannot be decoded, or (CSV) lacks a named column.
    """
    if not source.is_file():
        raise InputDataError(f"dataset '{dataset}': source {source} is not a file", _layout_hint(spec))
    if spec.labels == "fasttext":
        rows = read_fasttext(source, cfg.text.encoding)
    else:
        rows = read_csv_documents(source, cfg.text.encoding, cfg.text.text_column, cfg.text.label_column)
    if not rows:
        raise InputDataError(f"dataset '{dataset}': no document in {source}", _layout_hint(spec))
    outcomes = []
    for row in rows:
        candidate = Candidate(str(source), f"{source.name}:{row.line}", row.label, row.line, row.text)
        if row.reason:
            outcomes.append(Outcome(candidate, reason=row.reason, detail=row.detail))
        else:
            outcomes.append(_document_outcome(candidate, row.text, lines=1, encoding=cfg.text.encoding))
    return outcomes


def _document_outcome(candidate: Candidate, document: str, lines: int, encoding: str) -> Outcome:
    """An accepted document, identified by the sha256 of its normal form (so duplicates are found by content)."""
    data = document.encode("utf-8")
    facts = TextInfo(lines=lines, tokens=len(document.split()), chars=len(document), encoding=encoding)
    return Outcome(candidate, hashlib.sha256(data).hexdigest(), len(data), facts, document=document)


def target_candidates(source: Path, spec: DatasetConfig, dataset: str) -> tuple[list[Candidate], list[Outcome], list[Outcome]]:
    """The rows of a targets CSV: candidates to inspect, rows refused for their values, and images without a row.

    Raises:
        InputDataError: the source is not a CSV file, or lacks a named column.
    """
    from dlpipe.data.targets import read_targets_csv, unlisted_images

    if not source.is_file() or source.suffix.lower() != ".csv":
        raise InputDataError(
            f"dataset '{dataset}': task {spec.task} reads a targets CSV, and source {source} is not a .csv file",
            f"point datasets.image.{dataset}.source at a CSV with a path column and the columns {', '.join(spec.target_columns)}",
        )
    rows = read_targets_csv(source, spec.target_columns, spec.task)
    if not rows:
        raise InputDataError(f"dataset '{dataset}': {source} has no data row", "add one row per image")
    candidates, refused = [], []
    folder = str(source.parent)
    for row in rows:
        candidate = Candidate(folder, row.path, row.label, targets=row.values)
        if row.reason:
            refused.append(Outcome(candidate, reason=row.reason, detail=row.detail))
        else:
            candidates.append(candidate)
    listed = {row.path for row in rows}
    ignored = [
        Outcome(Candidate(folder, relpath, ""), reason="no_target_row", detail=f"an image with no row in {source.name}")
        for relpath in unlisted_images(source.parent, listed)
    ]
    return candidates, refused, ignored


def _check_inside_images(outcomes: list[Outcome], spec: DatasetConfig) -> None:
    """Reject a box or point that lies outside its (oriented) image."""
    from dlpipe.data.targets import outside_image

    for outcome in outcomes:
        if outcome.accepted:
            facts = outcome.facts
            why = outside_image(outcome.candidate.targets, spec.task, facts.width, facts.height, spec.target_columns)
            if why:
                outcome.reason, outcome.detail = "target_outside_image", why


def _strata(accepted: list[Outcome], spec: DatasetConfig) -> list[str]:
    """What the split is stratified by, per accepted item: its label, or a quantile bin of its numeric targets."""
    if spec.task == "classification":
        return [o.candidate.label for o in accepted]
    from dlpipe.data.targets import strata

    values = np.array([o.candidate.targets for o in accepted], dtype=np.float64)
    sizes = np.array([(o.facts.width, o.facts.height) for o in accepted], dtype=np.float64)
    return strata(values, spec.task, sizes)


def _check_classes(dataset: str, source: Path, class_dirs: list[str], candidates: list[Candidate]) -> None:
    with_files = {c.label for c in candidates}
    empty = [name for name in class_dirs if name not in with_files]
    if empty:
        raise InputDataError(
            f"dataset '{dataset}': class folder(s) with no files: {', '.join(empty)} (in {source})",
            "add files to each class folder or remove the empty ones",
        )


def _from_csv(table: Path) -> list[Candidate]:
    """Candidates from a ``path,label`` CSV; paths are relative to the CSV's folder."""
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label"} - set(reader.fieldnames or ())
        if missing:
            raise InputDataError(
                f"{table}: missing column(s) {', '.join(sorted(missing))}; found {reader.fieldnames}",
                "the CSV needs a header row with columns path,label",
            )
        rows = [(row["path"], row["label"]) for row in reader]
    folder = str(table.parent)
    candidates = []
    for number, (relpath, label) in enumerate(rows, start=2):
        if not relpath or not label:
            raise InputDataError(f"{table}, line {number}: empty path or label", "fill in both columns on every row")
        candidates.append(Candidate(folder, relpath, sys.intern(label)))
    return candidates


# --- inspecting -------------------------------------------------------------------------------


def inspector(spec: DatasetConfig, cfg: IngestConfig) -> Callable[[Candidate], Outcome]:
    """A picklable function that inspects one candidate of this modality."""
    if spec.modality == "image":
        return functools.partial(_inspect_image, min_side=cfg.image.min_side, max_pixels=cfg.image.max_pixels)
    if spec.modality == "audio":
        return functools.partial(_inspect_audio, min_duration=cfg.audio.min_duration)
    if spec.labelled:
        return functools.partial(_inspect_document, encoding=cfg.text.encoding)
    return functools.partial(_inspect_text, encoding=cfg.text.encoding)


def _read(candidate: Candidate) -> tuple[Outcome, bytes | None]:
    outcome = Outcome(candidate)
    try:
        data = candidate.source.read_bytes()
    except FileNotFoundError:
        outcome.reason, outcome.detail = "missing_file", "listed but not found"
        return outcome, None
    except OSError as exc:
        outcome.reason, outcome.detail = "unreadable", str(exc)
        return outcome, None
    outcome.sha256 = hashlib.sha256(data).hexdigest()
    outcome.size_bytes = len(data)
    return outcome, data


def _inspect_image(candidate: Candidate, min_side: int, max_pixels: int) -> Outcome:
    from dlpipe.data.media.images import inspect_image

    outcome, data = _read(candidate)
    if data is not None:
        try:
            outcome.facts = inspect_image(data, min_side, max_pixels)
        except Rejected as rejection:
            outcome.reason, outcome.detail = rejection.reason, rejection.detail
    return outcome


def _inspect_audio(candidate: Candidate, min_duration: float) -> Outcome:
    from dlpipe.data.media.audio import inspect_audio

    outcome, data = _read(candidate)
    if data is not None:
        try:
            info = inspect_audio(data, min_duration)
            outcome.facts = dataclasses.replace(info, duration=round(info.duration, 6))
        except Rejected as rejection:
            outcome.reason, outcome.detail = rejection.reason, rejection.detail
    return outcome


def _inspect_text(candidate: Candidate, encoding: str) -> Outcome:
    from dlpipe.data.media.text import inspect_text

    # Text files can be large: hash and decode by streaming rather than reading whole.
    outcome = Outcome(candidate, sha256=sha256_file(candidate.source), size_bytes=candidate.source.stat().st_size)
    try:
        outcome.facts = inspect_text(candidate.source, encoding)
    except Rejected as rejection:
        outcome.reason, outcome.detail = rejection.reason, rejection.detail
    return outcome


def _inspect_document(candidate: Candidate, encoding: str) -> Outcome:
    from dlpipe.data.media.text import iter_text_chunks

    try:
        text = "".join(iter_text_chunks(candidate.source, encoding))
    except Rejected as rejection:
        return Outcome(candidate, reason=rejection.reason, detail=rejection.detail)
    except OSError as exc:
        return Outcome(candidate, reason="unreadable", detail=str(exc))
    document = normalize_document(text)
    if not document:
        return Outcome(candidate, reason="empty_document", detail="the file holds no text")
    return _document_outcome(candidate, document, lines=text.count("\n") + (not text.endswith("\n")), encoding=encoding)


# --- deduplication, checks, splits -------------------------------------------------------------


def _deduplicate(outcomes: list[Outcome]) -> None:
    """Keep one copy of each content; reject every copy whose content carries two labels."""
    # Sorting by hash puts copies side by side; a dict of every hash would cost far more memory.
    by_hash = sorted((o for o in outcomes if o.accepted), key=lambda o: o.sha256)
    for _, group in itertools.groupby(by_hash, key=lambda o: o.sha256):
        copies = list(group)
        if len(copies) < 2:
            continue
        copies.sort(key=lambda o: o.candidate.sort_key)
        labels = sorted({o.candidate.label for o in copies})
        if len({(o.candidate.label, o.candidate.targets) for o in copies}) > 1:
            # The true label (or target) is unknowable, so no copy is trusted.
            others = ", ".join(o.candidate.relpath for o in copies)
            what = f"labels {', '.join(labels)}" if len(labels) > 1 else "different targets"
            for outcome in copies:
                outcome.reason = "label_conflict"
                outcome.detail = f"same content under {what}: {others}"
        else:
            for outcome in copies[1:]:
                outcome.reason, outcome.detail = "duplicate", f"same content as {copies[0].candidate.relpath} (kept)"


def _check_usable(
    dataset: str,
    spec: DatasetConfig,
    cfg: IngestConfig,
    source: Path,
    candidates: list[Candidate],
    outcomes: list[Outcome],
    accepted: list[Outcome],
) -> None:
    bad = [o for o in outcomes if not o.accepted and o.reason not in DEDUPLICATION_REASONS]
    fraction = len(bad) / len(outcomes)
    if fraction > cfg.max_reject_fraction:
        reasons = Counter(o.reason for o in bad)
        examples = "; ".join(f"{o.candidate.relpath}: {o.detail}" for o in bad[:3])
        raise InputDataError(
            f"dataset '{dataset}': {len(bad)} of {len(outcomes)} items rejected ({fraction:.1%}), more than "
            f"ingest.max_reject_fraction={cfg.max_reject_fraction} "
            f"[{', '.join(f'{r}: {n}' for r, n in reasons.most_common())}]; e.g. {examples}",
            "fix or remove the bad files, or raise ingest.max_reject_fraction",
        )
    if not spec.labelled:
        if sum(o.facts.tokens for o in accepted) == 0:
            raise InputDataError(f"dataset '{dataset}': the corpus in {source} is empty (no words)", _layout_hint(spec))
        return
    if not accepted:
        raise InputDataError(f"dataset '{dataset}': no usable item in {source}", _layout_hint(spec))
    if spec.task != "classification":
        return  # labels are optional (figures only); finetune checks that each split has items
    labels = sorted({c.label for c in candidates if c.label})  # a fastText/CSV row without a label is rejected, not a class
    usable = {o.candidate.label for o in accepted}
    if len(labels) < 2:
        raise InputDataError(
            f"dataset '{dataset}': only one class ({labels[0]!r}) in {source}; classification needs at least two",
            _layout_hint(spec),
        )
    unusable = [label for label in labels if label not in usable]
    if unusable:
        raise InputDataError(
            f"dataset '{dataset}': class(es) with no usable file: {', '.join(unusable)}",
            "see the rejection reasons above; add valid files for these classes",
        )
    if spec.modality == "text":
        _check_class_sizes(dataset, cfg, accepted)


def _check_class_sizes(dataset: str, cfg: IngestConfig, accepted: list[Outcome]) -> None:
    """Each label of a text dataset needs a document in every split (rare labels are common in label columns)."""
    needed = 1 + (cfg.val_fraction > 0) + (cfg.test_fraction > 0)
    by_label: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in accepted:
        by_label[outcome.candidate.label].append(outcome)
    small = {label: items for label, items in sorted(by_label.items()) if len(items) < needed}
    if small:
        listed = "; ".join(
            f"'{label}': {len(items)} ({', '.join(o.candidate.relpath for o in items[:3])})" for label, items in small.items()
        )
        raise InputDataError(
            f"dataset '{dataset}': label(s) with fewer than {needed} documents, one for each split: {listed}",
            "add documents with these labels, or remove or merge them",
        )


def _assign_splits(accepted: list[Outcome], cfg: IngestConfig, seed: int, strata: list[str]) -> None:
    """Stratified split: per stratum (a label, or a bin of numeric targets), shuffle by a seed that depends on it, then cut.

    Ordering by content hash first makes the split independent of file names and of
    the order the files were listed in. Sets each outcome's ``split``.
    """
    by_label: dict[str, list[Outcome]] = defaultdict(list)
    for outcome, stratum in zip(accepted, strata, strict=True):
        by_label[stratum].append(outcome)
    for label, members in sorted(by_label.items()):
        members.sort(key=lambda o: o.sha256)
        rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
        n_test, n_val = _split_sizes(len(members), cfg.test_fraction, cfg.val_fraction)
        for index, member in enumerate(rng.permutation(len(members)).tolist()):
            members[member].split = "test" if index < n_test else "val" if index < n_test + n_val else "train"


def _split_sizes(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int]:
    """Rounded split sizes; a requested split gets at least one item once a class has three."""
    n_test = round(n * test_fraction)
    n_val = round(n * val_fraction)
    if n >= 3:
        n_test = max(n_test, 1 if test_fraction > 0 else 0)
        n_val = max(n_val, 1 if val_fraction > 0 else 0)
    while n_test + n_val >= n and n_test + n_val > 0:
        if n_val >= n_test and n_val > 0:
            n_val -= 1
        else:
            n_test -= 1
    return n_test, n_val


# --- outputs ------------------------------------------------------------------------------------


def _write_manifest(path: Path, spec: DatasetConfig, accepted: list[Outcome]) -> None:
    targets = tuple(spec.target_columns)
    columns = COMMON_COLUMNS + MODALITY_COLUMNS[spec.modality] + targets
    rows = (
        {
            **dict(zip(targets, (repr(value) for value in o.candidate.targets), strict=True)),
            "path": o.candidate.relpath,
            "label": o.candidate.label,
            "split": o.split or "train",
            "sha256": o.sha256,
            "size_bytes": o.size_bytes,
            **{key: getattr(o.facts, key) for key in MODALITY_COLUMNS[spec.modality]},
        }
        for o in sorted(accepted, key=lambda o: o.candidate.sort_key)
    )
    write_csv(path, columns, rows)


def _rejected_items(outcomes: list[Outcome]) -> list[tuple[str, str, str, str]]:
    return [(o.candidate.relpath, o.candidate.label, o.reason, o.detail) for o in sorted(outcomes, key=lambda o: o.candidate.sort_key)]


def _write_documents(path: Path, accepted: list[Outcome]) -> None:
    """A labelled text dataset's documents, one per line in manifest order (line i is manifest row i)."""
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for outcome in sorted(accepted, key=lambda o: o.candidate.sort_key):
            out.write(outcome.document + "\n")


def _write_corpus(path: Path, accepted: list[Outcome], encoding: str) -> None:
    """Concatenate the accepted text files as one UTF-8 corpus (streamed)."""
    from dlpipe.data.media.text import iter_text_chunks

    with open(path, "w", encoding="utf-8", newline="\n") as out:
        for outcome in sorted(accepted, key=lambda o: o.candidate.relpath):
            last = "\n"
            for chunk in iter_text_chunks(outcome.candidate.source, encoding):
                out.write(chunk)
                last = chunk[-1]
            if last != "\n":
                out.write("\n")


def _metrics(
    dataset: str,
    spec: DatasetConfig,
    outcomes: list[Outcome],
    accepted: list[Outcome],
    rejected: list[Outcome],
    ignored: list[Outcome],
) -> dict[str, Any]:
    reasons = Counter(o.reason for o in rejected + ignored)
    bad = sum(1 for o in rejected if o.reason not in DEDUPLICATION_REASONS)
    metrics: dict[str, Any] = {
        "dataset": dataset,
        "modality": spec.modality,
        "files": len(outcomes),
        "accepted": len(accepted),
        "rejected": len(rejected),
        "ignored": len(ignored),
        "reject_fraction": round(bad / len(outcomes), 6),
        "duplicates": reasons.get("duplicate", 0),
        "label_conflicts": reasons.get("label_conflict", 0),
        "rejected_by_reason": dict(sorted(reasons.items())),
        "classes": dict(sorted(Counter(o.candidate.label for o in accepted if o.candidate.label).items())),
        "splits": dict(sorted(Counter(o.split for o in accepted if o.split).items())),
        "bytes": sum(o.size_bytes for o in accepted),
    }
    if spec.modality == "text":
        if spec.labelled:
            metrics["documents"] = len(accepted)
        metrics["lines"] = sum(o.facts.lines for o in accepted)
        metrics["tokens"] = sum(o.facts.tokens for o in accepted)
    if spec.modality == "audio":
        metrics["seconds_of_audio"] = round(sum(o.facts.duration for o in accepted), 3)
    return metrics
