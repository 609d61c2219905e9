"""Ctrl-C and a second run at once: every stage keeps its earlier outputs and leaves nothing half-written.

A concurrent run is refused by the stage's lock (exit 5, naming the folder); a run interrupted by
SIGINT exits 130 with the earlier outputs untouched and no staging folder left behind.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dlpipe.core.artifacts import stage_lock
from dlpipe.core.config import Project
from dlpipe.core.errors import ArtifactError
from dlpipe.stages import cluster, embed, finetune, heatmap, ingest, report, search, spectrogram, word2vec
from tests.conftest import Workspace, tree_digest
from tests.unit.test_image_models import TINY, tiny_shapes
from tests.unit.test_word2vec import FAST, topic_corpus

SMALL = (*TINY, "cluster.k_max=4", "search.examples=2", "cluster.thumbnails=4", "heatmap.per_class=1")
STAGES = {
    "ingest": (ingest, "shapes"),
    "spectrogram": (spectrogram, "clips"),
    "finetune": (finetune, "shapes"),
    "embed": (embed, "shapes"),
    "cluster": (cluster, "shapes"),
    "search": (search, "shapes"),
    "heatmap": (heatmap, "shapes"),
    "word2vec": (word2vec, "words"),
    "report": (report, "shapes"),  # last: it reads what the others wrote
}


def every_modality(workspace: Workspace) -> Project:
    """Tiny images (shapes, ingested), clips and a corpus (both ingested) in ``workspace``; its project with SMALL."""
    tiny_shapes(workspace, per_class=6)
    workspace.audio_dataset()
    (workspace.root / "corpus.txt").write_text(topic_corpus(), encoding="utf-8")
    workspace.add_dataset("words", "text", "corpus.txt")
    workspace.params["word2vec"].update(FAST)
    workspace.params["word2vec"]["export"]["map_words"] = 0
    project = workspace.load(*SMALL)
    for name in ("clips", "words"):
        ingest.run(project, name)
    return project


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Every stage run once on tiny images, clips and a corpus."""
    workspace = Workspace(tmp_path_factory.mktemp("interrupt"))
    project = every_modality(workspace)
    for module, dataset in STAGES.values():
        if module is not ingest:
            module.run(project, dataset)
    return workspace


def outputs(data: Path) -> dict[str, tuple[str, int]]:
    """Every output file with its hash and time: not the locks, finetune's checkpoints (kept on purpose to resume),
    nor what is in a staging or retired folder (never an output: the next run removes it)."""
    skipped = ("-resume", ".partial-", ".old-")
    return {name: value for name, value in tree_digest(data).items() if not name.endswith(".lock") and not any(s in name for s in skipped)}


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_second_run_at_once_is_refused_and_changes_nothing(pipeline: Workspace, stage: str) -> None:
    module, dataset = STAGES[stage]
    project = pipeline.load(*SMALL)
    before = outputs(pipeline.root / "data")
    with stage_lock(project.layout(dataset).root, module.STAGE), pytest.raises(ArtifactError, match="another .* run is writing") as caught:
        module.run(project, dataset)
    assert caught.value.exit_code == 5
    assert outputs(pipeline.root / "data") == before


@pytest.mark.parametrize(("stage", "after"), [("finetune", 6.0), ("embed", 5.0), ("word2vec train", 3.0)])
def test_ctrl_c_keeps_earlier_outputs_and_leaves_no_staging(pipeline: Workspace, stage: str, after: float) -> None:
    dataset = "words" if stage.startswith("word2vec") else "shapes"
    data = pipeline.root / "data"
    before = outputs(data)
    overrides = [option for override in (*SMALL, "finetune.head_epochs=50", "word2vec.epochs=300") for option in ("--set", override)]
    dlpipe = str(Path(sys.executable).with_name("dlpipe"))
    command = [dlpipe, *stage.split(), "--dataset", dataset, *overrides]
    process = subprocess.Popen(command, cwd=pipeline.root, stderr=subprocess.PIPE, text=True)
    # Mid-run: as soon as the stage writes into its staging folder, or after ``after`` seconds of
    # loading or training, whichever comes first.
    deadline = time.monotonic() + after
    while time.monotonic() < deadline and not any(".partial-" in path.name for path in data.rglob(".*")):
        time.sleep(0.01)
    assert process.poll() is None, "the stage ended before it could be interrupted"
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=120)
    assert process.returncode == 130, errors[-2000:]
    assert "interrupted" in errors
    assert outputs(data) == before
    assert not [path for path in data.rglob(".*") if ".partial-" in path.name or ".old-" in path.name]


@pytest.mark.parametrize("stage", list(STAGES))
def test_ctrl_c_while_writing_keeps_earlier_outputs(pipeline: Workspace, stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from dlpipe.core import artifacts

    module, dataset = STAGES[stage]
    project = pipeline.load(*SMALL)
    data = pipeline.root / "data"
    before = outputs(data)

    def interrupted(path: Path) -> tuple[int, str]:
        raise KeyboardInterrupt  # Ctrl-C as the stage writes its first file

    monkeypatch.setattr(artifacts, "temporary_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        module.run(project, dataset)
    monkeypatch.undo()
    assert outputs(data) == before
    assert not [path for path in data.rglob(".*") if ".partial-" in path.name or ".old-" in path.name]


KILLED_WHILE_WRITING = """
import os, sys
from dlpipe.core import artifacts
from dlpipe.core.config import load_project
from dlpipe.stages import {module}
artifacts.temporary_file = lambda path: os._exit(9)  # SIGKILL as the stage writes its first file: no cleanup runs
{module}.run(load_project(sys.argv[1], sys.argv[3:]), sys.argv[2])
"""


@pytest.mark.parametrize("stage", list(STAGES))
def test_a_stage_killed_while_writing_keeps_earlier_outputs_and_the_next_run_succeeds(pipeline: Workspace, stage: str) -> None:
    module, dataset = STAGES[stage]
    data = pipeline.root / "data"
    before = outputs(data)
    script = KILLED_WHILE_WRITING.format(module=module.__name__.rsplit(".", 1)[1])
    command = [sys.executable, "-c", script, str(pipeline.params_path), dataset, *SMALL]
    killed = subprocess.run(command, cwd=pipeline.root, capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr[-2000:]
    assert outputs(data) == before  # the kill left staging behind at most, never a changed output
    module.run(pipeline.load(*SMALL), dataset)
    assert not [path for path in data.rglob(".*") if ".partial-" in path.name or ".old-" in path.name]
