"""The canonical event table every reader produces and `prepare` consumes.

One event = (context, item, feedback) at a timestamp for a user (DESIGN.md, "The data model").
Readers turn Yambda, MovieLens, RecBole, SASRec/S3-Rec line files and mapped Parquet/CSV into
an :class:`EventLog`: a *lazy* polars frame with the columns below, so a log larger than memory
is only ever streamed.

Columns of ``EventLog.frame``:

| column        | dtype            | meaning                                                       |
|---------------|------------------|---------------------------------------------------------------|
| user          | Int64, String or Binary | original user id                                       |
| item          | Int64, String or Binary | original item id                                       |
| timestamp     | Int64            | seconds (or positions, when ``has_time`` is False); >= 0      |
| event_type    | String           | listen, like, dislike, unlike, undislike, rating, interaction |
| <context>     | Boolean / String / Int64, nullable | one column per name in ``context``          |
| <feedback>    | Float32, nullable | one column per name in ``feedback``; null = signal absent    |
| <extra>       | Float32, nullable | per-event numbers that are neither (track_length)            |
| _source       | UInt16           | index into ``sources``: which file the row came from          |
| _row          | Int64            | 1-based data row inside that file (header not counted)        |

``_source`` and ``_row`` give the input order (ties in time keep it) and let every error name
the file and row it is about; ``EventLog.source_columns`` gives the name the file has for each
canonical column, so that errors name the user's column.

Values have ranges (argusrec.readers.values checks them on the whole log before anything is
written): ``played_ratio`` is a fraction 0..1, the binary signals are 0 or 1, every other
feedback and extra number is finite, and ``event_type`` is one of :data:`EVENT_TYPES` or a type
the user declared (``PrepareConfig.extra_event_types``), so a misspelling never becomes a type.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from argusrec.errors import DataError

USER = "user"
ITEM = "item"
TIMESTAMP = "timestamp"
EVENT_TYPE = "event_type"
SOURCE = "_source"
ROW = "_row"

# Context signals we know by name; readers and column mappings may add others (surface, device...).
IS_ORGANIC = "is_organic"

# Feedback signals we know by name, with their kind. "binary" signals are 0/1, "ratio" is a
# fraction of the track played (Yambda's played_ratio_pct / 100), "value" is any number.
FEEDBACK_KINDS: dict[str, str] = {
    "played_ratio": "ratio",
    "like": "binary",
    "dislike": "binary",
    "skip": "binary",
    "playlist_add": "binary",
    "rating": "value",
}

EXTRA_COLUMNS = ("track_length",)

EVENT_TYPES = ("interaction", "listen", "like", "dislike", "unlike", "undislike", "rating")

# Timestamp units `prepare` converts to seconds (PrepareConfig.timestamp_unit): per second.
TIMESTAMP_UNITS: dict[str, int] = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}


@dataclass(frozen=True)
class ItemFeatures:
    """Item side tables that come with some logs (Yambda's mappings and audio embeddings).

    Each is a lazy frame keyed by ``item`` (same dtype as the events' item column):
    ``artist`` has (item, artist), ``album`` has (item, album), ``embeddings`` has
    (item, embedding: List[Float32]).
    """

    artist: pl.LazyFrame | None = None
    album: pl.LazyFrame | None = None
    embeddings: pl.LazyFrame | None = None
    sources: tuple[str, ...] = ()  # the files they are read from, for error messages


@dataclass(frozen=True)
class EventLog:
    """An event log in canonical form; see the module docstring for the columns."""

    frame: pl.LazyFrame
    sources: tuple[str, ...]
    context: tuple[str, ...] = ()
    feedback: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    has_time: bool = True
    format: str = "events"
    items: ItemFeatures = field(default_factory=ItemFeatures)
    # canonical column -> its name in the input, for messages (absent: the canonical name)
    source_columns: dict[str, str] = field(default_factory=dict, hash=False)
    # feedback read from a percentage column (Yambda's played_ratio_pct), divided by 100
    percent: tuple[str, ...] = ()
    # one frame per source whose concatenation is ``frame``, where each source's rows do not
    # depend on the others' (not with positions for timestamps): a distributed reader
    # (argusrec.spark_prepare) reads them piece by piece; empty means ``frame`` is one piece
    parts: tuple[pl.LazyFrame, ...] = field(default=(), hash=False, compare=False)

    def source_column(self, name: str) -> str:
        """What the input calls the canonical column ``name``."""
        return self.source_columns.get(name, name)

    @property
    def columns(self) -> list[str]:
        return [USER, ITEM, TIMESTAMP, EVENT_TYPE, *self.context, *self.feedback, *self.extra,
                SOURCE, ROW]



def feedback_kind(name: str) -> str:
    """The kind of a feedback signal: binary, ratio or value (unknown names are values)."""
    return FEEDBACK_KINDS.get(name, "value")


def check_path(path: str | Path, what: str = "input") -> Path:
    """Resolve a path that must exist, or raise a DataError naming it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(
            f"{what} does not exist",
            path=p,
            fix="check the path (relative paths are taken from the current directory)",
        )
    return p
