"""``dlpipe metrics``: the headline figures of every stage that has run."""

from __future__ import annotations

from typing import Any

from dlpipe.cli.common import DEFAULT_PARAMS, JsonOption, ParamsOption, SetOption, VerboseOption, guarded, print_json


def metrics(
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Summarise the headline metrics every stage wrote, one line per dataset and stage.

    Example: dlpipe metrics   (`dvc metrics show` has every figure)
    """

    def action() -> Any:
        from dlpipe.core.config import load_project
        from dlpipe.reports import summary

        return summary.collect(load_project(params, set_ or []))

    rows = guarded(verbose, action)
    if as_json:
        print_json([{"dataset": row.dataset, "stage": row.stage, **row.figures} for row in rows])
        return
    from rich.table import Table

    from dlpipe.core.console import stdout
    from dlpipe.reports.summary import format_figures

    table = Table(title="dlpipe metrics", title_justify="left")
    for column in ("dataset", "stage", "headline figures"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.dataset, row.stage, format_figures(row.figures))
    stdout.print(table if rows else "no metrics yet: run `dvc repro` (or the stages) first")
