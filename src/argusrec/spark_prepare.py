"""The Spark engine of `argus prepare` (``--engine spark``): a log larger than one machine.

The same reader, checks and encoder as the polars engine run inside Spark tasks, so both
engines write the same dataset (argusrec.engines; a test holds them to it row for row):

1. **read**: the log's sources are cut into pieces of at most :data:`PIECE_EVENTS` events;
   each task reads its piece with the format's polars reader (every format, with its type
   checks), converts timestamps and computes each event's user bucket (the polars hash both
   engines use). Spark shuffles the events by bucket and writes one Parquet directory per
   bucket under the dataset's temporary directory;
2. **vocabularies**: the sorted unique users, items, event types and context values, as
   distributed Spark queries over the buckets;
3. **shards**: one task per bucket cleans, sorts and encodes it and writes its shard.

The driver streams the value checks and the split's boundaries over the written buckets
with polars (a few columns), and writes the tables and meta.json. The output directory must
be on a file system that the driver and every executor see at the same path (local disk in
local mode; NFS, Lustre or similar on a cluster), and executors need argusrec with the
driver's polars version (the bucket hash is polars').
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import polars as pl

from argusrec.errors import DataError
from argusrec.events import EVENT_TYPE, ITEM, TIMESTAMP, USER, EventLog
from argusrec.readers.failures import READ_ERRORS
from argusrec.stages import (Route, Vocabularies, _polars_error, _say, bucket_count,
                             check_buckets, count_events, in_seconds, text_contexts,
                             user_bucket, vocabularies_of)

PIECE_EVENTS = 2_000_000  # events one read task holds at once
BUCKET = "argus_bucket"  # Spark's partition column (Spark's readers skip names starting "_")
_CARRIED = "argusrec-data-error:"  # a DataError raised inside a Spark task, as JSON

# polars type -> (the type it travels as, Spark SQL type): Spark has no unsigned integers
_TYPES: dict[Any, tuple[Any, str]] = {
    pl.Boolean: (pl.Boolean, "boolean"), pl.Int8: (pl.Int8, "tinyint"),
    pl.Int16: (pl.Int16, "smallint"), pl.Int32: (pl.Int32, "int"),
    pl.Int64: (pl.Int64, "bigint"), pl.UInt8: (pl.Int16, "smallint"),
    pl.UInt16: (pl.Int32, "int"), pl.UInt32: (pl.Int64, "bigint"),
    pl.UInt64: (pl.Int64, "bigint"), pl.Float32: (pl.Float32, "float"),
    pl.Float64: (pl.Float64, "double"), pl.String: (pl.String, "string"),
    pl.Categorical: (pl.String, "string"), pl.Binary: (pl.Binary, "binary"),
}


def spark_session(master: str | None = None):
    """The active Spark session, or a new one: on ``master``, else where spark-submit
    points, else ``local[*]``. Local workers run this Python (the venv argusrec is in)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise DataError("the spark engine needs pyspark", fix="pip install 'argusrec[spark]' "
                        "(and a Java 17+ runtime), or use --engine polars") from None
    active = SparkSession.getActiveSession()
    if active is not None and master is None:
        return active
    if master is None or master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # pyspark warns on every Arrow job that it does not yet support pandas 3; this engine
    # hands Spark Arrow batches and never a pandas frame
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                            category=FutureWarning)
    builder = SparkSession.builder.appName("argusrec prepare")
    if master is not None:
        builder = builder.master(master)
    try:
        return builder.getOrCreate()
    except Exception as e:  # no Java, a master that cannot be reached
        raise DataError(f"cannot start Spark: {str(e).strip().splitlines()[0][:300]}",
                        fix="install a Java 17+ runtime (java on PATH or JAVA_HOME), and "
                            "check --spark-master") from None


class SparkEngine:
    """Reading, vocabularies and shards as Spark jobs (module docstring)."""

    name = "spark"

    def __init__(self, master: str | None = None, session=None,
                 piece_events: int = PIECE_EVENTS) -> None:
        self.master, self._session, self.piece_events = master, session, piece_events

    @property
    def session(self):
        if self._session is None:
            self._session = spark_session(self.master)
        return self._session

    def partition(self, log: EventLog, tmp: Path, config, progress: bool, *,
                  key: pl.Expr | None = None, n_buckets: int | None = None,
                  route: Route | None = None) -> tuple[int, Path]:
        parts = log.parts or (log.frame,)
        sizes = [count_events(part, log, tmp) for part in parts]
        total = sum(sizes)
        n_buckets = n_buckets or bucket_count(total, log, config)
        step = self.piece_events
        pieces = [(k, start, min(step, size - start))
                  for k, size in enumerate(sizes) for start in range(0, size, step)]
        _say(progress, f"prepare (spark): {total:,} events from {len(log.sources)} file(s) "
             f"({log.format}) in {len(pieces)} piece(s); partitioning into {n_buckets} "
             "shard(s)")
        read = partial(_read_pieces, parts=parts, pieces=pieces, log=log, config=config,
                       route=route, key=key if key is not None else user_bucket(n_buckets))
        probe = read_piece(parts[0].head(0), log, config, route, user_bucket(1))
        casts, ddl = _travel_types(probe.collect_schema(), log)
        buckets = tmp / "buckets"  # not "_buckets": Spark's readers skip names starting "_"
        events = self.session.range(len(pieces), numPartitions=len(pieces)).mapInArrow(
            partial(_arrow_batches, read=read, casts=casts), ddl)
        with _carried_errors():
            (events.repartition(n_buckets, BUCKET).write.partitionBy(BUCKET)
             .parquet(buckets.resolve().as_uri()))
        check_buckets(buckets, log, config)
        return total, buckets

    def vocabularies(self, kept: pl.LazyFrame, log: EventLog, buckets: Path,
                     test_end: int | None) -> Vocabularies:
        from pyspark.sql import functions as F

        events = self.session.read.parquet(buckets.resolve().as_uri())
        if test_end is not None:
            events = events.where(F.col(TIMESTAMP) < test_end)
        schema = kept.collect_schema()

        def unique(column: str) -> pl.DataFrame:
            rows = (events.select(column).where(F.col(column).isNotNull()).distinct()
                    .orderBy(column).toArrow())
            return pl.from_arrow(rows).cast({column: schema[column]})

        contexts = text_contexts(log)
        return vocabularies_of(unique(USER), unique(ITEM), unique(EVENT_TYPE)[EVENT_TYPE].to_list(),
                               {c: unique(c)[c].to_list() for c in contexts}, log)

    def map(self, fn: Callable[[Any], Any], tasks: Sequence, *, desc: str,
            progress: bool) -> list:
        tasks = list(tasks)
        if not tasks:
            return []
        _say(progress, f"{desc} (spark): {len(tasks)} task(s)")
        done = (self.session.sparkContext.parallelize(tasks, len(tasks))
                .map(partial(_guarded, fn)).collect())
        for outcome, value in done:
            if outcome == "error":
                raise DataError(**value)
        return [value for _, value in done]


def read_piece(frame: pl.LazyFrame, log: EventLog, config, route: Route | None,
               key: pl.Expr) -> pl.LazyFrame:
    """One piece of a source, as the polars engine streams it: seconds, routed, bucketed."""
    frame = in_seconds(route(frame) if route else frame, log, config)
    return frame.with_columns(key.cast(pl.Int64).alias(BUCKET))


def _read_pieces(piece: int, *, parts: Sequence[pl.LazyFrame], pieces: list, log: EventLog,
                 config, route: Route | None, key: pl.Expr) -> pl.DataFrame:
    source, start, length = pieces[piece]
    try:
        return read_piece(parts[source].slice(start, length), log, config, route, key).collect()
    except READ_ERRORS as e:
        raise _carry(_polars_error(log, e)) from None
    except DataError as e:
        raise _carry(e) from None


def _arrow_batches(batches: Iterator, *, read: Callable[[int], pl.DataFrame],
                   casts: dict) -> Iterator:
    """mapInArrow's function: the pieces numbered in ``batches`` as Arrow batches."""
    for batch in batches:
        for piece in batch.column(0).to_pylist():
            table = read(piece).cast(casts).to_arrow()
            yield from table.cast(_arrow_schema(table.schema)).to_batches(max_chunksize=65_536)


def _arrow_schema(schema):
    """``schema`` with Arrow's large text types as the plain ones Spark reads."""
    import pyarrow as pa

    plain = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary(),
             pa.string_view(): pa.string(), pa.binary_view(): pa.binary()}
    return pa.schema([f.with_type(plain.get(f.type, f.type)) for f in schema])


def _travel_types(schema: pl.Schema, log: EventLog) -> tuple[dict, str]:
    """The casts that make every column a type Spark has, and the Spark schema (DDL)."""
    casts, fields = {}, []
    for name, dtype in schema.items():
        travel = _TYPES.get(dtype.base_type())
        if travel is None:
            raise DataError(f"the spark engine cannot carry the {dtype} column {name!r}",
                            path=log.sources[0], column=log.source_column(name),
                            fix="cast it to a number or text, or use --engine polars")
        casts[name] = travel[0]
        fields.append(f"`{name.replace('`', '``')}` {travel[1]}")
    return casts, ", ".join(fields)


def _guarded(fn: Callable[[Any], Any], task: Any) -> tuple[str, Any]:
    """``fn(task)``, with a DataError returned to the driver (where it is raised) instead
    of failing the Spark job with a traceback."""
    try:
        return "ok", fn(task)
    except DataError as e:
        return "error", _fields(e)


def _fields(error: DataError) -> dict:
    return {"problem": error.problem, "path": error.path, "column": error.column,
            "row": error.row, "fix": error.fix}


def _carry(error: DataError) -> RuntimeError:
    """A DataError that crosses Spark's task boundary inside the exception's text."""
    return RuntimeError(_CARRIED + json.dumps(_fields(error)))


class _carried_errors:
    """Turns a Spark job failure that carries a DataError back into that DataError."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, error, tb) -> bool:
        if error is None or isinstance(error, DataError):
            return False
        found = re.search(re.escape(_CARRIED) + r"(\{.*?\})\s*$", str(error), re.MULTILINE)
        if found is None:
            return False
        raise DataError(**json.loads(found.group(1))) from None
