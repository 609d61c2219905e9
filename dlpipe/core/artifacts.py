"""Atomic writes, content hashes and sidecar metadata for every artifact.

An interrupted run must never leave a half-written file or folder that looks
complete: files are written to a temporary name in the same folder and moved
into place with ``os.replace``; a folder output is built beside its final name
and swapped in only when everything in it has been written. A run killed during
that swap is repaired by the next one (:func:`recover_swap`). Files and folders
get the modes the user's umask gives (``tempfile`` would leave them 0600 and
0700), so a team can share a data folder.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from dlpipe.core.errors import ArtifactError, DlpipeError, StorageError

_HASH_CHUNK = 1 << 20
# What the filesystem says when an output cannot be written for want of space or rights.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_NO_RIGHTS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
# Below this much free space a failed write is taken for a full disk, whatever the library raised
# (FAISS, for one, reports a short write as a RuntimeError).
_NEARLY_FULL_BYTES = 1 << 20


def storage_error(error: BaseException, path: Path, what: str, *, judge_by_free_space: bool = True) -> StorageError | None:
    """The :class:`StorageError` that ``error``, raised while writing ``what`` at ``path``, amounts to; None if another kind.

    Args:
        error: what the write raised.
        path: the file or folder being written.
        what: what it is, for the message (e.g. "the embeddings").
        judge_by_free_space: also take any error for a full disk when less than 1 MiB is free there.
    """
    code = error.errno if isinstance(error, OSError) else None
    if code in _NO_RIGHTS:
        return StorageError(
            f"cannot write {what} to {path}: {error.strerror} ({'read-only filesystem' if code == errno.EROFS else 'no permission'})",
            "make that folder writable, or set base.data_dir to a folder you can write",
        )
    free = free_bytes(path) if code in _NO_SPACE or judge_by_free_space else None
    if code in _NO_SPACE or (free is not None and free < _NEARLY_FULL_BYTES):
        return StorageError(
            f"cannot write {what} to {path}: no space left on the device (or quota exceeded); {free:,} bytes free",
            "free some space there, or set base.data_dir to a larger disk; earlier outputs were left as they were",
        )
    return None


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged user may still write on the filesystem that holds ``path`` (its nearest existing folder)."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        stats = os.statvfs(folder)
    except OSError:
        return _NEARLY_FULL_BYTES  # unknown: do not claim the disk is full
    return stats.f_bavail * stats.f_frsize


@contextlib.contextmanager
def writing(path: Path, what: str) -> Iterator[None]:
    """Turn a failed write of ``what`` at ``path`` for want of space or rights into a :class:`StorageError`."""
    try:
        yield
    except DlpipeError:
        raise  # already says what went wrong (a full disk does not make a bad input a storage problem)
    except Exception as error:
        converted = storage_error(error, path, what)
        if converted is None:
            raise
        raise converted from error


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """Return the sha256 of a JSON-serialisable value in canonical form (sorted keys)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def umask() -> int:
    """The process's umask, read without changing it (``os.umask`` sets it, a race with other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def temporary_file(path: Path) -> tuple[int, str]:
    """A new file beside ``path`` (same filesystem, so it can be renamed over it) with the umask's mode: (fd, name)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o666 & ~umask())
    return fd, tmp_name


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    Raises:
        StorageError: the disk is full, or the folder is read-only or not writable.
    """
    with writing(path, path.name):
        fd, tmp_name = temporary_file(path)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 text atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON atomically, with a trailing newline."""
    atomic_write_text(path, json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def numbers_only(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` without its words: numbers (and lists of them) only, nested sections kept; None (not measured) stays.

    ``dvc metrics show`` and ``dvc exp show`` then read as a table of figures; what a stage chose and
    why (a name, a reason, a file) belongs in its sidecar.
    """
    kept: dict[str, Any] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            value = numbers_only(value)
            if value:
                kept[key] = value
        elif value is None or _is_number(value) or (isinstance(value, list) and value and all(_is_number(item) for item in value)):
            kept[key] = value
    return kept


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Write a stage's metrics file: its figures only (see :func:`numbers_only`)."""
    atomic_write_json(path, numbers_only(metrics))


def write_csv(path: Path, header: Sequence[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write dict rows as CSV with a fixed column order (atomically); return the row count.

    Raises:
        StorageError: the disk is full, or the folder is read-only or not writable.
    """
    with writing(path, path.name):
        fd, tmp_name = temporary_file(path)
        count = 0
        try:
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=list(header), extrasaction="raise")
                writer.writeheader()
                for row in rows:
                    writer.writerow(row)
                    count += 1
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
    return count


# Sidecars and metrics are small; a larger one was not written by dlpipe and is not read whole.
MAX_JSON_BYTES = 64 << 20
# What malformed content raises from code that reads fields of an artifact it has parsed.
MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError, OverflowError, csv.Error)


def read_json(path: Path, what: str) -> dict[str, Any]:
    """Load a JSON object artifact (a sidecar), raising :class:`ArtifactError` naming ``what`` when it is not one.

    Refused: a missing file, a folder, more than MAX_JSON_BYTES, text that is not UTF-8 JSON, nesting
    deeper than Python's recursion limit, and any value but an object.
    """
    rerun = "rerun the stage that produces it"
    try:
        size = Path(path).stat().st_size
        if size > MAX_JSON_BYTES:
            raise ArtifactError(f"{what} is too large to be one: {path} ({size:,} bytes)", rerun)
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(f"{what} not found: {path}", "run the stage that produces it first") from None
    except IsADirectoryError:
        raise ArtifactError(f"{what} is a folder, not a file: {path}", rerun) from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ArtifactError(f"{what} is corrupt: {path} ({type(exc).__name__}: {str(exc)[:200]})", rerun) from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{what} is corrupt: {path} holds a JSON {type(value).__name__}, not an object", rerun)
    return value


@contextlib.contextmanager
def malformed_is_damage(path: Path, what: str, hint: str = "rerun the stage that produces it") -> Iterator[None]:
    """Turn what malformed content raises (a missing key, a wrong type, ...) while reading ``what`` into an ArtifactError.

    Loaders check what they expect of an artifact; this catches what no check foresaw, so a damaged
    or hostile file is always exit 5 naming the file, never an internal error.
    """
    try:
        yield
    except DlpipeError:
        raise
    except MALFORMED as exc:
        raise ArtifactError(f"{what} is damaged: {path} ({type(exc).__name__}: {str(exc)[:200]})", hint) from None


def _staging_prefix(final: Path) -> str:
    return f".{final.name}.partial-"


def _retired_prefix(final: Path) -> str:
    return f".{final.name}.old-"


def recover_swap(final: Path) -> None:
    """Repair what a killed :func:`atomic_dir` left beside ``final``; call it holding the stage's lock.

    Staging folders are removed (none can be complete and in use: the lock says no other run
    writes here). A run killed between its two renames left no ``final`` and the previous output
    under a retired name: that output is put back. Retired copies beside a ``final`` are removed.
    """
    final = Path(final)
    if not final.parent.is_dir():
        return
    _remove_staging(final)
    retired = sorted(final.parent.glob(_retired_prefix(final) + "*"), key=lambda path: path.stat().st_mtime)
    if retired and not final.exists():
        os.replace(retired.pop(), final)
    for path in retired:
        shutil.rmtree(path, ignore_errors=True)


def _remove_staging(final: Path) -> None:
    """Remove every staging folder of ``final``: under the stage's lock, none belongs to another run."""
    for staging in final.parent.glob(_staging_prefix(final) + "*"):
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Build a folder output beside ``final`` and swap it in only on success.

    Yields the temporary folder to write into. On an exception (or Ctrl-C) the
    temporary folder is removed and whatever was at ``final`` is left untouched.
    What an earlier, killed run left beside ``final`` is repaired first (:func:`recover_swap`);
    callers hold the stage's lock.

    Raises:
        StorageError: a write inside the folder failed for want of space or rights (whatever wrote it).
    """
    final = Path(final)
    with writing(final, f"the {final.name} folder"):
        final.parent.mkdir(parents=True, exist_ok=True)
        recover_swap(final)
        try:
            staging = Path(tempfile.mkdtemp(prefix=_staging_prefix(final), dir=final.parent))
            os.chmod(staging, 0o777 & ~umask())
            yield staging
        except BaseException:
            # By prefix, not by name: Ctrl-C may land after mkdtemp made the folder but before it returned.
            _remove_staging(final)
            raise
        retired = None
        if final.exists():
            retired = final.parent / f"{_retired_prefix(final)}{os.getpid()}"
            os.replace(final, retired)
        os.replace(staging, final)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)


@contextlib.contextmanager
def stage_lock(folder: Path, stage: str) -> Iterator[None]:
    """Hold an exclusive lock so that two runs of one stage on one dataset cannot interleave.

    What the stage raises while holding it for want of space or rights is a :class:`StorageError`.
    """
    lock_path = folder / f".{stage}.lock"
    with writing(lock_path, f"the lock of stage '{stage}'"):
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "w")  # noqa: SIM115 (closed by the with below)
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArtifactError(
                f"another '{stage}' run is writing to {folder}",
                f"wait for it to finish (`dlpipe doctor` shows what is running; the lock {lock_path} is freed when its process ends)",
            ) from None
        try:
            with writing(folder, f"the outputs of stage '{stage}'"):
                yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def library_versions(*packages: str) -> dict[str, str]:
    """Return installed versions of ``packages`` (always including dlpipe) for sidecars."""
    versions = {}
    for name in ("dlpipe", *packages):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sidecar(stage: str, **fields: Any) -> dict[str, Any]:
    """Common sidecar header: the producing stage, then the stage's own fields.

    No run facts (time, host, absolute paths): a rerun on the same inputs must write the same bytes,
    or DVC would take every later stage for stale. Those go to the metrics.
    """
    return {"stage": stage, **fields}
