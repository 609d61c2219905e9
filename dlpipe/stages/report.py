"""``report``: a self-contained HTML page per dataset, and the index page over all of them.

The last stage of the pipeline. It reads what the other stages wrote (metrics, pictures, tables,
sidecars; see :mod:`dlpipe.reports.pages`) and writes ``<data_dir>/report/datasets/<dataset>/``
(index.html and summary.json, swapped in together) or ``<data_dir>/report/index.html``. It never
reruns a stage: a stage that has not run is simply not on the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dlpipe.core.artifacts import atomic_dir, atomic_write_json, atomic_write_text, read_json, stage_lock
from dlpipe.core.config import Project
from dlpipe.core.errors import InputDataError
from dlpipe.core.layout import REPORT_PAGE, REPORT_SUMMARY
from dlpipe.reports import pages

STAGE = "report"


@dataclass(frozen=True)
class Result:
    """A page written: the dataset it is about (None for the index page), the page and the stages on it."""

    dataset: str | None
    page: Path
    stages: tuple[str, ...]


def run(project: Project, dataset: str) -> Result:
    """Write ``dataset``'s page from whatever its stages have written.

    Raises:
        InputDataError: no stage has written anything for the dataset yet.
        ArtifactError: a metrics file or sidecar is damaged, or a picture is not a PNG.
    """
    project.dataset(dataset)  # an unknown name is a ConfigError listing the known ones
    sections = pages.collect(project, dataset)
    if not sections:
        raise InputDataError(
            f"dataset '{dataset}' has no outputs to report yet (nothing under {project.dataset_dir(dataset)})",
            f"run its stages first: `dvc repro` or `dlpipe ingest --dataset {dataset}` and the stages after it",
        )
    return _write_page(project, dataset, sections)


def run_all(project: Project) -> list[Result]:
    """Write the page of every dataset that has outputs, then the index page."""
    written = []
    for dataset in project.params.datasets:
        sections = pages.collect(project, dataset)
        if sections:
            written.append(_write_page(project, dataset, sections))
    return [*written, run_index(project)]


def _write_page(project: Project, dataset: str, sections: list[pages.StageSection]) -> Result:
    report = project.report_layout()
    folder = report.dataset_dir(dataset)
    up = Path("..", "..", REPORT_PAGE).as_posix()  # from report/datasets/<dataset>/ to report/index.html
    html = pages.dataset_page(dataset, sections, project.data_dir, up)
    with stage_lock(project.dataset_dir(dataset), STAGE), atomic_dir(folder) as staging:
        atomic_write_json(staging / REPORT_SUMMARY, pages.summary(dataset, sections))
        atomic_write_text(staging / REPORT_PAGE, html)
    return Result(dataset, report.page(dataset), tuple(section.stage for section in sections))


def run_index(project: Project) -> Result:
    """Write the index page: one row per dataset in params, linking to the pages written so far."""
    report = project.report_layout()
    summaries = {}
    for dataset in project.params.datasets:
        path = report.summary(dataset)
        summaries[dataset] = read_json(path, f"the report summary of dataset '{dataset}'") if path.is_file() else None
    links = {dataset: report.page(dataset).relative_to(report.root).as_posix() for dataset in summaries}
    html = pages.index_page(project, summaries, links)
    with stage_lock(report.root, f"{STAGE}-index"):
        atomic_write_text(report.index_page, html)
    return Result(None, report.index_page, ())
