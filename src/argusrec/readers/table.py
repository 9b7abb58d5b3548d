"""Generic Parquet/CSV reader with a column mapping.

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

Column types are checked and cast by argusrec.readers.kinds, as in every reader. A CSV has no
types: every column is read as text and its type decided from all of its values, never from
polars' guess on the first rows, so row 10,500 is checked like row 1. Two canonical names may
not share a source column, and the key ``played_ratio_pct`` maps a percentage column (divided
by 100 on read).
"""

from __future__ import annotations

import dataclasses
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
from argusrec.readers.failures import reading, shown
from argusrec.readers.kinds import check_columns, convert

TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")

# The source name of an in-memory frame, in EventLog.sources and in error messages.
FRAME = "<DataFrame>"


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
    """The Parquet/CSV files a table path stands for: itself, or a directory's files, with
    those inside Hive partition directories (``date=2024-01-01/part-0.parquet``, as Spark and
    Hive write them), in the order of their paths. Names starting with ``_`` or ``.`` (Spark's
    ``_SUCCESS``, ``.crc`` files, an unfinished ``_temporary``) are not data."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in TABLE_SUFFIXES
                   and hive_values(path, p) is not None)
    if not files:
        raise DataError("directory holds no .parquet, .csv or .tsv files", path=path,
                        fix="point at a Parquet/CSV file, a directory of them, or a directory "
                            "of Hive partitions (key=value/part-*.parquet)")
    return files


def hive_values(root: Path, file: Path) -> dict[str, str] | None:
    """The Hive partition values in ``file``'s path below ``root`` (``{"date": "2024-01-01"}``
    for ``date=2024-01-01/part-0.parquet``); None for a file that is not data: hidden, or in
    a directory that is not a partition."""
    *directories, name = file.relative_to(root).parts
    if any(part.startswith(("_", ".")) for part in (*directories, name)):
        return None
    values = {}
    for part in directories:
        key, sep, value = part.partition("=")
        if not sep or not key:
            return None
        values[key] = value
    return values


def with_partition_columns(lf: pl.LazyFrame, root: Path, file: Path) -> pl.LazyFrame:
    """``lf`` with its file's Hive partition values as text columns (mappable like any
    column: ``context:region=region``; ``ignore_extra`` drops them)."""
    values = hive_values(root, file) if root.is_dir() else {}
    clash = [k for k in values or {} if k in lf.collect_schema().names()]
    if clash:
        raise DataError(f"the partition key {shown(clash[0])} is also a column of the file",
                        path=file, column=clash[0],
                        fix="rename the partition directories or the column")
    return lf.with_columns(pl.lit(v, dtype=pl.String).alias(k) for k, v in (values or {}).items())


def scan_table(path: Path, sep: str | None = None) -> pl.LazyFrame:
    """Lazily scan one Parquet or CSV file; a 0-byte file is reported as 'no events'.

    A CSV is read with every column as text: its types are then decided from all of its values
    (:func:`check_columns` with ``untyped``), not guessed from its first rows, so a value that
    does not parse in row 10,500 is named instead of failing inside polars.
    """
    if path.stat().st_size == 0:
        raise no_events(path)
    try:
        if path.suffix == ".parquet":
            lf = pl.scan_parquet(path)
        else:
            lf = pl.scan_csv(path, separator=csv_separator(path, sep), infer_schema=False)
        lf.collect_schema()
    except pl.exceptions.NoDataError:
        raise no_events(path) from None
    except (pl.exceptions.PolarsError, OSError) as err:
        with reading([path], sep=sep):
            raise err
    return lf


def csv_separator(path: Path, sep: str | None) -> str:
    return sep or ("\t" if path.suffix == ".tsv" else ",")


def _roles(columns: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """canonical name -> (role, kind) for every key of a column mapping, in mapping order."""
    roles: dict[str, tuple[str, str]] = {}
    known = ([USER, ITEM, TIMESTAMP, EVENT_TYPE, IS_ORGANIC, *FEEDBACK_KINDS, PERCENT_KEY,
              *EXTRA_COLUMNS] + ["context:NAME", "feedback:NAME"])
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
        elif key in FEEDBACK_KINDS or key == PERCENT_KEY:
            name = "played_ratio" if key == PERCENT_KEY else key
            if name in roles:
                raise DataError("both played_ratio and played_ratio_pct are mapped",
                                fix="map one: played_ratio for a fraction 0..1, "
                                    "played_ratio_pct for a percentage 0..100")
            roles[name] = ("feedback", "percent" if key == PERCENT_KEY else "number")
        elif key in EXTRA_COLUMNS:
            roles[key] = ("extra", "number")
        elif prefix in ("context", "feedback") and name:
            if name in roles or name in (USER, ITEM, TIMESTAMP, EVENT_TYPE, SOURCE, ROW):
                raise DataError(f"mapping key '{key}' clashes with column '{name}'",
                                fix="choose another name after 'context:' / 'feedback:'")
            roles[name] = ("context", "context") if prefix == "context" else ("feedback", "number")
        else:
            raise DataError(f"unknown column mapping key {shown(key)}",
                            fix="use one of: " + ", ".join(known))
    for required in (USER, ITEM):
        if required not in roles:
            raise DataError(f"the column mapping has no '{required}'",
                            fix=f"map '{required}' to the column that holds the {required} id")
    return roles


# Mapping key of a played fraction given as a percentage (0..100), divided by 100 on read.
PERCENT_KEY = "played_ratio_pct"


def _source_of(columns: Mapping[str, str], roles: dict[str, tuple[str, str]],
               path: str | Path | None = None) -> dict[str, str]:
    """canonical name -> source column; one source column may not serve two names."""
    source_of = {canonical: columns[key] for key, canonical in zip(columns, roles)}
    seen: dict[str, str] = {}
    for canonical, src in source_of.items():
        if src in seen:
            raise DataError(
                f"'{seen[src]}' and '{canonical}' are both mapped to the column {shown(src)}",
                path=path, column=src,
                fix=f"map '{seen[src]}' and '{canonical}' to different columns" + (
                    " (a user id is never the item id)" if {seen[src], canonical} == {USER, ITEM}
                    else ""))
        seen[src] = canonical
    return source_of


def read_table(path: str | Path, columns: Mapping[str, str], *, sep: str | None = None,
               ignore_extra: bool = False) -> EventLog:
    """Read Parquet/CSV events (a file or a directory of files) through a column mapping.

    Args:
        path: a .parquet/.csv/.tsv file, or a directory of them or of Hive partitions
            (each file is one source; partition keys become text columns).
        columns: canonical name -> source column (see the module docstring for the keys).
        sep: CSV field separator (default ',' or tab for .tsv).
        ignore_extra: drop source columns the mapping does not name instead of failing.
    """
    path = Path(path)
    roles = _roles(columns)
    source_of = _source_of(columns, roles, path)
    files = table_files(path)
    frames: list[pl.LazyFrame] = []
    for index, file in enumerate(files):
        with reading([file], sep=sep):
            frame = _canonical(with_partition_columns(scan_table(file, sep), path, file),
                               columns, roles, file, index, ignore_extra,
                               untyped=file.suffix != ".parquet")
            if frames and frame.collect_schema() != frames[0].collect_schema():
                raise DataError(
                    f"columns convert to different types than in {files[0].name}: "
                    f"{dict(frame.collect_schema())} vs {dict(frames[0].collect_schema())}",
                    path=file, fix="give every file of the directory the same column types "
                    "(an id column that holds text in one CSV and only integers in another "
                    "is text in one and integers in the other)")
            frames.append(frame)
    with reading(files, sep=sep):
        if not any(has_rows(f) for f in frames):
            raise no_events(path)
    return _event_log(pl.concat(frames, how="vertical"), tuple(str(f) for f in files), roles,
                      source_of, parts=frames)


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
    source_of = _source_of(columns, roles, FRAME)
    with reading([FRAME]):
        canonical = _canonical(lf, columns, roles, FRAME, 0, ignore_extra)
        if not has_rows(canonical):
            raise no_events(FRAME)
    return _event_log(canonical, (FRAME,), roles, source_of)


def _canonical(lf: pl.LazyFrame, columns: Mapping[str, str], roles: dict[str, tuple[str, str]],
               name: str | Path, index: int, ignore_extra: bool,
               untyped: bool = False) -> pl.LazyFrame:
    """One source (a file or a frame, ``name`` in messages) checked against the mapping and
    converted to canonical columns plus ``_source`` = ``index`` and ``_row``; ``untyped``: its
    text columns are a CSV's (their values decide their types)."""
    what = "frame" if str(name) == FRAME else "file"
    source_of = _source_of(columns, roles, name)
    schema = lf.collect_schema()
    available = list(schema.names())
    missing = [c for c in dict.fromkeys(source_of.values()) if c not in schema]
    if missing:
        raise DataError(
            f"mapped column(s) not in the {what}: " + _names(missing),
            path=name, column=missing[0],
            fix=f"map to existing columns; the {what} has: " + _names(available))
    unmapped = [c for c in available if c not in source_of.values()]
    if unmapped and not ignore_extra:
        raise DataError(
            "column(s) not in the mapping: " + _names(unmapped),
            path=name, column=unmapped[0],
            fix="map them (e.g. 'context:NAME' or 'feedback:NAME') or pass ignore_extra=True "
                "(--ignore-extra) to drop them")
    lf = lf.with_row_index("_check_row", offset=1)
    specs = [(source_of[c], schema[source_of[c]], kind) for c, (_, kind) in roles.items()]
    forms = check_columns(lf, specs, name, row_column="_check_row", untyped=untyped)
    exprs = [convert(src, dtype, kind, forms.get(src)).alias(canonical)
             for canonical, (src, dtype, kind) in zip(roles, specs)]
    return tag_rows(lf.drop("_check_row"), index).select(*exprs, SOURCE, ROW)


def _names(names: list[str], limit: int = 20) -> str:
    """Column names for a message: the first ``limit``, each cut to a sane length."""
    listed = ", ".join(shown(n, 60) if len(n) > 60 else n for n in names[:limit])
    return listed + (f" ... ({len(names)} in all)" if len(names) > limit else "")


def _event_log(lf: pl.LazyFrame, sources: tuple[str, ...],
               roles: dict[str, tuple[str, str]], source_of: dict[str, str],
               parts: list[pl.LazyFrame] = ()) -> EventLog:
    """The table EventLog of converted sources (``parts``: each source's frame, whose
    concatenation is ``lf``): positions for a missing timestamp, the default event type,
    canonical column order."""
    has_time = TIMESTAMP in roles
    if not has_time:
        lf = lf.with_columns(positions().alias(TIMESTAMP))
        parts = ()  # a position counts the user's events in every source before it
    if EVENT_TYPE not in roles:
        default = pl.lit("interaction", dtype=pl.String).alias(EVENT_TYPE)
        lf = lf.with_columns(default)
        parts = [part.with_columns(default) for part in parts]
    log = EventLog(frame=lf, sources=sources,
                   context=tuple(n for n, (r, _) in roles.items() if r == "context"),
                   feedback=tuple(n for n, (r, _) in roles.items() if r == "feedback"),
                   extra=tuple(n for n, (r, _) in roles.items() if r == "extra"),
                   has_time=has_time, format="table", source_columns=source_of,
                   percent=tuple(n for n, (_, k) in roles.items() if k == "percent"),
                   parts=tuple(parts))
    return finish(log)


def finish(log: EventLog, frame: pl.LazyFrame | None = None,
           items: ItemFeatures | None = None) -> EventLog:
    """``log`` with its frame's columns put in the canonical order (``EventLog.columns``)."""
    lf = (log.frame if frame is None else frame).select(log.columns)
    parts = tuple(part.select(log.columns) for part in log.parts)
    return dataclasses.replace(log, frame=lf, items=log.items if items is None else items,
                               parts=parts)


def null_column(name: str, dtype: pl.DataType) -> pl.Expr:
    """A typed all-null column, for a signal one source of a concatenation does not have."""
    return pl.lit(None, dtype=dtype).alias(name)
