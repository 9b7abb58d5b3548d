"""`argus prepare NEW_EVENTS OUT --base PREV --append`: a day of events merged into a dataset.

DESIGN.md, "Deployment: the daily cycle": every day the new day's events are appended to the
prepared dataset. Only the new events are read; PREV is never modified; the result is a new
dataset directory with the layout of argusrec.sequences, as if the whole log had been prepared
with ``--base PREV``:

1. **route**: each new event goes to the shard that holds its user in PREV (a user new to the
   dataset goes to a shard by a hash of its id), streamed into one bucket per shard;
2. **vocabularies**: PREV's codes are kept; new users, items, event types and context values
   get the codes after them;
3. **merge**, shard by shard (memory: one PREV shard plus its new events): each user's events
   are PREV's followed by the new ones, stably sorted by time (a tie keeps PREV's first), and
   the split is assigned again over the merged timeline (the temporal cut-off moves with the
   log's end; leave-one-out takes each user's new last events).

Item side data (artists, albums, content vectors) is coded afresh from the new source's side
tables when it has them (Yambda's mappings and embeddings cover the catalogue), and carried
from the base otherwise, new items then having none. Not carried across the boundary
(docs/deployment.md): duplicate detection and ``--merge-reactions`` see the new events only.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from argusrec.errors import DataError
from argusrec.events import ITEM, TIMESTAMP, USER, EventLog, feedback_kind
from argusrec.readers import source_name
from argusrec.sequences import GAP, TEST, TRAIN, VAL, PreparedData, Shard
from argusrec.engines import Engine, PolarsEngine
from argusrec.shard_writer import (Counters, ShardResult, _ShardStats, bucket_directories,
                                   bucket_number, finish_dataset, read_bucket,
                                   write_bucket_shard)
from argusrec.stages import (PrepareSummary, _attach_item_features, _Encoder, _split_boundaries,
                             clean_bucket, in_seconds, user_bucket)

if TYPE_CHECKING:  # only for annotations: argusrec.prepare imports this module
    from argusrec.prepare import PrepareConfig, SplitConfig

ROUTE = "_route"


def append_into(log: EventLog, source, base: PreparedData, tmp: Path, config: PrepareConfig,
                progress: bool, engine: Engine | None = None) -> PrepareSummary:
    """Merge the events of ``log`` into ``base``, writing the new dataset into ``tmp``."""
    if config.split.kind != base.info.split.kind:
        raise DataError(f"the base dataset uses a {base.info.split.kind} split, not "
                        f"{config.split.kind}", path=base.path,
                        fix="leave --split out when appending (the base's is used)")
    base_users = base.users().select(USER, "shard")
    schema = log.frame.collect_schema()
    for column, table in ((USER, base_users), (ITEM, base.items())):
        if schema[column] != table[column].dtype:
            raise DataError(f"the base dataset's {column} ids are {table[column].dtype}, the "
                            f"new events' are {schema[column]}", path=log.sources[0],
                            column=column, fix=f"map the same {column} column as for the base")
    engine = engine or PolarsEngine()
    n_shards = len(base.shards)
    route = partial(_routed, users=base_users.rename({"shard": ROUTE}))
    key = (pl.when(pl.col(ROUTE) >= 0).then(pl.col(ROUTE))
           .otherwise(user_bucket(n_shards)))
    new_total, buckets = engine.partition(log, tmp, config, progress, key=key,
                                          n_buckets=n_shards, route=route)
    scan = pl.scan_parquet(buckets / "**" / "*.parquet", hive_partitioning=False)
    bounds = _split_boundaries(_all_timestamps(base, scan, config.split), config.split,
                               base.info.counts.events + new_total)
    kept = scan if bounds.get("test_end") is None else scan.filter(
        pl.col(TIMESTAMP) < bounds["test_end"])
    vocab = engine.vocabularies(kept, log, buckets, bounds.get("test_end")).keeping(base)
    stats = _ShardStats(len(vocab.items))
    work = partial(_append_shard, tmp=tmp, base_path=base.path, log=log, config=config,
                   encode=_Encoder(log, config, bounds, vocab), bounds=bounds,
                   columns=_columns(base, log), users=vocab.users,
                   schema=in_seconds(route(log.frame), log, config).collect_schema(),
                   buckets={bucket_number(d): d for d in bucket_directories(buckets)})
    for result in engine.map(work, [(s, entry.dir) for s, entry in enumerate(base.info.shards)],
                             desc="append: shards", progress=progress):
        stats.record(tmp, result)
    shutil.rmtree(buckets)
    fields = base.info.fields.model_dump()
    features = log.items
    if any(f is not None for f in (features.artist, features.album, features.embeddings)):
        # the new source brings the item side tables: code them afresh for every item, as
        # prepare --base over the whole log would
        items, fields["item_embedding_dim"] = _attach_item_features(
            log, vocab.items.with_columns(
                pl.Series("train_count", stats.train_count[1:]),
                pl.Series("train_positive_count", stats.train_positive[1:])), tmp)
    else:
        items = _items_table(base, vocab.items, stats, tmp)
    fields.update(event_types=vocab.event_types, context=vocab.context,
                  feedback={**base.feedback_fields,
                            **{f: feedback_kind(f) for f in log.feedback}},
                  extra=list(dict.fromkeys([*fields.get("extra", []), *log.extra])))
    source_meta = base.info.source.model_dump()
    source_meta.update(base=str(base.path.resolve()),
                       appended=[*base.info.source.appended,
                                 source_name(source)],
                       files=[*base.info.source.files, *log.sources])
    summary = finish_dataset(tmp, config, stats, vocab.users, items, fields, bounds,
                             base.info.counts.events + new_total, source_meta)
    summary.read_events = new_total
    return summary


def _routed(frame: pl.LazyFrame, users: pl.DataFrame) -> pl.LazyFrame:
    """``frame`` with each event's shard in the base (null for a user new to it)."""
    return frame.join(users.lazy(), on=USER, how="left")


def _append_shard(task: tuple[int, str], *, tmp: Path, base_path: Path, log: EventLog,
                  config: PrepareConfig, encode: _Encoder, bounds: dict, columns: dict,
                  users: pl.DataFrame, schema: pl.Schema, buckets: dict[int, Path]
                  ) -> ShardResult:
    """Base shard ``task`` = (number, directory) merged with its users' new events and
    written (where the engine runs it: here, or on a Spark executor)."""
    number, directory = task
    counters, new = Counters(), None
    if number in buckets:
        df = clean_bucket(read_bucket(buckets[number], schema).drop(ROUTE), log, config,
                          counters)
        new, _ = encode(df, number)
    # opened here and let go after: a shard's mapped pages do not stay resident
    arrays = merge_shard(Shard.open(base_path / directory), new, columns, bounds, config)
    result = write_bucket_shard(tmp, f"shards/_base{number}", arrays,
                                _user_table(arrays, users))
    result.duplicates_dropped = counters.duplicates_dropped
    result.reactions_merged = counters.reactions_merged
    return result


def _all_timestamps(base: PreparedData, scan: pl.LazyFrame,
                    split: "SplitConfig") -> pl.LazyFrame:
    """Every timestamp of the merged log, for the split's boundaries. Only a share-of-events
    cut-off (``test_fraction``) reads them all; min and max come from the base's meta."""
    known = base.info.split
    if known.time_min is not None and (split.cutoff is not None or
                                       split.test_duration is not None):
        summary = pl.LazyFrame({TIMESTAMP: [known.time_min, known.time_max]},
                               schema={TIMESTAMP: pl.Int64})
        return pl.concat([summary, scan.select(TIMESTAMP)])
    return pl.concat([pl.LazyFrame({TIMESTAMP: np.asarray(s.events["timestamp"])})
                      for s in base.shards] + [scan.select(TIMESTAMP)])


def _columns(base: PreparedData, log: EventLog) -> dict[str, tuple[np.dtype, float]]:
    """Per-event array name -> (dtype, fill for events that lack it) of the merged shards."""
    out = {"timestamp": (np.int64, 0), "item": (np.int32, 0), "event_type": (np.int16, 0),
           "split": (np.uint8, 0), "positive": (np.bool_, False)}
    for name in [*base.context_fields, *log.context]:
        out[f"ctx_{name}"] = (np.int32, 0)
    for name in [*base.feedback_fields, *log.feedback]:
        out[f"fb_{name}"] = (np.float32, np.nan)
    for name in [*base.info.fields.extra, *log.extra]:
        out[f"x_{name}"] = (np.float32, np.nan)
    return out


def merge_shard(old: Shard, new: dict[str, np.ndarray] | None,
                columns: dict[str, tuple[np.dtype, float]], bounds: dict,
                config: PrepareConfig) -> dict[str, np.ndarray]:
    """One shard's arrays (argusrec.sequences.write_shard) from a base shard and the encoded
    new events of its users: per user, base events then new ones, stably sorted by time, the
    split assigned again."""
    parts = [(np.asarray(old.users), np.asarray(old.offsets), old.events)]
    if new is not None:
        parts.append((new["user"], new["offsets"], new))
    users_all = np.concatenate([p[0] for p in parts])
    first = np.unique(users_all, return_index=True)[1]
    users = users_all[np.sort(first)]  # base users in their order, then new ones
    position = np.empty(int(users.max()) + 1 if len(users) else 0, dtype=np.int64)
    position[users] = np.arange(len(users))
    owner = np.concatenate([position[np.repeat(u, np.diff(o))] for u, o, _ in parts])
    n = [int(o[-1]) for _, o, _ in parts]

    def column(name: str, dtype, fill) -> np.ndarray:
        return np.concatenate([np.asarray(ev[name], dtype=dtype) if name in ev
                               else np.full(count, fill, dtype=dtype)
                               for (_, _, ev), count in zip(parts, n)])

    timestamp = column("timestamp", np.int64, 0)
    # each part is already in (owner, time) order and the base comes first, so a stable sort
    # by (owner, time) keeps a tie's base event first and every part's own order
    order = np.lexsort((timestamp, owner))
    if bounds.get("test_end") is not None:
        order = order[timestamp[order] < bounds["test_end"]]
    # one column at a time: the shard is held twice at most for one of its arrays
    merged = {name: (timestamp if name == "timestamp" else column(name, dtype, fill))[order]
              for name, (dtype, fill) in columns.items()}
    owner = owner[order]
    counts = np.bincount(owner, minlength=len(users))
    present = counts > 0
    offsets = np.zeros(int(present.sum()) + 1, dtype=np.int64)
    np.cumsum(counts[present], out=offsets[1:])
    merged["split"] = _split(merged["timestamp"], owner, counts, bounds, config)
    return {"user": users[present].astype(np.int32), "offsets": offsets, **merged}


def _split(ts: np.ndarray, owner: np.ndarray, counts: np.ndarray, bounds: dict,
           config: PrepareConfig) -> np.ndarray:
    """Split codes of merged events (grouped by owner, in time order), as prepare assigns
    them."""
    s = config.split
    if s.kind == "leave-one-out":
        start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        n = counts[owner]
        from_end = n - 1 - (np.arange(len(owner)) - start[owner])
        return np.where((n >= s.min_events) & (from_end == 0), TEST,
                        np.where((n >= s.min_events) & (from_end == 1), VAL, TRAIN)
                        ).astype(np.uint8)
    return np.select([ts < bounds["val_start"], ts < bounds["train_end"],
                      ts < bounds["test_start"]], [TRAIN, VAL, GAP], TEST).astype(np.uint8)


def _user_table(arrays: dict[str, np.ndarray], users: pl.DataFrame) -> pl.DataFrame:
    """The users-table rows of one merged shard (its number is set when it is written)."""
    index = arrays["user"]
    owner = np.repeat(np.arange(len(index)), np.diff(arrays["offsets"]))
    counts = {name: np.bincount(owner[arrays["split"] == code], minlength=len(index))
              for name, code in (("n_train", TRAIN), ("n_val", VAL), ("n_test", TEST))}
    table = pl.DataFrame({"index": index.astype(np.int32),
                          "offset": np.arange(len(index), dtype=np.int32),
                          "n_events": np.diff(arrays["offsets"]).astype(np.int32),
                          **{k: v.astype(np.int32) for k, v in counts.items()}})
    table = table.join(users.with_columns(pl.col("index").cast(pl.Int32)), on="index",
                       how="left", maintain_order="left")
    return table.select("index", USER, pl.lit(0, dtype=pl.Int32).alias("shard"), "offset",
                        "n_events", "n_train", "n_val", "n_test")


def _items_table(base: PreparedData, items: pl.DataFrame, stats: _ShardStats,
                 tmp: Path) -> pl.DataFrame:
    """The base's item rows with their side data, then the new items (no side data), with the
    merged training counts; content vectors grow by zero rows (has_embedding false). For a
    source without item side tables."""
    old = base.items().drop("train_count", "train_positive_count").sort("index")
    fresh = items.filter(pl.col("index") > len(old))
    table = pl.concat([old, fresh], how="diagonal_relaxed")
    fill = {c: 0 for c in table.columns if c.endswith("_index") and c != "index"}
    table = table.with_columns(*[pl.col(c).fill_null(v) for c, v in fill.items()])
    if "has_embedding" in table.columns:
        table = table.with_columns(pl.col("has_embedding").fill_null(False))
    content = base.path / "item_embeddings.npy"
    if content.exists():
        matrix = np.load(content, mmap_mode="r")
        grown = np.zeros((len(table) + 1, matrix.shape[1]), dtype=np.float32)
        grown[:len(matrix)] = matrix
        np.save(tmp / "item_embeddings.npy", grown)
    return table.with_columns(pl.Series("train_count", stats.train_count[1:]),
                              pl.Series("train_positive_count", stats.train_positive[1:]))
