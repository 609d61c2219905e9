"""Quiet logs: no native framework lines on the user's stderr unless --verbose; messages stay whole lines."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dlpipe.core.quiet import NATIVE_NOISE

IMPORT_TENSORFLOW = (
    "from dlpipe.cli.common import guarded; "
    "from dlpipe.core.console import info; "
    "guarded({verbose}, lambda: (__import__('tensorflow').constant(1).numpy(), info('/a/long/path/' + 'x' * 120 + '/file.npy')))"
)


WRITES_UNDER_THE_FILTER = """
import os, sys
from dlpipe.core.quiet import quiet_output
with quiet_output():
    os.write(2, b"I0000 00:00:1796513827.682631   17205 port.cc:153] oneDNN custom operations are on.\\n")
    os.write(2, b"E0000 00:00:1796513831.097615   17205 cuda_platform.cc:52] failed call to cuInit\\n")
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
    os.write(2, b"F0000 00:00:1.0  1 fatal.cc:1] kept: a fatal line precedes an abort\\nplain native line\\n")
    print("dlpipe's own message", file=sys.stderr)
"""


def test_native_lines_are_dropped_and_the_rest_passes() -> None:
    # A process of its own: in the test process, other tests' threads may write to descriptor 2 meanwhile.
    ran = subprocess.run([sys.executable, "-c", WRITES_UNDER_THE_FILTER], capture_output=True, text=True, check=True)
    kept = ["dlpipe's own message", "F0000 00:00:1.0  1 fatal.cc:1] kept: a fatal line precedes an abort", "plain native line"]
    # Python's messages go straight to the terminal and native lines through the filter: their order may differ.
    assert sorted(ran.stderr.splitlines()) == sorted(kept)


def test_a_command_shows_no_tensorflow_line_unless_verbose() -> None:
    quiet = subprocess.run([sys.executable, "-c", IMPORT_TENSORFLOW.format(verbose=False)], capture_output=True, text=True)
    verbose = subprocess.run([sys.executable, "-c", IMPORT_TENSORFLOW.format(verbose=True)], capture_output=True, text=True)
    assert quiet.returncode == verbose.returncode == 0, quiet.stderr + verbose.stderr
    noisy = [line for line in verbose.stderr.splitlines() if NATIVE_NOISE.match(line.encode())]
    if not noisy:
        pytest.skip("TensorFlow printed no native log line on this machine, so there is nothing to filter")
    assert [line for line in quiet.stderr.splitlines() if NATIVE_NOISE.match(line.encode())] == []
    # Not a terminal: the message is one line, its path whole.
    assert "/a/long/path/" + "x" * 120 + "/file.npy" in quiet.stderr.splitlines()
