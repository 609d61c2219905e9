"""Atomic outputs: an interrupted write never replaces a complete artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlpipe.core.artifacts import atomic_dir, atomic_write_json, read_json, stage_lock
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
