"""A CSV table held column by column, compactly: how every stage keeps a manifest of millions of rows.

A list of ``csv.DictReader`` dicts costs about a kilobyte per manifest row (a dict and a dozen
string objects). :class:`Table` keeps each column either as small integer codes into its few
distinct values (label, split, format, width ...) or, once a column has many distinct values (path,
sha256, size), as one UTF-8 byte string with an offset per row: a few bytes per cell beyond the
text itself. Rows still read as dicts (``table[i]["path"]``, ``for row in table``), built when asked
for; :meth:`Table.column` reads one column without building rows.
"""

from __future__ import annotations

import csv
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import overload

# A column keeps codes while it has at most this many distinct values, then turns into bytes + offsets.
MAX_CODED_VALUES = 4096


class _Column:
    """One column's cells: codes into its distinct values, or (many distinct values) bytes with offsets."""

    def __init__(self) -> None:
        self.codes: array | None = array("I")
        self.values: list[str] = []
        self.index: dict[str, int] = {}
        self.text = bytearray()
        self.offsets = array("Q", [0])

    def append(self, value: str) -> None:
        if self.codes is None:
            self._append_text(value)
            return
        code = self.index.get(value)
        if code is None:
            if len(self.values) >= MAX_CODED_VALUES:
                self._to_text()
                self._append_text(value)
                return
            code = self.index[value] = len(self.values)
            self.values.append(value)
        self.codes.append(code)

    def _append_text(self, value: str) -> None:
        self.text += value.encode("utf-8")
        self.offsets.append(len(self.text))

    def _to_text(self) -> None:
        assert self.codes is not None
        encoded = [value.encode("utf-8") for value in self.values]
        for code in self.codes:
            self.text += encoded[code]
            self.offsets.append(len(self.text))
        self.codes, self.values, self.index = None, [], {}

    def __getitem__(self, row: int) -> str:
        if self.codes is not None:
            return self.values[self.codes[row]]
        return self.text[self.offsets[row] : self.offsets[row + 1]].decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        if self.codes is not None:
            values = self.values
            return (values[code] for code in self.codes)
        return (self[row] for row in range(len(self.offsets) - 1))


class Table(Sequence[dict[str, str]]):
    """Rows of a CSV table, read-only, held column by column (see the module docstring)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        self._cells = {name: _Column() for name in self.columns}
        self._count = 0

    @classmethod
    def read_csv(cls, path: Path) -> Table:
        """The rows of a UTF-8 CSV file with a header line, streamed (never all as dicts)."""
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            table = cls(next(reader, []))
            for record in reader:
                # csv.DictReader's rules: a short record leaves "" (DictReader: None) cells, extra cells are dropped
                table.append(record + [""] * (len(table.columns) - len(record)))
        return table

    def append(self, record: Sequence[str]) -> None:
        """Add one row, its cells in column order."""
        for name, value in zip(self.columns, record, strict=False):
            self._cells[name].append(value)
        self._count += 1

    def column(self, name: str) -> Iterator[str]:
        """One column's values in row order (a ``KeyError`` for a column the table lacks)."""
        return iter(self._cells[name])

    def __len__(self) -> int:
        return self._count

    @overload
    def __getitem__(self, index: int) -> dict[str, str]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, str]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, str] | list[dict[str, str]]:
        if isinstance(index, slice):
            return [self[row] for row in range(*index.indices(self._count))]
        if not -self._count <= index < self._count:
            raise IndexError(f"row {index} of a table of {self._count}")
        row = index % self._count
        return {name: cells[row] for name, cells in self._cells.items()}

    def __iter__(self) -> Iterator[dict[str, str]]:
        names = self.columns
        for values in zip(*(self._cells[name] for name in names), strict=True):
            yield dict(zip(names, values, strict=True))
