"""Keras loads without the optional libraries it would import for features dlpipe does not use."""

from __future__ import annotations

import json
import subprocess
import sys

CHECK = """
import json, sys
{before}
import dlpipe, keras
loaded = {{name: name in sys.modules for name in ("sklearn", "pandas", "matplotlib")}}
import sklearn.metrics, pandas, matplotlib.pyplot  # the dlpipe modules that use them still can
print(json.dumps(loaded))
"""


def loaded_after_keras(before: str = "") -> dict[str, bool]:
    done = subprocess.run([sys.executable, "-c", CHECK.format(before=before)], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_keras_comes_without_sklearn_pandas_and_matplotlib() -> None:
    assert loaded_after_keras() == {"sklearn": False, "pandas": False, "matplotlib": False}


def test_a_library_loaded_before_keras_stays_loaded() -> None:
    loaded = loaded_after_keras("import sklearn")
    assert loaded["sklearn"] and not loaded["matplotlib"]
