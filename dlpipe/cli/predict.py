"""``dlpipe predict``: a trained model's answers for new files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dlpipe.cli.common import DEFAULT_PARAMS, JsonOption, ParamsOption, SetOption, VerboseOption, guarded, only_built, print_json


def predict(
    inputs: Annotated[
        list[Path], typer.Argument(help="Image files and/or folders (searched recursively); audio clips for a spectrogram model.")
    ],
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Model folder or model.keras (default: the dataset's model).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Use data/<dataset>/model (default: the only trained one).")
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="How many classes to show per image.")] = 3,
    out: Annotated[
        Path | None, typer.Option("--out", help="CSV to write (default for folders: predictions.csv here).")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Top-k classes with probabilities for images, using a model trained by finetune.

    A model trained on an audio dataset's spectrograms also takes audio clips: each is cut into
    windows as `dlpipe spectrogram` did (the settings are recorded in model.json, so a model folder
    copied anywhere works), and the windows' probabilities are averaged.
    Example: dlpipe predict photo.jpg -k 3      dlpipe predict clip.wav --dataset sounds
    """

    def action() -> Any:
        from dlpipe.queries import predict as query

        location = model or _default_model(params, set_ or [], dataset)
        csv_path = out if out is not None else (Path("predictions.csv") if any(p.is_dir() for p in inputs) else None)
        return query.run(location, inputs, k, csv_path)

    result = guarded(verbose, action)
    if as_json:
        print_json([prediction.as_json() for prediction in result.predictions])
        return
    _print_predictions(result)


def _default_model(params: Path, overrides: list[str], dataset: str | None) -> Path:
    """data/<dataset>/model, or the only dataset that has a trained model."""
    from dlpipe.core.config import load_project

    project = load_project(params, overrides)
    if dataset:
        project.dataset(dataset)
        return project.layout(dataset).model_dir
    return project.layout(only_built(project, lambda layout: layout.model_file, "trained model")).model_dir


def _print_predictions(result: Any) -> None:
    from rich.table import Table

    from dlpipe.core.console import info, stdout

    table = Table(title=f"predictions ({result.model})", title_justify="left")
    for column in ("image", result.answer_title):
        table.add_column(column)
    shown = result.predictions[:50]
    for p in shown:
        table.add_row(p.path, p.error or p.text)
    stdout.print(table)
    if len(result.predictions) > len(shown):
        info(f"... {len(result.predictions) - len(shown)} more")
    if result.csv_path:
        info(f"predictions written to {result.csv_path}")
