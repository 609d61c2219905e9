"""The classifier's vocabulary: word ids from the training split, and documents as fixed-length id rows.

Id 0 is padding (``<pad>``, masked by the network) and id 1 stands for every word outside
the vocabulary (``<oov>``); words follow from id 2, most frequent first (ties alphabetical,
so the same split always gives the same ids). The vocabulary is built from the training
split only, so validation and test words the model never saw count as out of vocabulary,
as they would for a new document. ``vocabulary.txt`` holds one word per line in id order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlpipe.core.errors import ArtifactError

PAD, OOV = "<pad>", "<oov>"
PAD_ID, OOV_ID = 0, 1
VOCABULARY_FILE = "vocabulary.txt"


@dataclass(frozen=True)
class Vocabulary:
    """Words in id order (``words[0]`` is PAD, ``words[1]`` is OOV)."""

    words: list[str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "_ids", {word: i for i, word in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        """The id of ``word``, OOV_ID when it is not in the vocabulary."""
        return self._ids.get(word, OOV_ID)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Encoded:
    """Documents as an (n, max_length) int32 array of ids, zero-padded at the end, with what was lost."""

    ids: np.ndarray
    lengths: np.ndarray  # tokens per document before truncation
    truncated: int  # documents longer than max_length
    oov_tokens: int  # kept tokens that mapped to OOV
    tokens: int  # kept tokens in all


def build_vocabulary(documents: Iterable[Sequence[str]], min_count: int, max_size: int) -> Vocabulary:
    """The at most ``max_size`` most frequent words seen at least ``min_count`` times, after PAD and OOV."""
    counts: Counter[str] = Counter()
    for tokens in documents:
        counts.update(tokens)
    kept = sorted((word for word, count in counts.items() if count >= min_count and word not in (PAD, OOV)), key=lambda w: (-counts[w], w))
    return Vocabulary([PAD, OOV, *kept[:max_size]])


def encode(vocabulary: Vocabulary, documents: Sequence[Sequence[str]], max_length: int) -> Encoded:
    """Map token lists to id rows of ``max_length``: the first tokens kept, zeros after the end."""
    ids = np.zeros((len(documents), max_length), dtype=np.int32)
    lengths = np.zeros(len(documents), dtype=np.int64)
    oov = 0
    for row, tokens in enumerate(documents):
        lengths[row] = len(tokens)
        kept = [vocabulary.id(token) for token in tokens[:max_length]]
        ids[row, : len(kept)] = kept
        oov += kept.count(OOV_ID)
    return Encoded(ids, lengths, int((lengths > max_length).sum()), oov, int(np.minimum(lengths, max_length).sum()))


def save_vocabulary(vocabulary: Vocabulary, path: Path) -> None:
    """One word per line, in id order."""
    path.write_text("".join(f"{word}\n" for word in vocabulary.words), encoding="utf-8")


def load_vocabulary(path: Path) -> Vocabulary:
    """Read ``vocabulary.txt``.

    Raises:
        ArtifactError: the file is missing or does not start with PAD and OOV.
    """
    if not path.is_file():
        raise ArtifactError(f"vocabulary not found: {path}", "retrain the text model with `dlpipe finetune`")
    words = path.read_text(encoding="utf-8").split("\n")[:-1]
    if words[:2] != [PAD, OOV]:
        raise ArtifactError(f"{path} is not a dlpipe vocabulary (it must start with {PAD} and {OOV})", "retrain the text model")
    return Vocabulary(words)
