"""Atomic outputs: an interrupted write never replaces a complete artifact."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dlpipe.core.artifacts import atomic_dir, atomic_write_json, read_json, recover_swap, stage_lock, write_csv
from dlpipe.core.errors import ArtifactError


def test_atomic_dir_swaps_in_only_on_success(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with atomic_dir(final) as staging:
        (staging / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), atomic_dir(final) as staging:
        (staging / "a.txt").write_text("half-written")
        raise RuntimeError("interrupted")
    assert (final / "a.txt").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with atomic_dir(final) as staging:
        (staging / "b.txt").write_text("second")
    assert sorted(p.name for p in final.iterdir()) == ["b.txt"]


def test_atomic_write_json_and_read_json(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    atomic_write_json(path, {"x": 1})
    assert read_json(path, "metrics") == {"x": 1}
    path.write_text("{broken")
    with pytest.raises(ArtifactError, match="metrics is corrupt"):
        read_json(path, "metrics")
    with pytest.raises(ArtifactError, match="not found"):
        read_json(tmp_path / "none.json", "metrics")


def test_stage_lock_refuses_a_second_writer(tmp_path: Path) -> None:
    with stage_lock(tmp_path, "ingest"), pytest.raises(ArtifactError, match="another 'ingest' run"):
        with stage_lock(tmp_path, "ingest"):
            pass
    with stage_lock(tmp_path, "ingest"):
        pass


# The kill points of a swap, in the order a run meets them: (os calls counted, what the next run must find).
KILL_POINTS = [
    ("replace", 0, "old"),  # staging written, nothing renamed yet
    ("replace", 1, "old"),  # the old output retired, the new one not yet in place: the old one must come back
    ("rmtree", 0, "new"),  # the new output in place, the retired copy not yet removed
    ("rmtree-partly", 0, "new"),  # killed while removing the retired copy
]
KILLED_SWAP = """
import os, shutil, sys
from pathlib import Path
from dlpipe.core import artifacts
call, after = sys.argv[2], int(sys.argv[3])
seen = {"replace": 0, "rmtree": 0}
real = {"replace": os.replace, "rmtree": shutil.rmtree}
def counting(name):
    def wrapped(*args, **kwargs):
        if call.startswith(name) and seen[name] == after:
            if call == "rmtree-partly":
                (Path(args[0]) / "a.txt").unlink()  # part of the folder is gone, as when a kill lands mid-removal
            os._exit(9)
        seen[name] += 1
        return real[name](*args, **kwargs)
    return wrapped
with artifacts.atomic_dir(Path(sys.argv[1])) as staging:
    (staging / "a.txt").write_text("new")
    (staging / "b.txt").write_text("new")
    os.replace, shutil.rmtree = counting("replace"), counting("rmtree")
"""


@pytest.mark.parametrize(("call", "after", "expected"), KILL_POINTS)
def test_a_swap_killed_at_any_step_is_repaired_by_the_next_run(tmp_path: Path, call: str, after: int, expected: str) -> None:
    final = tmp_path / "out"
    with atomic_dir(final) as staging:
        (staging / "a.txt").write_text("old")
        (staging / "b.txt").write_text("old")
    killed = subprocess.run([sys.executable, "-c", KILLED_SWAP, str(final), call, str(after)], check=False)
    assert killed.returncode == 9
    assert any(path.name.startswith(".out.") for path in tmp_path.iterdir())  # the kill left something behind
    recover_swap(final)
    assert [path.name for path in tmp_path.iterdir()] == ["out"]
    assert {path.name: path.read_text() for path in final.iterdir()} == {"a.txt": expected, "b.txt": expected}


def test_staging_left_by_a_killed_run_is_removed_under_the_lock(tmp_path: Path) -> None:
    final = tmp_path / "out"
    stale = tmp_path / ".out.partial-abc123"
    (stale / "sub").mkdir(parents=True)
    with stage_lock(tmp_path, "s"), atomic_dir(final) as staging:
        (staging / "a.txt").write_text("x")
    assert sorted(path.name for path in tmp_path.iterdir()) == [".s.lock", "out"]


def test_outputs_follow_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o002)
    try:
        with atomic_dir(tmp_path / "out") as staging:
            (staging / "plain.txt").write_text("x")
        atomic_write_json(tmp_path / "out.json", {"x": 1})
        write_csv(tmp_path / "rows.csv", ["a"], [{"a": 1}])
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert modes == {"out": 0o775, "out.json": 0o664, "rows.csv": 0o664}


def test_ctrl_c_as_the_staging_folder_is_made_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # after mkdtemp made the folder, before the caller got it

    monkeypatch.setattr(os, "chmod", interrupted)
    with pytest.raises(KeyboardInterrupt), atomic_dir(tmp_path / "out"):
        pass
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
