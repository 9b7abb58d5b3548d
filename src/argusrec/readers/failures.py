"""A read that failed inside polars or pyarrow, turned into a DataError naming file and row.

polars reports a damaged Parquet page, invalid UTF-8, a CSV row with too many fields or list
columns of different lengths without saying where they are, and sometimes with a user's whole
value in the text (a 10 MB id makes a 10 MB message). :func:`read_failure` looks again, file by
file, with a slow but exact reader of its own (pyarrow row group by row group, Python's csv
module record by record) to find the first file and row at fault; the search runs only after a
failure, so clean input pays nothing. :func:`shown` is how every error message quotes a user's
value: at most :data:`VALUE_LIMIT` characters of it.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from argusrec.errors import DataError

# Characters of a user's value that an error message may quote.
VALUE_LIMIT = 200

# What a failed read raises: polars errors, a panic inside polars (a BaseException, not an
# Exception), pyarrow errors and the OS errors of a damaged or vanished file.
READ_ERRORS = (pl.exceptions.PolarsError, pl.exceptions.PanicException, pa.ArrowException,
               OSError)

_UNDECODABLE = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8 (surrogateescape)


def shown(value: Any, limit: int = VALUE_LIMIT) -> str:
    """``value`` quoted for an error message, cut to ``limit`` characters with its length."""
    if isinstance(value, (str, bytes)) and len(value) > limit:
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}... ({len(value):,} {unit})"
    text = repr(value) if isinstance(value, (str, bytes)) else str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def first_line(error: BaseException) -> str:
    """The first line of an error's text, cut to :data:`VALUE_LIMIT` characters."""
    lines = str(error).strip().splitlines()
    text = lines[0] if lines else type(error).__name__
    return text if len(text) <= VALUE_LIMIT else text[:VALUE_LIMIT] + "..."


@dataclass(frozen=True)
class TextLayout:
    """How a delimited text source is split, for finding its bad row.

    ``fields`` is the number of fields a record must have (None: the header's count), and
    ``header`` whether the first record is a header (not counted as a data row).
    """

    sep: str = ","
    quote: str | None = '"'
    header: bool = True
    fields: int | None = None
    describe: str = ""  # the expected layout in words, for the message
    doubled: bool = False  # the separator is written twice ('::'): the fields between are empty


def layout_of(path: str | Path, sep: str | None = None) -> TextLayout | None:
    """The text layout of a source by its name (None for Parquet and in-memory frames)."""
    path = Path(path)
    if path.suffix == ".parquet" or not path.is_file():
        return None
    if path.suffix == ".dat":  # MovieLens: '::' read as ':' with empty fields between
        return TextLayout(sep=":", quote=None, header=False, fields=7,
                          describe="UserID::MovieID::Rating::Timestamp", doubled=True)
    tab = path.suffix in (".tsv", ".inter")
    return TextLayout(sep=sep or ("\t" if tab else ","), quote=None if
                      path.suffix == ".inter" else '"')


def _text_problem(path: Path, layout: TextLayout) -> tuple[int | None, str, str] | None:
    """(data row, problem, fix) of the first undecodable or over-long record, or None."""
    quoting = csv.QUOTE_NONE if layout.quote is None else csv.QUOTE_MINIMAL
    csv.field_size_limit(sys.maxsize)  # one 10 MB field is the user's problem, not csv's
    expected = layout.fields
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=layout.sep, quotechar=layout.quote or '"',
                            quoting=quoting)
        for index, record in enumerate(reader):
            header = layout.header and index == 0
            row = None if header else index + (0 if layout.header else 1)
            for position, value in enumerate(record):
                hit = _UNDECODABLE.search(value)
                if hit:
                    good = value[:hit.start()]
                    field = position // 2 + 1 if layout.doubled else position + 1
                    where = f"after {shown(good, 60)}" if good else "at its start"
                    return (row, f"invalid UTF-8 in {'the header, ' if header else ''}field "
                            f"{field}, {where}",
                            "save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or "
                            "fix that row")
            if header:
                expected = expected or len(record)
                continue
            if expected is not None and len(record) > expected:
                what = f" ({layout.describe})" if layout.describe else ""
                sep = {"\t": "tab", ",": "comma"}.get(layout.sep, repr(layout.sep))
                found, wanted = len(record), expected
                if layout.doubled:
                    sep, found, wanted = repr(layout.sep * 2), (found + 1) // 2, (wanted + 1) // 2
                quoted = " (a separator inside a value must be quoted)" if layout.quote else ""
                return (row, f"the row has {found} {sep}-separated fields, expected "
                        f"{wanted}{what}", f"fix that row{quoted}, or remove it")
    return None


def _parquet_problem(path: Path) -> tuple[int | None, str, str] | None:
    """(first row, problem, fix) of the first undecodable row group or ragged row, or None."""
    damaged = "the file is damaged: write or download it again, or remove it"
    try:
        parquet = pq.ParquetFile(path)
    except READ_ERRORS as err:
        return None, f"cannot read the Parquet footer ({first_line(err)})", damaged
    start = 1
    for group in range(parquet.num_row_groups):
        n = parquet.metadata.row_group(group).num_rows
        try:
            table = parquet.read_row_group(group)
        except READ_ERRORS as err:
            return (start, f"cannot decode row group {group} (rows {start:,}..{start + n - 1:,}):"
                    f" {first_line(err)}", damaged)
        ragged = _ragged_row(table)
        if ragged is not None:
            index, lengths, key = ragged
            return (start + index, "the list columns of one row have different lengths ("
                    + ", ".join(f"{c}: {k}" for c, k in lengths.items()) + f"){key}",
                    "give every list of a row one entry per event (the sequential layout)")
        start += n
    return None


def _ragged_row(table: pa.Table) -> tuple[int, dict[str, int], str] | None:
    """(index, list lengths, ' for uid ...') of the first row whose lists differ in length."""
    lists = [n for n in table.column_names if pa.types.is_list(table.schema.field(n).type)
             or pa.types.is_large_list(table.schema.field(n).type)]
    if len(lists) < 2:
        return None
    lengths = {n: pc.fill_null(pc.list_value_length(table[n]), 0) for n in lists}
    first = lengths[lists[0]]
    differs = None
    for name in lists[1:]:
        d = pc.not_equal(first, lengths[name])
        differs = d if differs is None else pc.or_(differs, d)
    if not pc.any(differs).as_py():
        return None
    index = int(pc.index(differs, True).as_py())
    flat = [n for n in table.column_names if n not in lists]
    key = f" for {flat[0]} {shown(table[flat[0]][index].as_py())}" if flat else ""
    return index, {n: int(lengths[n][index].as_py()) for n in lists}, key


def read_failure(error: BaseException, sources: Sequence[str | Path], *,
                 sep: str | None = None, layout: TextLayout | None = None) -> DataError:
    """A DataError for a read of ``sources`` that raised ``error``: the first file and row a
    second, exact look finds at fault, else the error's first line and the files."""
    for source in sources:
        path = Path(source)
        if not path.is_file():
            continue
        try:
            if path.suffix == ".parquet":
                found = _parquet_problem(path)
            else:
                text = layout or layout_of(path, sep)
                found = _text_problem(path, text) if text is not None else None
        except (*READ_ERRORS, csv.Error, UnicodeError):
            found = None  # the second look failed too: report the first error as it is
        if found is not None:
            row, problem, fix = found
            return DataError(problem, path=path, row=row, fix=fix)
    names = [str(s) for s in sources[:3]]
    return DataError(f"could not read the input: {first_line(error)}",
                     path=", ".join(names) + (" ..." if len(sources) > 3 else ""),
                     fix="check that every file is complete and every row has the format's "
                         "columns and types")


@contextmanager
def reading(sources: Sequence[str | Path], *, sep: str | None = None,
            layout: TextLayout | None = None) -> Iterator[None]:
    """Run a read of ``sources``; a polars/pyarrow failure becomes :func:`read_failure`'s
    DataError (a DataError raised inside passes unchanged)."""
    try:
        yield
    except READ_ERRORS as err:
        raise read_failure(err, sources, sep=sep, layout=layout) from None
