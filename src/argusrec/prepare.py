"""`argus prepare`: an event log in, per-user sequence shards plus metadata out.

The log is streamed twice and never held whole (DESIGN.md, "Scale"):

1. **partition**: the reader's lazy frame is sunk, by polars' streaming engine, into buckets
   keyed by a hash of the user id, so every user's events land in exactly one bucket;
2. **statistics**: time range (and a histogram, when the split's cut-off is chosen by share of
   events), then the vocabularies of users, items, event types and context values;
3. **shards**: bucket by bucket (each fits in memory): validate, sort each user's events stably
   (by time; ties keep input order), assign the split, map ids to dense indices, and write the
   arrays that `argusrec.sequences` describes.

Everything is written into a temporary sibling of the output directory that is renamed at the
end, so a failure never leaves a half-written dataset behind.
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path
from typing import Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, field_validator

from argusrec.append import append_into
from argusrec.atomic import replace_dir, sweep_stale, temp_sibling
from argusrec.errors import DataError
from argusrec.events import TIMESTAMP, EventLog, feedback_kind
from argusrec.readers import read_events, source_name
from argusrec.sequences import PreparedData
from argusrec.engines import Engine, PolarsEngine, engine_for
from argusrec.shard_writer import (_ShardStats, bucket_directories, finish_dataset,
                                   prepare_bucket)
from argusrec.stages import (PrepareSummary, _attach_item_features, _Encoder, _split_boundaries,
                             in_seconds)


class SplitConfig(BaseModel):
    """How events are divided into train / validation / test."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["temporal", "leave-one-out"] = Field(
        "temporal", description="global temporal split (one cut-off for all users) or "
        "leave-one-out (each user's last event is test, the one before is validation)")
    cutoff: int | None = Field(
        None, description="temporal: first timestamp after training; None = chosen from "
        "test_duration (the last test_duration seconds) or test_fraction")
    test_fraction: float = Field(
        0.1, gt=0, lt=1, description="temporal, no cutoff or test_duration: share of events "
        "(by time) that fall after the cut-off")
    gap: int = Field(0, ge=0, description="temporal: seconds between the end of training and "
                     "the start of test; events in it are kept but never targets (Yambda: 1800)")
    test_duration: int | None = Field(
        None, gt=0, description="temporal: seconds of test after the gap (Yambda: 86400); "
        "later events are dropped. None = everything after the gap")
    val_duration: int = Field(0, ge=0, description="temporal: the last seconds before the "
                              "cut-off held out as validation")
    min_events: int = Field(3, ge=1, description="leave-one-out: users with fewer events stay "
                            "entirely in training (SASRec's convention)")


class PrepareConfig(BaseModel):
    """Options of `argus prepare`."""

    model_config = ConfigDict(extra="forbid")

    format: str = Field("auto", description="input format (see `argus prepare --help`)")
    columns: dict[str, str] | None = Field(
        None, description="table format: canonical name -> source column")
    ignore_extra: bool = Field(False, description="table format: ignore unmapped columns")
    split: SplitConfig = Field(default_factory=SplitConfig)
    on_duplicate: Literal["error", "drop", "keep"] = Field(
        "error", description="what to do with exact duplicate events")
    min_played_ratio: float = Field(0.5, ge=0, description="a listen is positive at or above "
                                    "this played fraction (Yambda's listen+: 0.5)")
    min_rating: float | None = Field(None, description="a rating is positive at or above this "
                                     "value; None = every rated item is positive")
    merge_reactions: bool = Field(
        False, description="Yambda-style logs: attach each like / dislike event to the user's "
        "latest listen of that item at or before it (as its like / dislike feedback) and drop "
        "the reaction row; other listens get like = dislike = 0")
    shard_events: int = Field(4_000_000, ge=1_000, description="target events per shard; "
                              "bounds memory (about 100 bytes per event while preparing)")
    extra_event_types: list[str] = Field(
        default_factory=list, description="event types the log may hold besides "
        "argusrec.events.EVENT_TYPES (click, purchase...); any other type is refused, so a "
        "misspelling never becomes a type. A declared type counts as a positive interaction "
        "unless its feedback says otherwise")
    timestamp_unit: Literal["s", "ms", "us", "ns"] = Field(
        "s", description="unit of the log's timestamps; ms/us/ns are converted to whole "
        "seconds (events within one second keep their input order). A log declared in "
        "seconds whose timestamps mostly lie after the year 5000 is refused with the unit to "
        "declare")

    @field_validator("extra_event_types")
    @classmethod
    def _event_type_names(cls, names: list[str]) -> list[str]:
        bad = [n for n in names if not n.strip() or n != n.strip()]
        if bad:
            raise ValueError("event type names must be non-empty, without surrounding "
                             f"spaces: {bad[:3]}")
        return list(dict.fromkeys(names))


def prepare(
    source: str | Path | pl.DataFrame | pl.LazyFrame,
    out: str | Path,
    config: PrepareConfig | None = None,
    *,
    base: str | Path | PreparedData | None = None,
    append: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    engine: str | Engine = "polars",
    spark_master: str | None = None,
) -> PrepareSummary:
    """Prepare an event log into the dataset directory ``out``.

    ``source`` is a path in any format of :data:`argusrec.readers.FORMATS`, or an in-memory
    polars DataFrame / LazyFrame or pandas DataFrame, read as a "table" (with ``config.columns``,
    or by its columns already named user, item, timestamp, ...); see
    :func:`argusrec.readers.read_events`. A path-based table needs ``config.columns``.

    The daily cycle (DESIGN.md, "Deployment"): with ``base`` (an earlier prepared dataset),
    users, items, event types and context values keep the codes ``base`` gave them and new
    ones are coded after them, so a model trained on ``base`` keeps meaning the same rows.
    With ``append`` too, ``source`` holds only the new events, which are merged into
    ``base``'s shards (argusrec.append); ``base`` is never modified. ``config`` defaults to
    ``base``'s.

    ``engine`` "spark" does the work that grows with the log on Spark (argusrec.engines;
    ``spark_master`` or the spark-submit configuration, local[*] by default) and writes the
    same dataset as "polars".
    """
    engine = engine_for(engine, spark_master)
    if isinstance(base, (str, Path)):
        base = PreparedData(base)
    if append and base is None:
        raise DataError("--append needs --base, the dataset to append to",
                        fix="pass --base PREV_DATA")
    config = config or (PrepareConfig(**base.info.config) if base is not None
                        else PrepareConfig())
    started = time.perf_counter()
    out = Path(out)
    _check_output(out, source, base, overwrite)
    log = read_events(source, config.format, columns=config.columns,
                      ignore_extra=config.ignore_extra)
    sweep_stale(out)  # what a killed earlier run left
    tmp = temp_sibling(out)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as e:
        raise DataError(f"cannot create the output: {e.strerror}", path=out.parent,
                        fix="choose a directory you can write to") from None
    try:
        if append:
            summary = append_into(log, source, base, tmp, config, progress, engine)
        else:
            summary = _prepare_into(log, source, tmp, config, progress, base, engine)
        replace_dir(tmp, out)  # --overwrite: the old dataset goes only once the new one is in
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary.out = str(out)
    summary.seconds = time.perf_counter() - started
    if base is not None:
        summary.new_users = summary.users - base.num_users
        summary.new_items = summary.items - base.num_items
    return summary


def _check_output(out: Path, source, base: PreparedData | None, overwrite: bool) -> None:
    """Refuse an output that exists (without ``overwrite``), is a file, or would replace the
    input or the base."""
    if out.exists() and not overwrite:
        raise DataError("output directory already exists", path=out,
                        fix="choose a new directory or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise DataError("the output is a file, not a directory", path=out,
                        fix="choose a directory path for the prepared dataset")
    if isinstance(source, (str, Path)) and _inside(Path(source), out):
        raise DataError("the output would replace the input log", path=out,
                        fix="write the prepared dataset to another directory")
    if base is not None and _inside(base.path, out):
        raise DataError("the output would replace the base dataset", path=out,
                        fix="write the new dataset to another directory (the base is kept)")


def _inside(path: Path, out: Path) -> bool:
    """Whether ``out`` is ``path`` or a directory above it."""
    path, out = path.resolve(), out.resolve()
    return path == out or out in path.parents


def _prepare_into(log: EventLog, source, tmp: Path, config: PrepareConfig, progress: bool,
                  base: PreparedData | None = None, engine: Engine | None = None
                  ) -> PrepareSummary:
    engine = engine or PolarsEngine()
    if config.merge_reactions and not {"like", "dislike"} & set(log.feedback):
        raise DataError("--merge-reactions needs like or dislike events", path=log.sources[0],
                        fix="drop the option: this log has no reactions to merge")
    total, buckets = engine.partition(log, tmp, config, progress)
    scan = pl.scan_parquet(buckets / "**" / "*.parquet", hive_partitioning=False)
    bounds = _split_boundaries(scan, config.split, total, log)
    kept = scan if bounds.get("test_end") is None else scan.filter(
        pl.col(TIMESTAMP) < bounds["test_end"])
    vocab = engine.vocabularies(kept, log, buckets, bounds.get("test_end"))
    if base is not None:
        vocab = vocab.keeping(base)
    encode = _Encoder(log, config, bounds, vocab)
    stats = _ShardStats(len(vocab.items))
    work = partial(prepare_bucket, tmp=tmp, log=log, config=config, encode=encode,
                   schema=in_seconds(log.frame, log, config).collect_schema(),
                   remove_input=engine.name == "polars")
    for result in engine.map(work, bucket_directories(buckets), desc="prepare: shards",
                             progress=progress):
        stats.record(tmp, result)
    shutil.rmtree(buckets)
    items = vocab.items.with_columns(
        pl.Series("train_count", stats.train_count[1:]),
        pl.Series("train_positive_count", stats.train_positive[1:]))
    items, embedding_dim = _attach_item_features(log, items, tmp)
    fields = {"event_types": vocab.event_types, "context": vocab.context,
              "feedback": {name: feedback_kind(name) for name in log.feedback},
              "extra": list(log.extra), "item_embedding_dim": embedding_dim}
    source_meta = {"path": source_name(source), "format": log.format,
                   "files": list(log.sources), "has_time": log.has_time}
    if base is not None:
        source_meta["base"] = str(base.path.resolve())
    return finish_dataset(tmp, config, stats, vocab.users, items, fields, bounds, total,
                          source_meta)


