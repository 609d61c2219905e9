"""Questions to trained word vectors: neighbours, analogies, the odd one out, benchmark scores.

The vectors are stored as data that cannot carry code: ``vectors.npy`` (float32, read with
``allow_pickle=False``) and ``vocab.csv`` (the word of each row, with its count). gensim's own
formats (``KeyedVectors.save``, ``model.w2v``) are pickles, which run code when loaded; dlpipe writes
``model.w2v`` for users who want to train further but never loads it. The vectors are read from a
word2vec folder after checking them against the stage's sidecar (``word2vec.json``). Query words are folded to lower
case when the vectors were trained on lower-cased text; an unknown word is an
:class:`~dlpipe.core.errors.InputDataError` that suggests the closest words of the vocabulary.
"""

from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.arrays import load_npy
from dlpipe.core.artifacts import malformed_is_damage, read_json, sha256_file, write_csv
from dlpipe.core.errors import ArtifactError, InputDataError
from dlpipe.core.layout import VECTORS_FILE, VOCAB_FILE, WORD2VEC_SIDECAR

ANALOGIES_FILE = "questions-words.txt"
_VOCAB_COLUMNS = ("rank", "word", "count")
PAIRS_FILE = "wordsim353.tsv"


@dataclass(frozen=True)
class Neighbour:
    """A word and its cosine similarity to the query."""

    word: str
    similarity: float


@dataclass(frozen=True)
class Vectors:
    """Checked KeyedVectors of one dataset, with their sidecar."""

    dataset: str
    kv: Any
    info: dict[str, Any]

    def word(self, text: str) -> str:
        """``text`` as a vocabulary key (lower-cased like the corpus), or an InputDataError with suggestions."""
        key = text.lower() if self.info["params"]["tokenize"]["lowercase"] else text
        if key in self.kv.key_to_index:
            return key
        close = difflib.get_close_matches(key, self.kv.index_to_key, n=5, cutoff=0.6)
        hint = f"close words in the vocabulary: {', '.join(close)}" if close else "no close word in the vocabulary"
        raise InputDataError(
            f"'{text}' is not in the vocabulary of dataset '{self.dataset}' ({len(self.kv):,} words, "
            f"word2vec.min_count={self.info['params']['min_count']})",
            hint,
        )


def vector_files(folder: Path) -> list[Path]:
    """The files that hold the word vectors: vectors.npy and vocab.csv."""
    return [folder / VECTORS_FILE, folder / VOCAB_FILE]


def save_vectors(kv: Any, folder: Path) -> None:
    """Write gensim KeyedVectors ``kv`` as ``vectors.npy`` and ``vocab.csv`` (``rank,word,count``, most frequent first)."""
    np.save(folder / VECTORS_FILE, np.ascontiguousarray(kv.vectors, dtype=np.float32), allow_pickle=False)
    write_csv(
        folder / VOCAB_FILE,
        _VOCAB_COLUMNS,
        ({"rank": rank, "word": word, "count": kv.get_vecattr(word, "count")} for rank, word in enumerate(kv.index_to_key)),
    )


def read_vectors(folder: Path) -> Any:
    """gensim KeyedVectors rebuilt from ``vectors.npy`` and ``vocab.csv`` in ``folder``; nothing in them can run code.

    Raises:
        ArtifactError: a file is missing, is not what it should be (not a 2-D float32 array, a vocabulary
            without its columns, a count that is not a number), or the two disagree on the number of words.
    """
    from gensim.models import KeyedVectors

    vectors = load_npy(folder / VECTORS_FILE, "the word vectors")
    if vectors.ndim != 2 or vectors.dtype != np.float32:
        raise ArtifactError(f"{folder / VECTORS_FILE} holds a {vectors.dtype} array of shape {vectors.shape}, not 2-D float32 word vectors")
    words, counts = _read_vocabulary(folder / VOCAB_FILE)
    if len(words) != len(vectors) or len(set(words)) != len(words):
        raise ArtifactError(
            f"{folder / VOCAB_FILE} lists {len(words)} words ({len(set(words))} distinct) for {len(vectors)} vectors in {VECTORS_FILE}",
            "rerun word2vec train",
        )
    kv = KeyedVectors(vector_size=vectors.shape[1])
    kv.index_to_key = words
    kv.key_to_index = {word: index for index, word in enumerate(words)}
    kv.vectors = vectors
    kv.allocate_vecattrs(attrs=["count"], types=[np.int64])
    kv.expandos["count"][:] = counts
    return kv


def _read_vocabulary(path: Path) -> tuple[list[str], list[int]]:
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if tuple(reader.fieldnames or ()) != _VOCAB_COLUMNS:
                raise ArtifactError(f"{path}: the header is {reader.fieldnames}, not rank,word,count", "rerun word2vec train")
            rows = [(row["word"], int(row["count"])) for row in reader]
    except FileNotFoundError:
        raise ArtifactError(f"the vocabulary is missing: {path}", "rerun word2vec train") from None
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error, IsADirectoryError) as exc:
        raise ArtifactError(f"{path} is not a vocabulary of rank,word,count rows ({exc})", "rerun word2vec train") from None
    return [word for word, _ in rows], [count for _, count in rows]


def load_vectors(folder: Path, dataset: str) -> Vectors:
    """Load the word vectors in ``folder`` (dataset ``dataset``'s word2vec output) after checking every file against the sidecar.

    Raises:
        ArtifactError: the stage has not run, or a file is missing or differs from what it wrote.
    """
    with malformed_is_damage(folder, "the word vectors", f"rerun `dlpipe word2vec train --dataset {dataset}`"):
        info = read_json(folder / WORD2VEC_SIDECAR, f"the word2vec sidecar of dataset '{dataset}'")
        rerun = f"rerun `dlpipe word2vec train --dataset {dataset}` (or dvc repro)"
        recorded = info.get("vector_files", {})
        found = {path.name: sha256_file(path) for path in vector_files(folder) if path.is_file()}
        if found != recorded:
            raise ArtifactError(f"the vectors in {folder} differ from what word2vec wrote (see {WORD2VEC_SIDECAR})", rerun)
        kv = read_vectors(folder)
        if (len(kv), kv.vector_size) != (info["vocabulary"]["words"], info["params"]["vector_size"]):
            raise ArtifactError(f"{folder / VECTORS_FILE} does not hold the words and dimension its sidecar records", rerun)
        return Vectors(dataset, kv, info)


def similar(vectors: Vectors, word: str, n: int) -> list[Neighbour]:
    """The ``n`` words most similar to ``word`` (cosine), most similar first."""
    return _neighbours(vectors.kv.most_similar(vectors.word(word), topn=n))


def analogy(vectors: Vectors, positive: list[str], negative: list[str], n: int) -> list[Neighbour]:
    """Words nearest ``sum(positive) - sum(negative)`` (3CosAdd), e.g. king - man + woman; inputs excluded."""
    if not positive:
        raise InputDataError("an analogy needs at least one --positive word", "e.g. --positive king --positive woman --negative man")
    keys = [vectors.word(word) for word in positive], [vectors.word(word) for word in negative]
    return _neighbours(vectors.kv.most_similar(positive=keys[0], negative=keys[1], topn=n))


def doesnt_match(vectors: Vectors, words: list[str]) -> str:
    """The word furthest from the mean of the others' directions."""
    if len(words) < 2:
        raise InputDataError(f"doesnt-match needs at least two words, got {len(words)}", "e.g. breakfast cereal dinner lunch")
    return vectors.kv.doesnt_match([vectors.word(word) for word in words])


def _neighbours(pairs: list[tuple[str, float]]) -> list[Neighbour]:
    return [Neighbour(word, round(float(score), 6)) for word, score in pairs]


def benchmark_file(name: str) -> Path:
    """One of the evaluation files gensim installs under ``gensim/test/test_data``."""
    from gensim.test.utils import datapath

    return Path(datapath(name))


def evaluate(kv: Any, restrict_vocab: int, analogies: Path | None = None, pairs: Path | None = None) -> dict[str, Any]:
    """Analogy accuracy (3CosAdd, case-insensitive) and word-similarity correlations, with out-of-vocabulary rates.

    Only the ``restrict_vocab`` most frequent words count as known; a question or pair with another word is
    out of vocabulary and skipped. Figures with nothing to measure are None, never NaN.

    Args:
        kv: gensim KeyedVectors.
        restrict_vocab: how many of the most frequent words count as known.
        analogies: a questions-words file (``: section`` lines, then ``a b c d``); gensim's by default.
        pairs: tab-separated ``word1 word2 score`` lines; gensim's wordsim353.tsv by default.
    """
    analogies = analogies or benchmark_file(ANALOGIES_FILE)
    pairs = pairs or benchmark_file(PAIRS_FILE)
    for path in (analogies, pairs):
        if not path.is_file():
            raise InputDataError(f"evaluation file not found: {path}")
    questions = sum(1 for line in _lines(analogies) if not line.startswith(":") and len(line.split()) == 4)
    _score, sections = kv.evaluate_word_analogies(str(analogies), restrict_vocab=restrict_vocab, case_insensitive=True)
    total = sections[-1]
    answered = len(total["correct"]) + len(total["incorrect"])
    known = {word.upper() for word in kv.index_to_key[:restrict_vocab]}
    rows = [line.split("\t") for line in _lines(pairs) if not line.startswith("#")]
    judged = [row for row in rows if len(row) == 3]
    if any(a.upper() in known and b.upper() in known for a, b, _ in judged):
        pearson, spearman, oov_percent = kv.evaluate_word_pairs(str(pairs), restrict_vocab=restrict_vocab, case_insensitive=True)
    else:  # gensim raises when no pair is known; every pair is out of vocabulary then
        pearson, spearman, oov_percent = (math.nan,), (math.nan,), 100.0 if judged else math.nan
    return {
        "restrict_vocab": restrict_vocab,
        "analogy_file": analogies.name,
        "analogy_questions": questions,
        "analogy_answered": answered,
        "analogy_correct": len(total["correct"]),
        "analogy_accuracy": _finite(len(total["correct"]) / answered if answered else math.nan),
        "analogy_oov_rate": _finite(1 - answered / questions if questions else math.nan),
        "wordsim_file": pairs.name,
        "wordsim_spearman": _finite(spearman[0]),
        "wordsim_pearson": _finite(pearson[0]),
        "wordsim_oov_rate": _finite(oov_percent / 100),
    }


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines()


def _finite(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(float(value)) else None
