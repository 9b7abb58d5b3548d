"""The prepared dataset on disk: per-user sequence shards plus metadata.

`argus prepare` writes, and every later stage (training loader, evaluation, fine-tuning, export)
reads, one directory:

    meta.json                 format version, source, counts, fields, split boundaries, shards
    users.parquet             index, original id, shard, offset in shard, events per split
    items.parquet             index (1-based; 0 is padding), original id, counts (logQ), side data
    item_embeddings.npy       (V+1, E) float32 content vectors, row 0 zeros (when the log has them)
    shards/00000/*.npy        one flat array per event field, users back to back, plus
                              offsets.npy (U_shard+1,) so user j owns events offsets[j]:offsets[j+1]

Shards are plain .npy files so the loader memory-maps them: worker processes share the page
cache and a batch only slices and pads (STYLE.md principle 10).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from argusrec.errors import DataError

FORMAT_VERSION = 1

# Split codes stored per event.
TRAIN, VAL, TEST, GAP = 0, 1, 2, 3
SPLIT_CODES = {"train": TRAIN, "val": VAL, "test": TEST, "gap": GAP}


def write_shard(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write one shard's arrays as .npy files into ``directory`` (created).

    Per user: ``user`` (U,) global indices and ``offsets`` (U+1,). Per event: timestamp, item,
    event_type, split, positive, ``ctx_<name>`` int32 codes (0 = unknown; is_organic: 1
    organic, 2 recommendation), ``fb_<name>`` float32 (NaN = absent), ``x_<name>`` float32.
    """
    directory.mkdir(parents=True, exist_ok=False)
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)


@dataclass(frozen=True)
class Shard:
    """Memory-mapped arrays of one shard. ``events[name]`` are (E_shard,) arrays."""

    directory: Path
    users: np.ndarray  # (U_shard,) global user indices
    offsets: np.ndarray  # (U_shard + 1,)
    events: dict[str, np.ndarray]

    @classmethod
    def open(cls, directory: Path) -> "Shard":
        arrays = {p.stem: np.load(p, mmap_mode="r") for p in sorted(directory.glob("*.npy"))}
        users = arrays.pop("user")
        offsets = arrays.pop("offsets")
        return cls(directory=directory, users=users, offsets=offsets, events=arrays)

    def __len__(self) -> int:
        return len(self.users)


class ContextFieldMeta(BaseModel):
    """One context field: its values (value i has code i + 1; 0 is unknown)."""

    cardinality: int  # codes, 0 included
    values: list = []


class FieldsMeta(BaseModel):
    """What the events carry: event types (code i + 1), context fields, feedback signals."""

    event_types: list[str]
    context: dict[str, ContextFieldMeta]
    feedback: dict[str, str]  # signal -> kind (binary, ratio, value), in array order
    extra: list[str] = []
    item_embedding_dim: int | None = None


class CountsMeta(BaseModel):
    events: int
    users: int
    items: int
    input_events: int = 0
    dropped_events: int = 0
    duplicates_dropped: int = 0
    reactions_merged: int = 0
    split_events: dict[str, int]
    split_users_with_targets: dict[str, int] = {}


class SplitMeta(BaseModel):
    """The split's kind and codes, and (temporal) its boundaries in seconds."""

    kind: str
    codes: dict[str, int]
    time_min: int | None = None
    time_max: int | None = None
    val_start: int | None = None
    train_end: int | None = None
    test_start: int | None = None
    test_end: int | None = None


class ShardMeta(BaseModel):
    dir: str
    users: int
    events: int


class SourceMeta(BaseModel):
    """Where the events came from; ``base`` and ``appended`` for the daily cycle."""

    path: str
    format: str
    files: list[str] = []
    has_time: bool = True
    base: str | None = None
    appended: list[str] = []


class DatasetMeta(BaseModel):
    """meta.json, typed: every reader of a prepared dataset's metadata goes through this
    (``PreparedData.info``); argusrec.shard_writer.finish_dataset writes it."""

    model_config = ConfigDict(extra="ignore")

    format_version: int
    argusrec_version: str = ""
    created: str = ""
    source: SourceMeta
    config: dict  # PrepareConfig's fields (argusrec.prepare imports this module)
    counts: CountsMeta
    split: SplitMeta
    fields: FieldsMeta
    positive_rule: dict = {}
    shards: list[ShardMeta]


class PreparedData:
    """A prepared dataset directory, opened read-only. ``info`` is its meta.json, typed;
    ``meta`` the same as parsed JSON (what checkpoints and `argus info --json` carry).

    Example:
        >>> data = PreparedData("out/ml-1m")          # doctest: +SKIP
        >>> data.info.counts.events                   # doctest: +SKIP
        999611
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            raise DataError(
                "not a prepared dataset (meta.json is missing)",
                path=self.path,
                fix="run `argus prepare` first and pass its output directory",
            )
        self.meta = json.loads(meta_path.read_text())
        version = self.meta.get("format_version")
        if version != FORMAT_VERSION:
            raise DataError(
                f"prepared with format version {version}, this argusrec reads {FORMAT_VERSION}",
                path=meta_path,
                fix="prepare the data again with this version of argusrec",
            )
        try:
            self.info = DatasetMeta(**self.meta)
        except ValidationError as e:
            first = e.errors()[0]
            raise DataError(f"meta.json is damaged: {'.'.join(map(str, first['loc']))}: "
                            f"{first['msg']}", path=meta_path,
                            fix="prepare the data again") from None

    @property
    def num_items(self) -> int:
        """Catalogue size V; item indices run 1..V (0 is padding)."""
        return self.info.counts.items

    @property
    def num_users(self) -> int:
        return self.info.counts.users

    @property
    def context_fields(self) -> dict[str, int]:
        """Context field -> number of codes (including 0 = unknown)."""
        return {name: f.cardinality for name, f in self.info.fields.context.items()}

    @property
    def feedback_fields(self) -> dict[str, str]:
        """Feedback field -> kind (binary, ratio, value)."""
        return dict(self.info.fields.feedback)

    @cached_property
    def shards(self) -> list[Shard]:
        return [Shard.open(self.path / s.dir) for s in self.info.shards]

    def items(self):
        """The items table as a polars DataFrame."""
        import polars as pl

        return pl.read_parquet(self.path / "items.parquet")

    def users(self):
        """The users table as a polars DataFrame."""
        import polars as pl

        return pl.read_parquet(self.path / "users.parquet")

    def item_counts(self, positives: bool = False) -> np.ndarray:
        """(V+1,) training-period counts per item index, for logQ correction (0 at padding)."""
        column = "train_positive_count" if positives else "train_count"
        table = self.items()
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        counts[table["index"].to_numpy()] = table[column].to_numpy()
        return counts

    def item_counts_where(self, field: str, value: str) -> np.ndarray:
        """(V+1,) training-period counts of the events whose context ``field`` is ``value``
        (one pass over the shards), for the logQ correction of targets chosen by context."""
        code = self.info.fields.context[field].values.index(value) + 1
        counts = np.zeros(self.num_items + 1, dtype=np.int64)
        for shard in self.shards:
            ev = shard.events
            keep = (np.asarray(ev["split"]) == TRAIN) & (np.asarray(ev[f"ctx_{field}"]) == code)
            counts += np.bincount(np.asarray(ev["item"])[keep], minlength=len(counts))
        return counts

    def user_events(self, user: int) -> dict[str, np.ndarray]:
        """All stored events of one user (global index), as arrays; a slow, plain accessor."""
        row = self.users().row(user, named=True)
        if row["shard"] < 0:  # a user of a base dataset with no events in this one
            return {name: a[:0].copy() for name, a in self.shards[0].events.items()}
        shard = self.shards[row["shard"]]
        start, stop = int(shard.offsets[row["offset"]]), int(shard.offsets[row["offset"] + 1])
        return {name: np.asarray(a[start:stop]) for name, a in shard.events.items()}
