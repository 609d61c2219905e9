"""``dlpipe doctor``: the machine and the project checked, each problem with what to do (exit 8 if any)."""

from __future__ import annotations

from typing import Any

import typer

from dlpipe.cli.common import DEFAULT_PARAMS, JsonOption, ParamsOption, SetOption, VerboseOption, guarded, print_json

# What doctor exits with when it found a problem (listed in the README's exit codes).
PROBLEMS_FOUND = 8


def doctor(
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Check what dlpipe needs: library versions, GPUs seen by TensorFlow and FAISS, the pretrained weights the
    params need, free space in base.data_dir, whether the DVC pipeline is up to date, running or killed runs.

    Exits 8 when something is wrong, each problem with what to do. Example: dlpipe doctor --json
    """

    def action() -> Any:
        from dlpipe.core.config import load_project
        from dlpipe.queries import doctor as query

        return query.run(load_project(params, set_ or []))

    report = guarded(verbose, action)
    if as_json:
        print_json(report.as_json())
    else:
        _print(report)
    if report.problems:
        raise typer.Exit(PROBLEMS_FOUND)


def _print(report: Any) -> None:
    from rich.table import Table

    from dlpipe.core.console import stdout

    stdout.print("versions: " + ", ".join(f"{name} {version}" for name, version in report.versions.items()))
    table = Table(title="dlpipe doctor", title_justify="left")
    for column in ("check", "", "finding", "what to do"):
        table.add_column(column)
    for finding in report.findings:
        table.add_row(finding.check, "ok" if finding.ok else "[bold red]problem[/]", finding.detail, finding.hint)
    stdout.print(table)
    stdout.print(f"{len(report.problems)} problem(s)" if report.problems else "no problem found")
