"""Pictures of word heatmaps: each document's words shaded by how much masking them lowers the target class.

Red means the word supports the explained class (masking it lowers the probability), blue that
it speaks against it; the shade is relative to the document's largest drop. Words outside the
model's vocabulary are shown in grey italics (the model reads them all as one ``<oov>``).
The same documents are written as a self-contained HTML page and as a PNG.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlpipe.core.artifacts import atomic_write_text
from dlpipe.reports.figures import save_png

_LINE_CHARS = 100  # characters per line of the PNG (monospace)


@dataclass(frozen=True)
class ExplainedDocument:
    """One document as the model read it, with each word's probability drop."""

    name: str  # where it came from (manifest path, or argument N)
    true_label: str  # "?" when unknown
    predicted: str
    probability: float  # of the predicted class
    target: str  # the class the shading explains
    tokens: list[str]  # the words the model read (after tokenisation, at most max_length)
    known: list[bool]  # per token: in the vocabulary
    importance: np.ndarray  # per token: drop of the target's probability when masked
    truncated: int  # tokens past max_length, not read

    @property
    def right(self) -> bool | None:
        """Whether the prediction matches the known label (None when unknown)."""
        return None if self.true_label == "?" else self.true_label == self.predicted


def _rgba(value: float, scale: float) -> tuple[float, float, float, float]:
    strength = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    return (0.84, 0.15, 0.16, 0.85 * strength) if value >= 0 else (0.12, 0.47, 0.71, 0.85 * strength)


def _caption(item: ExplainedDocument) -> str:
    verdict = {True: "right", False: "wrong", None: "label unknown"}[item.right]
    return (
        f"{item.name}: label {item.true_label}, predicted {item.predicted} ({item.probability:.2f}, {verdict}); "
        f"shading explains {item.target}"
    )


def write_words_html(items: Sequence[ExplainedDocument], path: Path, title: str) -> None:
    """A self-contained page: per document its caption and its words on shaded backgrounds (drop in a tooltip)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.9}"
        "span.w{padding:0.1em 0.2em;border-radius:0.2em}span.oov{color:#888;font-style:italic}"
        ".doc{margin-bottom:1.5em}.cap{font-size:0.85em;color:#444}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Red: masking the word lowers the explained class's probability (the word supports it); blue: it raises it. "
        "The shade is relative to each document's largest change; hover a word for its drop. "
        "Grey italics: a word outside the vocabulary.</p>",
    ]
    for item in items:
        scale = float(np.abs(item.importance).max(initial=0.0))
        words = []
        for token, known, value in zip(item.tokens, item.known, item.importance, strict=True):
            r, g, b, a = _rgba(float(value), scale)
            style = f"background:rgba({int(r * 255)},{int(g * 255)},{int(b * 255)},{a:.2f})"
            css = "w" if known else "w oov"
            words.append(f"<span class='{css}' style='{style}' title='drop {value:+.4f}'>{html.escape(token)}</span>")
        cut = f" <span class='cap'>(+{item.truncated} words past max_length, not read)</span>" if item.truncated else ""
        parts.append(f"<div class='doc'><div class='cap'>{html.escape(_caption(item))}</div>{' '.join(words)}{cut}</div>")
    parts.append("</body></html>")
    atomic_write_text(path, "\n".join(parts) + "\n")


def _lines(tokens: Sequence[str]) -> list[list[int]]:
    """Token indices per line of at most _LINE_CHARS characters."""
    lines: list[list[int]] = [[]]
    used = 0
    for index, token in enumerate(tokens):
        width = len(token) + 1
        if lines[-1] and used + width > _LINE_CHARS:
            lines.append([])
            used = 0
        lines[-1].append(index)
        used += width
    return lines


def write_words_png(items: Sequence[ExplainedDocument], path: Path, title: str) -> None:
    """The documents of :func:`write_words_html` as one PNG (monospace, each word on its shade)."""
    from matplotlib.figure import Figure

    layouts = [_lines(item.tokens) for item in items]
    rows = sum(len(lines) + 2 for lines in layouts) + 1
    # 100 monospace characters at 8 pt are about 6.7 inches wide: one x unit per character.
    fig = Figure(figsize=(6.9, max(2.0, 0.18 * rows)))
    ax = fig.add_axes((0.01, 0.0, 0.98, 1.0))
    ax.set_xlim(0, _LINE_CHARS)
    ax.set_ylim(rows, 0)
    ax.axis("off")
    ax.text(0, 0.8, title, fontsize=11, weight="bold")
    y = 2.0
    for item, lines in zip(items, layouts, strict=True):
        colour = {True: "darkgreen", False: "darkred", None: "black"}[item.right]
        ax.text(0, y, _caption(item), fontsize=8, color=colour)
        y += 1.0
        scale = float(np.abs(item.importance).max(initial=0.0))
        for line in lines:
            x = 0.0
            for index in line:
                token = item.tokens[index]
                shade = _rgba(float(item.importance[index]), scale)
                # White letters on the darkest shades; grey marks words outside the vocabulary.
                ink = "white" if shade[3] > 0.55 else ("black" if item.known[index] else "grey")
                ax.text(
                    x, y, token, fontsize=8, family="monospace", va="center",
                    color=ink, style="normal" if item.known[index] else "italic",
                    bbox={"facecolor": shade, "edgecolor": "none", "pad": 1.0},
                )
                x += len(token) + 1
            y += 1.0
        y += 1.0
    save_png(fig, path)
