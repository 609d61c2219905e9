"""Which files in a user's folder are data: one rule for ingest and predict."""

from __future__ import annotations

import os
from pathlib import Path

# Folders that archivers and file managers add beside the data.
_NOT_DATA_FOLDERS = frozenset({"__MACOSX"})


def is_hidden(name: str) -> bool:
    """True for a hidden file or folder name (``.DS_Store``, ``._photo.jpg``, ``.git``, ``__MACOSX``)."""
    return name.startswith(".") or name in _NOT_DATA_FOLDERS


def visible_files(folder: Path) -> list[Path]:
    """Files under ``folder``, sorted, skipping hidden files and everything inside hidden folders."""
    found = []
    for parent, dirnames, filenames in os.walk(folder):
        dirnames[:] = [name for name in dirnames if not is_hidden(name)]
        found.extend(Path(parent) / name for name in filenames if not is_hidden(name))
    return sorted(found)


def path_kind(item: str | Path) -> str | None:
    """``"file"``, ``"folder"`` or None (nothing there, or text that cannot be a path: too long, a NUL byte)."""
    try:
        path = Path(item)
        return "folder" if path.is_dir() else "file" if path.is_file() else None
    except (OSError, ValueError):  # ENAMETOOLONG, embedded NUL
        return None
