"""The columnar table behind every manifest: reads like csv.DictReader, holds a fraction of its memory."""

from __future__ import annotations

import csv
import hashlib
import tracemalloc
from pathlib import Path

import pytest

from dlpipe.data import table as table_module
from dlpipe.data.table import Table


def manifest_csv(path: Path, count: int) -> Path:
    """A manifest-like CSV: unique paths, hashes and sizes; few labels, splits, sizes and formats."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "sha256", "size_bytes", "width", "height", "format", "mode", "conversion"])
        for i in range(count):
            label = ("circle", "square", "étoile")[i % 3]
            digest = hashlib.sha256(str(i).encode()).hexdigest()
            writer.writerow([f"{label}/{i:07d}.png", label, ("train", "val", "test")[i % 3], digest, 400 + i, 32, 32, "PNG", "RGB", ""])
    return path


def test_rows_read_as_csv_dictreader_reads_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_module, "MAX_CODED_VALUES", 5)  # paths and hashes turn into bytes after 5 rows
    path = manifest_csv(tmp_path / "m.csv", 50)
    with open(path, newline="", encoding="utf-8") as handle:
        expected = list(csv.DictReader(handle))
    table = Table.read_csv(path)
    assert len(table) == 50 and list(table) == expected
    assert table[7] == expected[7] and table[-1] == expected[-1] and table[10:13] == expected[10:13]
    assert list(table.column("label")) == [row["label"] for row in expected]
    assert list(table.column("sha256")) == [row["sha256"] for row in expected]
    with pytest.raises(IndexError):
        table[50]


def test_a_short_record_reads_as_empty_cells(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("a,b,c\n1,2\n4,5,6,7\n", encoding="utf-8")
    assert list(Table.read_csv(tmp_path / "t.csv")) == [{"a": "1", "b": "2", "c": ""}, {"a": "4", "b": "5", "c": "6"}]


def test_a_table_holds_a_fraction_of_the_memory_of_dict_rows(tmp_path: Path) -> None:
    path = manifest_csv(tmp_path / "m.csv", 20_000)
    tracemalloc.start()
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    as_dicts = tracemalloc.get_traced_memory()[0]
    del rows
    tracemalloc.stop()
    tracemalloc.start()
    table = Table.read_csv(path)
    as_table = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(table) == 20_000
    # The unique text (path 18 B, sha256 64 B, size 3-5 B) plus 8 B offsets is about 110 B a row; dicts cost about 1 KB.
    assert as_table / 20_000 < 200, f"{as_table / 20_000:.0f} bytes per row"
    assert as_table < as_dicts / 4, f"table {as_table} bytes, dicts {as_dicts} bytes"
