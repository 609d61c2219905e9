"""The root ``dlpipe`` app: the version option and one registration per command.

Each command lives in its own module of this package and only parses and prints;
the work happens in ``dlpipe.stages`` (DVC stages) and ``dlpipe.queries``.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from dlpipe import __version__
from dlpipe.cli.doctor import doctor
from dlpipe.cli.metrics import metrics
from dlpipe.cli.predict import predict
from dlpipe.cli.report import report
from dlpipe.cli.search import search_app
from dlpipe.cli.stages import cluster, embed, finetune, heatmap, ingest, sample, spectrogram
from dlpipe.cli.word2vec import word2vec_app

app = typer.Typer(
    name="dlpipe",
    help="Applied deep learning as a reproducible DVC pipeline. Every command is also a DVC stage (see dvc.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)


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


app.command()(sample)
app.command()(ingest)
app.command()(spectrogram)
app.command()(finetune)
app.command()(embed)
app.command()(cluster)
app.add_typer(search_app, name="search")
app.command()(predict)
app.command()(heatmap)
app.command()(metrics)
app.command()(report)
app.command()(doctor)
app.add_typer(word2vec_app, name="word2vec")


def main() -> None:
    """Console-script entry point."""
    # TensorFlow's C++ start-up chatter (CPU features, oneDNN) is noise for users; errors still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app(prog_name="dlpipe")
