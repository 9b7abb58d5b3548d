"""Writing a prepared dataset: each bucket's shard, then the tables and meta.json.

Workers (this process, or Spark executors: argusrec.engines) clean, encode and write one
bucket each (:func:`prepare_bucket`) into a shard directory named after the bucket and send
back a :class:`ShardResult`; :class:`_ShardStats` numbers the shards in bucket order and adds
up the counts that the items table and meta.json need; :func:`finish_dataset` writes
users.parquet, items.parquet and meta.json. The layout is argusrec.sequences'.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from argusrec import __version__
from argusrec.events import USER, EventLog
from argusrec.sequences import FORMAT_VERSION, GAP, TEST, TRAIN, VAL, write_shard
from argusrec.stages import NEGATIVE_EVENT_TYPES, PrepareSummary, _Encoder, clean_bucket

if TYPE_CHECKING:  # only for annotations: argusrec.prepare imports this module
    from argusrec.prepare import PrepareConfig


@dataclass
class ShardResult:
    """One bucket's shard as a worker wrote it (``directory`` None: it had no users), with
    its rows of the users table and the counts the items table and meta.json need."""

    directory: str | None
    user_table: pl.DataFrame
    events: int = 0
    train_items: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64),) * 2  # item, count
    positive_items: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64),) * 2
    split_events: np.ndarray = field(default_factory=lambda: np.zeros(4, dtype=np.int64))
    duplicates_dropped: int = 0
    reactions_merged: int = 0


def write_bucket_shard(tmp: Path, directory: str, arrays: dict[str, np.ndarray],
                       user_table: pl.DataFrame) -> ShardResult:
    """Write one shard's arrays to ``tmp/directory`` (nothing for a bucket without users)."""
    if len(user_table) == 0:
        return ShardResult(None, user_table)
    shutil.rmtree(tmp / directory, ignore_errors=True)  # an earlier try of the same task
    write_shard(tmp / directory, arrays)
    train = arrays["split"] == TRAIN
    return ShardResult(
        directory, user_table, events=int(len(arrays["item"])),
        train_items=_sparse_counts(arrays["item"][train]),
        positive_items=_sparse_counts(arrays["item"][train & arrays["positive"]]),
        split_events=np.bincount(arrays["split"], minlength=4)[:4].astype(np.int64))


def _sparse_counts(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(items, counts) of the items that occur: what a worker sends back, not a vector of
    every item in the catalogue."""
    counts = np.bincount(items)
    present = np.flatnonzero(counts)
    return present, counts[present]


def shard_directory(number: int) -> str:
    return f"shards/{number:05d}"


class _ShardStats:
    """Shards written so far, with the counts that the items table and meta.json need."""

    def __init__(self, n_items: int) -> None:
        self.train_count = np.zeros(n_items + 1, dtype=np.int64)
        self.train_positive = np.zeros(n_items + 1, dtype=np.int64)
        self.split_events = np.zeros(4, dtype=np.int64)
        self.shards: list[dict] = []
        self.user_tables: list[pl.DataFrame] = []
        self.duplicates_dropped = self.reactions_merged = 0

    def write(self, tmp: Path, arrays: dict[str, np.ndarray], user_table: pl.DataFrame) -> None:
        self.record(tmp, write_bucket_shard(tmp, shard_directory(len(self.shards)), arrays,
                                            user_table))

    def record(self, tmp: Path, result: ShardResult) -> None:
        """Count a written shard in as the next one, renamed to its number (workers number
        their shards by bucket; buckets without users leave no shard and no gap)."""
        self.duplicates_dropped += result.duplicates_dropped
        self.reactions_merged += result.reactions_merged
        if result.directory is None:
            return
        directory = shard_directory(len(self.shards))
        if result.directory != directory:
            (tmp / result.directory).rename(tmp / directory)
        self.shards.append({"dir": directory, "users": len(result.user_table),
                            "events": result.events})
        self.user_tables.append(result.user_table.with_columns(
            pl.lit(len(self.shards) - 1, dtype=pl.Int32).alias("shard")))
        np.add.at(self.train_count, result.train_items[0], result.train_items[1])
        np.add.at(self.train_positive, result.positive_items[0], result.positive_items[1])
        self.split_events += result.split_events


@dataclass
class Counters:
    """What cleaning one bucket dropped (``clean_bucket`` adds to them)."""

    duplicates_dropped: int = 0
    reactions_merged: int = 0


def bucket_directories(buckets: Path) -> list[Path]:
    """The partition directories under ``buckets`` (``KEY=VALUE``), in the order their shards
    are numbered: by name, as both engines write them."""
    return sorted((p for p in buckets.iterdir() if p.is_dir() and "=" in p.name),
                  key=lambda p: p.name)


def bucket_number(directory: Path) -> int:
    return int(directory.name.rsplit("=", 1)[1])


def read_bucket(directory: Path, schema: pl.Schema) -> pl.DataFrame:
    """One bucket's events, in the log's column types (Spark writes wider signed types)."""
    files = sorted(directory.glob("*.parquet"))
    return pl.read_parquet(files, hive_partitioning=False).select(schema.names()).cast(
        dict(schema))


def prepare_bucket(directory: Path, *, tmp: Path, log: EventLog, config: PrepareConfig,
                   encode: _Encoder, schema: pl.Schema, remove_input: bool) -> ShardResult:
    """Clean, encode and write one bucket as shard ``shards/_bucket<N>`` (renamed into its
    place by ``_ShardStats.record``). Runs where the engine puts it: in this process, or on a
    Spark executor, where a failed task is run again: a rerun replaces what an earlier try
    wrote, and the bucket is read again (``remove_input`` deletes it once read, which only the
    one-process engine does, to bound the disk it needs)."""
    counters = Counters()
    df = clean_bucket(read_bucket(directory, schema), log, config, counters)
    arrays, user_table = encode(df, -1)
    result = write_bucket_shard(tmp, f"shards/_bucket{bucket_number(directory)}", arrays,
                                user_table)
    result.duplicates_dropped = counters.duplicates_dropped
    result.reactions_merged = counters.reactions_merged
    if remove_input:
        shutil.rmtree(directory)
    return result


def finish_dataset(tmp: Path, config: PrepareConfig, stats: _ShardStats, users: pl.DataFrame,
                   items: pl.DataFrame, fields: dict, bounds: dict, total: int,
                   source_meta: dict) -> PrepareSummary:
    """Write users.parquet, items.parquet and meta.json for the shards in ``stats``. Users of
    ``users`` without events (a base dataset's, absent from this log) keep their rows, with
    shard and offset -1 and no events."""
    user_table = pl.concat(stats.user_tables).sort("index")
    absent = users.join(user_table.select("index"), on="index", how="anti")
    if len(absent):
        none = pl.lit(0, dtype=pl.Int32)
        user_table = pl.concat([user_table, absent.select(
            pl.col("index").cast(pl.Int32), pl.col(USER).cast(user_table[USER].dtype),
            pl.lit(-1, dtype=pl.Int32).alias("shard"), pl.lit(-1, dtype=pl.Int32).alias("offset"),
            *[none.alias(c) for c in ("n_events", "n_train", "n_val", "n_test")])]
        ).sort("index")
    user_table.write_parquet(tmp / "users.parquet")
    items.write_parquet(tmp / "items.parquet")
    stored = int(stats.split_events.sum())
    split_names = {"train": TRAIN, "val": VAL, "test": TEST, "gap": GAP}
    split_events = {name: int(stats.split_events[code]) for name, code in split_names.items()}
    dropped = total - stats.duplicates_dropped - stats.reactions_merged - stored
    summary = PrepareSummary(
        out=str(tmp), events=stored, users=len(user_table), items=len(items),
        split_events=split_events, dropped_events=dropped,
        duplicates_dropped=stats.duplicates_dropped, shards=len(stats.shards), seconds=0.0,
        reactions_merged=stats.reactions_merged, boundaries=bounds)
    fields = dict(fields)
    fields["context"] = {name: {"cardinality": len(values) + 1, "values": values}
                         for name, values in fields["context"].items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "argusrec_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source_meta,
        "config": config.model_dump(),
        "counts": {"events": stored, "users": len(user_table), "items": len(items),
                   "input_events": total, "dropped_events": dropped,
                   "duplicates_dropped": stats.duplicates_dropped,
                   "reactions_merged": stats.reactions_merged,
                   "split_events": split_events,
                   "split_users_with_targets": {
                       name: int((user_table[f"n_{name}"] > 0).sum())
                       for name in ("train", "val", "test")}},
        "split": {"kind": config.split.kind, "codes": split_names, **bounds},
        "fields": fields,
        "positive_rule": {"min_played_ratio": config.min_played_ratio,
                          "min_rating": config.min_rating,
                          "negative_event_types": list(NEGATIVE_EVENT_TYPES)},
        "shards": stats.shards,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return summary
