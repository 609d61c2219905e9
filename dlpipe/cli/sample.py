"""``dlpipe sample``: write a deterministic demo dataset."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from dlpipe.cli.common import DEFAULT_PARAMS, JsonOption, ParamsOption, SetOption, VerboseOption, guarded, print_json


class SampleKind(StrEnum):
    images = "images"
    audio = "audio"
    text = "text"


def sample(
    kind: Annotated[SampleKind, typer.Argument(help="images (shapes), audio (tones, chirps, ...) or text (news corpus).")],
    out: Annotated[Path, typer.Argument(help="Folder to write; replaced only when generation succeeds.")],
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Generate a deterministic sample dataset (same base.seed -> byte-identical files).

    Example: dlpipe sample images data/sample/shapes
    """

    def action() -> Any:
        from dlpipe.core.config import load_project
        from dlpipe.stages import sample as stage

        return stage.run(load_project(params, set_ or []), kind.value, out)

    result = guarded(verbose, action)
    if as_json:
        print_json({"kind": result.kind, "out": str(result.out), "files": result.files, "classes": result.classes})
        return
    from dlpipe.core.console import info

    classes = ", ".join(f"{name} {count}" for name, count in result.classes.items())
    info(f"sample {result.kind}: {result.files} files in {result.out}" + (f" ({classes})" if classes else ""))
