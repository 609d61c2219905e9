"""A short table of the headline metrics every stage wrote (``dlpipe metrics``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dlpipe.core.artifacts import read_json
from dlpipe.core.config import Project

# The figures worth a glance per stage; the full metrics stay in each JSON file.
HEADLINES: dict[str, tuple[str, ...]] = {
    "ingest": ("accepted", "rejected", "ignored", "reject_fraction", "tokens", "seconds_of_audio"),
    "spectrogram": ("clips", "windows", "rejected", "image_height", "image_width", "audio_seconds_per_second"),
    "finetune": (
        "test_accuracy", "test_macro_f1", "test_mae", "test_constant_mae", "test_r2", "test_mean_iou", "test_iou_50",
        "test_cell_accuracy", "test_mean_error_px", "test_pck_10", "epochs", "best_val_loss", "train_seconds",
    ),
    "embed": ("count", "dimension", "images_per_second", "documents_per_second"),
    "cluster": (
        "k", "silhouette", "nmi", "raw_pixels_nmi", "bag_of_words_nmi", "ari", "raw_pixels_ari", "bag_of_words_ari",
        "purity", "raw_pixels_purity", "bag_of_words_purity",
    ),
    "search": ("recall_at_k", "precision_at_k", "queries_per_second"),
    "heatmap": (
        "images",
        "documents",
        "occlusion_deletion_auc",
        "gradcam_deletion_auc",
        "random_deletion_auc",
        "occlusion_pointing_game",
        "gradcam_pointing_game",
        "random_pointing_game",
    ),
    "word2vec": ("vocabulary", "words_per_second", "final_loss", "analogy_accuracy", "analogy_oov_rate", "wordsim_spearman"),
}
STAGE_ORDER = tuple(HEADLINES)


@dataclass(frozen=True)
class Row:
    """One dataset × stage line of the summary."""

    dataset: str
    stage: str
    figures: dict[str, float | int | str]


def collect(project: Project) -> list[Row]:
    """Headline figures from every ``<data_dir>/<dataset>/metrics/<stage>.json`` that exists."""
    return [Row(dataset, stage, figures) for dataset in project.params.datasets for stage, figures in headlines(project, dataset).items()]


def headlines(project: Project, dataset: str) -> dict[str, dict[str, float | int | str]]:
    """``{stage: headline figures}`` of one dataset, in pipeline order, for the stages that wrote metrics."""
    layout = project.layout(dataset)
    found = {}
    for stage in STAGE_ORDER:
        path = layout.metrics(stage)
        if path.is_file():
            found[stage] = headline_figures(stage, read_json(path, f"the metrics of stage '{stage}'"))
    return found


def headline_figures(stage: str, metrics: dict[str, Any]) -> dict[str, float | int | str]:
    """The figures of ``metrics`` worth a glance for ``stage``, in :data:`HEADLINES` order."""
    # None marks a figure the stage could not measure here (e.g. no boxes for a pointing game).
    return {key: metrics[key] for key in HEADLINES[stage] if metrics.get(key) is not None}


def format_figures(figures: dict[str, float | int | str]) -> str:
    """``key value`` pairs, floats to 4 significant digits."""
    return ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}" for key, value in figures.items())

