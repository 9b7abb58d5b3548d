"""Generic Parquet/CSV reader with a column mapping, and the type checks every reader shares.

Any table of events can be read once the user says which of its columns is the user, the item,
the timestamp and so on (DESIGN.md, "The data model": context, item and feedback per event).
The mapping is ``canonical name -> source column``; keys are ``user``, ``item``, ``timestamp``,
``event_type``, ``is_organic``, the feedback names of :data:`argusrec.events.FEEDBACK_KINDS`,
``track_length``, and ``context:NAME`` / ``feedback:NAME`` for any other signal.

An in-memory frame (polars DataFrame or LazyFrame, or a pandas DataFrame) is read the same way
by :func:`read_frame`, as one source named :data:`FRAME` whose rows are its 1-based positions.
Without a mapping, a frame's columns that already carry a canonical name (``user``, ``item``,
``timestamp``, ``event_type``, ``is_organic``, the feedback names, ``track_length``) map to
themselves; any other column needs a mapping or ``ignore_extra``, as in a file.

The fixed-schema readers (Yambda, MovieLens, RecBole) reuse the column *kinds* defined here:
:func:`check_column` rejects a column whose dtype cannot become its canonical dtype, naming the
first offending value and its row, and :func:`convert` is the matching cast. Only a column whose
values must be looked at (text that should be numbers, floats that should be integers) is
scanned, and only then; everything else is decided from the schema, so reading stays lazy.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from argusrec.errors import DataError
from argusrec.events import (
    EVENT_TYPE, EXTRA_COLUMNS, FEEDBACK_KINDS, IS_ORGANIC, ITEM, ROW, SOURCE, TIMESTAMP, USER,
    EventLog, ItemFeatures,
)

# What each kind of column accepts, in words for error messages. The canonical dtypes are
# Int64 for integer/timestamp, Int64, String or Binary for id, Float32 for number, Boolean for
# boolean, String for text, and Boolean/Int64/String (whichever fits) for context.
KINDS: dict[str, str] = {
    "integer": "an integer",
    "id": "an integer, a text or a binary id",
    "timestamp": "an integer or float number of seconds (or a date/datetime)",
    "number": "a number",
    "boolean": "a boolean or 0/1 integer",
    "text": "text",
    "context": "a boolean, an integer or text",
}

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")

# CSV types are inferred from this many rows; a column that turns to text later than this
# fails inside polars at collect time instead of here.
CSV_INFER_ROWS = 10_000

# The source name of an in-memory frame, in EventLog.sources and in error messages.
FRAME = "<DataFrame>"


def is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))


def _plan(dtype: pl.DataType, kind: str) -> str:
    """'ok' (decided by the dtype), 'scan' (the values decide) or 'bad' for a column."""
    integer, floating = dtype.is_integer(), dtype.is_float()
    if kind in ("integer", "id"):
        if integer or (kind == "id" and (is_text(dtype) or dtype == pl.Binary)):
            return "ok"
        return "scan" if floating or dtype == pl.String else "bad"
    if kind == "timestamp":
        if integer or floating or dtype in (pl.Date, pl.Datetime):
            return "ok"
        return "scan" if dtype == pl.String else "bad"
    if kind == "number":
        if integer or floating or dtype == pl.Boolean:
            return "ok"
        return "scan" if dtype == pl.String else "bad"
    if kind == "boolean":
        return "ok" if integer or dtype == pl.Boolean else "bad"
    if kind == "text":
        return "ok" if is_text(dtype) else "bad"
    if kind == "context":
        return "ok" if integer or dtype == pl.Boolean or is_text(dtype) else "bad"
    raise ValueError(f"unknown column kind {kind!r}")


def _offending(column: str, dtype: pl.DataType, kind: str) -> pl.Expr:
    """True on the rows whose value cannot become ``kind`` (for a 'scan' or 'bad' plan)."""
    col = pl.col(column)
    if _plan(dtype, kind) == "bad":
        return col.is_not_null()
    if dtype.is_float():
        return col.is_not_null() & (col != col.floor())
    target = pl.Int64 if kind in ("integer", "id") else pl.Float64
    return col.is_not_null() & col.cast(target, strict=False).is_null()


def check_column(lf: pl.LazyFrame, column: str, dtype: pl.DataType, kind: str,
                 path: str | Path, row_column: str | None = None) -> None:
    """Raise a DataError unless ``column`` (of ``dtype``) can become the canonical ``kind``.

    ``row_column`` names a 1-based row number already in ``lf``; without it rows are counted
    here. The column is read only when its dtype alone cannot decide.
    """
    plan = _plan(dtype, kind)
    if plan == "ok":
        return
    if row_column is None:
        lf, row_column = lf.with_row_index("_check_row", offset=1), "_check_row"
    hit = (lf.filter(_offending(column, dtype, kind)).select(row_column, column)
           .head(1).collect())
    if plan == "scan" and hit.height == 0:
        return  # e.g. text that holds only integers: convert() casts it
    value = hit[column][0] if hit.height else None
    row = int(hit[row_column][0]) if hit.height else None
    found = f"found {value!r}" if hit.height else "the column is empty"
    raise DataError(
        f"expected {KINDS[kind]}, got dtype {dtype}; {found}",
        path=path, column=column, row=row,
        fix=f"make '{column}' hold {KINDS[kind]} (or fix the values in that row)",
    )


def convert(column: str, dtype: pl.DataType, kind: str) -> pl.Expr:
    """The cast of a column that passed :func:`check_column` to its canonical dtype."""
    col = pl.col(column)
    if kind in ("integer", "id"):
        if kind == "id" and is_text(dtype):
            return col.cast(pl.String)
        if kind == "id" and dtype == pl.Binary:
            return col  # raw bytes stay bytes: decoding could merge or reject ids
        return col.cast(pl.Int64, strict=False) if dtype == pl.String else col.cast(pl.Int64)
    if kind == "timestamp":
        if dtype in (pl.Date, pl.Datetime):
            return col.dt.epoch("s")
        if dtype == pl.String:
            col = col.cast(pl.Float64, strict=False)
        if dtype == pl.String or dtype.is_float():
            return col.floor().cast(pl.Int64)
        return col.cast(pl.Int64)
    if kind == "number":
        return col.cast(pl.Float64, strict=False).cast(pl.Float32)
    if kind == "boolean":
        return col.cast(pl.Boolean)
    if kind == "text":
        return col.cast(pl.String)
    if kind == "context":
        if dtype == pl.Boolean:
            return col
        return col.cast(pl.Int64) if dtype.is_integer() else col.cast(pl.String)
    raise ValueError(f"unknown column kind {kind!r}")


def no_events(path: str | Path) -> DataError:
    if str(path) == FRAME:
        return DataError("no events (the frame has no rows)", path=path,
                         fix="pass a frame with at least one event")
    return DataError("no events (the file is empty or has only a header)", path=path,
                     fix="point at a file with at least one event")


def has_rows(lf: pl.LazyFrame) -> bool:
    """Whether a scan yields any row; reads at most one (Parquet answers from its footer)."""
    return lf.head(1).collect().height > 0


def tag_rows(lf: pl.LazyFrame, source: int) -> pl.LazyFrame:
    """Add ``_source`` and the 1-based ``_row`` to a frame that still has the file's row order."""
    return (lf.with_row_index(ROW, offset=1)
            .with_columns(pl.col(ROW).cast(pl.Int64),
                          pl.lit(source, dtype=pl.UInt16).alias(SOURCE)))


def positions() -> pl.Expr:
    """0-based position of each event within its user, in input order: the timestamp of logs
    that have none."""
    return pl.int_range(pl.len(), dtype=pl.Int64).over(USER)


def table_files(path: Path) -> list[Path]:
    """The Parquet/CSV files a table path stands for: itself, or a directory's files by name."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in TABLE_SUFFIXES)
    if not files:
        raise DataError("directory holds no .parquet, .csv or .tsv files", path=path,
                        fix="point at a Parquet/CSV file or a directory of them")
    return files


def scan_table(path: Path, sep: str | None = None) -> pl.LazyFrame:
    """Lazily scan one Parquet or CSV file; a 0-byte file is reported as 'no events'."""
    if path.stat().st_size == 0:
        raise no_events(path)
    try:
        if path.suffix == ".parquet":
            lf = pl.scan_parquet(path)
        else:
            lf = pl.scan_csv(path, separator=sep or ("\t" if path.suffix == ".tsv" else ","),
                             infer_schema_length=CSV_INFER_ROWS)
        lf.collect_schema()
    except pl.exceptions.NoDataError:
        raise no_events(path) from None
    except (pl.exceptions.PolarsError, OSError) as err:
        raise DataError(f"cannot read the file ({err})", path=path,
                        fix="check that it is a valid Parquet or CSV file") from None
    return lf


def _roles(columns: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """canonical name -> (role, kind) for every key of a column mapping, in mapping order."""
    roles: dict[str, tuple[str, str]] = {}
    known = ([USER, ITEM, TIMESTAMP, EVENT_TYPE, IS_ORGANIC, *FEEDBACK_KINDS, *EXTRA_COLUMNS]
             + ["context:NAME", "feedback:NAME"])
    for key in columns:
        prefix, _, name = key.partition(":")
        if key in (USER, ITEM):
            roles[key] = ("id", "id")
        elif key == TIMESTAMP:
            roles[key] = ("timestamp", "timestamp")
        elif key == EVENT_TYPE:
            roles[key] = ("event_type", "text")
        elif key == IS_ORGANIC:
            roles[key] = ("context", "boolean")
        elif key in FEEDBACK_KINDS:
            roles[key] = ("feedback", "number")
        elif key in EXTRA_COLUMNS:
            roles[key] = ("extra", "number")
        elif prefix in ("context", "feedback") and name:
            if name in roles or name in (USER, ITEM, TIMESTAMP, EVENT_TYPE, SOURCE, ROW):
                raise DataError(f"mapping key '{key}' clashes with column '{name}'",
                                fix="choose another name after 'context:' / 'feedback:'")
            roles[name] = ("context", "context") if prefix == "context" else ("feedback", "number")
        else:
            raise DataError(f"unknown column mapping key '{key}'",
                            fix="use one of: " + ", ".join(known))
    for required in (USER, ITEM):
        if required not in roles:
            raise DataError(f"the column mapping has no '{required}'",
                            fix=f"map '{required}' to the column that holds the {required} id")
    return roles


def read_table(path: str | Path, columns: Mapping[str, str], *, sep: str | None = None,
               ignore_extra: bool = False) -> EventLog:
    """Read Parquet/CSV events (a file or a directory of files) through a column mapping.

    Args:
        path: a .parquet/.csv/.tsv file, or a directory of them (each file is one source).
        columns: canonical name -> source column (see the module docstring for the keys).
        sep: CSV field separator (default ',' or tab for .tsv).
        ignore_extra: drop source columns the mapping does not name instead of failing.
    """
    path = Path(path)
    roles = _roles(columns)
    files = table_files(path)
    frames: list[pl.LazyFrame] = []
    for index, file in enumerate(files):
        frame = _canonical(scan_table(file, sep), columns, roles, file, index, ignore_extra)
        if frames and frame.collect_schema() != frames[0].collect_schema():
            raise DataError(
                f"columns convert to different types than in {files[0].name}: "
                f"{dict(frame.collect_schema())} vs {dict(frames[0].collect_schema())}",
                path=file, fix="give every file of the directory the same column types")
        frames.append(frame)
    if not any(has_rows(f) for f in frames):
        raise no_events(path)
    return _event_log(pl.concat(frames, how="vertical"), tuple(str(f) for f in files), roles)


def is_frame(source: Any) -> bool:
    """Whether ``source`` is an in-memory frame (polars DataFrame / LazyFrame, pandas
    DataFrame) rather than a path."""
    if isinstance(source, (pl.DataFrame, pl.LazyFrame)):
        return True
    # pandas is optional: a pandas frame can only exist once pandas is imported, so look it
    # up instead of importing it
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(source, pandas.DataFrame)


def as_lazy_frame(source: Any) -> pl.LazyFrame:
    """An in-memory frame (see :func:`is_frame`) as a polars LazyFrame."""
    if isinstance(source, pl.LazyFrame):
        return source
    if isinstance(source, pl.DataFrame):
        return source.lazy()
    if not is_frame(source):
        raise DataError(f"expected a polars or pandas DataFrame, got {type(source).__name__}",
                        path=FRAME, fix="pass a DataFrame, a LazyFrame or a path")
    try:
        return pl.from_pandas(source).lazy()
    except (pl.exceptions.PolarsError, TypeError, ValueError, ImportError) as err:
        raise DataError(f"cannot convert the pandas DataFrame to polars ({err})",
                        path=FRAME, fix="give each column one type (no mixed objects), "
                        "or convert it yourself with polars.from_pandas") from None


def frame_columns(names: list[str]) -> dict[str, str]:
    """The identity mapping of the canonical names among a frame's columns (the default)."""
    known = (USER, ITEM, TIMESTAMP, EVENT_TYPE, IS_ORGANIC, *FEEDBACK_KINDS, *EXTRA_COLUMNS)
    return {name: name for name in known if name in names}


def read_frame(frame: Any, columns: Mapping[str, str] | None = None, *,
               ignore_extra: bool = False) -> EventLog:
    """Read events from an in-memory frame, checked and converted exactly as a table file.

    Args:
        frame: a polars DataFrame or LazyFrame, or a pandas DataFrame (its index is not read:
            ``reset_index()`` first to keep it). Rows are named by 1-based position.
        columns: canonical name -> frame column; None = :func:`frame_columns`, the columns
            already named user, item, timestamp, ... map to themselves.
        ignore_extra: drop columns the mapping does not name instead of failing.
    """
    lf = as_lazy_frame(frame)
    try:
        names = list(lf.collect_schema().names())
    except pl.exceptions.PolarsError as err:
        raise DataError(f"cannot resolve the LazyFrame's columns ({err})", path=FRAME,
                        fix="check that the LazyFrame collects on its own") from None
    if not columns:
        columns = frame_columns(names)
        for required in (USER, ITEM):
            if required not in columns:
                raise DataError(
                    f"the frame has no '{required}' column and no column mapping was given",
                    path=FRAME, column=required,
                    fix=f"rename the {required} id column to '{required}', or pass columns="
                        "{'user': ..., 'item': ..., 'timestamp': ...}; the frame has: "
                        + ", ".join(names))
    roles = _roles(columns)
    canonical = _canonical(lf, columns, roles, FRAME, 0, ignore_extra)
    if not has_rows(canonical):
        raise no_events(FRAME)
    return _event_log(canonical, (FRAME,), roles)


def _canonical(lf: pl.LazyFrame, columns: Mapping[str, str], roles: dict[str, tuple[str, str]],
               name: str | Path, index: int, ignore_extra: bool) -> pl.LazyFrame:
    """One source (a file or a frame, ``name`` in messages) checked against the mapping and
    converted to canonical columns plus ``_source`` = ``index`` and ``_row``."""
    what = "frame" if str(name) == FRAME else "file"
    source_of = {canonical: columns[key] for key, canonical in zip(columns, roles)}
    schema = lf.collect_schema()
    available = list(schema.names())
    missing = [c for c in dict.fromkeys(source_of.values()) if c not in schema]
    if missing:
        raise DataError(
            f"mapped column(s) not in the {what}: " + ", ".join(missing),
            path=name, column=missing[0],
            fix=f"map to existing columns; the {what} has: " + ", ".join(available))
    unmapped = [c for c in available if c not in source_of.values()]
    if unmapped and not ignore_extra:
        raise DataError(
            "column(s) not in the mapping: " + ", ".join(unmapped),
            path=name, column=unmapped[0],
            fix="map them (e.g. 'context:NAME' or 'feedback:NAME') or pass ignore_extra=True "
                "(--ignore-extra) to drop them")
    lf = lf.with_row_index("_check_row", offset=1)
    exprs = []
    for canonical, (_, kind) in roles.items():
        src = source_of[canonical]
        check_column(lf, src, schema[src], kind, name, row_column="_check_row")
        exprs.append(convert(src, schema[src], kind).alias(canonical))
    return tag_rows(lf.drop("_check_row"), index).select(*exprs, SOURCE, ROW)


def _event_log(lf: pl.LazyFrame, sources: tuple[str, ...],
               roles: dict[str, tuple[str, str]]) -> EventLog:
    """The table EventLog of converted sources: positions for a missing timestamp, the default
    event type, canonical column order."""
    has_time = TIMESTAMP in roles
    if not has_time:
        lf = lf.with_columns(positions().alias(TIMESTAMP))
    if EVENT_TYPE not in roles:
        lf = lf.with_columns(pl.lit("interaction", dtype=pl.String).alias(EVENT_TYPE))
    log = EventLog(frame=lf, sources=sources,
                   context=tuple(n for n, (r, _) in roles.items() if r == "context"),
                   feedback=tuple(n for n, (r, _) in roles.items() if r == "feedback"),
                   extra=tuple(n for n, (r, _) in roles.items() if r == "extra"),
                   has_time=has_time, format="table")
    return finish(log)


def finish(log: EventLog, frame: pl.LazyFrame | None = None,
           items: ItemFeatures | None = None) -> EventLog:
    """``log`` with its frame's columns put in the canonical order (``EventLog.columns``)."""
    lf = (log.frame if frame is None else frame).select(log.columns)
    return EventLog(frame=lf, sources=log.sources, context=log.context, feedback=log.feedback,
                    extra=log.extra, has_time=log.has_time, format=log.format,
                    items=log.items if items is None else items)


def null_column(name: str, dtype: pl.DataType) -> pl.Expr:
    """A typed all-null column, for a signal one source of a concatenation does not have."""
    return pl.lit(None, dtype=dtype).alias(name)
