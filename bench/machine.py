"""What the benchmarks record about the machine while they run."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo), for the benchmark reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class CpuShare:
    """How busy the CPUs were with *other* processes between start() and stop() (Linux /proc/stat).

    The load average is no guide here: TensorFlow's own threads raise it above the core count.
    Busy ticks of the whole machine minus this process's CPU time, as a share of wall time x cores.
    """

    def __init__(self) -> None:
        self.start_at = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float, float] | None:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / hz  # user nice system irq softirq
        steal = fields[7] / hz if len(fields) > 7 else 0.0
        mine = os.times()
        return time.perf_counter(), busy, steal, mine.user + mine.system + mine.children_user + mine.children_system

    def stop(self) -> dict[str, float] | None:
        end = self._sample()
        if self.start_at is None or end is None:
            return None
        wall = end[0] - self.start_at[0]
        capacity = wall * (os.cpu_count() or 1)
        return {
            "wall_seconds": round(wall, 2),
            "this_process_share": round((end[3] - self.start_at[3]) / capacity, 3),
            "other_processes_share": round(max(0.0, (end[1] - self.start_at[1]) - (end[3] - self.start_at[3])) / capacity, 3),
            "steal_share": round((end[2] - self.start_at[2]) / capacity, 3),
        }
