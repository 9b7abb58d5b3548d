"""Column kinds: the type checks and casts every reader shares.

Each source column a reader takes has a *kind* (an id, a timestamp, a number, a 0/1 flag...,
:data:`KINDS`). :func:`check_columns` rejects a column whose values cannot become its kind's
canonical dtype, naming the first offending value and its row, in one pass over the source for
all its columns, and only over those whose dtype alone cannot decide (text that should hold
numbers, floats that should be integers, 0/1 flags, ids in a UInt64 column, every column of a
CSV); :func:`convert` is the matching cast. A CSV, ratings.dat or RecBole file has no types
(*untyped*): its ids become integers when every one is an Int64's plain decimal form, else they
stay text, so an id beyond Int64 is kept exact instead of failing.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from argusrec.errors import DataError
from argusrec.readers.failures import shown

# What each kind of column accepts, in words for error messages. The canonical dtypes are
# Int64 for integer/timestamp, Int64, String or Binary for id, Float32 for number and percent,
# Boolean for boolean, String for text, and Boolean/Int64/String (whichever fits) for context.
KINDS: dict[str, str] = {
    "integer": "an integer",
    "id": "an integer, a text or a binary id",
    "timestamp": "an integer or float number of seconds (or a date/datetime)",
    "number": "a number",
    "percent": "a number from 0 to 100 (a percentage)",
    "boolean": "0/1 or true/false",
    "text": "text",
    "context": "a boolean, an integer or text",
}

INT64_MAX = 2**63 - 1
_BOOLEAN_TEXT = ("0", "1", "false", "true")


def is_text(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))


def _wide(dtype: pl.DataType) -> bool:
    """An integer dtype that can hold values beyond Int64."""
    return dtype in (pl.UInt64, pl.Int128, pl.UInt128)


def _beyond_int64(col: pl.Expr) -> pl.Expr:
    return (col > INT64_MAX) | (col < -INT64_MAX - 1)


def _plan(dtype: pl.DataType, kind: str, untyped: bool = False) -> str:
    """'ok' (decided by the dtype), 'scan' (the values decide) or 'bad' for a column.

    ``untyped``: a String column is text only because its file has no types (CSV,
    ratings.dat, RecBole), so integer ids and context values in it become integers.
    """
    integer, floating, text = dtype.is_integer(), dtype.is_float(), is_text(dtype)
    wide = _wide(dtype)
    if kind in ("integer", "id"):
        if wide or (kind == "id" and untyped and dtype == pl.String):
            return "scan"
        if integer or (kind == "id" and (text or dtype == pl.Binary)):
            return "ok"
        return "scan" if floating or dtype == pl.String else "bad"
    if kind == "timestamp":
        if (integer and not wide) or dtype in (pl.Date, pl.Datetime):
            return "ok"
        return "scan" if integer or floating or dtype == pl.String else "bad"
    if kind in ("number", "percent"):
        if integer or floating or dtype == pl.Boolean:
            return "ok"
        return "scan" if dtype == pl.String else "bad"
    if kind == "boolean":
        if dtype == pl.Boolean:
            return "ok"
        return "scan" if integer or floating or dtype == pl.String else "bad"
    if kind == "text":
        return "ok" if text else "bad"
    if kind == "context":
        if untyped and dtype == pl.String:
            return "scan"
        return "ok" if integer or dtype == pl.Boolean or text else "bad"
    raise ValueError(f"unknown column kind {kind!r}")


def _round_trips(col: pl.Expr) -> pl.Expr:
    """Text that is exactly an Int64's decimal form ('7', not '007', '7.0' or '1e3')."""
    return (col.cast(pl.Int64, strict=False).cast(pl.String) == col).fill_null(False)


def _boolean_text(col: pl.Expr) -> pl.Expr:
    return col.str.strip_chars().str.to_lowercase()


def _offending(column: str, dtype: pl.DataType, kind: str, untyped: bool = False) -> pl.Expr:
    """True on the rows whose value cannot become ``kind`` (for a 'scan' or 'bad' plan)."""
    col = pl.col(column)
    present = col.is_not_null()
    if _plan(dtype, kind, untyped) == "bad":
        return present
    if kind in ("integer", "id"):
        if dtype.is_integer():  # UInt64...: an id too large for Int64 becomes text instead
            return present & _beyond_int64(col) if kind == "integer" else pl.lit(False)
        if dtype.is_float():
            return present & ~((col == col.floor()) & (col.abs() < 2.0**63)).fill_null(False)
        if kind == "id":
            return pl.lit(False)  # untyped text: integers or text, _decisions() says which
        return present & col.cast(pl.Int64, strict=False).is_null()
    if kind == "timestamp":
        if dtype.is_integer():
            return present & _beyond_int64(col)
        value = col if dtype.is_float() else col.cast(pl.Float64, strict=False)
        return present & ~(value.is_finite() & (value.abs() < 2.0**63)).fill_null(False)
    if kind in ("number", "percent"):
        return present & col.cast(pl.Float64, strict=False).is_null()
    if kind == "boolean":
        if dtype == pl.String:
            return present & ~_boolean_text(col).is_in(_BOOLEAN_TEXT).fill_null(False)
        return present & ~col.is_in([0, 1]).fill_null(False)
    return pl.lit(False)  # untyped context: any text is fine


def _decisions(column: str, dtype: pl.DataType, kind: str,
               untyped: bool) -> dict[str, pl.Expr]:
    """form -> 'some value rules it out', for a column whose values choose its dtype."""
    col = pl.col(column)
    if kind == "id" and _wide(dtype):
        return {"int": _beyond_int64(col)}
    if untyped and dtype == pl.String and kind in ("id", "context"):
        present = col.is_not_null()
        out = {"int": present & ~_round_trips(col)}
        if kind == "context":
            out["bool"] = present & ~_boolean_text(col).is_in(["true", "false"]).fill_null(False)
        return out
    return {}


def check_columns(lf: pl.LazyFrame, specs: list[tuple[str, pl.DataType, str]],
                  path: str | Path, row_column: str | None = None, *,
                  untyped: bool = False) -> dict[str, str]:
    """Raise a DataError unless every ``(column, dtype, kind)`` can become its kind; return
    the form chosen for the columns whose values decide their dtype (for :func:`convert`).

    One pass over ``lf`` answers for all the columns at once, and only when a dtype alone
    cannot decide (text that should hold numbers, floats that should be integers, 0/1
    flags, every column of an untyped CSV). ``row_column`` names a 1-based row number
    already in ``lf``; without it rows are counted here. The error names the first bad row.
    """
    scans = [(i, c, d, k) for i, (c, d, k) in enumerate(specs) if _plan(d, k, untyped) != "ok"]
    if not scans:
        return {}
    if row_column is None:
        lf, row_column = lf.with_row_index("_check_row", offset=1), "_check_row"
    row = pl.col(row_column)
    exprs, choices = [], {}
    for i, column, dtype, kind in scans:
        exprs.append(row.filter(_offending(column, dtype, kind, untyped)).min().alias(f"bad{i}"))
        for form, rules_out in _decisions(column, dtype, kind, untyped).items():
            exprs.append(rules_out.any().alias(f"{form}{i}"))
            choices.setdefault(column, []).append((form, f"{form}{i}"))
    stats = lf.select(exprs).collect().row(0, named=True)
    for i, column, dtype, kind in scans:
        bad = stats[f"bad{i}"]
        if bad is None and _plan(dtype, kind, untyped) == "bad":
            raise DataError(f"expected {KINDS[kind]}, got dtype {dtype}; the column is empty",
                            path=path, column=column,
                            fix=f"make '{column}' hold {KINDS[kind]}")
        if bad is not None:
            value = lf.filter(row == bad).select(column).head(1).collect()[column][0]
            raise DataError(
                f"expected {KINDS[kind]}" + ("" if untyped else f", got dtype {dtype}")
                + f"; found {shown(value)}",
                path=path, column=column, row=int(bad),
                fix=f"make '{column}' hold {KINDS[kind]} (or fix the values in that row)")
    forms = {}
    for column, options in choices.items():
        forms[column] = next((form for form, key in options if not stats[key]), "text")
    return forms


def check_column(lf: pl.LazyFrame, column: str, dtype: pl.DataType, kind: str,
                 path: str | Path, row_column: str | None = None) -> None:
    """:func:`check_columns` for one typed column."""
    check_columns(lf, [(column, dtype, kind)], path, row_column)


def convert(column: str, dtype: pl.DataType, kind: str, form: str | None = None) -> pl.Expr:
    """The cast of a column that passed :func:`check_columns` (which chose ``form``) to its
    canonical dtype."""
    col = pl.col(column)
    if kind in ("integer", "id"):
        if _wide(dtype) and form == "text":
            return col.cast(pl.String)  # ids beyond Int64 stay exact, as text
        if kind == "id" and is_text(dtype) and form != "int":
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
    if kind in ("number", "percent"):
        value = col.cast(pl.Float64, strict=False)
        return (value / 100 if kind == "percent" else value).cast(pl.Float32)
    if kind == "boolean":
        if dtype == pl.Boolean:
            return col
        if dtype == pl.String:
            return pl.when(col.is_null()).then(None).otherwise(
                _boolean_text(col).is_in(["1", "true"]))
        return pl.when(col.is_null()).then(None).otherwise(col == 1)
    if kind == "text":
        return col.cast(pl.String)
    if kind == "context":
        if dtype == pl.Boolean:
            return col
        if dtype.is_integer() or form == "int":
            return col.cast(pl.Int64)
        if form == "bool":
            return _boolean_text(col) == "true"
        return col.cast(pl.String)
    raise ValueError(f"unknown column kind {kind!r}")
