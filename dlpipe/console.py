"""Console output: Rich on a terminal, plain log lines everywhere else.

Messages go to stderr so that ``--json`` output on stdout stays machine-readable.
Under ``dvc repro``, CI or a pipe there is no TTY, and progress is reported as
plain lines every few seconds instead of a redrawn bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console

T = TypeVar("T")

console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False, soft_wrap=True)

# Seconds between plain progress lines when stderr is not a terminal.
_PLAIN_INTERVAL = 5.0


def info(message: str) -> None:
    """Print a status line (stderr)."""
    console.print(message)


def warn(message: str) -> None:
    """Print a warning line (stderr)."""
    console.print(f"[yellow]warning:[/] {message}")


def track(items: Iterable[T], total: int, description: str, unit: str = "items") -> Iterator[T]:
    """Yield from ``items`` while showing progress with throughput in ``unit`` per second.

    A Rich bar on a terminal; otherwise one plain line every few seconds and one at the end.
    """
    if console.is_terminal:
        yield from _rich_track(items, total, description, unit)
    else:
        yield from _plain_track(items, total, description, unit)


def _rich_track(items: Iterable[T], total: int, description: str, unit: str) -> Iterator[T]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    start = time.perf_counter()
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(description, total=total, rate="")
        for done, item in enumerate(items, start=1):
            yield item
            rate = done / max(time.perf_counter() - start, 1e-9)
            progress.update(task, advance=1, rate=f"{rate:,.0f} {unit}/s")


def _plain_track(items: Iterable[T], total: int, description: str, unit: str) -> Iterator[T]:
    start = last = time.perf_counter()
    done = 0
    for done, item in enumerate(items, start=1):
        yield item
        now = time.perf_counter()
        if now - last >= _PLAIN_INTERVAL and done < total:
            last = now
            _plain_line(description, done, total, now - start, unit)
    _plain_line(description, done, total, time.perf_counter() - start, unit)


def _plain_line(description: str, done: int, total: int, elapsed: float, unit: str) -> None:
    percent = 100.0 * done / total if total else 100.0
    rate = done / elapsed if elapsed > 0 else 0.0
    print(f"{description}: {done}/{total} {unit} ({percent:.0f}%), {rate:,.0f} {unit}/s", file=sys.stderr, flush=True)
