"""The export's users encoded by many ranks: shard assignment, part files, and rank 0's merge.

DESIGN.md, "Deployment" and "Scale" (the daily export encodes users bucket by bucket in
parallel). Under torchrun every rank loads the model once onto its own device and encodes the
user shards (the prepared data's hash buckets) that :func:`assign_shards` gives it, writing them
to its own part file in a staging directory beside the snapshots (:class:`PartWriter`). After a
barrier rank 0 alone reads the parts back (:func:`read_parts`) into the user store (LMDB has a
single writer), builds the item vectors and HNSW index once, and publishes the snapshot
(argusrec.export, argusrec.snapshot: temporary directory + rename). Rank 0 reads the parts shard
by shard in the order one process encodes them, in the same batches, so the store receives the
same writes whatever the number of ranks; a process started without torchrun is a world of one
and takes the same path.

Why torchrun ranks and not Spark executors: a rank loads the model once and keeps it on its GPU
for the whole export (an executor's Python UDF reloads or receives it per task and shares the
GPU with whatever else the executor runs); vectors go from the device to a file with no
JVM-to-Python Arrow hop; and it is the launcher training already uses, with the same device rules
(argusrec.parallel). Spark stays the engine for preparing the log (DESIGN.md, "Scale").

    torchrun --nproc-per-node 8 -m argusrec.cli export RUN SNAPSHOTS --device cuda --parquet

The snapshots directory (and so the staging directory) must be one every rank can write, as it
is on one machine. Legend: B users in a batch, U user-vector width.
"""

from __future__ import annotations

import heapq
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch.distributed as dist

from argusrec.errors import DataError
from argusrec.parallel import World
from argusrec.vocab import id_text

PARQUET_DIR = "user_vectors"  # the snapshot's Parquet user vectors: part-<rank>.parquet
T = TypeVar("T")


@dataclass(frozen=True)
class UserBatch:
    """Users of one shard encoded together: ``index`` (B,) global user indices, ``vectors``
    (B, U) float32, ``seen`` B int arrays of the item rows each saw by the cut-off."""

    shard: int
    index: np.ndarray
    vectors: np.ndarray
    seen: list[np.ndarray]


def assign_shards(events: list[int], ranks: int) -> list[list[int]]:
    """The shards (ascending) each of ``ranks`` ranks encodes, given each shard's event count:
    the largest shard first onto the least loaded rank, so one big bucket does not leave the
    other ranks waiting at the barrier. Deterministic: every rank computes the same split."""
    load, out = [0] * ranks, [[] for _ in range(ranks)]
    for shard in sorted(range(len(events)), key=lambda s: (-events[s], s)):
        rank = min(range(ranks), key=lambda r: (load[r], r))
        out[rank].append(shard)
        load[rank] += events[shard]
    return [sorted(shards) for shards in out]


def broadcast(value: T, world: World) -> T:
    """Rank 0's ``value`` (picklable) on every rank."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(world: World, work: Callable[[], T]) -> T:
    """``work()`` run on rank 0, its result returned on every rank. When it fails there, rank 0
    raises its error and the other ranks one with its message, instead of waiting for ever."""
    result, failure = None, None
    if world.main:
        try:
            result = work()
        except Exception as e:
            failure = e
    shared = broadcast((result, None if failure is None else
                        (isinstance(failure, DataError), str(failure))), world)
    if failure is not None:
        raise failure
    if shared[1] is not None:
        is_data_error, message = shared[1]
        raise DataError(message) if is_data_error else RuntimeError(f"rank 0 failed: {message}")
    return shared[0]


def open_staging(out_root: Path, world: World) -> Path:
    """A fresh ``out_root/.export-parts.tmp-<pid of rank 0>/``, made by rank 0, its path shared.
    Named like an export's temporaries (argusrec.retention) so that a prune sweeps it when the
    export died."""
    path = None
    if world.main:
        path = out_root / f".export-parts.tmp-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        (path / "parts").mkdir(parents=True)
        (path / PARQUET_DIR).mkdir()
    return Path(broadcast(str(path) if path else None, world))


class PartWriter:
    """One rank's encoded users in the staging directory: ``parts/rank-<R>.arrow`` (Arrow IPC,
    one record batch per :class:`UserBatch`: shard, key, vector, seen) for the user store and,
    with ``parquet``, ``user_vectors/part-<R>.parquet`` (user: the original id, vector: U
    float32, as_of: seconds) for downstream jobs."""

    def __init__(self, staging: Path, rank: int, users: pl.Series, dim: int, as_of: int, *,
                 parquet: bool) -> None:
        self.users, self.dim, self.as_of = users, dim, as_of  # users: original ids by index
        vector = pa.list_(pa.float32(), dim)
        self.schema = pa.schema([("shard", pa.int32()), ("key", pa.string()),
                                 ("vector", vector), ("seen", pa.list_(pa.int32()))])
        self.part = pa.ipc.new_file(str(staging / "parts" / f"rank-{rank:05d}.arrow"),
                                    self.schema)
        self.table = pa.schema([("user", users[:0].to_arrow().type), ("vector", vector),
                                ("as_of", pa.int64())])
        self.parquet = (pq.ParquetWriter(staging / PARQUET_DIR / f"part-{rank:05d}.parquet",
                                         self.table) if parquet else None)

    def write(self, batch: UserBatch) -> None:
        ids = self.users.gather(batch.index)
        n = len(ids)
        vectors = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(batch.vectors, np.float32).ravel()), self.dim)
        offsets = np.concatenate([[0], np.cumsum([len(s) for s in batch.seen])])
        seen = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                        pa.array(np.concatenate(batch.seen), pa.int32()))
        self.part.write_batch(pa.record_batch(
            [pa.array(np.full(n, batch.shard), pa.int32()),
             pa.array([id_text(v) for v in ids.to_list()], pa.string()), vectors, seen],
            schema=self.schema))
        if self.parquet is not None:
            self.parquet.write_table(pa.Table.from_arrays(
                [ids.to_arrow(), vectors, pa.array(np.full(n, self.as_of), pa.int64())],
                schema=self.table))

    def close(self) -> None:
        self.part.close()
        if self.parquet is not None:
            self.parquet.close()

    def __enter__(self) -> "PartWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_parts(staging: Path) -> Iterator[tuple[list[str], np.ndarray, list[np.ndarray]]]:
    """Every rank's batches as (user keys, (B, U) vectors, seen rows), what
    argusrec.snapshot.write_snapshot stores: shard by shard in ascending order, as one process
    encodes them. Each part holds its shards in ascending order, so a merge by shard suffices."""
    parts = sorted((staging / "parts").glob("rank-*.arrow"))
    for _, keys, vectors, seen in heapq.merge(*map(_part_batches, parts), key=lambda b: b[0]):
        yield keys, vectors, seen


def _part_batches(path: Path) -> Iterator[tuple[int, list[str], np.ndarray, list[np.ndarray]]]:
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            vector = batch.column("vector")
            vectors = np.array(vector.flatten().to_numpy(), dtype=np.float32)
            seen = batch.column("seen")
            offsets = seen.offsets.to_numpy()
            rows = np.array(seen.values.to_numpy(), dtype=np.int32)  # copied: the map closes
            yield (batch.column("shard")[0].as_py(), batch.column("key").to_pylist(),
                   vectors.reshape(len(batch), vector.type.list_size),
                   [rows[a:b] for a, b in zip(offsets[:-1], offsets[1:])])


def read_user_vectors(snapshot: str | Path) -> pl.DataFrame:
    """A snapshot's Parquet user vectors (``export(..., parquet=True)``), every part as one
    table: user (the original id), vector (Array(Float32, U)), as_of (seconds)."""
    directory = Path(snapshot) / PARQUET_DIR
    if not directory.is_dir():
        raise DataError("this snapshot has no Parquet user vectors", path=snapshot,
                        fix="export it with parquet=True (argus export --parquet)")
    return pl.read_parquet(directory / "*.parquet")
