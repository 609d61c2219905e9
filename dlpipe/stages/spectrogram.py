"""``spectrogram`` stage: an audio dataset becomes an image dataset of log-mel windows.

Each clip of the ingest manifest is read (and checked against its recorded
sha256, sample rate and channels), mixed to mono, resampled, and cut into
fixed-length windows (:mod:`dlpipe.audio.spectrogram`); each window is saved as a
greyscale PNG under ``spectrogram/images/<label>/``. Windows keep their clip's
label and split, so windows of one clip never straddle splits. The stage writes
an image-style ``manifest.csv`` beside the images, which is what finetune, embed,
cluster, search and heatmap read for an audio dataset
(:func:`dlpipe.data.manifest.load_image_manifest`), and a montage of each class's
mean spectrogram (over at most ``MONTAGE_CLIPS`` clips per class, summed by the workers).

Clips are processed in a process pool, one clip at a time per worker, so memory
grows with the longest clip, not with the number of clips.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.audio.spectrogram import clip_windows, frames_per_window, prepare
from dlpipe.audio.transform import window_png
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
from dlpipe.core.config import Project, SpectrogramConfig
from dlpipe.core.errors import ArtifactError, ConfigError, InputDataError
from dlpipe.core.layout import MANIFEST_FILE, REJECTED_FILE, SPECTROGRAM_SIDECAR
from dlpipe.core.parallel import parallel_map, resolve_workers
from dlpipe.core.results import StageResult
from dlpipe.data.manifest import IMAGE_MANIFEST_COLUMNS, Manifest, load_manifest, write_rejected
from dlpipe.data.media import Rejected

STAGE = "spectrogram"
WINDOW_COLUMNS = ("clip", "window", "start_seconds", "end_seconds")
# The fitted dB range: robust to a few extreme bins, as a percentile pair of the training split's values.
FIT_PERCENTILES = (0.5, 99.5)
# Histogram of training-split dB values for the fit: 0.05 dB bins over a range no real window leaves.
_HISTOGRAM_EDGES = np.linspace(-400.0, 200.0, 12_001)
# Clips per task of the fitting pass: each task returns one histogram, so memory does not grow per clip.
_FIT_CLIPS_PER_TASK = 32
# Clips per class averaged into the class-means montage: plenty for a picture, at a bounded cost.
MONTAGE_CLIPS = 256


@dataclass(frozen=True)
class Result(StageResult):
    """What a spectrogram run produced."""

    clips: int
    windows: int
    rejected: int


@dataclass(frozen=True)
class ClipJob:
    """One manifest row to process, with everything a forked worker needs."""

    source: Path
    row: dict[str, str]
    in_montage: bool = False  # this clip's windows count towards its class's mean spectrogram


@dataclass
class _ClipOutcome:
    row: dict[str, str]
    windows: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""
    detail: str = ""
    seconds: float = 0.0
    db_sum: np.ndarray | None = None  # sum of the windows' dB values, for clips in the montage sample


def run(project: Project, dataset: str) -> Result:
    """Turn the audio dataset ``dataset`` into log-mel window images under ``<data_dir>/<dataset>/spectrogram``.

    Raises:
        ConfigError: the dataset is not audio.
        InputDataError: more than ``spectrogram.max_reject_fraction``
            of the clips are rejected (too short with ``short_clips: reject``, or undecodable).
        ArtifactError: ingest has not run, or a clip changed since ingest recorded it (sha256,
            sample rate or channels differ from the manifest).
    """
    cfg = project.params.spectrogram
    modality = project.dataset(dataset).modality
    if modality != "audio":
        raise ConfigError(
            f"dataset '{dataset}' is {modality}; spectrogram needs an audio dataset",
            "image datasets go straight to finetune; run spectrogram with --dataset <an audio dataset>",
        )
    manifest = load_manifest(project, dataset)
    layout = project.layout(dataset)
    out_dir = layout.spectrogram_dir
    metrics_path = layout.metrics(STAGE)
    sampled = montage_sample(manifest.rows)
    jobs = [ClipJob(manifest.resolve(row["path"]), row, i in sampled) for i, row in enumerate(manifest.rows)]
    with stage_lock(layout.root, STAGE):
        started = time.perf_counter()
        prepare(cfg)
        db_range = _db_range(cfg, jobs, dataset)
        with atomic_dir(out_dir) as staging:
            outcomes = _transform_all(cfg, jobs, staging, db_range, dataset)
            _raise_for_changed_clips(outcomes, dataset)
            kept = [o for o in outcomes if not o.reason]
            rejected = [o for o in outcomes if o.reason]
            _check_rejections(cfg, dataset, manifest, kept, rejected)
            rows = [window for outcome in kept for window in outcome.windows]
            write_csv(staging / MANIFEST_FILE, IMAGE_MANIFEST_COLUMNS + WINDOW_COLUMNS, rows)
            write_rejected(staging / REJECTED_FILE, ((o.row["path"], o.row["label"], o.reason, o.detail) for o in rejected))
            from dlpipe.reports.spectrogram_plots import save_class_montage

            save_class_montage(staging / "class_means.png", *_class_means(kept), cfg, db_range)
            atomic_write_json(
                staging / SPECTROGRAM_SIDECAR,
                sidecar(
                    STAGE,
                    dataset=dataset,
                    modality="image",
                    source_modality="audio",
                    manifest_sha256=sha256_file(staging / MANIFEST_FILE),
                    ingest_manifest_sha256=manifest.sha256,
                    params=cfg.model_dump(exclude={"workers"}),
                    db_min=db_range[0],
                    db_max=db_range[1],
                    db_range_from="params" if cfg.scaling == "fixed" else f"training split, percentiles {list(FIT_PERCENTILES)}",
                    image={
                        "height": cfg.n_mels,
                        "width": frames_per_window(cfg),
                        "rows": "mel bands, lowest at the bottom",
                        "columns": "time",
                    },
                    versions=library_versions("librosa", "soundfile", "numpy", "pillow"),
                ),
            )
        seconds = time.perf_counter() - started
        metrics = _metrics(dataset, cfg, kept, rejected, rows, db_range, seconds)
        write_metrics(metrics_path, metrics)
    return Result(dataset, out_dir, metrics_path, metrics, clips=len(kept), windows=len(rows), rejected=len(rejected))


def montage_sample(rows: list[dict[str, str]]) -> set[int]:
    """Row indices of the clips whose windows make up each class's mean spectrogram.

    At most ``MONTAGE_CLIPS`` per class, evenly spaced in manifest order: a fixed cost per class
    however many clips there are.
    """
    by_class: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        by_class.setdefault(row["label"], []).append(index)
    chosen: set[int] = set()
    for members in by_class.values():
        chosen.update(members[:: max(1, -(-len(members) // MONTAGE_CLIPS))])
    return chosen


def _class_means(kept: list[_ClipOutcome]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Each class's mean window (dB) over its sampled clips, and how many windows that mean covers."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for outcome in kept:
        if outcome.db_sum is not None:
            label = outcome.row["label"]
            sums[label] = sums.get(label, 0.0) + outcome.db_sum
            counts[label] = counts.get(label, 0) + len(outcome.windows)
    return {label: sums[label] / counts[label] for label in sorted(sums)}, counts


# --- the dB-to-pixel range --------------------------------------------------------------------


def _db_range(cfg: SpectrogramConfig, jobs: list[ClipJob], dataset: str) -> tuple[float, float]:
    """``(db_min, db_max)``: from params, or fitted on the training split's windows only."""
    if cfg.scaling == "fixed":
        return float(cfg.db_min), float(cfg.db_max)
    train = [job for job in jobs if job.row["split"] == "train"]
    if not train:
        raise InputDataError(f"dataset '{dataset}': no training clips to fit the dB range on", "use spectrogram.scaling: fixed")
    tasks = [train[start : start + _FIT_CLIPS_PER_TASK] for start in range(0, len(train), _FIT_CLIPS_PER_TASK)]
    histograms = parallel_map(
        _FitHistogram(cfg), tasks, cfg.workers, f"spectrogram {dataset}: fit dB range", f"x{_FIT_CLIPS_PER_TASK} clips"
    )
    counts = np.sum(histograms, axis=0)
    if counts.sum() == 0:
        raise InputDataError(f"dataset '{dataset}': no training window to fit the dB range on", "use spectrogram.scaling: fixed")
    cumulative = np.cumsum(counts) / counts.sum()
    low, high = (float(_HISTOGRAM_EDGES[np.searchsorted(cumulative, q / 100)]) for q in FIT_PERCENTILES)
    if high - low < 1.0:  # e.g. a training split of silence: keep the range usable
        high = low + 1.0
    return round(low, 2), round(high, 2)


class _FitHistogram:
    """Picklable: the histogram of the dB values of every window of a list of clips."""

    def __init__(self, cfg: SpectrogramConfig) -> None:
        self.cfg = cfg

    def __call__(self, jobs: list[ClipJob]) -> np.ndarray:
        counts = np.zeros(len(_HISTOGRAM_EDGES) - 1, dtype=np.int64)
        for job in jobs:
            try:
                samples = decode_checked(job, self.cfg)
            except (Rejected, ClipChanged):
                continue  # the transform pass reports it
            for window in clip_windows(samples, self.cfg):
                counts += np.histogram(window.db, bins=_HISTOGRAM_EDGES)[0]
        return counts


# --- transforming clips -----------------------------------------------------------------------


def _transform_all(
    cfg: SpectrogramConfig, jobs: list[ClipJob], staging: Path, db_range: tuple[float, float], dataset: str
) -> list[_ClipOutcome]:
    for folder in sorted({_folder_name(job.row["label"]) for job in jobs}):
        (staging / "images" / folder).mkdir(parents=True)
        if cfg.save_npy:
            (staging / "arrays" / folder).mkdir(parents=True)
    transform = TransformClip(cfg, staging, db_range)
    return parallel_map(transform, jobs, cfg.workers, f"spectrogram {dataset}", "clips")


class ClipChanged(Exception):
    """The file on disk is not the clip ingest recorded."""


class TransformClip:
    """Picklable: decode one clip, write its window images, return their manifest rows."""

    def __init__(self, cfg: SpectrogramConfig, staging: Path, db_range: tuple[float, float]) -> None:
        self.cfg = cfg
        self.staging = staging
        self.db_range = db_range
        self._image_facts: dict[str, Any] | None = None

    def __call__(self, job: ClipJob) -> _ClipOutcome:
        outcome = _ClipOutcome(job.row)
        try:
            samples = decode_checked(job, self.cfg)
        except ClipChanged as changed:
            outcome.reason, outcome.detail = "changed_since_ingest", str(changed)
            return outcome
        except Rejected as rejection:
            outcome.reason, outcome.detail = rejection.reason, rejection.detail
            return outcome
        outcome.seconds = samples.size / self.cfg.sample_rate
        windows = clip_windows(samples, self.cfg)
        if not windows:
            outcome.reason = "too_short"
            outcome.detail = (
                f"{outcome.seconds:.3f} s is shorter than spectrogram.window_seconds={self.cfg.window_seconds} (short_clips: reject)"
            )
            return outcome
        outcome.windows = [self._save(job.row, window) for window in windows]
        if job.in_montage:
            outcome.db_sum = np.sum([window.db for window in windows], axis=0, dtype=np.float64)
        return outcome

    def _save(self, row: dict[str, str], window: Any) -> dict[str, Any]:
        from dlpipe.data.media.images import inspect_image

        data = window_png(window.db, self.cfg, self.db_range)
        name = _window_name(row, window.index)
        relpath = f"images/{_folder_name(row['label'])}/{name}.png"
        (self.staging / relpath).write_bytes(data)
        if self.cfg.save_npy:
            np.save(self.staging / "arrays" / _folder_name(row["label"]) / f"{name}.npy", window.db)
        if self._image_facts is None:  # every window has the same size and pixel type: inspect the first one
            info = inspect_image(data, min_side=1, max_pixels=math.prod(window.db.shape))
            self._image_facts = {key: getattr(info, key) for key in ("width", "height", "format", "mode", "conversion")}
        return {
            "path": relpath,
            "label": row["label"],
            "split": row["split"],
            "sha256": hashlib.sha256(data).hexdigest(),
            "size_bytes": len(data),
            **self._image_facts,
            "clip": row["path"],
            "window": window.index,
            "start_seconds": window.start_seconds,
            "end_seconds": window.end_seconds,
        }


def _folder_name(label: str) -> str:
    """A label as one safe folder name (CSV labels may hold slashes or other awkward characters)."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in label).strip(".") or "_"


def _window_name(row: dict[str, str], index: int) -> str:
    """``<clip stem>_<sha256 prefix>_w<index>``: clips in nested folders may share a stem, never a hash."""
    return f"{Path(row['path']).stem}_{row['sha256'][:8]}_w{index:03d}"


def decode_checked(job: ClipJob, cfg: SpectrogramConfig) -> np.ndarray:
    """The clip's mono samples at ``cfg.sample_rate``, after checking it is the file ingest recorded.

    Raises:
        ClipChanged: missing, or sha256 / sample rate / channels differ from the manifest.
        Rejected: no decoder can read it.
    """
    from dlpipe.data.media.audio import load_mono

    try:
        data = job.source.read_bytes()
    except OSError as exc:
        raise ClipChanged(f"cannot read it any more ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != job.row["sha256"]:
        raise ClipChanged("its sha256 differs from the one ingest recorded")
    clip = load_mono(data, cfg.sample_rate)
    recorded = (int(job.row["sample_rate"]), int(job.row["channels"]))
    if (clip.source_rate, clip.source_channels) != recorded:
        raise ClipChanged(
            f"it holds {clip.source_channels} channel(s) at {clip.source_rate} Hz, the manifest says "
            f"{recorded[1]} at {recorded[0]} Hz"
        )
    return clip.samples


def _raise_for_changed_clips(outcomes: list[_ClipOutcome], dataset: str) -> None:
    changed = [o for o in outcomes if o.reason == "changed_since_ingest"]
    if changed:
        first = changed[0]
        raise ArtifactError(
            f"dataset '{dataset}': {len(changed)} clip(s) no longer match the ingest manifest, "
            f"first {first.row['path']}: {first.detail}",
            f"rerun `dlpipe ingest --dataset {dataset}` (the source changed after ingest)",
        )


def _check_rejections(
    cfg: SpectrogramConfig, dataset: str, manifest: Manifest, kept: list[_ClipOutcome], rejected: list[_ClipOutcome]
) -> None:
    share = len(rejected) / max(1, len(manifest.rows))
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(Counter(o.reason for o in rejected).items()))
    hint = "see spectrogram/rejected.csv; for too_short set spectrogram.short_clips: pad or a smaller window_seconds"
    if share > cfg.max_reject_fraction or not kept:
        raise InputDataError(
            f"dataset '{dataset}': {len(rejected)} of {len(manifest.rows)} clips rejected ({reasons}); "
            f"{share:.0%} > spectrogram.max_reject_fraction={cfg.max_reject_fraction}",
            hint,
        )
    missing = sorted({row["label"] for row in manifest.rows} - {o.row["label"] for o in kept})
    if missing:
        raise InputDataError(f"dataset '{dataset}': every clip of class {missing[0]!r} was rejected ({reasons})", hint)


def _metrics(
    dataset: str,
    cfg: SpectrogramConfig,
    kept: list[_ClipOutcome],
    rejected: list[_ClipOutcome],
    rows: list[dict[str, Any]],
    db_range: tuple[float, float],
    seconds: float,
) -> dict[str, Any]:
    audio_seconds = sum(o.seconds for o in kept)
    return {
        "dataset": dataset,
        "clips": len(kept),
        "rejected": len(rejected),
        "windows": len(rows),
        "windows_by_split": dict(sorted(Counter(row["split"] for row in rows).items())),
        "windows_by_class": dict(sorted(Counter(row["label"] for row in rows).items())),
        "padded_clips": sum(1 for o in kept if o.seconds < cfg.window_seconds),
        "seconds_of_audio": round(audio_seconds, 3),
        "image_height": cfg.n_mels,
        "image_width": frames_per_window(cfg),
        "db_min": db_range[0],
        "db_max": db_range[1],
        "workers": resolve_workers(cfg.workers),
        "seconds": round(seconds, 3),
        "audio_seconds_per_second": round(audio_seconds / seconds, 1) if seconds > 0 else 0.0,
    }
