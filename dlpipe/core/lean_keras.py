"""Import Keras without the optional libraries it loads for features dlpipe never uses.

At start-up Keras imports scikit-learn (for its scikit-learn wrappers), pandas (to accept
DataFrames as input) and matplotlib (for an image-gallery plot), each inside ``try: ... except
ImportError``. Together they take about a second of every TensorFlow stage's start, and a stage
like embed uses none of them. :func:`install` adds an import hook that, while ``keras`` itself is
being imported, marks whichever of them is not loaded yet as absent, so Keras takes its own
fallback; right after, they are importable again for the dlpipe modules that use them (the
metrics, the plots). A library already loaded is left alone.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from typing import Any

# What Keras imports only for its scikit-learn wrappers, DataFrame inputs and plot_image_gallery.
KERAS_OPTIONAL = ("sklearn", "pandas", "matplotlib")


class _LeanKerasFinder(importlib.abc.MetaPathFinder):
    """Finds ``keras`` as the normal path finder does, and runs its ``__init__`` with the optional libraries hidden."""

    def find_spec(self, name: str, path: Sequence[str] | None, target: Any = None) -> Any:
        if name != "keras":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            hidden = [library for library in KERAS_OPTIONAL if library not in sys.modules]
            for library in hidden:
                sys.modules[library] = None  # type: ignore[assignment]  # an ImportError for whoever imports it now
            try:
                execute(module)
            finally:
                for library in hidden:
                    if library in sys.modules and sys.modules[library] is None:
                        del sys.modules[library]

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Add the hook in front of the import system's finders (once; a no-op when Keras is already imported)."""
    if "keras" not in sys.modules and not any(isinstance(finder, _LeanKerasFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _LeanKerasFinder())
