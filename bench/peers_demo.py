"""The demo's wall time against its core work (bench_peers.py's last section).

A fresh clone of this repository runs ``dvc repro`` exactly as ``make demo`` does, with one difference:
``dlpipe`` on the PATH is a shim (this file, run as a script) that runs the real CLI and appends one
line per process to ``$DLPIPE_BENCH_TIMINGS``:

- ``process_seconds``: from the process's start (its age in /proc) to its exit;
- ``run_seconds``: the time spent inside the stages' ``run()`` functions (the outermost call of
  ``dlpipe.stages.<module>.run``), which is the stage's work: reading its inputs, computing, writing.

So the demo's wall time splits into DVC's own work (hashing, locks, between processes), each process's
start-up and imports, and the stages' work; the target is wall <= 1.3 x the work.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TIMINGS_ENV = "DLPIPE_BENCH_TIMINGS"


def process_age() -> float:
    """Seconds since this process started, from /proc (10 ms resolution).

    Both figures count from the boot: the process's start time in clock ticks, and /proc/uptime. (The boot
    time itself, /proc/stat's btime, is rounded down to the second, which would add up to a second to each.)
    """
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


class StageTimer(importlib.abc.MetaPathFinder):
    """Wraps ``run`` of every ``dlpipe.stages.*`` module as it is imported, adding the outermost calls' time."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.depth = 0

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if not name.startswith("dlpipe.stages."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            execute(module)
            if callable(getattr(module, "run", None)):
                module.run = self.timed(module.run)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec

    def timed(self, run: Any) -> Any:
        @functools.wraps(run)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.depth += 1
            started = time.perf_counter()
            try:
                return run(*args, **kwargs)
            finally:
                self.depth -= 1
                if self.depth == 0:
                    self.seconds += time.perf_counter() - started

        return wrapper


def shim_main() -> None:
    """Run the dlpipe CLI, timed; append this process's line to $DLPIPE_BENCH_TIMINGS at exit."""
    timer = StageTimer()
    sys.meta_path.insert(0, timer)

    def record() -> None:
        line = {"argv": sys.argv[1:], "process_seconds": process_age(), "run_seconds": timer.seconds}
        with open(os.environ[TIMINGS_ENV], "a", encoding="utf-8") as handle:
            handle.write(json.dumps(line) + "\n")

    atexit.register(record)
    from dlpipe.cli.app import main

    sys.argv[0] = "dlpipe"
    main()


def run_demo(clone: Path, timings: Path) -> float:
    """``git clone`` this repository to ``clone`` and time ``dvc repro`` there with the shim as ``dlpipe``; its wall seconds."""
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    shims = clone.parent / "shim-bin"
    shims.mkdir(exist_ok=True)
    shim = shims / "dlpipe"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{Path(__file__).resolve()}" "$@"\n', encoding="utf-8")
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    timings.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PATH": f"{shims}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PYTHONPATH": str(clone),  # the clone's dlpipe, not the one this environment has installed in editable mode
        TIMINGS_ENV: str(timings),
    }
    started = time.perf_counter()
    done = subprocess.run(["dvc", "repro"], cwd=clone, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"dvc repro failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return seconds


def summarize(wall: float, timings: Path) -> dict[str, Any]:
    """The demo's wall time split into DVC, process start-up and imports, and the stages' work; per command too."""
    lines = [json.loads(line) for line in timings.read_text(encoding="utf-8").splitlines() if line.strip()]
    per_command: dict[str, dict[str, float]] = {}
    for line in lines:
        words = [word for word in line["argv"] if not word.startswith("-")]
        command = " ".join(words[:2] if words[:1] in (["search"], ["word2vec"]) else words[:1])
        row = per_command.setdefault(command, {"processes": 0, "process_seconds": 0.0, "run_seconds": 0.0})
        row["processes"] += 1
        row["process_seconds"] += line["process_seconds"]
        row["run_seconds"] += line["run_seconds"]
    processes = sum(line["process_seconds"] for line in lines)
    work = sum(line["run_seconds"] for line in lines)
    return {
        "wall_seconds": wall,
        "processes": len(lines),
        "process_seconds": processes,
        "work_seconds": work,
        "startup_seconds": processes - work,
        "dvc_seconds": wall - processes,
        "ratio": wall / work,
        "target_met": wall <= 1.3 * work,
        "per_command": per_command,
    }


if __name__ == "__main__":
    shim_main()
