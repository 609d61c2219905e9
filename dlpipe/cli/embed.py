"""``dlpipe embed``: one feature vector per image."""

from __future__ import annotations

from dlpipe.cli.common import (
    DEFAULT_PARAMS,
    IMAGE_LIKE,
    DatasetOption,
    JsonOption,
    ParamsOption,
    SetOption,
    VerboseOption,
    print_results_json,
    run_per_dataset,
)


def embed(
    dataset: DatasetOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Embed every image (penultimate-layer features) of the fine-tuned model or a pretrained backbone.

    Writes data/<dataset>/embed/embeddings.npy (float32, manifest order) and embeddings.json.
    Example: dlpipe embed --dataset shapes --set embed.source=backbone
    """
    results = run_per_dataset("embed", params, set_, verbose, dataset, modalities=IMAGE_LIKE)
    if as_json:
        print_results_json(results)
        return
    from dlpipe.core.console import info

    for result in results:
        info(
            f"embed {result.dataset}: {result.count} x {result.dimension} embeddings "
            f"({result.metrics['images_per_second']:,.0f} img/s) -> {result.out_dir / 'embeddings.npy'}"
        )
