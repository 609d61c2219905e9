"""Rerunning a stage on the same inputs writes the same bytes, so DVC never takes a later stage for stale.

Run facts (timings, throughput) live in ``metrics/``, which no stage reads; every other file under a
dataset's folder must hash the same after the rerun.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from dlpipe.stages import cluster, embed, finetune, heatmap, ingest, search, spectrogram, word2vec
from tests.conftest import Workspace
from tests.unit.test_image_models import TINY, tiny_shapes
from tests.unit.test_word2vec import FAST, topic_corpus

SMALL = (*TINY, "cluster.k_max=4", "search.examples=2", "cluster.thumbnails=4", "heatmap.per_class=1")


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except the metrics (run facts)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "metrics" not in path.relative_to(folder).parts
    }


def assert_rerun_identical(run: Callable[[], object], folder: Path, stage: str) -> None:
    def fresh_run() -> dict[str, str]:
        if stage == "finetune":
            import keras

            keras.backend.clear_session()  # as in a new process: layer names start afresh (earlier tests used some)
        run()
        return hashes(folder)

    first, second = fresh_run(), fresh_run()
    changed = sorted(name for name in first.keys() | second.keys() if first.get(name) != second.get(name))
    assert not changed, f"{stage}: rerun on the same inputs changed {changed}"


def test_image_stages_rerun_byte_identical(workspace: Workspace) -> None:
    tiny_shapes(workspace, per_class=6)
    project = workspace.load(*SMALL)
    folder = workspace.root / "data/shapes"
    for module in (ingest, finetune, embed, cluster, search, heatmap):
        assert_rerun_identical(lambda module=module: module.run(project, "shapes"), folder, module.__name__.rsplit(".", 1)[1])


def test_audio_and_text_stages_rerun_byte_identical(workspace: Workspace) -> None:
    workspace.audio_dataset()
    (workspace.root / "corpus.txt").write_text(topic_corpus(), encoding="utf-8")
    workspace.add_dataset("words", "text", "corpus.txt")
    workspace.params["word2vec"].update(FAST)
    workspace.params["word2vec"]["export"]["map_words"] = 0
    project = workspace.load()
    ingest.run(project, "clips")
    assert_rerun_identical(lambda: spectrogram.run(project, "clips"), workspace.root / "data/clips", "spectrogram")
    ingest.run(project, "words")
    assert_rerun_identical(lambda: word2vec.run(project, "words"), workspace.root / "data/words", "word2vec")


def test_sidecars_hold_no_run_facts(workspace: Workspace) -> None:
    workspace.image_dataset()
    ingest.run(workspace.load(), "imgs")
    text = (workspace.root / "data/imgs/ingest/manifest.json").read_text(encoding="utf-8")
    assert "created" not in text and str(workspace.root) not in text
