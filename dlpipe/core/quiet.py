"""Keep third-party noise off the user's terminal: native log lines, framework warnings, Python loggers.

TensorFlow, XLA, absl and oneDNN write their C++ log lines (``I0000 00:00:...  port.cc:153] oneDNN
custom operations are on``, ``E0000 ... failed call to cuInit`` on every machine without a GPU)
straight to file descriptor 2, before and regardless of ``TF_CPP_MIN_LOG_LEVEL``. Only a filter on
that descriptor removes them: :func:`quiet_output` points descriptor 2 at a pipe whose reader thread
drops those lines and passes everything else through, while Python's own ``sys.stderr`` (dlpipe's
messages and progress) keeps writing to the real terminal. Framework warnings and loggers that are
not the user's business are silenced too. ``--verbose`` shows everything.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import select
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import TextIO

# A glog/absl line (severity I, W or E; F stays: it precedes an abort), absl's notice about them, and
# Ray's C++ log line ([2026-12-05 23:39:12,315 E 18257 18257] core_worker.cc:2465: ...).
NATIVE_NOISE = re.compile(
    rb"^(?:[IWE]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.\-/]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [IWE] \d+ \d+\] )"
)
# What Ray's Python loggers print below ERROR (2026-12-05 23:39:12,317<TAB>WARNING __init__.py:28 -- ...), and
# native lines of its workers that it forwards, prefixed with "(ActorName pid=123)".
PYTHON_NOISE = re.compile(
    r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\t(?:DEBUG|INFO|WARNING) "
    r"|(?:\x1b\[[\d;]*m)?\(\S+ pid=\d+(?:, ip=[\d.]+)?\)(?:\x1b\[[\d;]*m)? (?:[IWE]\d{4} |\[\d{4}-|WARNING: All log))"
)
# Python loggers of libraries whose warnings describe their internals (retracing, deprecations).
_LIBRARY_LOGGERS = ("tensorflow", "absl", "h5py", "numba", "jax", "ray", "ray.data")
_active = False
# How often the forwarder looks whether the block has ended while the pipe is idle.
_POLL_SECONDS = 0.05


@contextlib.contextmanager
def quiet_output(enabled: bool = True) -> Iterator[None]:
    """While entered (and ``enabled``), filter native log lines from descriptor 2 and silence library warnings."""
    global _active
    if not enabled or _active or not _has_descriptor_2():
        yield
        return
    _active = True
    saved = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    stop = threading.Event()
    forwarder = threading.Thread(target=_forward, args=(read_end, saved, stop), name="dlpipe-stderr-filter", daemon=True)
    forwarder.start()
    python_stderr = sys.stderr
    filtered = None
    if _fileno(python_stderr) == 2:  # dlpipe's own messages go straight to the terminal, so Rich still sees one
        python_stderr.flush()
        terminal = io.TextIOWrapper(
            io.FileIO(os.dup(saved), "w"), encoding=python_stderr.encoding, errors="backslashreplace", line_buffering=True
        )
        sys.stderr = filtered = _Filtered(terminal)
    levels = {name: logging.getLogger(name).level for name in _LIBRARY_LOGGERS}
    try:
        with warnings.catch_warnings():
            _silence_library_warnings()
            for name in _LIBRARY_LOGGERS:
                logging.getLogger(name).setLevel(logging.ERROR)
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        if filtered is not None:
            filtered.flush()
            # Loggers made meanwhile (Ray's) hold this stream and may write after the command: they get the real one.
            filtered.target, terminal = python_stderr, filtered.target
            terminal.close()
            sys.stderr = python_stderr
        os.dup2(saved, 2)  # nothing here writes to the pipe any more: the forwarder drains what is in it and stops
        stop.set()
        forwarder.join(timeout=2)
        _active = False


class _Filtered(io.TextIOBase):
    """A text stream that drops the library log lines of PYTHON_NOISE; each such line arrives in one write."""

    def __init__(self, target: TextIO) -> None:
        self.target = target

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.target.encoding

    def write(self, text: str) -> int:
        if not PYTHON_NOISE.match(text):
            self.target.write(text)
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()


def _silence_library_warnings() -> None:
    """Warnings raised inside the frameworks about themselves; a warning from dlpipe's own code still shows."""
    for module in ("keras", "tensorflow", "tf_keras", "numba", "umap", "sklearn", "ray", "h5py", "google.protobuf"):
        warnings.filterwarnings("ignore", module=rf"{re.escape(module)}(\.|$)")


def _forward(read_end: int, target: int, stop: threading.Event) -> None:
    """Copy lines from ``read_end`` to ``target``, dropping native log lines, until end of file or, once ``stop``
    is set, until the pipe is empty.

    End of file alone would not do: a child process that outlives the block (multiprocessing's resource
    tracker, started by the first process pool) inherited descriptor 2 and keeps the pipe open.
    """
    pending = b""
    while True:
        try:
            ready, _, _ = select.select([read_end], [], [], _POLL_SECONDS)
            if not ready:
                if stop.is_set():
                    break
                continue
            chunk = os.read(read_end, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = b"".join(line + b"\n" for line in lines if not NATIVE_NOISE.match(line))
        if kept:
            _write_all(target, kept)
    if pending and not NATIVE_NOISE.match(pending):
        _write_all(target, pending)
    os.close(read_end)
    os.close(target)


def _write_all(fd: int, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the terminal went away: nothing to show it on
        while data:
            data = data[os.write(fd, data) :]


def _fileno(stream: object) -> int | None:
    try:
        return stream.fileno()  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


def _has_descriptor_2() -> bool:
    try:
        os.fstat(2)
    except OSError:
        return False
    return True
