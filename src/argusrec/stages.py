"""The stages of `argus prepare` that preparing a log and appending a day share.

argusrec.prepare (a whole log) and argusrec.append (a day merged into a dataset) are both made
of these steps, in this order: partition the events into buckets by user (``_partition``,
which also converts the timestamp unit and checks the values of the whole log with
readers.values), find the split's boundaries (``_split_boundaries``, which refuses a
degenerate test period) and the id vocabularies
(``_vocabularies``, ``Vocabularies.keeping`` for a base dataset's codes), clean each bucket
(``clean_bucket``: validate, sort, duplicates, reactions), encode it into shard arrays
(``_Encoder``), write it and write the tables and meta.json (argusrec.shard_writer). Configs
are argusrec.prepare's ``PrepareConfig``.
"""

from __future__ import annotations

import errno
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import polars as pl

from argusrec.errors import DataError
from argusrec.events import (
    EVENT_TYPE, IS_ORGANIC, ITEM, ROW, SOURCE, TIMESTAMP, TIMESTAMP_UNITS, USER, EventLog,
)
from argusrec.readers import check_events, duplicate_error, find_duplicates
from argusrec.readers.failures import READ_ERRORS, read_failure, reading
from argusrec.readers.values import check_values
from argusrec.sequences import GAP, TEST, TRAIN, VAL, PreparedData

if TYPE_CHECKING:  # only for annotations: argusrec.prepare imports this module
    from argusrec.prepare import PrepareConfig, SplitConfig
    from argusrec.shard_writer import Counters, _ShardStats

BUCKET = "_bucket"
HISTOGRAM_BINS = 1 << 20
NEGATIVE_EVENT_TYPES = ("dislike", "unlike", "undislike")


@dataclass
class PrepareSummary:
    """What `prepare` wrote."""

    out: str
    events: int
    users: int
    items: int
    split_events: dict[str, int]
    dropped_events: int
    duplicates_dropped: int
    shards: int
    seconds: float
    boundaries: dict[str, int | None] = field(default_factory=dict)
    reactions_merged: int = 0
    read_events: int | None = None  # events read from the source (append: the new ones)
    new_users: int | None = None  # with a base: users and items it did not have
    new_items: int | None = None

    @property
    def events_per_second(self) -> float:
        """Input events read per second."""
        read = self.read_events if self.read_events is not None else (
            self.events + self.dropped_events)
        return read / max(self.seconds, 1e-9)


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr, flush=True)


def _polars_error(log: EventLog, error: BaseException, tmp: Path | None = None) -> DataError:
    """A polars failure while streaming the input (a damaged Parquet page, say), located in
    its file and row where a second look can find it (readers.failures.read_failure)."""
    full = isinstance(error, OSError) and error.errno == errno.ENOSPC
    if full or "No space left" in str(error):
        return DataError("no space left on the disk of the output", path=tmp,
                         fix="free some space, or write the dataset to another disk "
                             "(preparing needs about twice the input's size while it runs)")
    return read_failure(error, log.sources)


@dataclass
class Vocabularies:
    """The id maps of a dataset being prepared: users (index 0..U-1, user), items (index
    1..V, item), event type names (code i + 1) and context values per field (code i + 1)."""

    users: pl.DataFrame
    items: pl.DataFrame
    event_types: list[str]
    context: dict[str, list]

    def keeping(self, base: PreparedData) -> "Vocabularies":
        """These vocabularies with ``base``'s codes kept for everything it has, and the rest
        coded after them (``argus prepare --base``): a model trained on ``base`` and the
        snapshots exported from it keep meaning the same rows."""
        fields = base.meta["fields"]
        context = {name: list(values) for name, values in self.context.items()}
        for name, f in fields["context"].items():
            old = list(f.get("values", []))
            context[name] = old + [v for v in context.get(name, []) if v not in set(old)]
        types = list(fields["event_types"])
        return Vocabularies(
            users=_extend_ids(base.users().select("index", USER), self.users, USER, base.path,
                              start=0),
            items=_extend_ids(base.items().select("index", ITEM), self.items, ITEM, base.path,
                              start=1),
            event_types=types + [t for t in self.event_types if t not in set(types)],
            context=context)


def _vocabularies(kept: pl.LazyFrame, log: EventLog) -> Vocabularies:
    """Sorted unique users, items, event types and context values of the kept events."""
    string_contexts = text_contexts(log)
    queries = [kept.select(pl.col(USER).unique().sort()),
               kept.select(pl.col(ITEM).unique().sort()),
               kept.select(pl.col(EVENT_TYPE).unique().sort())]
    queries += [kept.select(pl.col(c).drop_nulls().unique().sort()) for c in string_contexts]
    users, items, event_types, *context_values = pl.collect_all(queries)
    return vocabularies_of(users, items, event_types[EVENT_TYPE].to_list(),
                           {c: v[c].to_list() for c, v in zip(string_contexts, context_values)},
                           log)


def vocabularies_of(users: pl.DataFrame, items: pl.DataFrame, event_types: list,
                    context: dict[str, list], log: EventLog) -> Vocabularies:
    """The vocabularies of the sorted unique users, items, event types and values of the
    text context fields (however an engine found them)."""
    context = {IS_ORGANIC: ["organic", "recommendation"], **context} if (
        IS_ORGANIC in log.context) else dict(context)
    return Vocabularies(
        users=users.with_row_index("index").with_columns(pl.col("index").cast(pl.Int32)),
        items=items.with_row_index("index", offset=1).with_columns(
            pl.col("index").cast(pl.Int32)),
        event_types=[v for v in event_types if v is not None],
        context=context)


def text_contexts(log: EventLog) -> list[str]:
    """The context fields whose values get codes from the vocabulary (is_organic's are
    fixed)."""
    return [c for c in log.context if c != IS_ORGANIC]


def _extend_ids(old: pl.DataFrame, new: pl.DataFrame, column: str, where: Path, *,
                start: int) -> pl.DataFrame:
    """``old``'s (index, id) rows, then the ids of ``new`` it lacks with the next indices."""
    if old[column].dtype != new[column].dtype:
        try:
            new = new.with_columns(pl.col(column).cast(old[column].dtype, strict=True))
        except pl.exceptions.PolarsError:
            raise DataError(f"the base dataset's {column} ids are {old[column].dtype}, this "
                            f"log's are {new[column].dtype}", path=where,
                            fix=f"map the same {column} column as when the base was prepared")
    old = old.sort("index").with_columns(pl.col("index").cast(pl.Int32))
    if old["index"].to_list() != list(range(start, start + len(old))):
        raise DataError(f"the base dataset's {column} indices are not contiguous", path=where,
                        fix="use a dataset written by `argus prepare` as --base")
    fresh = new.select(column).join(old.select(column), on=column, how="anti",
                                    maintain_order="left")
    fresh = fresh.with_row_index("index", offset=start + len(old)).with_columns(
        pl.col("index").cast(pl.Int32))
    return pl.concat([old, fresh.select("index", column)])


Route = Callable[[pl.LazyFrame], pl.LazyFrame]


def in_seconds(frame: pl.LazyFrame, log: EventLog, config: PrepareConfig) -> pl.LazyFrame:
    """``frame`` with timestamps in ``config.timestamp_unit`` turned into whole seconds
    (events of one second then keep their input order)."""
    factor = TIMESTAMP_UNITS[config.timestamp_unit]
    if factor > 1 and not log.has_time:
        raise DataError(f"timestamp_unit '{config.timestamp_unit}' given, but this "
                        f"{log.format} log has no timestamps (its events are numbered by "
                        "position)", path=log.sources[0], fix="drop --timestamp-unit")
    return frame.with_columns(pl.col(TIMESTAMP) // factor) if factor > 1 else frame


def count_events(frame: pl.LazyFrame, log: EventLog, tmp: Path) -> int:
    try:
        return int(frame.select(pl.len()).collect().item())
    except READ_ERRORS as e:
        raise _polars_error(log, e, tmp) from None


def bucket_count(total: int, log: EventLog, config: PrepareConfig) -> int:
    if total == 0:
        raise DataError("no events", path=log.sources[0], fix="check the input file")
    return max(1, math.ceil(total / config.shard_events))


def user_bucket(n_buckets: int) -> pl.Expr:
    """The bucket of each event's user: a hash of the id (the same in every engine, as
    both evaluate it with polars)."""
    return pl.col(USER).hash(seed=17) % n_buckets


def check_buckets(buckets: Path, log: EventLog, config: PrepareConfig) -> None:
    """The values of the whole log checked (readers.values.check_values), on the buckets
    just written, before anything else is."""
    check_values(pl.scan_parquet(buckets / "**" / "*.parquet", hive_partitioning=False), log,
                 extra_event_types=config.extra_event_types,
                 timestamp_unit=config.timestamp_unit)


def _partition(log: EventLog, tmp: Path, config: PrepareConfig, progress: bool,
               key: pl.Expr | None = None, n_buckets: int | None = None,
               route: Route | None = None) -> tuple[int, Path]:
    """Sink the log into ``tmp/_buckets``, one directory per bucket of ``key`` (default a hash
    of the user id into enough buckets of ``shard_events``); (events, directory).

    ``route`` adds the columns ``key`` needs (append: each user's shard in the base).
    Timestamps become seconds on the way (:func:`in_seconds`), and the values of the whole log
    are checked before anything else is written.
    """
    frame = in_seconds(route(log.frame) if route else log.frame, log, config)
    total = count_events(log.frame, log, tmp)
    n_buckets = n_buckets or bucket_count(total, log, config)
    buckets = tmp / "_buckets"
    _say(progress, f"prepare: {total:,} events from {len(log.sources)} file(s) ({log.format}); "
         f"partitioning into {n_buckets} shard(s)")
    key = key if key is not None else user_bucket(n_buckets)
    try:
        (frame.with_columns(key.alias(BUCKET))
         .sink_parquet(pl.PartitionBy(buckets, key=BUCKET, include_key=False),
                       compression="lz4", mkdir=True))
    except READ_ERRORS as e:
        raise _polars_error(log, e, tmp) from None
    check_buckets(buckets, log, config)
    return total, buckets


def clean_bucket(df: pl.DataFrame, log: EventLog, config: PrepareConfig,
                 stats: "_ShardStats | Counters") -> pl.DataFrame:
    """One bucket validated, sorted by (user, time, input order), duplicates handled and
    reactions merged (counted in ``stats``)."""
    check_events(df, log)
    df = df.sort([USER, TIMESTAMP, SOURCE, ROW])
    if config.on_duplicate != "keep":
        before = len(df)
        df = _handle_duplicates(df, log, config.on_duplicate)
        stats.duplicates_dropped += before - len(df)
    if config.merge_reactions:
        df, merged = merge_reactions(df, log)
        stats.reactions_merged += merged
    return df




def _split_boundaries(scan: pl.LazyFrame, split: SplitConfig, total: int,
                      log: EventLog | None = None) -> dict:
    """Timestamps that divide train / val / gap / test for a temporal split (``log``: the
    input, for messages).

    A cut-off chosen here (no ``split.cutoff``) is refused when it leaves a degenerate test
    period (:func:`_check_test_period`): one outlier timestamp far after the rest would
    otherwise make the last ``test_duration`` seconds hold that one event.
    """
    if split.kind == "leave-one-out":
        return {}
    stats = scan.select(pl.col(TIMESTAMP).min().alias("lo"),
                        pl.col(TIMESTAMP).max().alias("hi")).collect().row(0, named=True)
    lo, hi = stats["lo"], stats["hi"]
    sources = log.sources if log is not None else ()
    where = ", ".join(sources[:3]) + (" ..." if len(sources) > 3 else "") or None
    column = log.source_column(TIMESTAMP) if log is not None else TIMESTAMP
    if lo is None:
        raise DataError("the timestamp column has no values", path=where, column=column)
    cutoff = split.cutoff
    if cutoff is None and split.test_duration is not None:
        cutoff = hi + 1 - split.test_duration - split.gap
    elif cutoff is None:
        cutoff = _edge_after(scan, lo, hi, total, split.test_fraction * total)
    test_start = cutoff + split.gap
    test_end = None if split.test_duration is None else test_start + split.test_duration
    if cutoff <= lo or test_start > hi:
        raise DataError(
            f"the temporal split leaves no training or no test events (timestamps run "
            f"{lo}..{hi}; train ends at {cutoff}, test starts at {test_start})",
            path=where, column=column, fix="choose a cut-off inside the log's time range")
    if split.cutoff is None and USER in scan.collect_schema().names():
        # (prepare --append passes the merged timestamps only: its split is not checked)
        _check_test_period(scan, split, total, lo, hi, test_start, test_end, where, column)
    return {"time_min": lo, "time_max": hi, "val_start": cutoff - split.val_duration,
            "train_end": cutoff, "test_start": test_start, "test_end": test_end}


def _edge_after(scan: pl.LazyFrame, lo: int, hi: int, total: int, keep: float) -> int:
    """The first histogram bin edge after which at most ``keep`` events remain: a streamed
    quantile of the timestamps, for logs larger than memory.

    One pass of :data:`HISTOGRAM_BINS` bins over lo..hi is exact to a bin. When the chosen bin
    is wider than a second and holds more than 1% of the events (one outlier far after the
    rest stretches the bins until nearly all events share the first), that bin is histogrammed
    again, until the chosen bin is one second wide or holds at most 1% of the events (at most
    four passes over any Int64 range; a log without such outliers takes one, as before).
    """
    t = pl.col(TIMESTAMP)
    start, end, before = lo, hi + 1, 0  # the range searched, and the events before it
    while True:
        width = max(1, math.ceil((end - start) / HISTOGRAM_BINS))
        inside = scan if before == 0 and start == lo and end == hi + 1 else scan.filter(
            (t >= start) & (t < end))
        hist = inside.group_by(((t - start) // width).alias("bin")).len().sort("bin").collect()
        counts = hist["len"].to_numpy().astype(np.int64)
        after = total - before - np.cumsum(counts)
        first = int(np.argmax(after <= keep))
        edge = start + (int(hist["bin"][first]) + 1) * width
        if width == 1 or counts[first] <= 0.01 * total:
            return edge
        before = total - int(after[first]) - int(counts[first])
        start, end = start + int(hist["bin"][first]) * width, edge


# A chosen test period is degenerate below both of a count and a share (a small log may have
# a small test period; a large one may have a test period that is a small share of it).
MIN_TEST_EVENTS, MIN_TEST_EVENT_SHARE = 1000, 0.001
MIN_TEST_USERS, MIN_TEST_USER_SHARE = 100, 0.01


def _check_test_period(scan: pl.LazyFrame, split: SplitConfig, total: int, lo: int, hi: int,
                       test_start: int, test_end: int | None, where: str | None,
                       column: str = TIMESTAMP) -> None:
    """Refuse a chosen test period that holds fewer than 1,000 events and 0.1% of them, or
    fewer than 100 users and 1% of them, with the counts and where the timestamps lie."""
    t = pl.col(TIMESTAMP)
    in_test = t >= test_start if test_end is None else (t >= test_start) & (t < test_end)
    counts = scan.select(in_test.sum().alias("events"),
                         pl.col(USER).filter(in_test).n_unique().alias("users")
                         ).collect().row(0, named=True)
    events, users = int(counts["events"]), int(counts["users"])
    few_events = events < MIN_TEST_EVENTS and events < MIN_TEST_EVENT_SHARE * total
    all_users = None
    if users < MIN_TEST_USERS:
        all_users = int(scan.select(pl.col(USER).n_unique()).collect().item())
    few_users = all_users is not None and users < MIN_TEST_USER_SHARE * all_users
    if not (few_events or few_users):
        return
    p999 = _edge_after(scan, lo, hi, total, 0.001 * total) - 1
    suggest = _edge_after(scan, lo, p999, total, split.test_fraction * total)
    users_text = f"{users:,} of {all_users:,} users" if all_users is not None else (
        f"{users:,} users")
    far = " (far after the rest: outliers?)" if hi - p999 > 0.1 * max(1, p999 - lo) else ""
    period = f"{test_start}..{test_end if test_end is not None else hi + 1}"
    raise DataError(
        f"the temporal split's test period (timestamps {period}) holds {events:,} of "
        f"{total:,} events ({events / total:.3%}) and {users_text}; the latest timestamp is "
        f"{hi}{far}, the 99.9th percentile about {p999}",
        path=where, column=column,
        fix=f"drop the events after {p999} from the input if their timestamps are wrong; or "
            f"choose the end of training yourself with --cutoff (e.g. --cutoff {suggest} "
            f"leaves about {split.test_fraction:.0%} of the events for test), or give a "
            "longer --test-duration")


def _positive(log: EventLog, config: PrepareConfig) -> pl.Expr:
    """Whether an event is a positive interaction (the target set of SASRec-style training)."""
    rule = pl.when(pl.col(EVENT_TYPE).is_in(list(NEGATIVE_EVENT_TYPES))).then(False)
    if "dislike" in log.feedback:
        rule = rule.when(pl.col("dislike") == 1).then(False)
    if "skip" in log.feedback:
        rule = rule.when(pl.col("skip") == 1).then(False)
    if "like" in log.feedback:
        rule = rule.when(pl.col("like") == 1).then(True)
    if "played_ratio" in log.feedback:
        rule = rule.when(pl.col("played_ratio").is_not_null()).then(
            pl.col("played_ratio") >= config.min_played_ratio)
    if "rating" in log.feedback and config.min_rating is not None:
        rule = rule.when(pl.col("rating").is_not_null()).then(
            pl.col("rating") >= config.min_rating)
    if "like" in log.feedback:
        # "not liked" decides only when nothing stronger does (a 0/1 column in a table); a
        # listen's merged like = 0 leaves it to the listen fraction above
        rule = rule.when(pl.col("like") == 0).then(False)
    return rule.otherwise(True)


def merge_reactions(df: pl.DataFrame, log: EventLog) -> tuple[pl.DataFrame, int]:
    """Move like / dislike events onto the listens they react to; (frame, reactions merged).

    ``df`` is one bucket sorted by (user, timestamp, input order). A reaction attaches to the
    user's latest listen of the same item before it in that order: the listen it follows (an
    as-of join on the position). Only when there is none does a listen of the same second
    placed after it count (a table that orders one second's rows by type, like before
    listen). Yambda's timestamps come in 5-second steps, so a like near a track's end and a
    replay of the track can share one, and matching by time alone would give the like
    to the replay.
    Reactions with no such listen stay as events. Listens then carry like / dislike = 1 or 0,
    which is what the feedback head should predict for a listen (ARGUS, "feedback
    prediction").
    """
    signals = [f for f in ("like", "dislike") if f in log.feedback]
    ordered = df.with_row_index("_pos")
    listens = ordered.filter(pl.col(EVENT_TYPE) == "listen").select(
        USER, ITEM, TIMESTAMP, "_pos", pl.col("_pos").alias("_listen"))
    reactions = ordered.filter(pl.col(EVENT_TYPE).is_in(signals)).select(
        "_pos", USER, ITEM, TIMESTAMP, EVENT_TYPE)
    if len(listens) == 0 or len(reactions) == 0:
        return df, 0
    # _pos rises with (user, timestamp, input order), so "before in position" is "at or
    # before in time, and before in the log on a tie"; both frames are sorted by it.
    before = reactions.join_asof(listens.drop(TIMESTAMP), on="_pos", by=[USER, ITEM],
                                 strategy="backward", allow_exact_matches=False,
                                 check_sortedness=False)
    same_second = (before.filter(pl.col("_listen").is_null()).drop("_listen")
                   .join(listens.drop("_pos").group_by(USER, ITEM, TIMESTAMP)
                         .agg(pl.col("_listen").min()), on=[USER, ITEM, TIMESTAMP]))
    matched = pl.concat([before.filter(pl.col("_listen").is_not_null()), same_second],
                        how="vertical")
    is_listen = pl.col(EVENT_TYPE) == "listen"
    updates = []
    for name in signals:
        hit = matched.filter(pl.col(EVENT_TYPE) == name)["_listen"].implode()
        updates.append(pl.when(is_listen & pl.col("_pos").is_in(hit)).then(1.0)
                       .when(is_listen).then(0.0).otherwise(pl.col(name))
                       .cast(pl.Float32).alias(name))
    out = (ordered.with_columns(updates)
           .filter(~pl.col("_pos").is_in(matched["_pos"].implode())).drop("_pos"))
    return out, len(matched)


def _handle_duplicates(df: pl.DataFrame, log: EventLog, policy: str) -> pl.DataFrame:
    """Raise on exact duplicate events, or drop the repeats (the first copy stays).

    ``df`` is sorted by (user, timestamp, ...), so exact duplicates lie inside runs of equal
    (user, timestamp): only those rows go through the full row comparison, which otherwise
    costs a hash of every column of every row.
    """
    same = (pl.col(USER) == pl.col(USER).shift(1)) & (
        pl.col(TIMESTAMP) == pl.col(TIMESTAMP).shift(1))
    candidates = df.filter(same.fill_null(False) | same.shift(-1).fill_null(False))
    duplicates = find_duplicates(candidates, log)
    if len(duplicates) == 0:
        return df
    if policy == "error":
        raise duplicate_error(duplicates, log)
    repeats = duplicates.select(SOURCE, ROW)
    return df.join(repeats, on=[SOURCE, ROW], how="anti", maintain_order="left")


class _Encoder:
    """Turns one sorted bucket into shard arrays and its rows of the users table."""

    def __init__(self, log: EventLog, config: PrepareConfig, bounds: dict,
                 vocab: Vocabularies) -> None:
        self.log, self.config, self.bounds = log, config, bounds
        self.items = vocab.items.rename({"index": "_item_index"})
        self.users = vocab.users.rename({"index": "_user_index"})
        self.event_types = pl.DataFrame(
            {EVENT_TYPE: vocab.event_types,
             "_event_type": np.arange(1, len(vocab.event_types) + 1, dtype=np.int16)})
        self.context_vocab = vocab.context
        self.positive = _positive(log, config)

    def _split(self) -> pl.Expr:
        s = self.config.split
        if s.kind == "leave-one-out":
            n = pl.len().over(USER)
            from_end = n - 1 - pl.int_range(pl.len()).over(USER)
            return (pl.when((n >= s.min_events) & (from_end == 0)).then(TEST)
                    .when((n >= s.min_events) & (from_end == 1)).then(VAL)
                    .otherwise(TRAIN).cast(pl.UInt8))
        b, t = self.bounds, pl.col(TIMESTAMP)
        return (pl.when(t < b["val_start"]).then(TRAIN).when(t < b["train_end"]).then(VAL)
                .when(t < b["test_start"]).then(GAP).otherwise(TEST).cast(pl.UInt8))

    def _context(self, name: str) -> pl.Expr:
        column = pl.col(name)
        if name == IS_ORGANIC:
            return pl.when(column.is_null()).then(0).when(column).then(1).otherwise(2)
        values = self.context_vocab[name]
        return column.replace_strict(values, range(1, len(values) + 1), default=0)

    def __call__(self, df: pl.DataFrame, shard_no: int) -> tuple[dict[str, np.ndarray],
                                                                 pl.DataFrame]:
        if self.bounds.get("test_end") is not None:
            df = df.filter(pl.col(TIMESTAMP) < self.bounds["test_end"])
        df = (df.join(self.items, on=ITEM, how="left", maintain_order="left")
              .join(self.event_types, on=EVENT_TYPE, how="left", maintain_order="left")
              .with_columns(self._split().alias("_split"), self.positive.alias("_positive"),
                            *[self._context(c).cast(pl.Int32).alias(f"ctx_{c}")
                              for c in self.log.context]))
        per_user = (df.group_by(USER, maintain_order=True)
                    .agg(pl.len().alias("n_events"),
                         *[(pl.col("_split") == code).sum().alias(f"n_{name}")
                           for name, code in (("train", TRAIN), ("val", VAL), ("test", TEST))])
                    .join(self.users, on=USER, how="left", maintain_order="left"))
        offsets = np.zeros(len(per_user) + 1, dtype=np.int64)
        np.cumsum(per_user["n_events"].to_numpy(), out=offsets[1:])
        arrays = {
            "user": per_user["_user_index"].to_numpy().astype(np.int32),
            "offsets": offsets,
            "timestamp": df[TIMESTAMP].to_numpy().astype(np.int64),
            "item": df["_item_index"].to_numpy().astype(np.int32),
            "event_type": df["_event_type"].to_numpy().astype(np.int16),
            "split": df["_split"].to_numpy().astype(np.uint8),
            "positive": df["_positive"].to_numpy().astype(np.bool_),
        }
        for c in self.log.context:
            arrays[f"ctx_{c}"] = df[f"ctx_{c}"].to_numpy().astype(np.int32)
        for name, prefix in [(f, "fb_") for f in self.log.feedback] + [
                (x, "x_") for x in self.log.extra]:
            arrays[prefix + name] = (df[name].cast(pl.Float32).fill_null(float("nan"))
                                     .to_numpy().astype(np.float32))
        user_table = per_user.select(
            pl.col("_user_index").alias("index"), pl.col(USER),
            pl.lit(shard_no, dtype=pl.Int32).alias("shard"),
            pl.int_range(pl.len(), dtype=pl.Int32).alias("offset"),
            pl.col("n_events").cast(pl.Int32), pl.col("n_train").cast(pl.Int32),
            pl.col("n_val").cast(pl.Int32), pl.col("n_test").cast(pl.Int32))
        return arrays, user_table


def _attach_item_features(log: EventLog, items: pl.DataFrame, tmp: Path
                          ) -> tuple[pl.DataFrame, int | None]:
    """Join artist / album ids and write content embeddings aligned to item indices."""
    features = log.items
    for name, frame in (("artist", features.artist), ("album", features.album)):
        if frame is None:
            continue
        with reading(features.sources):
            mapping = frame.unique(subset=[ITEM], keep="first").collect()
        items = items.join(mapping, on=ITEM, how="left", maintain_order="left")
        codes = items[name].drop_nulls().unique().sort()
        items = items.with_columns(
            pl.col(name).replace_strict(codes, range(1, len(codes) + 1), default=0)
            .cast(pl.Int32).alias(f"{name}_index"))
    if features.embeddings is None:
        return items, None
    with reading(features.sources):
        emb = features.embeddings.join(items.lazy().select(ITEM, "index"), on=ITEM,
                                       how="inner").collect()
    if len(emb) == 0:
        return items, None
    lengths = emb["embedding"].list.len()
    dim = int(lengths.max())
    if int(lengths.min()) != dim:
        raise DataError(f"item embeddings have different lengths ({lengths.min()}..{dim})",
                        path=log.sources[0], column="embed",
                        fix="give every item an embedding of the same dimension")
    index = emb["index"].to_numpy()
    matrix = np.zeros((len(items) + 1, dim), dtype=np.float32)
    # an item listed twice keeps its last row, deterministically (the file's order)
    matrix[index] = emb["embedding"].list.to_array(dim).to_numpy().astype(np.float32, copy=False)
    np.save(tmp / "item_embeddings.npy", matrix)
    has = np.zeros(len(items) + 1, dtype=np.bool_)
    has[index] = True
    items = items.with_columns(pl.Series("has_embedding", has[1:]))
    return items, dim
