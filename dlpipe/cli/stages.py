"""The pipeline-stage commands: ``sample``, ``ingest``, ``spectrogram``, ``finetune``, ``embed``, ``cluster``, ``heatmap``.

Each parses its options, runs the stage of the same name (``dlpipe.stages.<name>.run``) on one
dataset or on every dataset it applies to, and prints a line per dataset (or ``--json``).
``search build`` and ``word2vec train`` are stages too; they live with their command groups.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from dlpipe.cli.common import (
    DEFAULT_PARAMS,
    IMAGE_LIKE,
    DatasetOption,
    JsonOption,
    ParamsOption,
    SetOption,
    VerboseOption,
    guarded,
    only_built,
    print_json,
    print_results_json,
    report,
    run_per_dataset,
)


class SampleKind(StrEnum):
    images = "images"
    audio = "audio"
    text = "text"
    reviews = "reviews"
    road = "road"
    triangles = "triangles"


def sample(
    kind: Annotated[
        SampleKind,
        typer.Argument(
            help="images (shapes, with boxes.csv), audio (tones, chirps, ...), text (news corpus), reviews (labelled "
            "sentences), road (lane scenes with steering.csv) or triangles (with corners.csv)."
        ),
    ],
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


def _print_summary(results: list[Any]) -> None:
    from rich.table import Table

    from dlpipe.core.console import console

    table = Table(title="ingest", title_justify="left")
    for column in ("dataset", "modality", "accepted", "rejected", "ignored", "classes", "train/val/test"):
        table.add_column(column, no_wrap=True)
    for result in results:
        splits = "/".join(str(result.splits.get(split, 0)) for split in ("train", "val", "test"))
        table.add_row(
            result.dataset,
            result.modality,
            str(result.accepted),
            str(result.rejected),
            str(result.ignored),
            str(len(result.classes)) if result.classes else "-",
            splits if result.splits else "-",
        )
    console.print(table)
    for result in results:
        console.print(f"{result.dataset}: {result.out_dir / 'manifest.csv'} (rejections in rejected.csv)")


def _spectrogram_line(result: Any) -> str:
    m = result.metrics
    return (
        f"spectrogram {result.dataset}: {m['windows']} windows ({m['image_height']}x{m['image_width']} px) from "
        f"{m['clips']} clips, {m['rejected']} rejected, {m['audio_seconds_per_second']:.0f} s of audio per second "
        f"-> {result.out_dir / 'manifest.csv'}"
    )


def _finetune_line(result: Any) -> str:
    return f"finetune {result.dataset}: {result.summary} -> {result.model_dir / 'model.keras'}"


def _embed_line(result: Any) -> str:
    m = result.metrics
    rate = f"{m['images_per_second']:,.0f} img/s" if "images_per_second" in m else f"{m['documents_per_second']:,.0f} documents/s"
    return f"embed {result.dataset}: {result.count} x {result.dimension} embeddings ({rate}) -> {result.out_dir / 'embeddings.npy'}"


def _cluster_line(result: Any) -> str:
    m = result.metrics
    baseline = "raw_pixels" if "raw_pixels_nmi" in m else "bag_of_words"
    versus = f", NMI {m['nmi']:.3f} ({baseline.replace('_', ' ')} {m[f'{baseline}_nmi']:.3f})" if "nmi" in m else ""
    return f"cluster {result.dataset}: k={result.k} ({m['k_source']}), silhouette {m['silhouette']:.3f}{versus} -> {result.out_dir}"


def _stage_command(
    stage: str,
    line: Callable[[Any], str] | None,
    help_text: str,
    folder: str = "out_dir",
    modalities: tuple[str, ...] | None = IMAGE_LIKE,
    dataset_help: str = "Run on this dataset (default: every image dataset in params).",
    summary: Callable[[list[Any]], None] | None = None,
    labelled_only: bool = False,
) -> Callable[..., None]:
    """The command that runs ``stage`` on one or every dataset of ``modalities`` (None: all; labelled ones if asked).

    Without ``--json`` it prints ``line(result)`` per dataset, or ``summary(results)`` when given.
    """

    def command(
        dataset: DatasetOption = None,
        params: ParamsOption = DEFAULT_PARAMS,
        set_: SetOption = None,
        verbose: VerboseOption = False,
        as_json: JsonOption = False,
    ) -> None:
        results = run_per_dataset(stage, params, set_, verbose, dataset, modalities=modalities, labelled_only=labelled_only)
        if summary is not None and not as_json:
            summary(results)
        elif line is not None:
            report(results, as_json, line, folder)
        else:
            print_results_json(results, folder)

    command.__name__ = command.__qualname__ = stage  # Typer names the command after the function
    command.__doc__ = help_text
    command.__annotations__ = command.__annotations__ | {
        "dataset": Annotated[str | None, typer.Option("--dataset", "-d", help=dataset_help)]
    }
    return command


ingest = _stage_command(
    "ingest",
    None,
    """Validate datasets, write manifest.csv / rejected.csv and split train/val/test.

    Example: dlpipe ingest --dataset shapes
    """,
    modalities=None,
    dataset_help="Ingest only this dataset (default: every one in params).",
    summary=_print_summary,
)
spectrogram = _stage_command(
    "spectrogram",
    _spectrogram_line,
    """Turn an ingested audio dataset into log-mel spectrogram images (fixed-length windows).

    Writes data/<dataset>/spectrogram: images/<label>/*.png, an image-style manifest.csv that
    finetune, embed, cluster, search and heatmap read for this dataset, class_means.png
    (each class's mean spectrogram), rejected.csv and the sidecar spectrogram.json.
    Example: dlpipe spectrogram --dataset sounds --set spectrogram.n_mels=128
    """,
    modalities=("audio",),
    dataset_help="Run on this audio dataset (default: every audio dataset in params).",
)
finetune = _stage_command(
    "finetune",
    _finetune_line,
    """Fine-tune a pretrained ConvNet (or train small_cnn) on images or spectrograms; train a text classifier on labelled text.

    Images: finetune.backbone and the two-phase recipe. Labelled text: finetune.text (cnn, gru,
    lstm, bigru, bilstm over word ids, tokenised as word2vec.tokenize; embeddings learnt or
    started from a word2vec folder). Writes data/<dataset>/model (model.keras + model.json, and
    vocabulary.txt for text), plots/finetune (curves, confusion matrix, top losses) and
    metrics/finetune.json.
    Examples: dlpipe finetune --dataset shapes --set finetune.head_epochs=10
              dlpipe finetune --dataset reviews --set finetune.text.architecture=bigru
    """,
    "model_dir",
    modalities=("image", "audio", "text"),
    dataset_help="Run on this dataset (default: every image, audio and labelled text dataset in params).",
    labelled_only=True,
)
embed = _stage_command(
    "embed",
    _embed_line,
    """Embed every image (penultimate-layer features) of the fine-tuned model or a pretrained backbone; every document of a text model.

    Writes data/<dataset>/embed/embeddings.npy (float32, manifest order) and embeddings.json.
    A labelled text dataset is embedded by its own text model (embed.source: finetuned).
    embed.engine: ray runs the model on Ray Data actors (the ray extra), with the same vectors as the local engine:
    on a local Ray, or on the cluster $RAY_ADDRESS or embed.ray.address names (docs/SCALING.md).
    Example: dlpipe embed --dataset shapes --set embed.source=backbone      dlpipe embed --dataset reviews
    Example: RAY_ADDRESS=head:6379 dlpipe embed --set embed.engine=ray --set embed.ray.gpus_per_actor=1
    """,
    modalities=("image", "audio", "text"),
    dataset_help="Run on this dataset (default: every image, audio and labelled text dataset in params).",
    labelled_only=True,
)
cluster = _stage_command(
    "cluster",
    _cluster_line,
    """Cluster the embeddings with k-means (k fixed or chosen by silhouette) and compare with raw pixels.

    Writes data/<dataset>/cluster (assignments.csv, umap.csv/png, the UMAP reducer, one contact sheet
    per cluster) and metrics/cluster.json (NMI, ARI, purity of deep features vs raw pixels).
    A text dataset's baseline is its TF-IDF bag of words, and its clusters are listed in cluster_documents.md.
    Example: dlpipe cluster --dataset shapes --set cluster.k=4
    """,
    modalities=("image", "audio", "text"),
    dataset_help="Run on this dataset (default: every image, audio and labelled text dataset in params).",
    labelled_only=True,
)


def heatmap(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Image files to explain, or documents for a text model (default: test items chosen by params)."),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", "-d", help="Whose model to explain (default: every one with a model; with inputs, the one trained)."),
    ] = None,
    target_class: Annotated[
        str | None, typer.Option("--class", help="Explain this class for every input (default: the predicted class).")
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Occlusion and Grad-CAM heatmaps of the fine-tuned model, judged by deletion AUC and the pointing game; word occlusion for text.

    Writes data/<dataset>/heatmap (an overlay PNG per image, grid.png, maps/*.npy, images.csv) and
    metrics/heatmap.json. For a text model: words.html and words.png (each word shaded by the drop of
    the class's probability when it is masked), words.csv, documents.csv and the deletion curve.
    Example: dlpipe heatmap --dataset shapes      dlpipe heatmap photo.jpg --class circle
             dlpipe heatmap "a dull, lifeless film" --dataset reviews
    """

    def action() -> list[Any]:
        import importlib

        from dlpipe.core.config import load_project
        from dlpipe.stages import stage_module

        project = load_project(params, set_ or [])
        if dataset:
            project.dataset(dataset)
            names = [dataset]
        elif inputs:
            names = [only_built(project, lambda layout: layout.model_file, "trained model")]
        else:
            names = [name for name, spec in project.params.datasets.items() if spec.modality in IMAGE_LIKE or spec.labelled]
        results = []
        for name in names:
            text = project.dataset(name).modality == "text"
            stage = importlib.import_module(stage_module("heatmap", project.dataset(name).modality))
            given = (inputs if text else [Path(item) for item in inputs]) if inputs else None
            results.append(stage.run(project.for_dataset(name), name, given, target_class))
        return results

    report(guarded(verbose, action), as_json, _heatmap_line)


def _heatmap_line(result: Any) -> str:
    m = result.metrics
    if "documents" in m:
        return (
            f"heatmap {result.dataset}: {m['documents']} documents; word occlusion: deletion AUC {m['occlusion_deletion_auc']:.3f}; "
            f"random: deletion AUC {m['random_deletion_auc']:.3f} -> {result.out_dir}"
        )
    figures = [
        f"{method}: deletion AUC {m[f'{method}_deletion_auc']:.3f}"
        + (f", pointing game {m[f'{method}_pointing_game']:.2f}" if m.get(f"{method}_pointing_game") is not None else "")
        for method in (*m["methods"], "random")
    ]
    return f"heatmap {result.dataset}: {result.images} images; " + "; ".join(figures) + f" -> {result.out_dir}"
