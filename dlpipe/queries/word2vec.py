"""Word2vec queries on a dataset's trained vectors: neighbours, analogies, the odd one out, benchmark scores.

Each function loads the dataset's checked vectors (:func:`dlpipe.text.vectors.load_vectors`)
and asks them one question; the CLI prints the answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlpipe.core.config import Project
from dlpipe.text import vectors as word_vectors
from dlpipe.text.vectors import Neighbour, Vectors


def load(project: Project, dataset: str) -> Vectors:
    """The checked word vectors ``word2vec train`` wrote for ``dataset``.

    Raises:
        ConfigError: no such dataset.
        ArtifactError: the vectors are missing or differ from what the stage wrote.
    """
    project.dataset(dataset)
    return word_vectors.load_vectors(project.layout(dataset).word2vec_dir, dataset)


def similar(project: Project, dataset: str, word: str, n: int) -> list[Neighbour]:
    """The ``n`` words closest to ``word`` (cosine), most similar first."""
    return word_vectors.similar(load(project, dataset), word, n)


def analogy(project: Project, dataset: str, positive: list[str], negative: list[str], n: int) -> list[Neighbour]:
    """The words nearest ``sum(positive) - sum(negative)``, the inputs left out."""
    return word_vectors.analogy(load(project, dataset), positive, negative, n)


def doesnt_match(project: Project, dataset: str, words: list[str]) -> str:
    """The word that fits least with the others."""
    return word_vectors.doesnt_match(load(project, dataset), words)


def evaluate(project: Project, dataset: str, analogies: Path | None, pairs: Path | None) -> dict[str, Any]:
    """Analogy accuracy and word-similarity correlations (``word2vec.evaluate.restrict_vocab`` most frequent words)."""
    restrict_vocab = project.params.word2vec.evaluate.restrict_vocab
    return word_vectors.evaluate(load(project, dataset).kv, restrict_vocab, analogies, pairs)
