"""The targets CSV of a regression or localisation dataset: reading, validating, stratifying.

A dataset with ``task`` other than classification has a CSV source: a ``path`` column (relative
to the CSV's folder), optionally a ``label`` column (kept for figures coloured by class), and the
target columns that ``datasets.<name>.targets`` names. Coordinates are pixels of the image as
every viewer shows it: EXIF orientation applied, x to the right and y down from the top-left
corner, the same frame in which ingest records width and height. Each bad row gets a rejection
reason instead of failing the whole dataset.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dlpipe.core.errors import InputDataError

# Suffixes of the files a targets CSV's folder is searched for, to report images that have no row.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})
# Columns the manifest itself writes; a target column cannot share a name with them.
RESERVED_COLUMNS = frozenset({"path", "label", "split", "sha256", "size_bytes", "width", "height", "format", "mode", "conversion"})
# Most strata the split is stratified into; fewer for small datasets, so each bin fills every split.
_MAX_BINS = 10
_ITEMS_PER_BIN = 20


@dataclass(frozen=True)
class TargetRow:
    """One CSV row: where its image is, its label (may be empty) and its target values, or why it is rejected."""

    line: int
    path: str
    label: str
    values: tuple[float, ...]
    reason: str = ""
    detail: str = ""


def read_targets_csv(table: Path, columns: Sequence[str], task: str) -> list[TargetRow]:
    """Every data row of ``table``, values parsed and checked on their own (not yet against the image).

    Rejection reasons: ``missing_target`` (an empty cell), ``non_numeric_target``, ``non_finite_target``,
    ``empty_box`` (x_max <= x_min or y_max <= y_min), ``negative_coordinate``, ``duplicate_row`` (a second row
    for the same path).

    Raises:
        InputDataError: the file cannot be read, has no ``path`` column, or lacks a target column
            (the columns found are listed).
    """
    try:
        with open(table, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or ())
            records = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputDataError(f"{table}: cannot read the targets CSV ({exc})", "save it as UTF-8 CSV with a header row") from None
    missing = [name for name in ("path", *columns) if name not in header]
    if missing:
        raise InputDataError(
            f"{table}: missing column(s) {', '.join(missing)}; found {', '.join(header) or 'no header'}",
            "name the target columns in datasets.<name>.targets (columns, or points for keypoints) as the CSV spells them",
        )
    clash = sorted(set(columns) & (RESERVED_COLUMNS - {"path"}))
    if clash:
        raise InputDataError(f"{table}: target column(s) {', '.join(clash)} clash with manifest columns", "rename them in the CSV")
    rows, seen = [], {}
    for line, record in enumerate(records, start=2):
        path = (record.get("path") or "").strip()
        label = (record.get("label") or "").strip()
        if not path:
            rows.append(TargetRow(line, f"{table.name}:{line}", label, (), "missing_path", "the path cell is empty"))
            continue
        row = _parsed(line, path, label, [record.get(name) for name in columns], columns, task)
        if not row.reason and path in seen:
            row = TargetRow(line, path, label, row.values, "duplicate_row", f"a second row for {path} (line {seen[path]} is kept)")
        seen.setdefault(path, line)
        rows.append(row)
    return rows


def _parsed(line: int, path: str, label: str, cells: list[str | None], columns: Sequence[str], task: str) -> TargetRow:
    values = []
    for name, cell in zip(columns, cells, strict=True):
        text = (cell or "").strip()
        if not text:
            return TargetRow(line, path, label, (), "missing_target", f"line {line}: column {name} is empty")
        try:
            value = float(text)
        except ValueError:
            return TargetRow(line, path, label, (), "non_numeric_target", f"line {line}: column {name} is {text!r}, not a number")
        if not math.isfinite(value):
            return TargetRow(line, path, label, (), "non_finite_target", f"line {line}: column {name} is {text}")
        values.append(value)
    if task in ("bbox", "regions", "keypoints") and min(values) < 0:
        name = columns[int(np.argmin(values))]
        return TargetRow(line, path, label, (), "negative_coordinate", f"line {line}: column {name} is {min(values)} (pixels start at 0)")
    if task in ("bbox", "regions"):
        x_min, y_min, x_max, y_max = values
        if x_max <= x_min or y_max <= y_min:
            return TargetRow(
                line,
                path,
                label,
                (),
                "empty_box",
                f"line {line}: box ({x_min}, {y_min}, {x_max}, {y_max}) needs x_max > x_min and y_max > y_min",
            )
    return TargetRow(line, path, label, tuple(values))


def outside_image(values: Sequence[float], task: str, width: int, height: int, columns: Sequence[str]) -> str:
    """Why coordinates do not fit a ``width`` x ``height`` image ('' when they do, or for regression)."""
    if task == "regression":
        return ""
    for index, (name, value) in enumerate(zip(columns, values, strict=True)):
        limit = width if index % 2 == 0 else height  # x, y alternate for boxes and for points
        if value > limit:
            axis = "width" if index % 2 == 0 else "height"
            return f"column {name} = {value} lies outside the {width}x{height} px image ({axis} {limit}, after EXIF orientation)"
    return ""


def unlisted_images(folder: Path, listed: set[str]) -> list[str]:
    """Image files under ``folder`` (relative POSIX paths, sorted) that no CSV row names."""
    from dlpipe.data.files import visible_files

    found = (path.relative_to(folder).as_posix() for path in visible_files(folder) if path.suffix.lower() in IMAGE_SUFFIXES)
    return [relpath for relpath in found if relpath not in listed]


def strata(values: np.ndarray, task: str, sizes: np.ndarray) -> list[str]:
    """A quantile bin per item, for a split that spreads the range of the targets over train, val and test.

    The binned quantity: the first column (regression), the box's share of the image (bbox, regions)
    or the points' mean x as a share of the width (keypoints).
    """
    if task == "regression":
        scalar = values[:, 0]
    elif task in ("bbox", "regions"):
        scalar = (values[:, 2] - values[:, 0]) * (values[:, 3] - values[:, 1]) / (sizes[:, 0] * sizes[:, 1])
    else:
        scalar = values[:, 0::2].mean(axis=1) / sizes[:, 0]
    bins = max(1, min(_MAX_BINS, len(scalar) // _ITEMS_PER_BIN))
    edges = np.quantile(scalar, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else np.array([])
    return [f"bin{int(b)}" for b in np.searchsorted(edges, scalar, side="right")]
