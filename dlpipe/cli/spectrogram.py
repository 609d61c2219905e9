"""``dlpipe spectrogram``: audio clips become log-mel window images."""

from __future__ import annotations

from typing import Annotated

import typer

from dlpipe.cli.common import (
    DEFAULT_PARAMS,
    JsonOption,
    ParamsOption,
    SetOption,
    VerboseOption,
    print_results_json,
    run_per_dataset,
)


def spectrogram(
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Run on this audio dataset (default: every audio dataset in params).")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Turn an ingested audio dataset into log-mel spectrogram images (fixed-length windows).

    Writes data/<dataset>/spectrogram: images/<label>/*.png, an image-style manifest.csv that
    finetune, embed, cluster, search and heatmap read for this dataset, class_means.png
    (each class's mean spectrogram), rejected.csv and the sidecar spectrogram.json.
    Example: dlpipe spectrogram --dataset sounds --set spectrogram.n_mels=128
    """
    results = run_per_dataset("spectrogram", params, set_, verbose, dataset, modalities=("audio",))
    if as_json:
        print_results_json(results)
        return
    from dlpipe.core.console import info

    for result in results:
        m = result.metrics
        info(
            f"spectrogram {result.dataset}: {m['windows']} windows ({m['image_height']}x{m['image_width']} px) from "
            f"{m['clips']} clips, {m['rejected']} rejected, {m['audio_seconds_per_second']:.0f} s of audio per second "
            f"-> {result.out_dir / 'manifest.csv'}"
        )
