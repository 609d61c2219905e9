"""The ``dlpipe`` command line: parse, load params, call a stage, print a summary.

Stage modules (and the heavy libraries they use) are imported inside each
command, so ``dlpipe --help`` answers without loading TensorFlow, librosa, FAISS,
umap or gensim.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from dlpipe import __version__

T = TypeVar("T")

app = typer.Typer(
    name="dlpipe",
    help="Applied deep learning as a reproducible DVC pipeline. Every command is also a DVC stage (see dvc.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

ParamsOption = Annotated[
    Path, typer.Option("--params", help="Params file; relative paths inside it resolve against its folder.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override a param (repeatable), e.g. --set ingest.workers=1."),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts).")]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dlpipe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """dlpipe: ingest labelled images, audio or text and run the applied deep-learning workflow as DVC stages."""


def _guarded(verbose: bool, action: Callable[[], T]) -> T:
    """Run ``action``; turn dlpipe errors into one message and their exit code."""
    from dlpipe.console import console
    from dlpipe.errors import DlpipeError

    try:
        return action()
    except DlpipeError as error:
        if verbose:
            console.print_exception()
        console.print(f"[bold red]{error.title}:[/] {error.message}", markup=True, highlight=False)
        if error.hint:
            console.print(f"[dim]hint:[/] {error.hint}")
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished artifacts are kept, partial ones were discarded")
        raise typer.Exit(130) from None
    except Exception as error:  # anything else is a bug: say so plainly
        if verbose:
            console.print_exception()
        console.print(f"[bold red]internal error:[/] {type(error).__name__}: {error}")
        console.print("[dim]hint:[/] rerun with --verbose for the traceback and report it")
        raise typer.Exit(1) from None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


class SampleKind(str, Enum):
    images = "images"
    audio = "audio"
    text = "text"


@app.command()
def sample(
    kind: Annotated[SampleKind, typer.Argument(help="images (shapes), audio (tones, chirps, ...) or text (news corpus).")],
    out: Annotated[Path, typer.Argument(help="Folder to write; replaced only when generation succeeds.")],
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Generate a deterministic sample dataset (same base.seed -> byte-identical files).

    Example: dlpipe sample images data/sample/shapes
    """

    def action() -> Any:
        from dlpipe import sample as generators
        from dlpipe.config import load_project

        project = load_project(params, set_ or [])
        seed = project.params.base.seed
        if kind is SampleKind.images:
            return generators.generate_images(out, project.params.sample.images, seed)
        if kind is SampleKind.audio:
            return generators.generate_audio(out, project.params.sample.audio, seed)
        return generators.generate_text(out)

    result = _guarded(verbose, action)
    if as_json:
        _print_json({"kind": result.kind, "out": str(result.out), "files": result.files, "classes": result.classes})
        return
    from dlpipe.console import info

    classes = ", ".join(f"{name} {count}" for name, count in result.classes.items())
    info(f"sample {result.kind}: {result.files} files in {result.out}" + (f" ({classes})" if classes else ""))


@app.command()
def ingest(
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Ingest only this dataset (default: every one in params).")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Validate datasets, write manifest.csv / rejected.csv and split train/val/test.

    Example: dlpipe ingest --dataset shapes
    """

    def action() -> list[Any]:
        from dlpipe.config import load_project
        from dlpipe.stages import ingest as stage

        project = load_project(params, set_ or [])
        names = [dataset] if dataset else list(project.params.datasets)
        return [stage.run(project, name) for name in names]

    results = _guarded(verbose, action)
    if as_json:
        _print_json([result.metrics | {"out_dir": str(result.out_dir)} for result in results])
        return
    _print_ingest_summary(results)


def _print_ingest_summary(results: list[Any]) -> None:
    from rich.table import Table

    from dlpipe.console import console

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


@app.command()
def metrics(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Summarise the headline metrics every stage wrote, one line per dataset and stage.

    Example: dlpipe metrics   (`dvc metrics show` has every figure)
    """

    def action() -> Any:
        from dlpipe import summary
        from dlpipe.config import load_project

        return summary.collect(load_project(params, set_ or []))

    rows = _guarded(verbose, action)
    if as_json:
        _print_json([{"dataset": row.dataset, "stage": row.stage, **row.figures} for row in rows])
        return
    from rich.table import Table

    from dlpipe.console import stdout
    from dlpipe.summary import format_figures

    table = Table(title="dlpipe metrics", title_justify="left")
    for column in ("dataset", "stage", "headline figures"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.dataset, row.stage, format_figures(row.figures))
    stdout.print(table if rows else "no metrics yet: run `dvc repro` (or the stages) first")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="dlpipe")
