"""No process outlives its stage: SIGKILL a multi-process stage mid-run, and nothing of it is left.

Each test starts the real CLI, waits until the stage's helper processes exist (worker pools, the
word2vec training child), kills the stage with SIGKILL (no handler can run), and then checks that
every process the stage had started is gone within a few seconds and that a rerun succeeds (no
worker holds the stage lock).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import Workspace, image_bytes, tone, write_wav
from tests.unit.test_word2vec import topic_corpus

DLPIPE = str(Path(sys.executable).with_name("dlpipe"))
# Seconds the kernel and the pool get to tear the processes down.
GONE_WITHIN = 10


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid``."""
    found, pending = set(), [pid]
    while pending:
        current = pending.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        for child in map(int, children):
            found.add(child)
            pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; only its parent's wait is missing


def kill_when_helpers_run(command: list[str], cwd: Path, helpers: int) -> set[int]:
    """Start ``command``, SIGKILL it once it has ``helpers`` descendant processes; return their pids."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    started: set[int] = set()
    while time.monotonic() < deadline and process.poll() is None:
        started = descendants(process.pid)
        if len(started) >= helpers:
            break
        time.sleep(0.02)
    assert process.poll() is None and len(started) >= helpers, "the stage ended before its helpers could be seen"
    time.sleep(0.3)  # let them start working
    started |= descendants(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    return started


def assert_all_gone(pids: set[int]) -> None:
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.1)
    left = [pid for pid in pids if alive(pid)]
    for pid in left:  # do not leave them to the next test
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes still running {GONE_WITHIN} s after their stage was killed: {left}"


@pytest.fixture
def many_images(workspace: Workspace) -> Workspace:
    source = workspace.add_dataset("imgs", "image", "src/imgs")
    for label in ("a", "b"):
        (source / label).mkdir(parents=True)
        for i in range(1500):
            (source / label / f"{i}.png").write_bytes(image_bytes(size=(48, 48), seed=i + (label == "b") * 10_000))
    workspace.params["ingest"]["workers"] = 2
    workspace.write_params()
    return workspace


def test_killed_ingest_leaves_no_worker_and_reruns(many_images: Workspace) -> None:
    assert_all_gone(kill_when_helpers_run([DLPIPE, "ingest"], many_images.root, helpers=2))
    rerun = subprocess.run([DLPIPE, "ingest"], cwd=many_images.root, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert len((many_images.root / "data/imgs/ingest/manifest.csv").read_text().splitlines()) == 3001
    assert [p.name for p in (many_images.root / "data/imgs").iterdir() if p.name.startswith(".ingest.partial")] == []


def test_killed_spectrogram_leaves_no_worker_and_reruns(workspace: Workspace) -> None:
    source = workspace.add_dataset("clips", "audio", "src/clips")
    for c, label in enumerate(("low", "high")):
        for i in range(150):
            write_wav(source / label / f"{i}.wav", tone(1.0, 16000, 200 + 600 * c + i), 16000)
    workspace.params["ingest"]["workers"] = 2
    workspace.params["spectrogram"]["workers"] = 2
    workspace.write_params()
    assert subprocess.run([DLPIPE, "ingest"], cwd=workspace.root, capture_output=True).returncode == 0
    assert_all_gone(kill_when_helpers_run([DLPIPE, "spectrogram"], workspace.root, helpers=2))
    rerun = subprocess.run([DLPIPE, "spectrogram"], cwd=workspace.root, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr


def test_killed_word2vec_leaves_no_training_process_and_reruns(workspace: Workspace) -> None:
    (workspace.root / "corpus.txt").write_text(topic_corpus(sentences=3000), encoding="utf-8")
    workspace.add_dataset("words", "text", "corpus.txt")
    workspace.params["word2vec"].update({"vector_size": 16, "epochs": 400, "min_count": 2, "workers": 1, "seed": 7})
    workspace.params["word2vec"]["export"]["map_words"] = 0
    workspace.write_params()
    assert subprocess.run([DLPIPE, "ingest"], cwd=workspace.root, capture_output=True).returncode == 0
    assert_all_gone(kill_when_helpers_run([DLPIPE, "word2vec", "train"], workspace.root, helpers=1))
    rerun = subprocess.run([DLPIPE, "word2vec", "train", "--set", "word2vec.epochs=2"], cwd=workspace.root, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
