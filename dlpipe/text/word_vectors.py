"""Word2vec vectors as the first layer of a text classifier.

The vectors are read from a ``word2vec`` stage folder's ``vectors.txt`` (the original
word2vec text format: plain numbers, so loading it cannot run code), after checking the file
against the folder's sidecar and checking that the vectors were tokenised exactly as the
classifier tokenises its documents; otherwise the same word would be two different keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlpipe.core.artifacts import read_json, sha256_file
from dlpipe.core.errors import ArtifactError, ConfigError
from dlpipe.core.layout import WORD2VEC_SIDECAR
from dlpipe.models.vocabulary import OOV_ID, PAD_ID, Vocabulary


@dataclass(frozen=True)
class StartingVectors:
    """The embedding matrix for a vocabulary (row i is word id i) and how much of it came from word2vec."""

    matrix: np.ndarray  # float32 (len(vocabulary), dimension)
    found: int  # vocabulary words (PAD and OOV aside) that had a word2vec vector
    missing: int  # words that got a random vector instead
    source: dict[str, Any]  # where the vectors came from, for the model sidecar


def starting_vectors(folder: Path, vocabulary: Vocabulary, tokenize: dict[str, Any], dimension: int, seed: int) -> StartingVectors:
    """The vocabulary's embedding matrix from the word2vec folder ``folder``.

    Words without a vector get random ones with the vectors' own spread, so they start on
    the same scale; PAD's row is zero (it is masked anyway); OOV starts at the mean vector.

    Args:
        folder: the output folder of ``dlpipe word2vec train`` (``vectors.txt`` and ``word2vec.json``).
        vocabulary: the classifier's vocabulary.
        tokenize: the classifier's ``word2vec.tokenize`` params, which the vectors must have been made with.
        dimension: ``finetune.text.embedding_dim``, which must be the vectors' size.
        seed: for the random vectors.

    Raises:
        ArtifactError: the folder is not a word2vec output, or ``vectors.txt`` differs from what it recorded.
        ConfigError: the vectors were tokenised differently (phrases joined, another case or number policy),
            or their size is not ``dimension``.
    """
    sidecar = read_json(folder / WORD2VEC_SIDECAR, f"the word2vec sidecar named by finetune.text.word2vec ({folder})")
    text_file = folder / sidecar.get("files", {}).get("text_format", "vectors.txt")
    rerun = f"rerun `dlpipe word2vec train` for the dataset in {folder}"
    if not text_file.is_file() or sha256_file(text_file) != sidecar.get("text_format_sha256"):
        raise ArtifactError(f"{text_file} is missing or differs from what word2vec recorded in {WORD2VEC_SIDECAR}", rerun)
    trained_with = sidecar.get("params", {}).get("tokenize")
    if trained_with != tokenize:
        differing = sorted(k for k in tokenize if (trained_with or {}).get(k) != tokenize[k])
        raise ConfigError(
            f"finetune.text.word2vec: the vectors in {folder} were tokenised with other word2vec.tokenize settings "
            f"({', '.join(differing)}), so their words would not match the documents'",
            "use the word2vec.tokenize settings the vectors were trained with, or retrain them with these",
        )
    if int(sidecar["params"]["vector_size"]) != dimension:
        raise ConfigError(
            f"finetune.text.embedding_dim is {dimension}, but the vectors in {folder} have {sidecar['params']['vector_size']} dimensions",
            f"set finetune.text.embedding_dim: {sidecar['params']['vector_size']}, or use vectors of {dimension} dimensions",
        )
    vectors = _read_text_format(text_file, vocabulary)
    found_ids = np.array(sorted(vectors), dtype=np.int64)
    rng = np.random.default_rng(seed)
    known = np.stack([vectors[i] for i in found_ids]) if len(found_ids) else np.zeros((0, dimension), np.float32)
    spread = float(known.std()) if len(found_ids) else 0.1
    matrix = rng.normal(0.0, spread, size=(len(vocabulary), dimension)).astype(np.float32)
    matrix[PAD_ID] = 0.0
    if len(found_ids):
        matrix[found_ids] = known
        matrix[OOV_ID] = known.mean(axis=0)
    missing = len(vocabulary) - 2 - len(found_ids)
    source = {"folder": str(folder), "dataset": sidecar.get("dataset"), "vectors_sha256": sidecar["text_format_sha256"]}
    return StartingVectors(matrix, len(found_ids), missing, source)


def _read_text_format(path: Path, vocabulary: Vocabulary) -> dict[int, np.ndarray]:
    """The vectors of the vocabulary's words (by id) from a word2vec text file; other words are skipped unparsed."""
    vectors: dict[int, np.ndarray] = {}
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().split()
        if len(header) != 2 or not all(part.isdigit() for part in header):
            raise ArtifactError(f"{path} does not start with the word2vec text header 'count dimension'", "retrain the vectors")
        dimension = int(header[1])
        for number, line in enumerate(handle, start=2):
            word, _, numbers = line.rstrip("\n").partition(" ")
            word_id = vocabulary.id(word)
            if word_id <= OOV_ID:  # not a vocabulary word (or a vector for the special tokens)
                continue
            try:
                values = np.array(numbers.split(), dtype=np.float32)
            except ValueError:
                values = np.zeros(0, np.float32)
            if values.shape != (dimension,) or not np.isfinite(values).all():
                problem = f"{path}, line {number}: the vector of '{word}' is not {dimension} finite numbers"
                raise ArtifactError(problem, "retrain the vectors")
            vectors[word_id] = values
    return vectors
