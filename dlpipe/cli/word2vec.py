"""``dlpipe word2vec``: train word vectors (a DVC stage), then ask them questions.

Only parsing and printing live here (gensim is imported by the stage and query modules,
inside each command); the root app in :mod:`dlpipe.cli` registers this sub-app.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dlpipe.cli.common import (
    DEFAULT_PARAMS,
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

word2vec_app = typer.Typer(
    help="Word vectors with gensim: train them (a DVC stage), then query and evaluate them.", no_args_is_help=True
)

QueryDatasetOption = Annotated[
    str | None, typer.Option("--dataset", "-d", help="Whose vectors to use (default: the only dataset with vectors).")
]
TopOption = Annotated[int, typer.Option("-n", min=1, help="How many words to list.")]


@word2vec_app.command("train")
def train(
    dataset: DatasetOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Tokenise an ingested text dataset, train CBOW or skip-gram vectors, evaluate and export them.

    Writes data/<dataset>/word2vec (vectors.npy, vocab.csv, model.w2v, vectors.txt, projector/, words_umap.png,
    index.faiss, word2vec.json), metrics/word2vec.json and plots/word2vec (the loss per epoch).
    Example: dlpipe word2vec train --dataset news --set word2vec.architecture=cbow
    """
    report(run_per_dataset("word2vec", params, set_, verbose, dataset, modalities=("text",)), as_json, _train_line)


def _train_line(result: Any) -> str:
    m = result.metrics
    loss = f", final loss {m['final_loss']:,.0f}" if "final_loss" in m else ""
    accuracy = "n/a" if m["analogy_accuracy"] is None else f"{m['analogy_accuracy']:.3f}"
    spearman = "n/a" if m["wordsim_spearman"] is None else f"{m['wordsim_spearman']:.3f}"
    return (
        f"word2vec {result.dataset}: {result.vocabulary:,} words x {m['vector_size']}, "
        f"{m['words_per_second']:,.0f} words/s{loss}; analogies {accuracy} "
        f"({m['analogy_oov_rate']:.0%} out of vocabulary), wordsim353 Spearman {spearman} -> {result.out_dir}"
    )


def _project_and_dataset(params: Path, overrides: list[str] | None, dataset: str | None) -> tuple[Any, str]:
    """The loaded project and the dataset to ask: the named one, or the only one with vectors."""
    from dlpipe.core.config import load_project

    project = load_project(params, overrides or [])
    return project, dataset or only_built(project, lambda layout: layout.vectors_file, "word2vec vectors")


def _ask(question: str, params: Path, overrides: list[str] | None, dataset: str | None, verbose: bool, *arguments: Any) -> Any:
    """The answer of ``dlpipe.queries.word2vec.<question>`` on the chosen dataset's vectors (errors become exit codes)."""

    def action() -> Any:
        from dlpipe.queries import word2vec as query

        return getattr(query, question)(*_project_and_dataset(params, overrides, dataset), *arguments)

    return guarded(verbose, action)


def _print_neighbours(title: str, neighbours: list[Any]) -> None:
    from rich.table import Table

    from dlpipe.core.console import stdout

    table = Table(title=title, title_justify="left")
    for column in ("rank", "word", "cosine similarity"):
        table.add_column(column)
    for rank, neighbour in enumerate(neighbours, start=1):
        table.add_row(str(rank), neighbour.word, f"{neighbour.similarity:.4f}")
    stdout.print(table)


@word2vec_app.command("similar")
def similar(
    word: Annotated[str, typer.Argument(help="The word to find neighbours of.")],
    n: TopOption = 10,
    dataset: QueryDatasetOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """The words closest to WORD (cosine similarity of the vectors).

    Example: dlpipe word2vec similar police -n 5
    """

    neighbours = _ask("similar", params, set_, dataset, verbose, word, n)
    if as_json:
        print_json({"word": word, "neighbours": [vars(item) for item in neighbours]})
        return
    _print_neighbours(f"words similar to {word}", neighbours)


@word2vec_app.command("analogy")
def analogy(
    positive: Annotated[list[str], typer.Option("--positive", "-p", help="A word to add (repeatable).")],
    negative: Annotated[list[str] | None, typer.Option("--negative", "-m", help="A word to subtract (repeatable).")] = None,
    n: TopOption = 10,
    dataset: QueryDatasetOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Solve an analogy: the words nearest sum(positive) - sum(negative), the inputs left out.

    Example: dlpipe word2vec analogy --positive king --positive woman --negative man   (king - man + woman)
    """

    neighbours = _ask("analogy", params, set_, dataset, verbose, positive, negative or [], n)
    if as_json:
        print_json({"positive": positive, "negative": negative or [], "answers": [vars(item) for item in neighbours]})
        return
    expression = " + ".join(positive) + "".join(f" - {word}" for word in negative or [])
    _print_neighbours(expression, neighbours)


@word2vec_app.command("doesnt-match")
def doesnt_match(
    words: Annotated[list[str], typer.Argument(help="Two or more words; the odd one out is printed.")],
    dataset: QueryDatasetOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """The word that fits least with the others.

    Example: dlpipe word2vec doesnt-match breakfast lunch dinner police
    """

    odd = _ask("doesnt_match", params, set_, dataset, verbose, words)
    if as_json:
        print_json({"words": words, "doesnt_match": odd})
        return
    from dlpipe.core.console import stdout

    stdout.print(odd)


@word2vec_app.command("evaluate")
def evaluate(
    analogies: Annotated[
        Path | None, typer.Option("--analogies", help="questions-words format file (default: gensim's questions-words.txt).")
    ] = None,
    pairs: Annotated[
        Path | None, typer.Option("--pairs", help="word1<TAB>word2<TAB>score file (default: gensim's wordsim353.tsv).")
    ] = None,
    dataset: QueryDatasetOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
    set_: SetOption = None,
    verbose: VerboseOption = False,
    as_json: JsonOption = False,
) -> None:
    """Score the trained vectors: analogy accuracy and word-similarity correlation, with out-of-vocabulary rates.

    `word2vec train` records the same figures for gensim's files in metrics/word2vec.json.
    Example: dlpipe word2vec evaluate --set word2vec.evaluate.restrict_vocab=10000
    """

    scores = _ask("evaluate", params, set_, dataset, verbose, analogies, pairs)
    if as_json:
        print_json(scores)
        return
    from dlpipe.core.console import stdout
    from dlpipe.reports.summary import format_figures

    stdout.print(format_figures({key: value for key, value in scores.items() if value is not None}))
