"""Where `argus prepare` does its work: in this process (polars) or on a Spark cluster.

Preparing a log is the same steps on either engine (argusrec.stages): partition the events by
a hash of the user into buckets, check the values, find the split's boundaries and the id
vocabularies, then clean, encode and write each bucket as a shard. An engine supplies the
three steps that grow with the log:

- ``partition``: read the log and write it, bucketed, under ``tmp/_buckets`` (``KEY=N``
  directories of Parquet);
- ``vocabularies``: the sorted unique users, items, event types and context values;
- ``map``: run a function (one bucket's cleaning, encoding and writing) over the buckets.

Everything else (value checks and split boundaries, streamed with polars over the written
buckets, the tables and meta.json) is shared, so both engines write the same dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import polars as pl
from tqdm.auto import tqdm

from argusrec.errors import DataError
from argusrec.events import EventLog
from argusrec.spark_prepare import SparkEngine
from argusrec.stages import Route, Vocabularies, _partition, _vocabularies

if TYPE_CHECKING:
    from argusrec.prepare import PrepareConfig

ENGINES = ("polars", "spark")


class Engine(Protocol):
    name: str

    def partition(self, log: EventLog, tmp: Path, config: PrepareConfig, progress: bool, *,
                  key: pl.Expr | None = None, n_buckets: int | None = None,
                  route: Route | None = None) -> tuple[int, Path]: ...

    def vocabularies(self, kept: pl.LazyFrame, log: EventLog, buckets: Path,
                     test_end: int | None) -> Vocabularies: ...

    def map(self, fn: Callable[[Any], Any], tasks: Sequence, *, desc: str,
            progress: bool) -> list: ...


class PolarsEngine:
    """One process: polars streams the log through the disk, bucket after bucket."""

    name = "polars"

    def partition(self, log, tmp, config, progress, *, key=None, n_buckets=None, route=None):
        return _partition(log, tmp, config, progress, key=key, n_buckets=n_buckets,
                          route=route)

    def vocabularies(self, kept, log, buckets, test_end):
        return _vocabularies(kept, log)

    def map(self, fn, tasks, *, desc, progress):
        return [fn(task) for task in tqdm(tasks, desc=desc, unit="shard",
                                          disable=not progress)]


def engine_for(name: str | Engine = "polars", spark_master: str | None = None) -> Engine:
    """The engine called ``name`` (or ``name`` itself, an engine object)."""
    if not isinstance(name, str):
        return name
    if name == "polars":
        if spark_master is not None:
            raise DataError("--spark-master applies to --engine spark only",
                            fix="add --engine spark, or drop --spark-master")
        return PolarsEngine()
    if name == "spark":
        return SparkEngine(master=spark_master)
    raise DataError(f"unknown engine '{name}'", fix="use one of: " + ", ".join(ENGINES))
