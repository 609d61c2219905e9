"""``sample`` stage: write one of the deterministic demo datasets (:mod:`dlpipe.data.sample`)."""

from __future__ import annotations

from pathlib import Path

from dlpipe.core.config import Project
from dlpipe.data import sample as generators
from dlpipe.data import sample_scenes as scenes
from dlpipe.data.sample import SampleResult

KINDS = ("images", "audio", "text", "reviews", "road", "triangles")


def run(project: Project, kind: str, out: Path) -> SampleResult:
    """Generate the ``kind`` sample (one of :data:`KINDS`) into ``out`` with ``base.seed`` and the ``sample`` params.

    Raises:
        ConfigError: ``kind`` is not one of :data:`KINDS`.
        DependencyError: the text corpus is missing from the installed gensim.
    """
    seed = project.params.base.seed
    if kind == "images":
        return generators.generate_images(out, project.params.sample.images, seed)
    if kind == "audio":
        return generators.generate_audio(out, project.params.sample.audio, seed)
    if kind == "text":
        return generators.generate_text(out)
    if kind == "reviews":
        return generators.generate_reviews(out)
    if kind == "road":
        return scenes.generate_road(out, project.params.sample.road, seed)
    if kind == "triangles":
        return scenes.generate_triangles(out, project.params.sample.triangles, seed)
    from dlpipe.core.errors import ConfigError

    raise ConfigError(f"unknown sample kind {kind!r}", f"choose one of {', '.join(KINDS)}")
