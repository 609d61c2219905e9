"""``dlpipe report``: the HTML report, a page per dataset and the index page."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dlpipe.cli.common import DEFAULT_PARAMS, JsonOption, ParamsOption, SetOption, VerboseOption, guarded, print_json


def report(
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Write only this dataset's page (what the DVC stage report@<name> runs).")
    ] = None,
    index: Annotated[bool, typer.Option("--index", help="Write only the index page (the DVC stage report_index).")] = False,
    where: Annotated[bool, typer.Option("--where", help="Print the index page's path and exit (writes nothing).")] = False,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Write the HTML report: one self-contained page per dataset (every stage's headline figures and pictures,
    the top losses, search examples, heatmap grid, word map, the index choice and its reason, the params and
    input hashes) and an index page. Pages embed their pictures: open them offline, mail or move them.

    With neither --dataset nor --index: every dataset that has outputs, then the index page.
    Writes data/report/datasets/<dataset>/index.html and data/report/index.html.
    Examples: dlpipe report      dlpipe report --dataset shapes      dlpipe report --where
    """

    def action() -> list[Any]:
        from dlpipe.core.config import load_project
        from dlpipe.stages import report as stage

        project = load_project(params, set_ or [])
        if where:
            return [stage.Result(None, project.report_layout().index_page, ())]
        if dataset:
            return [stage.run(project, dataset)]
        if index:
            return [stage.run_index(project)]
        return stage.run_all(project)

    results = guarded(verbose, action)
    if as_json:
        print_json([{"dataset": result.dataset, "page": str(result.page), "stages": list(result.stages)} for result in results])
        return
    if where:
        typer.echo(results[0].page)
        return
    from dlpipe.core.console import info

    for result in results:
        if result.dataset is None:
            info(f"report: {result.page}")
        else:
            info(f"report {result.dataset}: {', '.join(result.stages)} -> {result.page}")

