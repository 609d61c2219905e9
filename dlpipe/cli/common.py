"""What every command shares: the common options, error handling, JSON printing, choosing datasets.

Stage and query modules (and the heavy libraries they use) are imported inside each
command, so ``dlpipe --help`` answers without loading TensorFlow, librosa, FAISS,
umap or gensim.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

T = TypeVar("T")

ParamsOption = Annotated[
    Path, typer.Option("--params", help="Params file; relative paths inside it resolve against its folder.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override a param (repeatable), e.g. --set ingest.workers=1."),
]
VerboseOption = Annotated[
    bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors, and the frameworks' own log lines and warnings.")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts).")]
DatasetOption = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Run on this dataset (default: every image dataset in params).")
]
DEFAULT_PARAMS = Path("params.yaml")

# Datasets the image stages run on: images, and audio through its spectrogram images.
IMAGE_LIKE = ("image", "audio")


def guarded(verbose: bool, action: Callable[[], T]) -> T:
    """Run ``action``; turn dlpipe errors into one message and their exit code."""
    from dlpipe.core.artifacts import storage_error
    from dlpipe.core.console import console
    from dlpipe.core.errors import DlpipeError
    from dlpipe.core.quiet import quiet_output

    interrupted = _InterruptFlag()
    try:
        with interrupted, quiet_output(enabled=not verbose):
            return action()
    except DlpipeError as error:
        _report(error, verbose)
    except KeyboardInterrupt:
        _report_interrupted()
    except Exception as error:  # anything else is a bug, unless the filesystem refused a write or Ctrl-C was pressed
        if interrupted.seen:
            # Ctrl-C inside a C extension can surface as another exception (SystemError, RuntimeError).
            _report_interrupted()
        refused = isinstance(error, OSError) and error.filename
        converted = storage_error(error, Path(error.filename), "a file", judge_by_free_space=False) if refused else None
        if converted is not None:
            _report(converted, verbose)
        if verbose:
            console.print_exception()
        console.print(f"[bold red]internal error:[/] {type(error).__name__}: {error}")
        console.print("[dim]hint:[/] rerun with --verbose for the traceback and report it")
        raise typer.Exit(1) from None


class _InterruptFlag:
    """While entered, SIGINT raises KeyboardInterrupt as usual and is also remembered in ``seen``."""

    def __init__(self) -> None:
        self.seen = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self) -> _InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def _report_interrupted() -> None:
    from dlpipe.core.console import console

    console.print("[yellow]interrupted[/]: finished artifacts are kept, partial ones were discarded")
    raise typer.Exit(130) from None


def _report(error: Any, verbose: bool) -> None:
    """Print a DlpipeError as its title, message and hint, and exit with its code."""
    from dlpipe.core.console import console

    if verbose:
        console.print_exception()
    console.print(f"[bold red]{error.title}:[/] {error.message}", markup=True, highlight=False)
    if error.hint:
        console.print(f"[dim]hint:[/] {error.hint}")
    raise typer.Exit(error.exit_code) from None


def print_json(value: Any) -> None:
    """``value`` as indented JSON on stdout (messages go to stderr, so scripts can parse this)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def print_results_json(results: list[Any], folder: str = "out_dir") -> None:
    """Each stage result's metrics plus where it wrote its output, as JSON on stdout."""
    print_json([result.metrics | {folder: str(getattr(result, folder))} for result in results])


def report(results: list[Any], as_json: bool, line: Callable[[Any], str], folder: str = "out_dir") -> None:
    """Print stage results: as JSON on stdout with ``--json``, else ``line(result)`` per dataset on stderr."""
    if as_json:
        print_results_json(results, folder)
        return
    from dlpipe.core.console import info

    for result in results:
        info(line(result))


def run_per_dataset(
    stage: str,
    params: Path,
    overrides: list[str] | None,
    verbose: bool,
    dataset: str | None,
    modalities: tuple[str, ...] | None = None,
    labelled_only: bool = False,
) -> list[Any]:
    """Validate params, then run the stage on one dataset or on every one of ``modalities`` (labelled ones only if asked).

    The module is ``dlpipe.stages.<stage>``, or its text variant for labelled text (see ``dlpipe.stages.stage_module``).
    """

    def action() -> list[Any]:
        import importlib

        from dlpipe.core.config import load_project
        from dlpipe.stages import stage_module

        project = load_project(params, overrides or [])
        if dataset:
            project.dataset(dataset)  # an unknown name is a ConfigError listing the known ones
            names = [dataset]
        else:
            names = [
                name
                for name, spec in project.params.datasets.items()
                if (modalities is None or spec.modality in modalities) and (spec.labelled or not labelled_only)
            ]
        results = []
        for name in names:
            # Imported only now: stage modules pull in TensorFlow and friends.
            module = importlib.import_module(stage_module(stage, project.dataset(name).modality))
            results.append(module.run(project.for_dataset(name), name))
        return results

    return guarded(verbose, action)


def only_built(project: Any, artifact: Callable[[Any], Path], what: str) -> str:
    """The one dataset whose ``artifact(layout)`` file exists, or a ConfigError saying which to pick.

    Args:
        project: the loaded project.
        artifact: maps a dataset's :class:`~dlpipe.core.layout.DatasetLayout` to the file that marks it as built.
        what: the artifact's name in the message.
    """
    from dlpipe.core.errors import ConfigError

    built = [name for name in project.params.datasets if artifact(project.layout(name)).is_file()]
    if len(built) != 1:
        found = ", ".join(built) or "none"
        raise ConfigError(f"cannot choose a dataset: datasets with an {what}: {found}", "pass --dataset NAME")
    return built[0]
