"""The HTML report: one self-contained page per dataset, and an index page over all of them.

A dataset's page gathers what its stages already wrote, stage by stage in pipeline order: the
headline figures (from the metrics), every overview picture (training curves, confusion matrix,
top losses, UMAP maps, contact sheets, search examples, the heatmap grid, the word map), the
tables written for people (a CSV with a Markdown twin), and each stage's record from its
sidecar: what it chose and why (the index and its reason, k), the params that produced it and the
sha256 of its inputs and outputs. Pictures of single items (an overlay per image, a window per
clip) stay in their folders: the grid and the contact sheets summarise them.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlpipe import __version__
from dlpipe.core.artifacts import malformed_is_damage, read_json
from dlpipe.core.config import Project
from dlpipe.core.layout import (
    CLUSTER_SIDECAR,
    EMBEDDINGS_SIDECAR,
    HEATMAP_SIDECAR,
    INDEX_SIDECAR,
    MANIFEST_SIDECAR,
    MODEL_SIDECAR,
    SPECTROGRAM_SIDECAR,
    WORD2VEC_SIDECAR,
    DatasetLayout,
)
from dlpipe.reports.html import Markup, escape, format_value, key_values, link, page, picture, table
from dlpipe.reports.summary import STAGE_ORDER, format_figures, headline_figures

# Rows of a people's table shown on the page; the CSV beside it has them all.
TABLE_ROWS = 15
# A sha256 in a sidecar, wherever it sits: an input or output the stage vouched for.
_SHA256 = re.compile(r"[0-9a-f]{64}")

STAGE_TITLES = {
    "ingest": "the files accepted, rejected and split",
    "spectrogram": "audio clips as log-mel images",
    "finetune": "the trained model and how it does on the test split",
    "embed": "every item as a vector",
    "cluster": "k-means on the vectors, against a baseline without the network",
    "search": "the reverse-search index",
    "heatmap": "what the model looks at",
    "word2vec": "word vectors",
}


@dataclass(frozen=True)
class StageSection:
    """What one stage wrote for a dataset: metrics, sidecar records, pictures and tables."""

    stage: str
    metrics: dict[str, Any]
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # sidecar file name -> its content
    pictures: tuple[Path, ...] = ()
    tables: tuple[Path, ...] = ()

    @property
    def headline(self) -> dict[str, Any]:
        """The figures worth a glance (see :data:`dlpipe.reports.summary.HEADLINES`)."""
        return headline_figures(self.stage, self.metrics)

    def fact(self, key: str) -> Any:
        """``key`` from the metrics, else from the first sidecar that has it (None when none does)."""
        if key in self.metrics:
            return self.metrics[key]
        return next((record[key] for record in self.records.values() if key in record), None)


def collect(project: Project, dataset: str) -> list[StageSection]:
    """Every stage that has written something for ``dataset``, in pipeline order.

    Raises:
        ArtifactError: a metrics file or sidecar is not a JSON object, or a picture is not a PNG.
    """
    layout = project.layout(dataset)
    sections = []
    for stage in STAGE_ORDER:
        metrics_path = layout.metrics(stage)
        records = {path.name: read_json(path, f"the record of stage '{stage}'") for path in _records(layout, stage) if path.is_file()}
        if not metrics_path.is_file() and not records:
            continue
        metrics = read_json(metrics_path, f"the metrics of stage '{stage}'") if metrics_path.is_file() else {}
        folders = _folders(layout, stage)
        pictures = tuple(path for folder in folders for path in sorted(folder.glob("*.png")))
        tables = tuple(path for folder in folders for path in sorted(folder.glob("*.csv")) if path.with_suffix(".md").is_file())
        sections.append(StageSection(stage, metrics, records, pictures, tables))
    return sections


def summary(dataset: str, sections: list[StageSection]) -> dict[str, Any]:
    """What the index page shows of a dataset: its kind and each stage's headline figures."""
    ingest = next((section for section in sections if section.stage == "ingest"), None)
    modality = ingest.fact("modality") if ingest else None
    # A text dataset without labels is a corpus (for word2vec): it has no task.
    corpus = modality == "text" and ingest.fact("labels") == "none"
    return {
        "dataset": dataset,
        "modality": modality,
        "task": ("corpus" if corpus else ingest.fact("task")) if ingest else None,
        "stages": {section.stage: section.headline for section in sections},
    }


def dataset_page(dataset: str, sections: list[StageSection], data_dir: Path, up: str) -> str:
    """The self-contained HTML page of one dataset; ``up`` links back to the index page."""
    about = summary(dataset, sections)
    ingest = next((section for section in sections if section.stage == "ingest"), None)
    source = ingest.fact("source") if ingest else None
    kind = " · ".join(str(value) for value in (about["modality"], about["task"]) if value)
    subtitle = f"{kind} · source {source}" if source else kind
    overview = table(((section.stage, format_figures(section.headline)) for section in sections), ("stage", "headline figures"))
    body = [f'<section id="summary"><h2>Summary</h2>{overview}</section>']
    body += [_stage_html(section, data_dir / dataset) for section in sections]
    body.append(_provenance_html(sections))
    nav = [("summary", "summary"), *((section.stage, section.stage) for section in sections), ("provenance", "provenance")]
    return page(f"{dataset} — dlpipe report", f"{subtitle} · dlpipe {__version__}", nav, "".join(body), up)


def index_page(project: Project, summaries: dict[str, dict[str, Any] | None], page_of: dict[str, str]) -> str:
    """The index page: one row per dataset of the params, linking to its page (``page_of``: relative links).

    ``summaries`` holds None for a dataset whose page has not been written yet.
    """
    rows = []
    for dataset, about in summaries.items():
        if about is None:
            rows.append((dataset, "", "", Markup('<span class="missing">no page yet: run its stages, then `dlpipe report`</span>')))
            continue
        lines = "<br>".join(f"<b>{escape(stage)}</b> {escape(format_figures(figures))}" for stage, figures in about["stages"].items())
        kind = " · ".join(str(value) for value in (about.get("modality"), about.get("task")) if value)
        rows.append((link(page_of[dataset], dataset), kind, len(about["stages"]), Markup(lines)))
    body = (
        '<section id="datasets"><h2>Datasets</h2>'
        f"<p>One page per dataset, with every picture its stages drew and the record of how they ran. Params: "
        f"<code>{escape(project.params_path)}</code>; artifacts: <code>{escape(project.data_dir)}</code>.</p>"
        + table(rows, ("dataset", "kind", "stages", "headline figures"))
        + "</section>"
    )
    return page("dlpipe report", f"{len(summaries)} datasets · dlpipe {__version__}", [], body)


def _records(layout: DatasetLayout, stage: str) -> tuple[Path, ...]:
    """The sidecars a stage writes beside its outputs."""
    return {
        "ingest": (layout.ingest_dir / MANIFEST_SIDECAR,),
        "spectrogram": (layout.spectrogram_dir / SPECTROGRAM_SIDECAR,),
        "finetune": (layout.model_dir / MODEL_SIDECAR,),
        "embed": (layout.embed_dir / EMBEDDINGS_SIDECAR,),
        "cluster": (layout.stage_dir("cluster") / CLUSTER_SIDECAR,),
        "search": (layout.search_dir / INDEX_SIDECAR,),
        "heatmap": (layout.stage_dir("heatmap") / HEATMAP_SIDECAR,),
        "word2vec": (layout.word2vec_dir / WORD2VEC_SIDECAR, layout.word2vec_dir / INDEX_SIDECAR),
    }[stage]


def _folders(layout: DatasetLayout, stage: str) -> tuple[Path, ...]:
    """Where a stage's overview pictures and people's tables are: its folder, the contact sheets, its plots."""
    output = layout.model_dir if stage == "finetune" else layout.stage_dir(stage)
    return (output, output / "sheets", layout.plots(stage))


def _stage_html(section: StageSection, dataset_dir: Path) -> str:
    parts = [f'<section id="{escape(section.stage)}"><h2>{escape(section.stage)}: {escape(STAGE_TITLES[section.stage])}</h2>']
    callout = _callout(section)
    if callout:
        parts.append(f'<p class="callout">{escape(callout)}</p>')
    if section.headline:
        parts.append(key_values(section.headline, ("figure", "value")))
    parts += [picture(path, _relative(path, dataset_dir)) for path in section.pictures]
    parts += [_table_html(path, dataset_dir) for path in section.tables]
    if section.metrics:
        parts.append(_details("every metric", key_values(dict(_flatten(section.metrics)), ("metric", "value"))))
    for name, record in section.records.items():
        facts = {key: value for key, value in _flatten(record) if not _is_hash(value) and key.split(".")[0] not in ("stage", "dataset")}
        parts.append(_details(f"record: {name} (what it did, its params, library versions)", key_values(facts, ("key", "value"))))
    parts.append("</section>")
    return "".join(parts)


def _callout(section: StageSection) -> str:
    """One sentence on the choice a stage made, where it made one."""
    if section.stage == "search" and section.fact("factory"):
        reason = section.fact("reason")
        return (
            f"Index {section.fact('factory')} ({section.fact('metric')}, held in {section.fact('storage')}) over "
            f"{format_value(section.fact('count'))} vectors" + (f": {reason}" if reason else "")
        )
    if section.stage == "cluster" and section.fact("k"):
        reason = section.fact("k_reason")
        return f"k = {section.fact('k')}" + (f": {reason}" if reason else "")
    if section.stage == "finetune" and isinstance(section.fact("backbone"), dict):
        backbone = section.fact("backbone")
        return f"Backbone {backbone.get('name')} (weights: {backbone.get('weights')}), task {section.fact('task')}"
    return ""


def _table_html(path: Path, dataset_dir: Path) -> str:
    with malformed_is_damage(path, "a table for the report"), open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        rows = list(itertools.islice(reader, TABLE_ROWS))
    more = f" (the first {TABLE_ROWS} rows; the file has them all)" if len(rows) == TABLE_ROWS else ""
    return f"<h3>{escape(_relative(path, dataset_dir))}{escape(more)}</h3>" + table(rows, header)


def _provenance_html(sections: list[StageSection]) -> str:
    rows = [
        (section.stage, name, key, Markup(f'<span class="hash">{escape(value)}</span>'))
        for section in sections
        for name, record in section.records.items()
        for key, value in _flatten(record)
        if _is_hash(value)
    ]
    intro = "<p>The sha256 of every input and output each stage recorded: equal hashes mean the same bytes.</p>"
    return f'<section id="provenance"><h2>Provenance</h2>{intro}{table(rows, ("stage", "record", "key", "sha256"))}</section>'


def _details(title: str, content: str) -> str:
    return f"<details><summary>{escape(title)}</summary>{content}</details>"


def _flatten(value: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` for every leaf; a list of objects counts its items."""
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            yield from _flatten(item, f"{name}.")
        elif isinstance(item, list) and any(isinstance(element, dict | list) for element in item):
            yield name, f"{len(item)} items"
        else:
            yield name, item


def _is_hash(value: Any) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def _relative(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return path.name
