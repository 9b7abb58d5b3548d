"""Readers for MovieLens ``ratings.dat`` and RecBole atomic ``.inter`` files.

MovieLens 1M/10M ship ``ratings.dat`` as ``UserID::MovieID::Rating::Timestamp`` lines without a
header (Harper & Konstan 2015); RecBole's atomic format is a TSV whose header declares
``name:type`` per column (``user_id:token item_id:token rating:float timestamp:float``). Both
become ``rating`` events with the rating as the one feedback signal; a RecBole file without a
timestamp column gets positions instead (``has_time`` False).
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from argusrec.errors import DataError
from argusrec.events import EVENT_TYPE, ITEM, ROW, SOURCE, TIMESTAMP, USER, EventLog
from argusrec.readers.failures import TextLayout, reading, shown
from argusrec.readers.kinds import check_columns, convert
from argusrec.readers.table import finish, has_rows, no_events, positions, tag_rows

_ML_LINE = re.compile(r"^\s*-?\d+::-?\d+::")
_ML_COLUMNS = ["UserID", "_sep1", "MovieID", "_sep2", "Rating", "_sep3", "Timestamp"]

# RecBole column -> (declared type, column kind in argusrec.readers.table.KINDS).
RECBOLE_COLUMNS = {"user_id": ("token", "id"), "item_id": ("token", "id"),
                   "rating": ("float", "number"), "timestamp": ("float", "timestamp")}
_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def _first_line(path: Path) -> str:
    with path.open("rb") as f:
        return f.readline().decode("utf-8", errors="replace").rstrip("\r\n")


def looks_like_movielens(path: Path) -> bool:
    """Whether a file's first line reads ``int::int::...`` (format='auto')."""
    return path.is_file() and bool(_ML_LINE.match(_first_line(path)))


def _in_directory(path: Path, pattern: str, what: str) -> Path:
    """The one file matching ``pattern`` when ``path`` is a dataset directory."""
    if path.is_file():
        return path
    found = sorted(path.glob(pattern))
    if len(found) != 1:
        raise DataError(f"expected one {what} in the directory, found {len(found)}", path=path,
                        fix=f"point at the {what} itself")
    return found[0]


def read_movielens(path: str | Path) -> EventLog:
    """Read a MovieLens ``ratings.dat`` (or a directory holding one) as rating events.

    Every field is read as text and its type decided from all the lines (ids stay integers
    when every one is), so a bad value anywhere is named with its line.
    """
    path = _in_directory(Path(path), "ratings.dat", "ratings.dat")
    if path.stat().st_size == 0:
        raise no_events(path)
    fields = _first_line(path).split("::")
    if len(fields) != 4:
        raise DataError(
            f"line has {len(fields)} '::'-separated field(s), expected 4: "
            f"{shown('::'.join(fields))}",
            path=path, row=1, fix="give lines as UserID::MovieID::Rating::Timestamp")
    # '::' is not a single-byte separator, so split on ':' and drop the empty fields between.
    lf = pl.scan_csv(path, separator=":", has_header=False, quote_char=None,
                     new_columns=_ML_COLUMNS, infer_schema=False)
    layout = TextLayout(sep=":", quote=None, header=False, fields=len(_ML_COLUMNS),
                        describe="UserID::MovieID::Rating::Timestamp", doubled=True)
    with reading([path], layout=layout):
        lf = lf.with_row_index("_check_row", offset=1)
        _check_separators(lf, path)
        specs = [(c, pl.String, kind) for c, kind in _ML_KINDS.items()]
        forms = check_columns(lf, specs, path, row_column="_check_row", untyped=True)
        frame = tag_rows(lf.drop("_check_row"), 0).select(
            convert("UserID", pl.String, "id", forms.get("UserID")).alias(USER),
            convert("MovieID", pl.String, "id", forms.get("MovieID")).alias(ITEM),
            convert("Timestamp", pl.String, "timestamp").alias(TIMESTAMP),
            pl.lit("rating", dtype=pl.String).alias(EVENT_TYPE),
            convert("Rating", pl.String, "number").alias("rating"),
            SOURCE, ROW,
        )
        if not has_rows(frame):
            raise no_events(path)
    log = EventLog(frame=frame, sources=(str(path),), feedback=("rating",), format="movielens",
                   source_columns={USER: "UserID", ITEM: "MovieID", TIMESTAMP: "Timestamp",
                                   "rating": "Rating"})
    return finish(log)


_ML_KINDS = {"UserID": "id", "MovieID": "id", "Rating": "number", "Timestamp": "timestamp"}


def _check_separators(lf: pl.LazyFrame, path: Path) -> None:
    """Every line must be four fields joined by '::': the fields between the ':' are empty."""
    between = pl.any_horizontal(pl.col(c).is_not_null() for c in ("_sep1", "_sep2", "_sep3"))
    bad = lf.filter(between).select("_check_row", *_ML_COLUMNS).head(1).collect()
    if bad.height:
        values = list(bad.row(0)[1:])
        while values and values[-1] is None:  # fields the line does not reach
            values.pop()
        line = ":".join("" if v is None else v for v in values)
        raise DataError(f"line is not UserID::MovieID::Rating::Timestamp: {shown(line)}",
                        path=path, row=int(bad["_check_row"][0]),
                        fix="separate the four fields by '::' (one colon splits a field)")


def _recbole_header(path: Path, sep: str, ignore_extra: bool) -> dict[str, str]:
    """Column name -> declared type from a RecBole header, checked against what we read."""
    header = _first_line(path)
    declared: dict[str, str] = {}
    for field in header.split(sep):
        name, colon, kind = field.partition(":")
        if not colon or kind not in _RECBOLE_TYPES:
            raise DataError(
                f"header field {shown(field)} is not 'name:type' with a type in "
                + ", ".join(_RECBOLE_TYPES), path=path, column=field,
                fix="give a RecBole atomic header, e.g. user_id:token\titem_id:token\t"
                    "rating:float\ttimestamp:float")
        declared[name] = kind
    expected = ", ".join(f"{n}:{t}" for n, (t, _) in RECBOLE_COLUMNS.items())
    missing = [n for n in ("user_id", "item_id") if n not in declared]
    if missing:
        raise DataError(
            "missing column(s): " + ", ".join(missing) + f" (expected {expected}; "
            "rating and timestamp are optional)", path=path, column=missing[0],
            fix="add them, or read the file with format='table' and a column mapping")
    extra = [n for n in declared if n not in RECBOLE_COLUMNS]
    if extra and not ignore_extra:
        raise DataError(
            "unexpected column(s): " + ", ".join(extra) + f" (expected {expected})",
            path=path, column=extra[0],
            fix="pass ignore_extra=True (--ignore-extra) to drop them, or read the file with "
                "format='table' and a column mapping")
    for name, kind in declared.items():
        if name in RECBOLE_COLUMNS and kind != RECBOLE_COLUMNS[name][0]:
            raise DataError(f"declared as {kind}, expected {RECBOLE_COLUMNS[name][0]}",
                            path=path, column=name,
                            fix=f"declare it as {name}:{RECBOLE_COLUMNS[name][0]}")
    return declared


def read_recbole(path: str | Path, *, sep: str | None = None,
                 ignore_extra: bool = False) -> EventLog:
    """Read a RecBole atomic ``.inter`` file (or a directory holding exactly one).

    Token ids stay integers (Int64) when every one of them is a plain integer, else they are
    text; float timestamps are floored to whole seconds.
    """
    path = _in_directory(Path(path), "*.inter", ".inter file")
    sep = sep or "\t"
    if path.stat().st_size == 0:
        raise no_events(path)
    declared = _recbole_header(path, sep, ignore_extra)
    used = [n for n in RECBOLE_COLUMNS if n in declared]
    # Read every column as text: whether ids are integers and whether floats parse is decided
    # below from all values, not from polars' guess on the first rows.
    lf = pl.scan_csv(path, separator=sep, quote_char=None, infer_schema=False,
                     with_column_names=lambda cols: [c.partition(":")[0] for c in cols])
    layout = TextLayout(sep=sep, quote=None, header=True)
    with reading([path], layout=layout):
        lf = lf.select(used).with_row_index("_check_row", offset=1)
        specs = [(c, pl.String, RECBOLE_COLUMNS[c][1]) for c in used]
        forms = check_columns(lf, specs, path, row_column="_check_row", untyped=True)
        exprs = [convert("user_id", pl.String, "id", forms.get("user_id")).alias(USER),
                 convert("item_id", pl.String, "id", forms.get("item_id")).alias(ITEM),
                 pl.lit("rating", dtype=pl.String).alias(EVENT_TYPE)]
        if "timestamp" in used:
            exprs.append(convert("timestamp", pl.String, "timestamp").alias(TIMESTAMP))
        feedback: tuple[str, ...] = ()
        if "rating" in used:
            exprs.append(convert("rating", pl.String, "number").alias("rating"))
            feedback = ("rating",)
        frame = tag_rows(lf.drop("_check_row"), 0).select(*exprs, SOURCE, ROW)
        if "timestamp" not in used:
            frame = frame.with_columns(positions().alias(TIMESTAMP))
        if not has_rows(frame):
            raise no_events(path)
    log = EventLog(frame=frame, sources=(str(path),), feedback=feedback,
                   has_time="timestamp" in used, format="recbole",
                   source_columns={USER: "user_id", ITEM: "item_id"})
    return finish(log)
