"""Tokenisation for word2vec and the text classifier: ingested UTF-8 text in, tokens out.

:func:`iter_tokens` is the one tokeniser; the classifier (``finetune`` on labelled text)
uses it per document, so its vocabulary agrees with word vectors trained by ``word2vec``.
For word2vec, :func:`tokenize_file` writes gensim's ``corpus_file`` format.

The output has one sentence per line, tokens separated by single spaces. A line
of the input is a sentence; a line longer than :data:`MAX_SENTENCE_TOKENS`
tokens is cut into several (gensim caps a sentence at that many words anyway).
The input is read in chunks (:func:`dlpipe.data.media.text.iter_text_chunks`) and
tokens are written as they are found, so neither a large corpus nor one enormous
line without a newline is ever held whole in memory.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dlpipe.core.artifacts import temporary_file
from dlpipe.core.config import TokenizeConfig

# gensim's MAX_WORDS_IN_BATCH: corpus_file training truncates longer sentences to this length.
MAX_SENTENCE_TOKENS = 10_000
NUMBER_TOKEN = "<num>"
# A run without a space this long is tokenised as it stands (a token straddling the cut is split in two).
_MAX_CARRY_CHARS = 1 << 16
# Numbers (3, 3.5, 1,000, 12:30) unless letters follow (1990s is a word); words with inner apostrophes; single marks.
_TOKEN = re.compile(r"(?P<number>\d+(?:[.,:]\d+)*(?!\w))|(?P<word>\w+(?:['’]\w+)*)|(?P<mark>[^\w\s])")


@dataclass(frozen=True)
class TokenStats:
    """What tokenisation produced: counts per token type and totals."""

    sentences: int
    tokens: int
    counts: Counter[str]
    bigrams: int
    seconds: float


def tokenize_file(source: Path, out: Path, cfg: TokenizeConfig) -> TokenStats:
    """Tokenise UTF-8 ``source`` into ``out`` (one sentence per line), then join bigrams when ``cfg.phrases``.

    Raises:
        Rejected: ``source`` holds NUL bytes or is not valid UTF-8 (see :func:`~dlpipe.data.media.text.iter_text_chunks`).
    """
    from dlpipe.data.media.text import iter_text_chunks

    start = time.perf_counter()
    counts: Counter[str] = Counter()
    sentences = tokens = 0
    with open(out, "w", encoding="utf-8", newline="\n") as handle:
        for sentence in _sentences(iter_text_chunks(source, "utf-8"), cfg):
            handle.write(" ".join(sentence) + "\n")
            counts.update(sentence)
            sentences += 1
            tokens += len(sentence)
    bigrams = 0
    if cfg.phrases and tokens:
        counts, bigrams = _join_phrases(out, cfg)
    return TokenStats(sentences, tokens, counts, bigrams, time.perf_counter() - start)


def _sentences(chunks: Iterator[str], cfg: TokenizeConfig) -> Iterator[list[str]]:
    """Token lists of at most MAX_SENTENCE_TOKENS; a newline always ends one; empty ones are skipped."""
    sentence: list[str] = []
    carry = ""
    for chunk in chunks:
        lines = (carry + chunk).split("\n")
        carry = lines.pop()  # the unfinished last line
        for line in lines:
            yield from _fill(sentence, line, cfg)
            if sentence:
                yield sentence
                sentence = []
        # Tokenise the unfinished line up to its last space, so that no token is cut in two.
        cut = max(carry.rfind(" "), carry.rfind("\t"))
        if cut < 0 and len(carry) <= _MAX_CARRY_CHARS:
            continue
        head, carry = (carry[:cut], carry[cut:]) if cut >= 0 else (carry, "")
        yield from _fill(sentence, head, cfg)
    yield from _fill(sentence, carry, cfg)
    if sentence:
        yield sentence


def _fill(sentence: list[str], text: str, cfg: TokenizeConfig) -> Iterator[list[str]]:
    """Append the tokens of ``text`` to ``sentence``, yielding (and emptying) it whenever it is full."""
    for token in iter_tokens(text, cfg):
        sentence.append(token)
        if len(sentence) == MAX_SENTENCE_TOKENS:
            yield sentence
            sentence.clear()


def iter_tokens(text: str, cfg: TokenizeConfig) -> Iterator[str]:
    """The tokens of ``text`` in order, as word2vec's corpus gets them (bigrams are not joined here)."""
    for match in _TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group()
        if kind == "mark":
            if cfg.punctuation == "drop":
                continue
        elif kind == "number":
            if cfg.numbers == "drop":
                continue
            if cfg.numbers == "replace":
                token = NUMBER_TOKEN
        elif cfg.lowercase:
            token = token.lower()
        if len(token) <= cfg.max_token_chars:
            yield token


def _join_phrases(path: Path, cfg: TokenizeConfig) -> tuple[Counter[str], int]:
    """Learn bigrams with gensim Phrases from the token file, rewrite it with them joined; return counts."""
    from gensim.models.phrases import Phrases
    from gensim.models.word2vec import LineSentence

    learned = Phrases(
        LineSentence(str(path), max_sentence_length=MAX_SENTENCE_TOKENS),
        min_count=cfg.phrases_min_count,
        threshold=cfg.phrases_threshold,
    ).freeze()
    counts: Counter[str] = Counter()
    fd, tmp_name = temporary_file(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            for sentence in LineSentence(str(path), max_sentence_length=MAX_SENTENCE_TOKENS):
                joined = learned[sentence]
                handle.write(" ".join(joined) + "\n")
                counts.update(joined)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    return counts, len(learned.phrasegrams)
