"""Labelled text documents: fastText lines and CSV rows read from one file, and their normal form.

A labelled text dataset is a set of documents, each with one label. In a class folder every
``.txt`` file is one document; a single file holds one document per fastText line
(``__label__pos some text``) or per CSV row. Each document is stored by ingest in its normal
form (:func:`normalize_document`): whitespace runs, newlines included, become one space, so a
document is one line of ``corpus.txt`` and two documents that differ only in spacing are
exact duplicates.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from dlpipe.core.errors import InputDataError
from dlpipe.data.media import Rejected
from dlpipe.data.media.text import iter_text_chunks

FASTTEXT_PREFIX = "__label__"


@dataclass(frozen=True)
class DocumentRow:
    """One document read from a file: where it was (1-based line or row), its label and text, or why it is unusable."""

    line: int
    label: str
    text: str
    reason: str = ""
    detail: str = ""


def normalize_document(text: str) -> str:
    """The stored form of a document: words separated by single spaces, no leading or trailing space."""
    return " ".join(text.split())


def read_whole(path: Path, encoding: str) -> str:
    """Decode all of ``path`` (newlines normalised to ``\\n``).

    Raises:
        InputDataError: the file is binary or not valid in ``encoding`` (the message names the byte offset).
    """
    try:
        return "".join(iter_text_chunks(path, encoding))
    except Rejected as rejection:
        raise InputDataError(f"{path}: {rejection.detail}", "fix the file or set ingest.text.encoding") from None


def read_fasttext(path: Path, encoding: str) -> list[DocumentRow]:
    """Documents of a fastText file: ``__label__<name> text`` per line; blank lines are skipped.

    A line without a label, with more than one, or with no text after its label becomes a row
    with a rejection reason (``no_label``, ``several_labels``, ``empty_document``).
    """
    rows = []
    for number, line in enumerate(read_whole(path, encoding).split("\n"), start=1):
        words = line.split()
        if not words:
            continue
        leading = 0
        while leading < len(words) and words[leading].startswith(FASTTEXT_PREFIX):
            leading += 1
        text = " ".join(words[leading:])
        if leading == 0:
            rows.append(DocumentRow(number, "", text, "no_label", f"line {number} does not start with {FASTTEXT_PREFIX}<label>"))
        elif leading > 1:
            names = ", ".join(word.removeprefix(FASTTEXT_PREFIX) for word in words[:leading])
            detail = f"line {number} has labels {names}; dlpipe trains one label per document"
            rows.append(DocumentRow(number, "", text, "several_labels", detail))
        else:
            rows.append(_checked(number, words[0].removeprefix(FASTTEXT_PREFIX), text))
    return rows


def read_csv_documents(path: Path, encoding: str, text_column: str, label_column: str) -> list[DocumentRow]:
    """Documents of a CSV file with a header row: the text and label columns named by the params.

    Raises:
        InputDataError: the file cannot be decoded, or lacks one of the two columns (the message lists the columns found).
    """
    reader = csv.DictReader(io.StringIO(read_whole(path, encoding), newline=""))
    found = reader.fieldnames or []
    for column, key in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in found:
            raise InputDataError(
                f"{path}: no column '{column}' (ingest.text.{key}); the header has {', '.join(found) or 'no columns'}",
                f"set ingest.text.{key} to the column that holds each document's {key.split('_')[0]}",
            )
    rows = []
    # Line numbers as a spreadsheet shows them: the header is row 1.
    for number, record in enumerate(reader, start=2):
        rows.append(_checked(number, (record.get(label_column) or "").strip(), record.get(text_column) or ""))
    return rows


def _checked(number: int, label: str, text: str) -> DocumentRow:
    document = normalize_document(text)
    if not label:
        return DocumentRow(number, "", document, "no_label", f"line {number} has an empty label")
    if not document:
        return DocumentRow(number, label, "", "empty_document", f"line {number} has no text")
    return DocumentRow(number, label, document)
