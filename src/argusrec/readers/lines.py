"""Readers for the one-line text formats of the sequential-recommendation benchmarks.

SASRec (Kang & McAuley 2018) publishes ``data/ml-1m.txt`` and friends as one ``user item`` pair
per line, 1-based ids, each user's lines in time order; S3-Rec and ICLRec (Zhou et al. 2020,
Chen et al. 2022) publish ``Beauty.txt`` as one ``uid i1 i2 ...`` line per user, items in time
order. Neither has timestamps, so an event's timestamp is its position within its user
(``has_time`` False) and ``_row`` is the 1-based line number. The files are small (ML-1M is
~1M lines), so they are read eagerly in one go and parsed with vectorised polars string ops.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from argusrec.errors import DataError
from argusrec.events import EVENT_TYPE, ITEM, ROW, SOURCE, TIMESTAMP, USER, EventLog
from argusrec.readers.failures import shown
from argusrec.readers.table import finish, no_events, positions

_PAIR = r"^\s*(\d+)\s+(\d+)\s*$"
_SEQUENCE = r"^\s*\d+(\s+\d+)*\s*$"
SNIFF_LINES = 1000


def _lines(path: Path) -> pl.DataFrame:
    """Non-blank lines of a text file as (``_row`` = 1-based line number, ``line``)."""
    if path.stat().st_size == 0:
        raise no_events(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DataError(f"not UTF-8 text (byte {err.start:,} of the file)", path=path, row=line,
                        fix="give a plain-text file of integer ids") from None
    # Splitting inside polars instead of str.split keeps 1M lines well under a second.
    df = (pl.DataFrame({"line": [text]}, schema={"line": pl.String})
          .select(pl.col("line").str.split("\n")).explode("line")
          .with_row_index(ROW, offset=1))
    df = (df.with_columns(pl.col(ROW).cast(pl.Int64), pl.col("line").str.strip_chars())
          .filter(pl.col("line") != ""))
    if df.height == 0:
        raise no_events(path)
    return df


def _reject(df: pl.DataFrame, ok: pl.Series, path: Path, expected: str) -> None:
    """DataError naming the first line where ``ok`` is false (or null)."""
    bad = df.filter(~ok.fill_null(False))
    if bad.height:
        row, text = bad[ROW][0], bad["line"][0]
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise DataError(f"line is not {expected}: {shown!r}", path=path, row=int(row),
                        fix=f"every line must be {expected}; fix or remove that line")


def _reject_large(df: pl.DataFrame, path: Path) -> None:
    """DataError naming the first line with an id too large for a 64-bit integer."""
    long = df.filter(pl.col("line").str.contains(r"\d{19}"))  # the only lines that can be
    if long.height == 0:
        return
    tokens = long.select(ROW, pl.col("line").str.extract_all(r"\d+").alias("token")).explode(
        "token")
    bad = tokens.filter(pl.col("token").cast(pl.Int64, strict=False).is_null()).head(1)
    if bad.height:
        raise DataError(f"id {shown(bad['token'][0])} does not fit in a 64-bit integer",
                        path=path, row=int(bad[ROW][0]),
                        fix="ids are integers below 2^63: fix that line, or renumber the ids")


def _reject_repeated_users(df: pl.DataFrame, path: Path) -> None:
    """S3-Rec has one line per user: a user on two lines is refused, naming both lines."""
    repeated = df.filter(pl.col(USER).is_duplicated())
    if repeated.height == 0:
        return
    user = repeated.sort(ROW)[USER][0]
    first, second = repeated.filter(pl.col(USER) == user).sort(ROW)[ROW].head(2).to_list()
    raise DataError(
        f"user {user} has two lines, {first} and {second} ({repeated[USER].n_unique():,} "
        "user(s) have more than one)", path=path, row=int(second),
        fix="give each user one line with all its items in time order, or write the file as "
            "'user item' lines and read it with format='sasrec'")


def _log(df: pl.DataFrame, path: Path, fmt: str) -> EventLog:
    frame = df.lazy().with_columns(pl.lit("interaction", dtype=pl.String).alias(EVENT_TYPE),
                                   pl.lit(0, dtype=pl.UInt16).alias(SOURCE))
    log = EventLog(frame=frame, sources=(str(path),), has_time=False, format=fmt)
    return finish(log)


def read_sasrec(path: str | Path) -> EventLog:
    """Read SASRec ``user item`` lines; timestamps are each line's position within its user."""
    path = Path(path)
    df = _lines(path)
    line = df["line"]
    _reject(df, line.str.contains(_PAIR), path, "two integers 'user item'")
    _reject_large(df, path)
    if not line.str.contains(r"^\d+ \d+$").all():
        line = line.str.replace_all(r"\s+", " ")  # tabs or runs of spaces: rare, slower path
    pairs = line.str.split_exact(" ", 1).struct.unnest()
    df = df.select(pairs[:, 0].cast(pl.Int64).alias(USER), pairs[:, 1].cast(pl.Int64).alias(ITEM),
                   pl.col(ROW))
    df = df.with_columns(positions().alias(TIMESTAMP))
    return _log(df, path, "sasrec")


def read_s3rec(path: str | Path) -> EventLog:
    """Read S3-Rec ``uid i1 i2 ...`` lines; timestamps are the items' positions in the line."""
    path = Path(path)
    df = _lines(path)
    _reject(df, df["line"].str.contains(_SEQUENCE), path, "integers 'user item item ...'")
    _reject_large(df, path)
    tokens = pl.col("line").str.extract_all(r"\d+")
    df = df.select(
        tokens.list.first().cast(pl.Int64).alias(USER),
        tokens.list.slice(1).cast(pl.List(pl.Int64)).alias(ITEM),
        pl.col(ROW),
    )
    _reject_repeated_users(df, path)
    # A line with a user id and no items is a user without events: it adds no rows.
    df = (df.with_columns(pl.int_ranges(0, pl.col(ITEM).list.len(), dtype=pl.Int64)
                          .alias(TIMESTAMP))
          .explode([ITEM, TIMESTAMP], empty_as_null=False, keep_nulls=False))
    if df.height == 0:
        raise no_events(path)
    return _log(df, path, "s3rec")


def sniff(path: Path) -> str | None:
    """'sasrec', 's3rec' or None from the first lines of a text file (format='auto').

    All pairs -> sasrec; lines of two or more integers of other lengths -> s3rec.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return None
    with path.open("rb") as f:
        head = [f.readline().decode("utf-8", errors="replace").strip()
                for _ in range(SNIFF_LINES)]
    head = [line for line in head if line]
    if not head:
        return None
    if all(re.match(_PAIR, line) for line in head):
        return "sasrec"
    if all(re.match(_SEQUENCE, line) and len(line.split()) >= 2 for line in head):
        return "s3rec"
    return None
