"""Console output: Rich on a terminal, plain log lines everywhere else.

Messages go to stderr so that ``--json`` output on stdout stays machine-readable.
Under ``dvc repro``, CI or a pipe there is no TTY: each message is one unwrapped line
(whole paths, greppable), and progress is reported as plain lines every few seconds
instead of a redrawn bar.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator

from rich.console import Console

# soft_wrap: never break a line that does not go to a terminal (a log keeps each path whole).
console = Console(stderr=True, highlight=False, soft_wrap=not sys.stderr.isatty())
stdout = Console(highlight=False, soft_wrap=not sys.stdout.isatty())

# Seconds between plain progress lines when stderr is not a terminal.
_PLAIN_INTERVAL = 5.0


def info(message: str) -> None:
    """Print a status line (stderr)."""
    console.print(message)


def warn(message: str) -> None:
    """Print a warning line (stderr)."""
    console.print(f"[yellow]warning:[/] {message}")


@contextlib.contextmanager
def progress(total: int, description: str, unit: str = "items") -> Iterator[Callable[[int], None]]:
    """Show progress of ``total`` units of work; yields ``advance(n)`` to report finished work.

    A Rich bar with throughput on a terminal; otherwise a plain line every few seconds and one at the end.
    """
    if console.is_terminal:
        with _rich_progress(total, description, unit) as advance:
            yield advance
    else:
        with _plain_progress(total, description, unit) as advance:
            yield advance


@contextlib.contextmanager
def _rich_progress(total: int, description: str, unit: str) -> Iterator[Callable[[int], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    start = time.perf_counter()
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=total, rate="")
        done = 0

        def advance(count: int) -> None:
            nonlocal done
            done += count
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=count, rate=f"{rate:,.0f} {unit}/s")

        yield advance


@contextlib.contextmanager
def _plain_progress(total: int, description: str, unit: str) -> Iterator[Callable[[int], None]]:
    start = last = time.perf_counter()
    done = 0

    def advance(count: int) -> None:
        nonlocal done, last
        done += count
        now = time.perf_counter()
        if now - last >= _PLAIN_INTERVAL and done < total:
            last = now
            _plain_line(description, done, total, now - start, unit)

    yield advance
    _plain_line(description, done, total, time.perf_counter() - start, unit)


def _plain_line(description: str, done: int, total: int, elapsed: float, unit: str) -> None:
    percent = 100.0 * done / total if total else 100.0
    rate = done / elapsed if elapsed > 0 else 0.0
    print(f"{description}: {done}/{total} {unit} ({percent:.0f}%), {rate:,.0f} {unit}/s", file=sys.stderr, flush=True)
