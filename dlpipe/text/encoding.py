"""Documents as a trained text model's input: tokenised as its sidecar records, mapped through its vocabulary.

Everything a text model needs to read a new document is in its model folder (the tokeniser
settings and ``max_length`` in model.json, the words in vocabulary.txt), so predict, embed,
search queries and heatmaps encode a document exactly as finetune encoded the training split.
"""

from __future__ import annotations

from collections.abc import Sequence

from dlpipe.core.config import TokenizeConfig
from dlpipe.models.store import TrainedModel
from dlpipe.models.vocabulary import Encoded, encode
from dlpipe.text.tokens import iter_tokens


def document_tokens(trained: TrainedModel, documents: Sequence[str]) -> list[list[str]]:
    """Each document's tokens, by the tokeniser settings the model was trained with."""
    tokenize = TokenizeConfig(**trained.sidecar["tokenize"])
    return [list(iter_tokens(document, tokenize)) for document in documents]


def encode_documents(trained: TrainedModel, documents: Sequence[str]) -> Encoded:
    """The (n, max_length) token ids of ``documents`` for a text model (see :func:`document_tokens`)."""
    if trained.vocabulary is None:
        raise ValueError(f"{trained.path} is not a text model")
    return encode(trained.vocabulary, document_tokens(trained, documents), int(trained.sidecar["max_length"]))
