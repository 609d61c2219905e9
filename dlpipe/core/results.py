"""What every stage run returns: the fields the CLI's report and ``--json`` output rely on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class StageResult:
    """A finished stage run: the dataset, its output folder and metrics file, and its metrics.

    ``metrics`` also holds the words the CLI prints (a name, a reason); the file keeps the numbers
    (:func:`dlpipe.core.artifacts.numbers_only`), and the words are in the stage's sidecar.
    """

    dataset: str
    out_dir: Path
    metrics_path: Path
    metrics: dict[str, Any]
