"""Tables a person reads: the same rows as CSV (for tools) and as a Markdown table (for eyes)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlpipe.core.artifacts import write_csv

# Cells longer than this are cut in the Markdown table (the CSV keeps them whole).
MARKDOWN_CELL_CHARS = 240


def write_table(rows: Sequence[dict[str, Any]], columns: Sequence[str], csv_path: Path, markdown_path: Path, title: str) -> None:
    """``rows`` as ``csv_path`` (every cell whole) and as a Markdown table under ``title`` (long cells cut)."""
    write_csv(csv_path, columns, rows)
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_markdown_cell(row[column]) for column in columns) + " |" for row in rows]
    markdown_path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _markdown_cell(value: Any) -> str:
    text = f"{value:.4f}" if isinstance(value, float) else str(value)
    if len(text) > MARKDOWN_CELL_CHARS:
        text = text[: MARKDOWN_CELL_CHARS - 1] + "…"
    # A pipe would end the cell and a newline the row; HTML-sensitive characters stay literal.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")
