"""``dlpipe ingest``: validate datasets and write their manifests."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dlpipe.cli.common import (
    DEFAULT_PARAMS,
    JsonOption,
    ParamsOption,
    SetOption,
    VerboseOption,
    print_results_json,
    run_per_dataset,
)


def ingest(
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Ingest only this dataset (default: every one in params).")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Validate datasets, write manifest.csv / rejected.csv and split train/val/test.

    Example: dlpipe ingest --dataset shapes
    """
    results = run_per_dataset("ingest", params, set_, verbose, dataset)
    if as_json:
        print_results_json(results)
        return
    _print_summary(results)


def _print_summary(results: list[Any]) -> None:
    from rich.table import Table

    from dlpipe.core.console import console

    table = Table(title="ingest", title_justify="left")
    for column in ("dataset", "modality", "accepted", "rejected", "ignored", "classes", "train/val/test"):
        table.add_column(column, no_wrap=True)
    for result in results:
        splits = "/".join(str(result.splits.get(split, 0)) for split in ("train", "val", "test"))
        table.add_row(
            result.dataset,
            result.modality,
            str(result.accepted),
            str(result.rejected),
            str(result.ignored),
            str(len(result.classes)) if result.classes else "-",
            splits if result.splits else "-",
        )
    console.print(table)
    for result in results:
        console.print(f"{result.dataset}: {result.out_dir / 'manifest.csv'} (rejections in rejected.csv)")
