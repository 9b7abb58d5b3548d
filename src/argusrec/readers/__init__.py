"""Readers: every supported log format -> the canonical EventLog (argusrec.events).

:func:`read_events` is the one entry point: it finds the format (or detects it from the path,
``format="auto"``) and hands the path to the reader of that format, which checks the schema at
read time (missing/extra columns, wrong types, empty files) and returns a lazy
:class:`~argusrec.events.EventLog`. Checks that need the data itself are left to whoever streams
the frame (``prepare``): :func:`argusrec.readers.values.check_values` on the whole log (value
ranges, event types, timestamp units), :func:`check_events` and :func:`find_duplicates` on each
collected chunk; the ``_source``/``_row`` columns let their errors name the file and row. A read
that fails inside polars (a damaged page, invalid UTF-8, a ragged row) is located by
:mod:`argusrec.readers.failures`, which also keeps users' values out of messages beyond 200
characters.
An in-memory DataFrame or LazyFrame is read like a "table" file (readers.table.read_frame).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from argusrec.errors import DataError
from argusrec.events import (
    EVENT_TYPE, ITEM, ROW, SOURCE, TIMESTAMP, USER, EventLog, check_path,
)
from argusrec.readers.failures import shown
from argusrec.readers import lines, movielens, table, yambda  # the format readers
from argusrec.readers.table import FRAME, is_frame

FORMATS: dict[str, str] = {
    "yambda": "Yambda Parquet: multi_event or listens/likes/dislikes/unlikes/undislikes, flat or "
              "sequential, files or directories of parts, plus embeddings and artist/album maps",
    "movielens": "MovieLens ratings.dat, UserID::MovieID::Rating::Timestamp",
    "recbole": "RecBole atomic .inter TSV with a name:type header "
               "(user_id:token item_id:token [rating:float] [timestamp:float])",
    "sasrec": "SASRec text, one 'user item' line per event, in time order within each user",
    "s3rec": "S3-Rec/ICLRec text, one 'user item item ...' line per user, in time order",
    "table": "any Parquet/CSV file or directory of them, with a column mapping "
             "(user, item, [timestamp], [event_type], feedback and context columns); or an "
             "in-memory polars/pandas DataFrame, whose canonically named columns need no mapping",
}


def source_name(source: Any) -> str:
    """How a source is recorded in metadata: the resolved path, or "<DataFrame>" for a frame."""
    return FRAME if is_frame(source) else str(Path(source).resolve())


def detect_format(path: Path, columns: Mapping[str, str] | None = None) -> str:
    """The format of an existing ``path`` (a key of :data:`FORMATS`), guessed from its names and
    first lines; a column mapping means 'table'."""
    if columns:
        return "table"
    if yambda.is_yambda(path):
        return "yambda"
    if path.is_dir():
        if (path / "ratings.dat").is_file():
            return "movielens"
        if len(list(path.glob("*.inter"))) == 1:
            return "recbole"
    elif path.suffix == ".inter":
        return "recbole"
    elif path.name == "ratings.dat" or movielens.looks_like_movielens(path):
        return "movielens"
    elif path.suffix in ("", ".txt") and (kind := lines.sniff(path)):
        return kind
    hint = (" (a Parquet/CSV table needs a column mapping)"
            if path.suffix in (".parquet", ".csv", ".tsv") or path.is_dir() else "")
    raise DataError(
        "cannot detect the format" + hint, path=path,
        fix="pass format= one of " + ", ".join(FORMATS)
            + ", and for 'table' a column mapping (user=..., item=...)")


def read_events(source: str | Path | Any, format: str = "auto", *,
                columns: Mapping[str, str] | None = None, sep: str | None = None,
                ignore_extra: bool = False) -> EventLog:
    """Read an event log in any supported format as a lazy canonical :class:`EventLog`.

    Args:
        source: a file or directory (see :data:`FORMATS` for what each format expects), or an
            in-memory polars DataFrame / LazyFrame or pandas DataFrame, read as a "table"
            (:func:`argusrec.readers.table.read_frame`; without ``columns`` its columns named
            user, item, timestamp, event_type, ... map to themselves).
        format: a key of :data:`FORMATS`, or "auto" to detect it from the path ("table" for a
            frame).
        columns: canonical name -> source column, for the "table" format.
        sep: field separator for CSV tables (default ',') and RecBole files (default tab).
        ignore_extra: drop columns the format or mapping does not know instead of failing
            (table and recbole).

    Raises:
        DataError: the path is missing, the format unknown, or the schema wrong.
    """
    frame = is_frame(source)
    if not frame and not isinstance(source, (str, os.PathLike)):
        raise DataError(f"expected a path or a DataFrame, got {type(source).__name__}",
                        fix="pass a file or directory path, or a polars/pandas DataFrame")
    p = FRAME if frame else check_path(source, "event log")
    if format != "auto" and format not in FORMATS:
        raise DataError(
            f"unknown format '{format}'", path=p,
            fix="use auto or one of: " + "; ".join(f"{k} ({v})" for k, v in FORMATS.items()))
    if frame:
        if format not in ("auto", "table"):
            raise DataError(f"a DataFrame is read with the table format, not '{format}'",
                            path=p, fix="pass format='table' (or 'auto'), or write the frame "
                            "to a file in that format and pass its path")
        if sep is not None:
            raise DataError("sep only applies to CSV files, not to a DataFrame", path=p,
                            fix="drop sep")
        return table.read_frame(source, columns, ignore_extra=ignore_extra)
    if format == "auto":
        format = detect_format(p, columns)
    if columns and format != "table":
        raise DataError(f"a column mapping only applies to format 'table', not '{format}'",
                        path=p, fix="drop the mapping or use format='table'")
    if format == "table":
        if not columns:
            raise DataError("the table format needs a column mapping", path=p,
                            fix="pass columns={'user': ..., 'item': ..., 'timestamp': ...}")
        return table.read_table(p, columns, sep=sep, ignore_extra=ignore_extra)
    if format == "yambda":
        return yambda.read_yambda(p)
    if format == "movielens":
        return movielens.read_movielens(p)
    if format == "recbole":
        return movielens.read_recbole(p, sep=sep, ignore_extra=ignore_extra)
    if format == "sasrec":
        return lines.read_sasrec(p)
    return lines.read_s3rec(p)


def _at(df: pl.DataFrame, log: EventLog, mask: pl.Series) -> tuple[int, str, int]:
    """(index in df, source path, row) of the first row where ``mask`` is true."""
    index = int(mask.arg_max())
    return index, log.sources[int(df[SOURCE][index])], int(df[ROW][index])


def check_events(df: pl.DataFrame, log: EventLog) -> None:
    """Raise a DataError for the first null key or negative timestamp in a chunk of ``log``.

    ``df`` is a collected chunk of ``log.frame`` (any number of rows); the checks are whole-
    column operations, so a 5M-row chunk costs milliseconds when it is clean.
    """
    for column in (USER, ITEM, TIMESTAMP, EVENT_TYPE):
        if df[column].null_count():
            index, path, row = _at(df, log, df[column].is_null())
            raise DataError(
                "missing value (null)", path=path, column=column, row=row,
                fix=f"fill in '{column}' or drop that row from the input")
    if df.height and df[TIMESTAMP].min() < 0:
        index, path, row = _at(df, log, df[TIMESTAMP] < 0)
        raise DataError(
            f"negative timestamp {df[TIMESTAMP][index]}", path=path, column=TIMESTAMP, row=row,
            fix="timestamps must be seconds >= 0 (shift them so the earliest is 0)")


def find_duplicates(df: pl.DataFrame, log: EventLog) -> pl.DataFrame:
    """The exact repeats in a chunk: events equal to an earlier one in every key.

    Keys are user, item, timestamp, event_type and all context and feedback columns (nulls
    compare equal: both say "signal absent"). Each returned row is a repeat, with the key
    columns, its ``_source``/``_row``, and ``_first_source``/``_first_row`` of the event it
    repeats (the earliest by input order); the first occurrences themselves are not returned,
    so dropping the returned rows keeps one of each. Empty when there are none.
    """
    keys = [USER, ITEM, TIMESTAMP, EVENT_TYPE, *log.context, *log.feedback]
    frame = df.select(*keys, SOURCE, ROW)
    dup = frame.select(keys).is_duplicated()
    if not dup.any():
        return frame.clear().with_columns(pl.col(SOURCE).alias("_first_source"),
                                          pl.col(ROW).alias("_first_row"))
    # Only the (few) rows that have a twin are grouped, so a clean chunk costs one hash pass.
    twins = frame.filter(dup).sort(SOURCE, ROW)
    return (twins.with_columns(
                pl.col(SOURCE).first().over(keys).alias("_first_source"),
                pl.col(ROW).first().over(keys).alias("_first_row"),
                pl.int_range(pl.len()).over(keys).alias("_repeat"))
            .filter(pl.col("_repeat") > 0).drop("_repeat"))


def duplicate_error(duplicates: pl.DataFrame, log: EventLog) -> DataError:
    """A DataError about the first row of :func:`find_duplicates`' answer, naming both rows."""
    first = duplicates.row(0, named=True)
    original = log.sources[int(first["_first_source"])]
    return DataError(
        f"{duplicates.height:,} exact duplicate event(s); the first repeats row "
        f"{first['_first_row']} of {original} (user {shown(first[USER])}, item "
        f"{shown(first[ITEM])}, "
        f"timestamp {first[TIMESTAMP]}, {first[EVENT_TYPE]})",
        path=log.sources[int(first[SOURCE])], row=int(first[ROW]),
        fix="pass --on-duplicate drop to drop the repeats, or --on-duplicate keep to keep them")


__all__ = ["FORMATS", "check_events", "detect_format", "duplicate_error", "find_duplicates",
           "is_frame", "read_events", "source_name"]
