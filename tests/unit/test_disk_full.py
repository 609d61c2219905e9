"""A full disk or a read-only filesystem under ``base.data_dir``: a StorageError (exit 7) naming the path.

Each stage runs with its data folder on a real ``tmpfs`` of 64 MB that a filler file has made
nearly full (or that is remounted read-only). The stage must fail with a StorageError, leave the
earlier outputs byte for byte as they were, leave no staging folder behind, and succeed once there
is room again. Mounting needs root; elsewhere these tests are skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dlpipe.core.errors import StorageError
from dlpipe.stages import embed, finetune
from tests.conftest import Workspace, tree_digest
from tests.unit.test_interruptions import SMALL, STAGES, every_modality

DISK_MB = 64


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Images ingested, fine-tuned and embedded; clips and a corpus ingested (on the ordinary disk)."""
    workspace = Workspace(tmp_path_factory.mktemp("prepared"))
    project = every_modality(workspace)
    finetune.run(project, "shapes")
    embed.run(project, "shapes")
    return workspace


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    """A tmpfs of DISK_MB mounted for the test, or a skip saying why it could not be."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def on_disk(prepared: Workspace, disk: Path, folder: Path) -> Workspace:
    """A copy of the prepared project whose data folder lives on ``disk``."""
    workspace = Workspace(folder)
    shutil.copytree(prepared.root, folder, ignore=shutil.ignore_patterns("data"))
    shutil.copytree(prepared.root / "data", disk / "data")
    workspace.params = prepared.params
    workspace.params["base"]["data_dir"] = str(disk / "data")
    workspace.write_params()
    return workspace


def fill(disk: Path, leave: int = 0) -> None:
    """Take all but ``leave`` bytes of the filesystem with one file."""
    stats = os.statvfs(disk)
    with open(disk / "filler", "wb") as handle:
        os.posix_fallocate(handle.fileno(), 0, max(0, stats.f_bavail * stats.f_frsize - leave))


def outputs(data: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``data`` with its hash and time, but the lock files (not outputs: each run touches its own)."""
    return {name: value for name, value in tree_digest(data).items() if not name.endswith(".lock")}


def leftovers(data: Path) -> list[str]:
    return sorted(str(path.relative_to(data)) for path in data.rglob(".*") if ".partial-" in path.name or ".tmp" in path.name)




@pytest.mark.parametrize("stage", list(STAGES))
def test_full_disk_is_a_storage_error_and_keeps_earlier_outputs(prepared: Workspace, small_disk: Path, tmp_path: Path, stage: str) -> None:
    workspace = on_disk(prepared, small_disk, tmp_path / "project")
    module, dataset = STAGES[stage]
    project = workspace.load(*SMALL)
    data = small_disk / "data"
    fill(small_disk)
    before = outputs(data)
    with pytest.raises(StorageError, match=r"no space left") as caught:
        module.run(project, dataset)
    assert caught.value.exit_code == 7 and str(data) in caught.value.message
    after = outputs(data)
    if stage == "finetune":  # checkpoints are kept for the next run to resume from, a half-written one too
        before, after = ({name: v for name, v in files.items() if ".finetune-resume" not in name} for files in (before, after))
    assert after == before  # earlier outputs untouched (and nothing new half-written beside them)
    assert leftovers(data) == []
    (small_disk / "filler").unlink()
    module.run(project, dataset)  # room again: the same run succeeds (finetune discards the damaged checkpoint)


def test_read_only_data_folder_is_a_storage_error_in_every_stage(prepared: Workspace, small_disk: Path, tmp_path: Path) -> None:
    workspace = on_disk(prepared, small_disk, tmp_path / "project")
    project = workspace.load(*SMALL)
    before = outputs(small_disk / "data")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    for stage, (module, dataset) in STAGES.items():
        with pytest.raises(StorageError, match="read-only filesystem") as caught:
            module.run(project, dataset)
        assert caught.value.exit_code == 7 and str(small_disk) in caught.value.message, stage
    assert outputs(small_disk / "data") == before


def test_read_only_data_folder_is_a_storage_error_from_the_cli(prepared: Workspace, small_disk: Path, tmp_path: Path) -> None:
    workspace = on_disk(prepared, small_disk, tmp_path / "project")
    before = outputs(small_disk / "data")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    dlpipe = str(Path(sys.executable).with_name("dlpipe"))
    for command in (["ingest", "--dataset", "shapes"], ["embed", "--dataset", "shapes"]):
        result = subprocess.run([dlpipe, *command, *SMALL_SET], cwd=workspace.root, capture_output=True, text=True)
        said = " ".join(result.stderr.split())
        assert result.returncode == 7 and "read-only filesystem" in said and str(small_disk) in said, said
        assert "internal error" not in said
    assert outputs(small_disk / "data") == before


SMALL_SET = [option for override in SMALL for option in ("--set", override)]
