"""The ``dlpipe`` command line: parse, load params, call a stage, print a summary.

Stage modules (and the heavy libraries they use) are imported inside each
command, so ``dlpipe --help`` answers without loading TensorFlow, librosa, FAISS,
umap or gensim.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from dlpipe import __version__

T = TypeVar("T")

app = typer.Typer(
    name="dlpipe",
    help="Applied deep learning as a reproducible DVC pipeline. Every command is also a DVC stage (see dvc.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

ParamsOption = Annotated[
    Path, typer.Option("--params", help="Params file; relative paths inside it resolve against its folder.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", metavar="SECTION.KEY=VALUE", help="Override a param (repeatable), e.g. --set ingest.workers=1."),
]
VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks for errors.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (for scripts).")]


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dlpipe {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """dlpipe: ingest labelled images, audio or text and run the applied deep-learning workflow as DVC stages."""


def _guarded(verbose: bool, action: Callable[[], T]) -> T:
    """Run ``action``; turn dlpipe errors into one message and their exit code."""
    from dlpipe.console import console
    from dlpipe.errors import DlpipeError

    try:
        return action()
    except DlpipeError as error:
        if verbose:
            console.print_exception()
        console.print(f"[bold red]{error.title}:[/] {error.message}", markup=True, highlight=False)
        if error.hint:
            console.print(f"[dim]hint:[/] {error.hint}")
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished artifacts are kept, partial ones were discarded")
        raise typer.Exit(130) from None
    except Exception as error:  # anything else is a bug: say so plainly
        if verbose:
            console.print_exception()
        console.print(f"[bold red]internal error:[/] {type(error).__name__}: {error}")
        console.print("[dim]hint:[/] rerun with --verbose for the traceback and report it")
        raise typer.Exit(1) from None


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def _print_results_json(results: list[Any], folder: str = "out_dir") -> None:
    """Each stage result's metrics plus where it wrote its output, as JSON on stdout."""
    _print_json([result.metrics | {folder: str(getattr(result, folder))} for result in results])


class SampleKind(StrEnum):
    images = "images"
    audio = "audio"
    text = "text"


@app.command()
def sample(
    kind: Annotated[SampleKind, typer.Argument(help="images (shapes), audio (tones, chirps, ...) or text (news corpus).")],
    out: Annotated[Path, typer.Argument(help="Folder to write; replaced only when generation succeeds.")],
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Generate a deterministic sample dataset (same base.seed -> byte-identical files).

    Example: dlpipe sample images data/sample/shapes
    """

    def action() -> Any:
        from dlpipe import sample as generators
        from dlpipe.config import load_project

        project = load_project(params, set_ or [])
        seed = project.params.base.seed
        if kind is SampleKind.images:
            return generators.generate_images(out, project.params.sample.images, seed)
        if kind is SampleKind.audio:
            return generators.generate_audio(out, project.params.sample.audio, seed)
        return generators.generate_text(out)

    result = _guarded(verbose, action)
    if as_json:
        _print_json({"kind": result.kind, "out": str(result.out), "files": result.files, "classes": result.classes})
        return
    from dlpipe.console import info

    classes = ", ".join(f"{name} {count}" for name, count in result.classes.items())
    info(f"sample {result.kind}: {result.files} files in {result.out}" + (f" ({classes})" if classes else ""))


DatasetOption = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Run on this dataset (default: every image dataset in params).")
]


# Datasets the image stages run on: images, and audio through its spectrogram images.
IMAGE_LIKE = ("image", "audio")


def _run_per_dataset(
    stage: str,
    params: Path,
    overrides: list[str] | None,
    verbose: bool,
    dataset: str | None,
    modalities: tuple[str, ...] | None = None,
) -> list[Any]:
    """Validate params, then run ``dlpipe.stages.<stage>.run`` on one dataset or on every one of ``modalities``."""

    def action() -> list[Any]:
        import importlib

        from dlpipe.config import load_project

        project = load_project(params, overrides or [])
        if dataset:
            project.dataset(dataset)  # an unknown name is a ConfigError listing the known ones
            names = [dataset]
        else:
            names = [name for name, spec in project.params.datasets.items() if modalities is None or spec.modality in modalities]
        # Imported only now: stage modules pull in TensorFlow and friends.
        module = importlib.import_module(f"dlpipe.stages.{stage}")
        return [module.run(project.for_dataset(name), name) for name in names]

    return _guarded(verbose, action)


@app.command()
def ingest(
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Ingest only this dataset (default: every one in params).")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Validate datasets, write manifest.csv / rejected.csv and split train/val/test.

    Example: dlpipe ingest --dataset shapes
    """
    results = _run_per_dataset("ingest", params, set_, verbose, dataset)
    if as_json:
        _print_results_json(results)
        return
    _print_ingest_summary(results)


def _print_ingest_summary(results: list[Any]) -> None:
    from rich.table import Table

    from dlpipe.console import console

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


@app.command()
def spectrogram(
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="Run on this audio dataset (default: every audio dataset in params).")
    ] = None,
    params: ParamsOption = Path("params.yaml"),
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
    results = _run_per_dataset("spectrogram", params, set_, verbose, dataset, modalities=("audio",))
    if as_json:
        _print_results_json(results)
        return
    from dlpipe.console import info

    for result in results:
        m = result.metrics
        info(
            f"spectrogram {result.dataset}: {m['windows']} windows ({m['image_height']}x{m['image_width']} px) from "
            f"{m['clips']} clips, {m['rejected']} rejected, {m['audio_seconds_per_second']:.0f} s of audio per second "
            f"-> {result.out_dir / 'manifest.csv'}"
        )


@app.command()
def finetune(
    dataset: DatasetOption = None,
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Fine-tune a pretrained ConvNet (or train small_cnn) on an ingested image dataset and evaluate it.

    Writes data/<dataset>/model (model.keras + model.json), plots/finetune and metrics/finetune.json.
    Example: dlpipe finetune --dataset shapes --set finetune.head_epochs=10
    """
    results = _run_per_dataset("finetune", params, set_, verbose, dataset, modalities=IMAGE_LIKE)
    if as_json:
        _print_results_json(results, "model_dir")
        return
    from dlpipe.console import info

    for result in results:
        m = result.metrics
        info(
            f"finetune {result.dataset}: test accuracy {m['test_accuracy']:.3f}, macro-F1 {m['test_macro_f1']:.3f} "
            f"after {m['epochs']} epochs -> {result.model_dir / 'model.keras'}"
        )


@app.command()
def embed(
    dataset: DatasetOption = None,
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Embed every image (penultimate-layer features) of the fine-tuned model or a pretrained backbone.

    Writes data/<dataset>/embed/embeddings.npy (float32, manifest order) and embeddings.json.
    Example: dlpipe embed --dataset shapes --set embed.source=backbone
    """
    results = _run_per_dataset("embed", params, set_, verbose, dataset, modalities=IMAGE_LIKE)
    if as_json:
        _print_results_json(results)
        return
    from dlpipe.console import info

    for result in results:
        info(
            f"embed {result.dataset}: {result.count} x {result.dimension} embeddings "
            f"({result.metrics['images_per_second']:,.0f} img/s) -> {result.out_dir / 'embeddings.npy'}"
        )


@app.command()
def cluster(
    dataset: DatasetOption = None,
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Cluster the embeddings with k-means (k fixed or chosen by silhouette) and compare with raw pixels.

    Writes data/<dataset>/cluster (assignments.csv, umap.csv/png, the UMAP reducer, one contact sheet
    per cluster) and metrics/cluster.json (NMI, ARI, purity of deep features vs raw pixels).
    Example: dlpipe cluster --dataset shapes --set cluster.k=4
    """
    results = _run_per_dataset("cluster", params, set_, verbose, dataset, modalities=IMAGE_LIKE)
    if as_json:
        _print_results_json(results)
        return
    from dlpipe.console import info

    for result in results:
        m = result.metrics
        versus = f", NMI {m['nmi']:.3f} (raw pixels {m['raw_pixels_nmi']:.3f})" if "nmi" in m else ""
        info(f"cluster {result.dataset}: k={result.k} ({m['k_source']}), silhouette {m['silhouette']:.3f}{versus} -> {result.out_dir}")


search_app = typer.Typer(help="Reverse image search with FAISS: build the index (a DVC stage), then query it.", no_args_is_help=True)
app.add_typer(search_app, name="search")


@search_app.command("build")
def search_build(
    dataset: DatasetOption = None,
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Build a FAISS index over the embeddings (search.index: auto or a factory string) and evaluate it.

    Writes data/<dataset>/search (index.faiss, index.json, examples.png) and metrics/search.json
    (recall@k against exact search and label precision@k on test-split queries).
    Example: dlpipe search build --dataset shapes --set search.index=HNSW32
    """
    results = _run_per_dataset("search", params, set_, verbose, dataset, modalities=IMAGE_LIKE)
    if as_json:
        _print_results_json(results)
        return
    from dlpipe.console import info

    for result in results:
        m = result.metrics
        figures = "no test queries"
        if m.get("queries"):
            figures = f"recall@{m['k']} {m['recall_at_k']:.3f}, precision@{m['k']} {m['precision_at_k']:.3f}"
        info(f"search {result.dataset}: {result.factory} over {m['count']} vectors, {figures} -> {result.out_dir}")


@search_app.command("query")
def search_query(
    images: Annotated[
        list[Path] | None, typer.Argument(help="Image files (or audio clips, for an audio dataset) to find neighbours of.")
    ] = None,
    item: Annotated[
        list[str] | None, typer.Option("--item", help="A manifest path (as in manifest.csv) to use as a query (repeatable).")
    ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Whose index to search (default: the only one built).")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Neighbours per query.")] = 10,
    out: Annotated[Path | None, typer.Option("--out", help="Write a contact sheet PNG: each query, then its neighbours.")] = None,
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Nearest neighbours of images or audio clips (embedded exactly as the index's sidecar records) or of dataset items.

    An audio clip is cut into spectrogram windows as the spectrogram stage cut the training clips, and the
    mean of their embeddings is the query.

    Example: dlpipe search query photo.jpg -k 5 --out neighbours.png      dlpipe search query --item circle/circle_0001.png
    """

    def action() -> Any:
        from dlpipe.config import load_project
        from dlpipe.stages import search_query

        project = load_project(params, set_ or [])
        name = dataset or _only_built(project, "search/index.faiss", "index")
        project.dataset(name)
        return search_query.run(project.for_dataset(name), name, images or [], item or [], k, out)

    result = _guarded(verbose, action)
    if as_json:
        _print_json(
            [
                {"query": a.query, "neighbours": [vars(n) for n in a.neighbours]} | ({"windows": a.windows} if a.windows > 1 else {})
                for a in result.answers
            ]
        )
        return
    _print_answers(result)


def _only_built(project: Any, artifact: str, what: str) -> str:
    """The one dataset that has ``artifact`` under its folder, or a ConfigError saying which to pick."""
    from dlpipe.errors import ConfigError

    built = [name for name in project.params.datasets if (project.dataset_dir(name) / artifact).is_file()]
    if len(built) != 1:
        found = ", ".join(built) or "none"
        raise ConfigError(f"cannot choose a dataset: datasets with an {what}: {found}", "pass --dataset NAME")
    return built[0]


def _print_answers(result: Any) -> None:
    from rich.table import Table

    from dlpipe.console import info, stdout

    score = "similarity" if result.metric == "inner_product" else "squared L2 distance"
    for answer in result.answers:
        averaged = f" ({answer.windows} windows averaged)" if answer.windows > 1 else ""
        table = Table(title=f"neighbours of {answer.query}{averaged}", title_justify="left")
        for column in ("rank", "path", "label", score):
            table.add_column(column)
        for n in answer.neighbours:
            table.add_row(str(n.rank), n.path, n.label, f"{n.score:.4f}")
        stdout.print(table)
    if result.sheet:
        info(f"contact sheet written to {result.sheet}")


@app.command()
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
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Top-k classes with probabilities for images, using a model trained by finetune.

    A model trained on an audio dataset's spectrograms also takes audio clips: each is cut into
    windows as `dlpipe spectrogram` did, and the windows' probabilities are averaged.
    Example: dlpipe predict photo.jpg -k 3      dlpipe predict clip.wav --dataset sounds
    """

    def action() -> Any:
        from dlpipe.stages import predict as stage

        location = model or _default_model(params, set_ or [], dataset)
        csv_path = out if out is not None else (Path("predictions.csv") if any(p.is_dir() for p in inputs) else None)
        return stage.run(location, inputs, k, csv_path)

    result = _guarded(verbose, action)
    if as_json:
        _print_json(
            [
                {"path": p.path, "top": [{"label": label, "probability": q} for label, q in zip(p.labels, p.probabilities, strict=True)]}
                | ({"windows": p.windows} if p.windows > 1 else {})
                | ({"error": p.error} if p.error else {})
                for p in result.predictions
            ]
        )
        return
    _print_predictions(result)


def _default_model(params: Path, overrides: list[str], dataset: str | None) -> Path:
    """data/<dataset>/model, or the only dataset that has a trained model."""
    from dlpipe.config import load_project

    project = load_project(params, overrides)
    if dataset:
        project.dataset(dataset)
        return project.dataset_dir(dataset) / "model"
    return project.dataset_dir(_only_built(project, "model/model.keras", "trained model")) / "model"


def _print_predictions(result: Any) -> None:
    from rich.table import Table

    from dlpipe.console import info, stdout

    table = Table(title=f"predictions ({result.model})", title_justify="left")
    for column in ("image", "top classes"):
        table.add_column(column)
    shown = result.predictions[:50]
    for p in shown:
        top = p.error or ", ".join(f"{label} {probability:.3f}" for label, probability in zip(p.labels, p.probabilities, strict=True))
        table.add_row(p.path, top)
    stdout.print(table)
    if len(result.predictions) > len(shown):
        info(f"... {len(result.predictions) - len(shown)} more")
    if result.csv_path:
        info(f"predictions written to {result.csv_path}")


@app.command()
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
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Occlusion and Grad-CAM heatmaps of the fine-tuned model, judged by deletion AUC and the pointing game.

    Writes data/<dataset>/heatmap (an overlay PNG per image, grid.png, maps/*.npy, images.csv) and
    metrics/heatmap.json. Example: dlpipe heatmap --dataset shapes      dlpipe heatmap photo.jpg --class circle
    """

    def action() -> list[Any]:
        from dlpipe.config import load_project
        from dlpipe.stages import heatmap as stage

        project = load_project(params, set_ or [])
        if dataset:
            project.dataset(dataset)
            names = [dataset]
        elif images:
            names = [_only_built(project, "model/model.keras", "trained model")]
        else:
            names = [name for name, spec in project.params.datasets.items() if spec.modality in IMAGE_LIKE]
        return [stage.run(project.for_dataset(name), name, images or None, target_class) for name in names]

    results = _guarded(verbose, action)
    if as_json:
        _print_results_json(results)
        return
    from dlpipe.console import info

    for result in results:
        m = result.metrics
        figures = [
            f"{method}: deletion AUC {m[f'{method}_deletion_auc']:.3f}"
            + (f", pointing game {m[f'{method}_pointing_game']:.2f}" if m.get(f"{method}_pointing_game") is not None else "")
            for method in (*m["methods"], "random")
        ]
        info(f"heatmap {result.dataset}: {result.images} images; " + "; ".join(figures) + f" -> {result.out_dir}")


@app.command()
def metrics(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Summarise the headline metrics every stage wrote, one line per dataset and stage.

    Example: dlpipe metrics   (`dvc metrics show` has every figure)
    """

    def action() -> Any:
        from dlpipe import summary
        from dlpipe.config import load_project

        return summary.collect(load_project(params, set_ or []))

    rows = _guarded(verbose, action)
    if as_json:
        _print_json([{"dataset": row.dataset, "stage": row.stage, **row.figures} for row in rows])
        return
    from rich.table import Table

    from dlpipe.console import stdout
    from dlpipe.summary import format_figures

    table = Table(title="dlpipe metrics", title_justify="left")
    for column in ("dataset", "stage", "headline figures"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.dataset, row.stage, format_figures(row.figures))
    stdout.print(table if rows else "no metrics yet: run `dvc repro` (or the stages) first")


# Imported last: the word2vec commands use the options and helpers defined above.
from dlpipe.cli_word2vec import word2vec_app  # noqa: E402

app.add_typer(word2vec_app, name="word2vec")


def main() -> None:
    """Console-script entry point."""
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN) is noise for users; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app(prog_name="dlpipe")
