"""``dlpipe search build`` (a DVC stage) and ``dlpipe search query``: reverse image search with FAISS."""

from __future__ import annotations

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
    report,
    run_per_dataset,
)

search_app = typer.Typer(help="Reverse image search with FAISS: build the index (a DVC stage), then query it.", no_args_is_help=True)


@search_app.command("build")
def build(
    dataset: DatasetOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Build a FAISS index over the embeddings (search.index: auto or a factory string) and evaluate it.

    Writes data/<dataset>/search (index.faiss, index.json, examples.png; index.ivfdata when the inverted
    lists live on disk, see search.storage) and metrics/search.json (recall@k against exact search and
    label precision@k on test-split queries).
    Example: dlpipe search build --dataset shapes --set search.index=HNSW32
    """
    results = run_per_dataset("search", params, set_, verbose, dataset, modalities=(*IMAGE_LIKE, "text"), labelled_only=True)
    report(results, as_json, _build_line)


def _build_line(result: Any) -> str:
    m = result.metrics
    figures = "no test queries"
    if m.get("queries"):
        precision = f"precision@{m['k']} {m['precision_at_k']:.3f}" if "precision_at_k" in m else "no labels for precision"
        figures = f"recall@{m['k']} {m['recall_at_k']:.3f}, {precision}"
    stored = f" (lists on disk, {m['shards']} shard(s))" if m.get("storage") == "ondisk" else ""
    return f"search {result.dataset}: {result.factory}{stored} over {m['count']} vectors, {figures} -> {result.out_dir}"


@search_app.command("query")
def query(
    queries: Annotated[
        list[str] | None,
        typer.Argument(help="Image files (or audio clips, for an audio dataset) to find neighbours of; query strings for a text dataset."),
    ] = None,
    item: Annotated[
        list[str] | None, typer.Option("--item", help="A manifest path (as in manifest.csv) to use as a query (repeatable).")
    ] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="Whose index to search (default: the only one built).")] = None,
    k: Annotated[int, typer.Option("-k", min=1, help="Neighbours per query.")] = 10,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write a contact sheet PNG: each query, then its neighbours (a text dataset: a .csv and a .md table)."),
    ] = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Nearest neighbours of images or audio clips (embedded exactly as the index's sidecar records) or of dataset items.

    An audio clip is cut into spectrogram windows as the spectrogram stage cut the training clips, and the
    mean of their embeddings is the query.

    A text dataset's queries are strings, embedded by its text model.

    Example: dlpipe search query photo.jpg -k 5 --out neighbours.png      dlpipe search query --item circle/circle_0001.png
             dlpipe search query "a funny, touching film" --dataset reviews
    """

    def action() -> Any:
        from dlpipe.core.config import load_project
        from dlpipe.queries import search as search_query

        project = load_project(params, set_ or [])
        name = dataset or only_built(project, lambda layout: layout.index_file, "index")
        project.dataset(name)
        return search_query.run(project.for_dataset(name), name, queries or [], item or [], k, out)

    result = guarded(verbose, action)
    if as_json:
        print_json(
            [
                {"query": a.query, "neighbours": [vars(n) for n in a.neighbours]} | ({"windows": a.windows} if a.windows > 1 else {})
                for a in result.answers
            ]
        )
        return
    _print_answers(result)


def _print_answers(result: Any) -> None:
    from rich.table import Table

    from dlpipe.core.console import info, stdout

    score = "similarity" if result.metric == "inner_product" else "squared L2 distance"
    for answer in result.answers:
        averaged = f" ({answer.windows} windows averaged)" if answer.windows > 1 else ""
        table = Table(title=f"neighbours of {answer.query}{averaged}", title_justify="left")
        text = any(n.document is not None for n in answer.neighbours)
        for column in ("rank", "document" if text else "path", "label", score):
            table.add_column(column)
        for n in answer.neighbours:
            table.add_row(str(n.rank), _shortened(n.document) if text else n.path, n.label, f"{n.score:.4f}")
        stdout.print(table)
    if result.sheet:
        info(f"contact sheet written to {result.sheet}")


def _shortened(document: str | None, limit: int = 80) -> str:
    document = document or ""
    return document if len(document) <= limit else document[: limit - 1] + "…"
