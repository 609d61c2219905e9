"""Text decoding: streamed, validated against an encoding, normalised to UTF-8.

Files are read in fixed-size chunks through an incremental decoder, so a corpus
of any size, or one enormous line without a newline, never has to fit in memory.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dlpipe.data.media import Rejected

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)  # slots: ingest holds one per accepted file
class TextInfo:
    """What ingest records about an accepted text file."""

    lines: int
    tokens: int
    chars: int
    encoding: str  # what it was decoded as


def iter_text_chunks(path: Path, encoding: str) -> Iterator[str]:
    """Yield the decoded text of ``path`` in chunks, with newlines normalised to ``\\n``.

    Raises:
        Rejected: ``not_text`` (NUL bytes: a binary file) or ``encoding_error`` with the byte offset.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    pending_cr = False
    with open(path, "rb") as handle:
        while True:
            raw = handle.read(CHUNK_BYTES)
            final = not raw
            nul = raw.find(b"\x00")
            if nul >= 0 and not _is_wide_encoding(encoding):
                raise Rejected("not_text", f"NUL byte at offset {offset + nul}: this looks like a binary file")
            # Bytes the decoder still holds from the previous chunk precede this one in its error offsets.
            buffered = len(decoder.getstate()[0])
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as exc:
                raise Rejected(
                    "encoding_error",
                    f"not valid {encoding} at byte {offset - buffered + exc.start}; set ingest.text.encoding to the file's encoding "
                    "(e.g. latin-1 or cp1252)",
                ) from None
            offset += len(raw)
            # A \r\n pair may be split across two chunks: hold back a trailing \r.
            if pending_cr:
                text = "\r" + text
            pending_cr = text.endswith("\r") and not final
            if pending_cr:
                text = text[:-1]
            if text:
                yield text.replace("\r\n", "\n").replace("\r", "\n")
            if final:
                return


def _is_wide_encoding(encoding: str) -> bool:
    """UTF-16/32 text legitimately contains NUL bytes."""
    name = codecs.lookup(encoding).name
    return name.startswith(("utf-16", "utf-32"))


def inspect_text(path: Path, encoding: str) -> TextInfo:
    """Decode a whole text file and count its lines, whitespace tokens and characters.

    Raises:
        Rejected: see :func:`iter_text_chunks`; ``empty_file`` for a file with no bytes.
    """
    if Path(path).stat().st_size == 0:
        raise Rejected("empty_file", "the file has zero bytes")
    lines = tokens = chars = 0
    in_token = False
    last_char = "\n"
    for chunk in iter_text_chunks(path, encoding):
        chars += len(chunk)
        lines += chunk.count("\n")
        tokens += len(chunk.split())
        # A token cut in two by the chunk boundary was counted twice.
        if in_token and not chunk[0].isspace():
            tokens -= 1
        in_token = not chunk[-1].isspace()
        last_char = chunk[-1]
    if last_char != "\n":
        lines += 1
    return TextInfo(lines=lines, tokens=tokens, chars=chars, encoding=encoding)
