"""Value checks on a whole event log before anything is written: ranges, event types, units.

The readers decide each column's type (argusrec.readers.table); whether the values make sense
is checked here, on the canonical columns of the whole log, in one streamed pass over the
partitioned copy that `prepare` (and `prepare --append`) writes first (stages._partition). So a
bad value anywhere is refused before any shard exists, with the first offending row in input
order, its file, the user's name for the column, and the fix. The rules
(argusrec.events, "Values have ranges"):

- ``played_ratio`` is a fraction 0..1. A column whose values all lie in 0..100 with some above
  1 is a percentage: it is refused with the fix of mapping it as ``played_ratio_pct``, which
  divides by 100 on read (refused, not converted: a fraction column with one stray 3.0 is not
  a percentage, and only the user knows which it is);
- the binary signals (like, dislike, skip, playlist_add) are 0 or 1, every other feedback and
  extra number finite;
- ``event_type`` is one of :data:`~argusrec.events.EVENT_TYPES` or a declared extra type;
- timestamps are seconds: a log whose timestamps mostly lie after the year 5000 as seconds is in
  milliseconds, microseconds or nanoseconds, and is refused with the unit to declare.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from datetime import datetime, timezone

import polars as pl

from argusrec.errors import DataError
from argusrec.events import (
    EVENT_TYPE, EVENT_TYPES, ROW, SOURCE, TIMESTAMP, TIMESTAMP_UNITS, EventLog, feedback_kind,
)
from argusrec.readers.failures import shown

# A log is in a finer unit when more than half of its timestamps exceed its limit: 1e11 s is
# the year 5138, while 1e11 ms is 1973 (and 1e14 us, 1e17 ns likewise).
UNIT_LIMITS = {"ms": 1e11, "us": 1e14, "ns": 1e17}
_UNIT_WORDS = {"ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def _offending(name: str, kind: str) -> pl.Expr:
    """True on the rows whose value of feedback/extra column ``name`` is out of range."""
    col = pl.col(name)
    if kind == "ratio":
        ok = (col >= 0) & (col <= 1)
    elif kind == "binary":
        ok = col.is_in([0.0, 1.0])
    else:
        ok = col.is_finite()
    return col.is_not_null() & ~ok.fill_null(False)


def _checked_columns(log: EventLog) -> dict[str, str]:
    """feedback / extra column -> its kind (ratio, binary, value)."""
    kinds = {name: feedback_kind(name) for name in log.feedback}
    kinds.update({name: "value" for name in log.extra})
    return kinds


def check_values(scan: pl.LazyFrame, log: EventLog, *, extra_event_types: Sequence[str] = (),
                 timestamp_unit: str = "s") -> None:
    """Raise a DataError for the first value of ``scan`` (the canonical columns of ``log``,
    with ``_source``/``_row``) that breaks the rules of the module docstring.

    ``timestamp_unit`` is the unit the log was declared in (its timestamps are already
    converted to seconds), for the message when they still look too fine.
    """
    kinds = _checked_columns(log)
    known = list(dict.fromkeys([*EVENT_TYPES, *extra_event_types]))
    exprs = [_offending(name, kind).sum().alias(name) for name, kind in kinds.items()]
    exprs += [e for name, kind in kinds.items() if kind == "ratio"
              for e in (pl.col(name).min().alias(f"min:{name}"),
                        pl.col(name).max().alias(f"max:{name}"))]
    exprs.append((~pl.col(EVENT_TYPE).is_in(known)).fill_null(False).sum().alias("_unknown"))
    if log.has_time:
        exprs += [(pl.col(TIMESTAMP) > limit).sum().alias(unit)
                  for unit, limit in UNIT_LIMITS.items()]
        exprs += [pl.col(TIMESTAMP).count().alias("_stamps"),
                  pl.col(TIMESTAMP).min().alias("_lo"), pl.col(TIMESTAMP).max().alias("_hi")]
    stats = scan.select(exprs).collect().row(0, named=True)
    if log.has_time:
        _check_unit(stats, log, timestamp_unit)
    if stats["_unknown"]:
        raise _unknown_types(scan, log, known, stats["_unknown"])
    for name, kind in kinds.items():
        if stats[name]:
            raise _out_of_range(scan, log, name, kind, stats)


def _where(log: EventLog) -> str:
    return ", ".join(log.sources[:3]) + (" ..." if len(log.sources) > 3 else "")


def _date(value: float) -> str:
    try:
        return datetime.fromtimestamp(value, tz=timezone.utc).strftime("%Y-%m-%d")
    except (OverflowError, OSError, ValueError):
        return "out of range"


def _check_unit(stats: dict, log: EventLog, declared: str) -> None:
    """Refuse timestamps that are mostly too large to be seconds, naming the likely unit."""
    half = stats["_stamps"] / 2
    unit = next((u for u in reversed(UNIT_LIMITS) if stats[u] > half), None)
    if unit is None:
        return
    factor = TIMESTAMP_UNITS[unit]
    lo, hi = stats["_lo"], stats["_hi"]
    after = "" if declared == "s" else f" even after converting them from {declared}"
    total = TIMESTAMP_UNITS[unit] * TIMESTAMP_UNITS[declared]
    raise DataError(
        f"the timestamps look like {_UNIT_WORDS[unit]}{after}: {stats[unit]:,} of "
        f"{stats['_stamps']:,} exceed {UNIT_LIMITS[unit]:.0e}, which as seconds is after the "
        f"year 5000; read as {_UNIT_WORDS[unit]} they run {_date(lo / factor)} .. "
        f"{_date(hi / factor)}",
        path=_where(log), column=log.source_column(TIMESTAMP),
        fix=f"pass --timestamp-unit {_unit_name(total)} (timestamp_unit='{_unit_name(total)}') "
            f"to convert them to seconds, or divide them by {total:,} before preparing")


def _unit_name(per_second: int) -> str:
    return next((u for u, f in TIMESTAMP_UNITS.items() if f == per_second), "ns")


def _first(scan: pl.LazyFrame, where: pl.Expr, column: str) -> dict:
    """The first row (in input order) where ``where`` holds: _source, _row and ``column``."""
    return (scan.filter(where).select(SOURCE, ROW, column).bottom_k(1, by=[SOURCE, ROW])
            .collect().row(0, named=True))


def _unknown_types(scan: pl.LazyFrame, log: EventLog, known: list[str], n: int) -> DataError:
    unknown = ~pl.col(EVENT_TYPE).is_in(known)
    first = _first(scan, unknown, EVENT_TYPE)
    value = first[EVENT_TYPE]
    close = difflib.get_close_matches(value, known, n=1) if len(value) < 100 else []
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    others = (scan.filter(unknown).group_by(EVENT_TYPE).len().sort("len", descending=True)
              .head(6).collect())
    listed = ""
    if others.height > 1:
        listed = "; unknown types: " + ", ".join(
            f"{shown(t, 40)} ({c:,})" for t, c in others.iter_rows()) + (
            " ..." if others.height > 5 else "")
    return DataError(
        f"unknown event type {shown(value)}{hint}: {n:,} event(s) have a type that is not one "
        f"of {', '.join(known)}{listed}",
        path=log.sources[first[SOURCE]], column=log.source_column(EVENT_TYPE),
        row=int(first[ROW]),
        fix="correct the misspelling, or declare each new type with --event-type NAME "
            "(PrepareConfig.extra_event_types; a declared type counts as a positive "
            "interaction unless its feedback says otherwise)")


def _out_of_range(scan: pl.LazyFrame, log: EventLog, name: str, kind: str,
                  stats: dict) -> DataError:
    first = _first(scan, _offending(name, kind), name)
    value, src = first[name], log.source_column(name)
    percent = name in log.percent
    found = f"{name} {value:g}" + (f" ({src} {value * 100:g})" if percent else "")
    count = f"{stats[name]:,} row(s)"
    if kind == "ratio":
        lo, hi = stats[f"min:{name}"], stats[f"max:{name}"]
        problem = f"{count} outside 0..1; the first has {found}"
        if percent:
            fix = f"{src} is a percentage: keep it within 0..100"
        elif lo is not None and lo >= 0 and hi is not None and hi <= 100:
            problem += f" (the column runs {lo:g}..{hi:g}: a percentage?)"
            fix = (f"map it as played_ratio_pct={src} (a percentage, divided by 100 on "
                   "read), or divide it by 100")
        else:
            fix = f"{name} is the fraction played, 0..1: fix those rows or leave them empty"
    elif kind == "binary":
        problem = f"{count} are not 0 or 1; the first has {found}"
        fix = (f"{name} is a 0/1 signal: write 0 or 1 (empty: no signal), or map the column "
               f"as feedback:NAME={src} with another NAME to keep it as a number")
    else:
        problem = f"{count} are not finite numbers; the first has {found}"
        fix = "give a finite number, or leave it empty (empty: no signal)"
    return DataError(problem, path=log.sources[first[SOURCE]], column=src,
                     row=int(first[ROW]), fix=fix)
