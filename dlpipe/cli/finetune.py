"""``dlpipe finetune``: transfer learning on an image (or spectrogram) dataset."""

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


def finetune(
    dataset: DatasetOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Fine-tune a pretrained ConvNet (or train small_cnn) on an ingested image dataset and evaluate it.

    Writes data/<dataset>/model (model.keras + model.json), plots/finetune and metrics/finetune.json.
    Example: dlpipe finetune --dataset shapes --set finetune.head_epochs=10
    """
    results = run_per_dataset("finetune", params, set_, verbose, dataset, modalities=IMAGE_LIKE)
    if as_json:
        print_results_json(results, "model_dir")
        return
    from dlpipe.core.console import info

    for result in results:
        info(f"finetune {result.dataset}: {result.summary} -> {result.model_dir / 'model.keras'}")
