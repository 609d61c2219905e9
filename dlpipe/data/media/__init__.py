"""Decoding and validation of dataset items (images, audio, text).

Each modality module inspects one file fully and either returns what it learnt
(size, duration, ...) or raises :class:`Rejected` with a short reason code and a
human-readable detail; ingest records rejections in ``rejected.csv``.
"""

from __future__ import annotations


class Rejected(Exception):
    """One input item is unusable; ``reason`` is a stable code, ``detail`` says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
