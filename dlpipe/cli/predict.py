"""``dlpipe predict``: a trained model's answers for new files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dlpipe.cli.common import DEFAULT_PARAMS, JsonOption, ParamsOption, SetOption, VerboseOption, guarded, only_built, print_json


def predict(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Image files and/or folders (searched recursively); audio clips for a spectrogram model; "
            "documents for a text model ('-' reads one per line from stdin)."
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Model folder or model.keras (default: the dataset's model).")
    ] = None,
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Use data/<dataset>/model (default: the only trained one).")
    ] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="How many classes to show per image (classification models).")] = 3,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="A .csv file to write (default for folders and --file: predictions.csv here), or a folder: "
            "predictions.csv plus each image with its answer drawn (boxes, points, values, classes).",
        ),
    ] = None,
    documents_file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Text models: a UTF-8 file with one document per line.")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """A trained model's answers for images, audio clips or documents: top-k classes, values, a box or points.

    A regression model prints its values in the targets' units; a bbox, regions or keypoints model
    prints its box or points in pixels of each input image (as displayed, EXIF orientation applied),
    and `--out FOLDER` draws them on copies of the images.

    A model trained on an audio dataset's spectrograms also takes audio clips: each is cut into
    windows as `dlpipe spectrogram` did (the settings are recorded in model.json, so a model folder
    copied anywhere works), and the windows' probabilities are averaged. A text model takes the
    documents themselves: arguments, --file (one per line) or '-' for stdin, tokenised as in training.
    Files run on the engine params.yaml's embed.engine names (--set embed.engine=ray for a Ray cluster).
    Examples: dlpipe predict photo.jpg -k 3      dlpipe predict clip.wav --dataset sounds
              dlpipe predict "a gorgeous, witty film" --dataset reviews      cat lines.txt | dlpipe predict - -d reviews
              dlpipe predict photos/ --dataset shapes_boxes --out drawn/
    """

    def action() -> Any:
        from dlpipe.data.files import path_kind
        from dlpipe.models.file_inputs import DEFAULT_LIMITS, FileLimits
        from dlpipe.queries import predict as query

        location = model or _default_model(params, set_ or [], dataset)
        many = documents_file is not None or any(path_kind(item) == "folder" for item in inputs or [])
        draw_dir = out if out is not None and out.suffix.lower() != ".csv" else None
        csv_path = draw_dir / "predictions.csv" if draw_dir else out if out is not None else (Path("predictions.csv") if many else None)
        project = _project_if_any(params, set_ or [])
        engine_cfg = project.params.embed if project else None  # its engine runs the model over files
        limits = FileLimits.of(project.params.ingest) if project else DEFAULT_LIMITS
        return query.run(location, inputs or [], k, csv_path, documents_file, draw_dir, engine_cfg, limits)

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


def _project_if_any(params: Path, overrides: list[str]) -> Any:
    """The project, or None outside one (a copied model folder, no params.yaml)."""
    from dlpipe.core.config import load_project

    if not overrides and not params.is_file():
        return None
    return load_project(params, overrides)


def _print_predictions(result: Any) -> None:
    from rich.table import Table

    from dlpipe.core.console import info, stdout

    table = Table(title=f"predictions ({result.model})", title_justify="left")
    text = result.modality == "text"
    for column in ("document" if text else "image", result.answer_title):
        table.add_column(column)
    shown = result.predictions[:50]
    for p in shown:
        table.add_row(_shortened(p.document) if text else p.path, p.error or p.text)
    stdout.print(table)
    if len(result.predictions) > len(shown):
        info(f"... {len(result.predictions) - len(shown)} more")
    if result.csv_path:
        info(f"predictions written to {result.csv_path}")


def _shortened(document: str, limit: int = 80) -> str:
    return document if len(document) <= limit else document[: limit - 1] + "…"
