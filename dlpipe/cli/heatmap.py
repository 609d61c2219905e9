"""``dlpipe heatmap``: where the fine-tuned model looks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dlpipe.cli.common import (
    DEFAULT_PARAMS,
    IMAGE_LIKE,
    JsonOption,
    ParamsOption,
    SetOption,
    VerboseOption,
    guarded,
    only_built,
    print_results_json,
)


def heatmap(
    images: Annotated[
        list[Path] | None, typer.Argument(help="Image files to explain (default: test images chosen by params).")
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Whose model to explain (default: every image dataset; with images, the only trained one)."),
    ] = None,
    target_class: Annotated[
        str | None, typer.Option("--class", help="Explain this class for every image (default: the predicted class).")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Occlusion and Grad-CAM heatmaps of the fine-tuned model, judged by deletion AUC and the pointing game.

    Writes data/<dataset>/heatmap (an overlay PNG per image, grid.png, maps/*.npy, images.csv) and
    metrics/heatmap.json. Example: dlpipe heatmap --dataset shapes      dlpipe heatmap photo.jpg --class circle
    """

    def action() -> list[Any]:
        from dlpipe.core.config import load_project
        from dlpipe.stages import heatmap as stage

        project = load_project(params, set_ or [])
        if dataset:
            project.dataset(dataset)
            names = [dataset]
        elif images:
            names = [only_built(project, lambda layout: layout.model_file, "trained model")]
        else:
            names = [name for name, spec in project.params.datasets.items() if spec.modality in IMAGE_LIKE]
        return [stage.run(project.for_dataset(name), name, images or None, target_class) for name in names]

    results = guarded(verbose, action)
    if as_json:
        print_results_json(results)
        return
    from dlpipe.core.console import info

    for result in results:
        m = result.metrics
        figures = [
            f"{method}: deletion AUC {m[f'{method}_deletion_auc']:.3f}"
            + (f", pointing game {m[f'{method}_pointing_game']:.2f}" if m.get(f"{method}_pointing_game") is not None else "")
            for method in (*m["methods"], "random")
        ]
        info(f"heatmap {result.dataset}: {result.images} images; " + "; ".join(figures) + f" -> {result.out_dir}")
