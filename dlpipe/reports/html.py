"""HTML building blocks for the report: escaped text, tables, embedded pictures and the page shell.

A page is self-contained: no script, and no stylesheet, font or picture fetched from anywhere.
Pictures travel inside it as data URIs, so a page opened offline, mailed or moved shows everything.
Every value that came from a file is escaped; only the markup built here is trusted.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dlpipe.core.errors import ArtifactError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Table cells longer than this are cut (the CSV beside the picture keeps them whole).
CELL_CHARS = 300

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #1d232b; background: #f6f7f9; }
header { background: #1d2b3a; color: #fff; padding: 18px 32px; }
header a { color: #cfe3ff; }
header h1 { margin: 0 0 4px; font-size: 26px; }
header p { margin: 0; opacity: .85; }
nav { padding: 8px 32px; background: #e6ebf1; position: sticky; top: 0; }
nav a { margin-right: 14px; color: #1d4f91; text-decoration: none; }
main { padding: 8px 32px 48px; max-width: 1400px; }
section { background: #fff; border-radius: 8px; padding: 12px 20px 16px; margin: 18px 0; box-shadow: 0 1px 3px #0002;
          scroll-margin-top: 44px; }
h2 { margin: 6px 0 10px; font-size: 21px; }
h3 { margin: 14px 0 6px; font-size: 16px; color: #3a4a5c; }
table { border-collapse: collapse; margin: 6px 0 10px; font-size: 13.5px; }
th, td { border: 1px solid #d5dbe3; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eef2f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .hash { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; word-break: break-all; }
figure { display: inline-block; margin: 8px 16px 8px 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #d5dbe3; }
figcaption { font-size: 12.5px; color: #58677a; }
.callout { background: #eef6ee; border-left: 4px solid #3c8d40; padding: 6px 12px; margin: 8px 0; }
.missing { color: #8a6d3b; }
details { margin: 6px 0; }
summary { cursor: pointer; color: #1d4f91; }
"""


class Markup(str):
    """HTML built by this module or the report's own code: placed in a table cell as it is."""


def escape(value: Any) -> str:
    """``value`` as text safe inside HTML."""
    return html.escape(str(value), quote=True)


def format_value(value: Any) -> str:
    """A metric or record value as short text: floats to 4 significant digits, lists joined."""
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "–"}[value]
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, list | tuple):
        return ", ".join(format_value(item) for item in value)
    text = str(value)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def table(rows: Iterable[Sequence[Any]], header: Sequence[str] = ()) -> str:
    """An HTML table of ``rows`` (each cell formatted and escaped); numbers align right."""
    head = "<tr>" + "".join(f"<th>{escape(name)}</th>" for name in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def key_values(mapping: Mapping[str, Any], header: Sequence[str] = ("", "")) -> str:
    """A two-column table: one row per key."""
    return table(mapping.items(), header)


def picture(path: Path, caption: str) -> str:
    """A PNG embedded in the page as a data URI, with a caption.

    Raises:
        ArtifactError: the file is not a PNG (a damaged or foreign file among a stage's pictures).
    """
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ArtifactError(f"{path} is not a PNG image", "rerun the stage that wrote it, then `dlpipe report`")
    encoded = base64.b64encode(data).decode("ascii")
    return f'<figure><img src="data:image/png;base64,{encoded}" alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'


def link(href: str, text: str) -> Markup:
    """A relative link, escaped."""
    return Markup(f'<a href="{escape(href)}">{escape(text)}</a>')


def page(title: str, subtitle: str, nav: Sequence[tuple[str, str]], body: str, up: str = "") -> str:
    """A whole HTML document: header, a navigation bar of ``(anchor, label)`` links, and ``body``.

    ``up`` is a relative link back to the index page, when there is one.
    """
    links = "".join(f'<a href="#{escape(anchor)}">{escape(label)}</a>' for anchor, label in nav)
    back = f' · <a href="{escape(up)}">all datasets</a>' if up else ""
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}{back}</p></header>"
        + (f"<nav>{links}</nav>" if links else "")
        + f"<main>{body}</main></body></html>\n"
    )


def _cell(value: Any) -> str:
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    return f'<td class="num">{escape(format_value(value))}</td>' if numeric else f"<td>{escape(format_value(value))}</td>"
