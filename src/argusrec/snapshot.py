"""Daily offline deployment: a model's vectors exported into a dated snapshot, and read back.

DESIGN.md, "Deployment": a daily job turns a checkpoint and the event log into a snapshot that a
service loads and later swaps for a newer one. Candidate generation is ANN top-N by the user
vector over the item vectors; the ranking score is their dot product. The user vector stored for
user u is the one the fine-tuned model scores with (argusrec.finetune): the state after u's last
event at or before the data cut-off ``as_of - lag``, read by the user head with the context of a
recommendation shown at ``as_of``.

Layout of ``OUT_ROOT/<label>/`` (written to a temporary directory and renamed; ``OUT_ROOT/latest``
names the newest label and is replaced atomically):

    manifest.json        versions, model checkpoint, cut-off, counts, index settings, sha256 of
                         every other file
    item_vectors.npy     (V, U) float32; row r is item index r + 1 of the prepared data
    item_ids.npy         (V,) the original item id of each row (int64, or str for string ids)
    items.hnsw           faiss IndexHNSWFlat whose ids are rows, searched by inner product
                         (see build_hnsw)
    popular.npy          (P, 2) int64: row, event count in the popularity window, most first
    users.lmdb/          LMDB with two databases, keyed by the original user id as text:
                         "vectors" -> U float32, "seen" -> int32 rows of items seen by the cut-off

With ``backend="redis"`` the two user databases live in Redis under a per-snapshot key prefix
instead, and the manifest names the server.

:func:`user_vector_reference` encodes one user with the plain accessor of the prepared data and
no batching; a test holds the batched export to it, and the service's runtime path to both.

Legend: V items, U user/item-vector width, D model width, B users in a batch, L events, C context
fields, F feedback signals, P popular items.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from argusrec import __version__
from argusrec.errors import DataError
from argusrec.loader import collate
from argusrec.sequences import GAP, PreparedData

SNAPSHOT_VERSION = 1
DAY = 86_400
RECOMMENDATION = "recommendation"  # the is_organic value of recommender traffic
_EMPTY_ROWS = np.zeros(0, dtype=np.int64)


# -- encoding users ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ServingContext:
    """How a recommendation shown now is described to the user head: context codes (C,) in
    ``sorted(context_fields)`` order (is_organic = recommendation, other fields unknown) and the
    event type (listen where the log has it, else the most common type)."""

    context: np.ndarray
    event_type: int

    @classmethod
    def of(cls, data: PreparedData) -> "ServingContext":
        fields = data.meta["fields"]
        codes = []
        for name in sorted(data.context_fields):
            values = fields["context"][name].get("values", [])
            codes.append(values.index(RECOMMENDATION) + 1
                         if name == "is_organic" and RECOMMENDATION in values else 0)
        types = fields["event_types"]
        if "listen" in types:
            event_type = types.index("listen") + 1
        else:
            counts = sum(np.bincount(np.asarray(s.events["event_type"]),
                                     minlength=len(types) + 1) for s in data.shards)
            event_type = int(np.argmax(counts[1:])) + 1
        return cls(context=np.asarray(codes, dtype=np.int64), event_type=event_type)


def history_sample(events: dict[str, np.ndarray], positions: np.ndarray,
                   context_names: list[str], feedback_names: list[str]) -> dict[str, np.ndarray]:
    """A loader sample (see argusrec.loader.collate) of the events at ``positions`` of
    per-event arrays (a shard's, or a user's from ``PreparedData.user_events``)."""
    def take(name: str, dtype) -> np.ndarray:
        return np.asarray(events[name][positions], dtype=dtype)

    n = len(positions)
    return {
        "user": np.int64(0),
        "item": take("item", np.int64),
        "timestamp": take("timestamp", np.int64),
        "event_type": take("event_type", np.int64),
        "context": (np.stack([take(f"ctx_{c}", np.int64) for c in context_names], -1)
                    if context_names else np.zeros((n, 0), dtype=np.int64)),
        "feedback": (np.stack([take(f"fb_{f}", np.float32) for f in feedback_names], -1)
                     if feedback_names else np.zeros((n, 0), dtype=np.float32)),
        "positive": np.zeros(n, dtype=np.bool_),
        "target": np.zeros(n, dtype=np.bool_),
    }


@torch.no_grad()
def encode_histories(model, samples: list[dict[str, np.ndarray]], gaps: np.ndarray,
                     serving: ServingContext, *, max_tokens: int = 65_536) -> np.ndarray:
    """(N, U) float32 user vectors of N histories (loader samples, at most ``max_len`` events
    each) for a recommendation shown ``gaps`` (N,) seconds after each history's last event.

    Histories are sorted by length and batched up to ``max_tokens`` padded events, so padding
    costs little; right padding under a causal mask leaves the last real state unchanged.
    """
    device = next(model.parameters()).device
    lengths = np.asarray([len(s["item"]) for s in samples])
    if len(samples) and lengths.min() < 1:
        raise ValueError("every history needs at least one event")
    out = np.zeros((len(samples), model.cfg.user_dim), dtype=np.float32)
    order = np.argsort(lengths, kind="stable")
    lo = 0
    while lo < len(order):
        # the longest history of a batch is its last one (sorted), so the padded size is known
        hi = lo + 1
        while hi < len(order) and (hi - lo + 1) * lengths[order[hi]] <= max_tokens:
            hi += 1
        chosen = order[lo:hi]
        # pad_to=2: the time-gap embedding drops a window of a single event (it builds the
        # first gap from an empty slice); one padding event after it changes no real state
        batch = collate([samples[i] for i in chosen], pad_to=2).to(device)
        states = model.event_states(batch)  # (B, L, D)
        n = torch.as_tensor(lengths[chosen], device=device)
        last = states[torch.arange(len(chosen), device=device), n - 1]  # (B, D)
        B = len(chosen)
        ctx = torch.as_tensor(serving.context, device=device).expand(B, -1)  # (B, C)
        etype = torch.full((B,), serving.event_type, dtype=torch.int64, device=device)
        gap = torch.as_tensor(np.maximum(gaps[chosen], 0), dtype=torch.int64, device=device)
        out[chosen] = model.user_vectors_at(last, ctx, etype, gap).float().cpu().numpy()
        lo = hi
    return out


@torch.no_grad()
def user_vector_reference(model, data: PreparedData, user: int, as_of: int,
                          lag: int) -> np.ndarray | None:
    """The stored vector of one user (global index), the plain way: every event of the user
    from the slow accessor, filtered, the last ``max_len`` encoded alone. None without history."""
    events = data.user_events(user)
    keep = np.flatnonzero((events["split"] != GAP) & (events["timestamp"] <= as_of - lag))
    if len(keep) == 0:
        return None
    keep = keep[-model.cfg.max_len:]
    sample = history_sample(events, keep, sorted(data.context_fields), list(data.feedback_fields))
    n = len(keep)
    states = model.event_states(collate([sample], pad_to=2))[:, :n]  # (1, L, D); see above
    serving = ServingContext.of(data)
    gap = max(0, as_of - int(events["timestamp"][keep[-1]]))
    user = model.user_vectors_at(states[:, -1], torch.as_tensor(serving.context)[None],
                                 torch.tensor([serving.event_type]), torch.tensor([gap]))
    return user[0].float().numpy()


@torch.no_grad()
def item_vectors(model, *, chunk: int = 65_536) -> np.ndarray:
    """(V, U) float32 item-tower vectors of item indices 1..V (row r = index r + 1)."""
    V = model.spec.num_items
    device = next(model.parameters()).device
    out = np.zeros((V, model.cfg.user_dim), dtype=np.float32)
    for lo in range(0, V, chunk):
        ids = torch.arange(lo + 1, min(V, lo + chunk) + 1, device=device)
        out[lo:lo + len(ids)] = model.item_vectors(ids).float().cpu().numpy()
    return out


# -- user stores ------------------------------------------------------------------------------
class _ReadOnlyEnv:
    """One read-only LMDB environment per directory and process (LMDB refuses a second), shared
    by every reader of that snapshot and closed when the last one lets go."""

    _open: "weakref.WeakValueDictionary[str, _ReadOnlyEnv]"
    _lock = threading.Lock()

    def __init__(self, path: str) -> None:
        import lmdb

        # a snapshot never changes after it is written, so readers need no lock file
        self.env = lmdb.open(path, readonly=True, lock=False, max_dbs=2, readahead=False)
        self.vectors = self.env.open_db(b"vectors", create=False)
        self.seen = self.env.open_db(b"seen", create=False)

    @classmethod
    def get(cls, path: Path) -> "_ReadOnlyEnv":
        key = str(Path(path).resolve())
        with cls._lock:
            env = cls._open.get(key)
            if env is None:
                env = cls._open[key] = cls(key)
            return env

    def __del__(self) -> None:
        self.env.close()


_ReadOnlyEnv._open = weakref.WeakValueDictionary()


class LmdbUsers:
    """User vectors and seen rows in an LMDB directory (two named databases)."""

    def __init__(self, path: Path, *, write: bool = False, map_size: int = 1 << 30) -> None:
        import lmdb

        self.path = Path(path)
        if write:
            self.env = lmdb.open(str(self.path), map_size=map_size, max_dbs=2, sync=False)
            self.vectors = self.env.open_db(b"vectors", create=True)
            self.seen_db = self.env.open_db(b"seen", create=True)
        else:
            self._shared = _ReadOnlyEnv.get(self.path)
            self.env, self.vectors = self._shared.env, self._shared.vectors
            self.seen_db = self._shared.seen

    def put_many(self, keys: list[str], vectors: np.ndarray, seen: list[np.ndarray]) -> None:
        with self.env.begin(write=True) as txn:
            for key, vec, rows in zip(keys, vectors, seen):
                k = key.encode()
                txn.put(k, np.ascontiguousarray(vec, dtype=np.float32).tobytes(), db=self.vectors)
                txn.put(k, np.asarray(rows, dtype=np.int32).tobytes(), db=self.seen_db)

    def finish(self, count: int) -> None:
        self.env.sync(True)
        self.env.close()
        (self.path / "lock.mdb").unlink(missing_ok=True)

    def vector(self, key: str) -> np.ndarray | None:
        with self.env.begin(buffers=False) as txn:
            value = txn.get(key.encode(), db=self.vectors)
        return None if value is None else np.frombuffer(value, dtype=np.float32)

    def seen(self, key: str) -> np.ndarray:
        with self.env.begin(buffers=False) as txn:
            value = txn.get(key.encode(), db=self.seen_db)
        return _EMPTY_ROWS if value is None else np.frombuffer(value, dtype=np.int32)

    def keys(self, limit: int | None = None) -> list[str]:
        """Stored user ids, in key order (at most ``limit``)."""
        out = []
        with self.env.begin() as txn:
            for key in txn.cursor(db=self.vectors).iternext(keys=True, values=False):
                if limit is not None and len(out) >= limit:
                    break
                out.append(bytes(key).decode())
        return out

    def close(self) -> None:
        # a shared reader closes with its last user (_ReadOnlyEnv); a writer closes in finish
        self.env = self._shared = None


class RedisUsers:
    """User vectors and seen rows in Redis under ``prefix``: ``<prefix>v:<user>``,
    ``<prefix>s:<user>``, and ``<prefix>count`` written last (its presence marks a complete
    export)."""

    def __init__(self, url: str, prefix: str) -> None:
        try:
            import redis
        except ImportError:  # pragma: no cover - the redis extra is not installed
            raise DataError("the redis backend needs the redis client",
                            fix="pip install 'argusrec[redis]'") from None
        self.url, self.prefix = url, prefix
        self.client = redis.Redis.from_url(url)

    def put_many(self, keys: list[str], vectors: np.ndarray, seen: list[np.ndarray]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key, vec, rows in zip(keys, vectors, seen):
            pipe.set(f"{self.prefix}v:{key}", np.ascontiguousarray(vec, np.float32).tobytes())
            pipe.set(f"{self.prefix}s:{key}", np.asarray(rows, dtype=np.int32).tobytes())
        pipe.execute()

    def finish(self, count: int) -> None:
        self.client.set(f"{self.prefix}count", count)

    def count(self) -> int | None:
        value = self.client.get(f"{self.prefix}count")
        return None if value is None else int(value)

    def vector(self, key: str) -> np.ndarray | None:
        value = self.client.get(f"{self.prefix}v:{key}")
        return None if value is None else np.frombuffer(value, dtype=np.float32)

    def seen(self, key: str) -> np.ndarray:
        value = self.client.get(f"{self.prefix}s:{key}")
        return _EMPTY_ROWS if value is None else np.frombuffer(value, dtype=np.int32)

    def close(self) -> None:
        self.client.close()


# -- writing ----------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _checksums(directory: Path) -> dict[str, dict]:
    return {str(p.relative_to(directory)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def build_hnsw(vectors: np.ndarray, *, m: int = 32, ef_construction: int = 200,
               progress: bool = False) -> tuple[object, dict]:
    """A faiss IndexHNSWFlat for inner-product top-k over (V, U) float32 vectors; ids are rows.
    Returns (index, how to query it).

    When all vectors have (nearly) one norm, inner product ranks like cosine and the index uses
    METRIC_INNER_PRODUCT directly. Otherwise a graph over raw inner products navigates badly
    (it is not a metric: model item vectors with norms from 0.5 to 6.6 gave recall@100 of 0.24
    at efSearch 256 on 934K items), so the index is L2 over the vectors augmented with one
    coordinate sqrt(M^2 - |x|^2), M the largest norm: then |[q, 0] - x'|^2 = |q|^2 + M^2 - 2 q.x
    and the nearest items are exactly those with the largest inner product (Bachrach et al.,
    "Speeding up the Xbox recommender system using a Euclidean transformation for
    inner-product spaces", RecSys 2014).
    """
    import faiss

    norms = np.linalg.norm(vectors, axis=1)
    top = float(norms.max()) if len(norms) else 0.0
    equal = len(norms) == 0 or float(norms.min()) >= 0.99 * top
    if equal:
        index = faiss.IndexHNSWFlat(vectors.shape[1], m, faiss.METRIC_INNER_PRODUCT)
        query = {"metric": "inner_product"}
    else:
        index = faiss.IndexHNSWFlat(vectors.shape[1] + 1, m, faiss.METRIC_L2)
        query = {"metric": "l2_augmented", "max_norm": top}
    index.hnsw.efConstruction = ef_construction
    step = 100_000
    for lo in tqdm(range(0, len(vectors), step), desc="hnsw", unit="100K items",
                   disable=not progress):
        part = np.ascontiguousarray(vectors[lo:lo + step], dtype=np.float32)
        if not equal:
            extra = np.sqrt(np.maximum(top ** 2 - norms[lo:lo + step] ** 2, 0.0))
            part = np.concatenate([part, extra[:, None].astype(np.float32)], axis=1)
        index.add(part)
    return index, query


def switch_latest(out_root: Path, label: str) -> None:
    """Point ``out_root/latest`` at ``label``, atomically (write a temporary file, rename)."""
    tmp = out_root / f".latest.tmp-{os.getpid()}"
    tmp.write_text(label + "\n")
    os.replace(tmp, out_root / "latest")


def write_snapshot(out_root: str | Path, label: str, *, item_ids: np.ndarray,
                   vectors: np.ndarray, users: Iterable[tuple[list[str], np.ndarray,
                                                               list[np.ndarray]]],
                   popular: np.ndarray, manifest: dict, backend: str = "lmdb",
                   redis_url: str | None = None, lmdb_map_size: int = 1 << 30,
                   hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 512,
                   overwrite: bool = False, progress: bool = False) -> Path:
    """Write ``out_root/<label>/`` from arrays and switch ``latest`` to it.

    ``item_ids`` (V,) original ids of rows; ``vectors`` (V, U) float32; ``users`` yields
    batches of (user ids as text, (B, U) vectors, B arrays of seen rows); ``popular`` (P, 2)
    rows and counts; ``manifest`` the fields describing where the vectors came from. Files go to
    a temporary directory that is renamed when complete.
    """
    if backend not in ("lmdb", "redis"):
        raise DataError(f"unknown user store backend {backend!r}", fix="use lmdb or redis")
    if backend == "redis" and not redis_url:
        raise DataError("the redis backend needs a server", fix="pass --redis-url "
                        "redis://HOST:PORT/DB")
    if not label or "/" in label or label.startswith(".") or label == "latest":
        raise DataError(f"bad snapshot label {label!r}", fix="use a plain name like 2026-11-23")
    out_root = Path(out_root)
    final = out_root / label
    if final.exists() and not overwrite:
        raise DataError("a snapshot with this label exists", path=final,
                        fix="pass another --label, or --overwrite to replace it")
    out_root.mkdir(parents=True, exist_ok=True)
    tmp = out_root / f".{label}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        return _write_into(tmp, out_root, label, item_ids=item_ids, vectors=vectors, users=users,
                           popular=popular, manifest=manifest, backend=backend,
                           redis_url=redis_url, lmdb_map_size=lmdb_map_size, hnsw_m=hnsw_m,
                           ef_construction=ef_construction, ef_search=ef_search,
                           progress=progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed export leaves nothing behind
        raise


def _write_into(tmp: Path, out_root: Path, label: str, *, item_ids, vectors, users, popular,
                manifest, backend, redis_url, lmdb_map_size, hnsw_m, ef_construction,
                ef_search, progress) -> Path:
    import faiss

    final = out_root / label
    started = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    np.save(tmp / "item_vectors.npy", vectors)
    np.save(tmp / "item_ids.npy", np.asarray(item_ids), allow_pickle=False)
    np.save(tmp / "popular.npy", np.asarray(popular, dtype=np.int64).reshape(-1, 2))
    index_started = time.perf_counter()
    index, query = build_hnsw(vectors, m=hnsw_m, ef_construction=ef_construction,
                              progress=progress)
    faiss.write_index(index, str(tmp / "items.hnsw"))
    index_seconds = time.perf_counter() - index_started
    if backend == "lmdb":
        store, store_info = LmdbUsers(tmp / "users.lmdb", write=True, map_size=lmdb_map_size), \
            {"backend": "lmdb", "path": "users.lmdb"}
    else:
        prefix = f"argus:{label}:{secrets.token_hex(4)}:"
        store, store_info = RedisUsers(redis_url, prefix), \
            {"backend": "redis", "url": redis_url, "prefix": prefix}
    count = 0
    for keys, user_vectors, seen in users:
        store.put_many(keys, user_vectors, seen)
        count += len(keys)
    store.finish(count)
    manifest = {
        "format_version": SNAPSHOT_VERSION, "argusrec_version": __version__, "label": label,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **manifest,
        "counts": {**manifest.get("counts", {}), "items": int(len(vectors)), "users": count,
                   "popular": int(len(popular))},
        "dim": int(vectors.shape[1]),
        "index": {"kind": "hnsw", **query, "m": hnsw_m,
                  "ef_construction": ef_construction, "ef_search": ef_search,
                  "build_seconds": round(index_seconds, 2)},
        "users": store_info,
        "files": _checksums(tmp),
    }
    manifest["write_seconds"] = round(time.perf_counter() - started, 2)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if final.exists():
        # --overwrite: move the old one aside first so the rename below stays one step
        old = out_root / f".{label}.old-{os.getpid()}"
        final.rename(old)
        shutil.rmtree(old, ignore_errors=True)
    tmp.rename(final)
    switch_latest(out_root, label)
    return final


# -- export -----------------------------------------------------------------------------------
@dataclass
class ExportSummary:
    out: str
    label: str
    as_of: int
    lag: int
    items: int
    users: int
    users_without_history: int
    seconds: float
    bytes: int
    stage_seconds: dict


def _lag_of(checkpoint: Path) -> int | None:
    state = checkpoint / "state.pt"
    if not state.exists():
        return None
    saved = torch.load(state, weights_only=False, map_location="cpu").get("finetune")
    return int(saved["lag"]) if saved and "lag" in saved else None


def _last_timestamp(data: PreparedData) -> int:
    top = data.meta.get("split", {}).get("time_max")
    if top is not None:
        return int(top)
    return max(int(np.max(s.events["timestamp"])) for s in data.shards if len(s.events["timestamp"]))


def _user_batches(model, data: PreparedData, cutoff: int, as_of: int, serving: ServingContext,
                  stats: dict, *, batch_users: int, progress: bool
                  ) -> Iterator[tuple[list[str], np.ndarray, list[np.ndarray]]]:
    """Encode every user with events by the cut-off, shard by shard, in batches."""
    users = data.users().sort("index")["user"].to_list()
    context_names, feedback_names = sorted(data.context_fields), list(data.feedback_fields)
    bar = tqdm(total=data.num_users, desc="users", unit="user", disable=not progress)
    for shard in data.shards:
        ts = np.asarray(shard.events["timestamp"])
        keep = np.flatnonzero((np.asarray(shard.events["split"]) != GAP) & (ts <= cutoff))
        lo = np.searchsorted(keep, shard.offsets[:-1])  # user j's kept events: keep[lo[j]:hi[j]]
        hi = np.searchsorted(keep, shard.offsets[1:])
        items = shard.events["item"]
        with_history = np.flatnonzero(hi > lo)
        stats["users_without_history"] += len(shard) - len(with_history)
        bar.update(len(shard) - len(with_history))
        for b in range(0, len(with_history), batch_users):
            chosen = with_history[b:b + batch_users]
            samples, seen, gaps = [], [], []
            for j in chosen:
                mine = keep[lo[j]:hi[j]]
                samples.append(history_sample(shard.events, mine[-model.cfg.max_len:],
                                              context_names, feedback_names))
                seen.append(np.unique(np.asarray(items[mine])) - 1)
                gaps.append(as_of - int(ts[mine[-1]]))
            vectors = encode_histories(model, samples, np.asarray(gaps), serving)
            bar.update(len(chosen))
            yield [str(users[int(shard.users[j])]) for j in chosen], vectors, seen
    bar.close()


def popularity(data: PreparedData, cutoff: int, *, window: int = 7 * DAY,
               top: int = 1000) -> np.ndarray:
    """(P, 2) rows and counts of the most frequent items in the ``window`` seconds before the
    cut-off (events of any kind except the gap), most popular first; the whole history by the
    cut-off when the window is empty."""
    counts = np.zeros(data.num_items + 1, dtype=np.int64)
    recent = np.zeros_like(counts)
    for shard in data.shards:
        ts = np.asarray(shard.events["timestamp"])
        ok = (np.asarray(shard.events["split"]) != GAP) & (ts <= cutoff)
        items = np.asarray(shard.events["item"])
        counts += np.bincount(items[ok], minlength=len(counts))
        recent += np.bincount(items[ok & (ts > cutoff - window)], minlength=len(counts))
    use = recent if recent.sum() else counts
    use[0] = 0
    order = np.argsort(-use, kind="stable")[:top]
    order = order[use[order] > 0]
    return np.stack([order - 1, use[order]], axis=1).astype(np.int64)


def export(run: str | Path, out_root: str | Path, *, as_of: int | None = None,
           lag: int | None = None, data: str | Path | PreparedData | None = None,
           which: str = "latest", label: str | None = None, backend: str = "lmdb",
           redis_url: str | None = None, hnsw_m: int = 32, ef_construction: int = 200,
           ef_search: int = 512, popular: int = 1000, popularity_window: int = 7 * DAY,
           batch_users: int = 256, overwrite: bool = False,
           progress: bool = True) -> ExportSummary:
    """Export a model's item and user vectors into ``out_root/<label>/`` and point
    ``out_root/latest`` at it.

    Args:
        run: a run directory of `argus pretrain` / `argus finetune`, or a checkpoint.
        out_root: the snapshots directory (created).
        as_of: the time (seconds) the snapshot serves from; user states include events up to
            ``as_of - lag``. Default: the data's last timestamp + 1.
        lag: seconds; default the fine-tuning lag saved in the checkpoint, else one day.
        data: the prepared dataset (default: the one the model was trained on).
        label: the snapshot's directory name; default the UTC date of ``as_of``.
        backend: where user vectors go: lmdb (inside the snapshot) or redis (``redis_url``).
        hnsw_m, ef_construction, ef_search: HNSW graph degree, build and default search width.
        popular: how many items the popularity fallback keeps; popularity_window: seconds.
        batch_users: users encoded per batch (before length grouping).
    """
    from argusrec.train import find_checkpoint, load_model

    started = time.perf_counter()
    stages: dict[str, float] = {}
    checkpoint = find_checkpoint(run, which).resolve()
    if isinstance(data, (str, Path)):
        data = PreparedData(data)
    model, config, data = load_model(checkpoint, data)
    if lag is None:
        lag = _lag_of(checkpoint)
        lag = DAY if lag is None else lag
    if lag < 0:
        raise DataError(f"lag must be >= 0 seconds, got {lag}", fix="pass --lag 0 or more")
    if as_of is None:
        as_of = _last_timestamp(data) + 1
    cutoff = as_of - lag
    label = label or datetime.fromtimestamp(as_of, timezone.utc).strftime("%Y-%m-%d")
    if model.cfg.variant != "simplified":
        raise DataError("export needs a simplified-ARGUS model (one token per event)",
                        path=checkpoint, fix="export a model trained with model.variant: "
                        "simplified")
    t = time.perf_counter()
    vectors = item_vectors(model)
    stages["item_vectors"] = time.perf_counter() - t
    items = data.items().sort("index")
    if items["index"].to_list() != list(range(1, data.num_items + 1)):
        raise DataError("items.parquet does not list indices 1..V", path=data.path,
                        fix="prepare the data again")
    item_ids = items["item"].to_numpy()
    t = time.perf_counter()
    top = popularity(data, cutoff, window=popularity_window, top=popular)
    stages["popularity"] = time.perf_counter() - t
    serving = ServingContext.of(data)
    config_text = (checkpoint / "config.json").read_bytes()
    manifest = {
        "model": {"checkpoint": str(checkpoint), "step": config.get("step"),
                  "argusrec_version": config.get("argusrec_version"),
                  "config_sha256": hashlib.sha256(config_text).hexdigest(),
                  "max_len": model.cfg.max_len,
                  "temperature": float(model.temperature.detach())},
        "data": {"path": str(data.path.resolve()), "as_of": int(as_of), "lag": int(lag),
                 "cutoff": int(cutoff), "last_timestamp": _last_timestamp(data)},
        "serving_context": {"context": serving.context.tolist(),
                            "event_type": serving.event_type},
        "popularity_window": popularity_window,
        # filled in while the users are encoded; write_snapshot reads it after the last batch
        "counts": {"users_without_history": 0},
    }
    # LMDB grows up to map_size; size it from the data so a big log never runs out
    events = int(data.meta["counts"]["events"])
    map_size = max(1 << 26, 2 * (data.num_users * (model.cfg.user_dim * 4 + 256) + 4 * events))
    t = time.perf_counter()
    users = _user_batches(model, data, cutoff, as_of, serving, manifest["counts"],
                          batch_users=batch_users,
                          progress=progress)
    final = write_snapshot(out_root, label, item_ids=item_ids, vectors=vectors, users=users,
                           popular=top, manifest=manifest, backend=backend,
                           redis_url=redis_url, lmdb_map_size=map_size, hnsw_m=hnsw_m,
                           ef_construction=ef_construction, ef_search=ef_search,
                           overwrite=overwrite, progress=progress)
    stages["write"] = time.perf_counter() - t
    written = json.loads((final / "manifest.json").read_text())
    stages["hnsw"] = written["index"]["build_seconds"]
    size = sum(v["bytes"] for v in written["files"].values())
    return ExportSummary(out=str(final), label=label, as_of=int(as_of), lag=int(lag),
                         items=len(vectors), users=written["counts"]["users"],
                         users_without_history=written["counts"]["users_without_history"],
                         seconds=time.perf_counter() - started, bytes=size,
                         stage_seconds={k: round(v, 2) for k, v in stages.items()})


# -- reading ----------------------------------------------------------------------------------
def verify(path: str | Path) -> list[str]:
    """Problems with a snapshot's files against its manifest's checksums (empty: intact)."""
    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text())
    problems = []
    for name, expected in manifest["files"].items():
        f = path / name
        if not f.exists():
            problems.append(f"{name}: missing")
        elif f.stat().st_size != expected["bytes"] or sha256_file(f) != expected["sha256"]:
            problems.append(f"{name}: checksum mismatch")
    return problems


def latest_label(out_root: str | Path) -> str:
    pointer = Path(out_root) / "latest"
    if not pointer.exists():
        raise DataError("no snapshot here (the latest pointer is missing)", path=out_root,
                        fix="run `argus export` into this directory first")
    return pointer.read_text().strip()


class Snapshot:
    """A snapshot directory opened read-only: everything but the user store is in memory.

    Example:
        >>> snap = Snapshot.latest("runs/snapshots")            # doctest: +SKIP
        >>> rows, scores = snap.recommend(snap.user_vector("42"), k=100,
        ...                               exclude=snap.seen("42"))  # doctest: +SKIP
        >>> snap.item_ids[rows]                                  # doctest: +SKIP
    """

    def __init__(self, path: Path, manifest: dict, redis_url: str | None = None,
                 ef_search: int | None = None) -> None:
        import faiss

        self.path, self.manifest = path, manifest
        self.label: str = manifest["label"]
        self.vectors = np.load(path / "item_vectors.npy")  # (V, U), in memory
        self.item_ids = np.load(path / "item_ids.npy", allow_pickle=False)
        self.popular = np.load(path / "popular.npy")
        self.index = faiss.read_index(str(path / "items.hnsw"))
        self.ef_search = int(ef_search or manifest["index"]["ef_search"])
        self.index.hnsw.efSearch = self.ef_search
        # an L2 index over augmented items is queried with [q, 0] (build_hnsw)
        self._augment = manifest["index"]["metric"] == "l2_augmented"
        self._sorted = None
        if self.item_ids.dtype.kind in "iu":
            order = np.argsort(self.item_ids, kind="stable")
            self._sorted = (self.item_ids[order], order)
        else:
            self._by_id = {str(v): r for r, v in enumerate(self.item_ids.tolist())}
        info = manifest["users"]
        if info["backend"] == "lmdb":
            self.users = LmdbUsers(path / info["path"])
        else:
            self.users = RedisUsers(redis_url or info["url"], info["prefix"])
            if self.users.count() is None:
                raise DataError("the snapshot's user vectors are not in Redis",
                                path=path, fix=f"check that {redis_url or info['url']} is the "
                                "server the export wrote to")

    @classmethod
    def open(cls, path: str | Path, *, check: bool = False, redis_url: str | None = None,
             ef_search: int | None = None) -> "Snapshot":
        """Open a snapshot; with ``check`` every file's sha256 is verified first;
        ``ef_search`` overrides the search width the export chose."""
        path = Path(path)
        if not (path / "manifest.json").exists():
            raise DataError("not a snapshot (manifest.json is missing)", path=path,
                            fix="pass a directory written by `argus export`")
        manifest = json.loads((path / "manifest.json").read_text())
        if manifest.get("format_version") != SNAPSHOT_VERSION:
            raise DataError(f"snapshot format {manifest.get('format_version')} is not "
                            f"{SNAPSHOT_VERSION}", path=path, fix="export it again")
        if check and (problems := verify(path)):
            raise DataError("the snapshot is damaged: " + "; ".join(problems[:5]), path=path,
                            fix="export it again")
        return cls(path, manifest, redis_url, ef_search)

    @classmethod
    def latest(cls, out_root: str | Path, **kwargs) -> "Snapshot":
        return cls.open(Path(out_root) / latest_label(out_root), **kwargs)

    @property
    def num_items(self) -> int:
        return len(self.vectors)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    # -- ids ---------------------------------------------------------------------------------
    def rows_of(self, item_ids: list) -> tuple[np.ndarray, list]:
        """(rows of the known ids, the unknown ids); rows follow the order of ``item_ids``."""
        if self._sorted is not None:
            keys, order = self._sorted
            wanted = []
            for x in item_ids:
                try:
                    wanted.append(int(x))
                except (TypeError, ValueError):
                    wanted.append(None)
            found = np.full(len(wanted), -1, dtype=np.int64)
            valid = np.asarray([w is not None for w in wanted], dtype=bool)
            if valid.any():
                asked = np.asarray([w for w in wanted if w is not None], dtype=np.int64)
                at = np.minimum(np.searchsorted(keys, asked), len(keys) - 1)
                hit = keys[at] == asked
                found[np.flatnonzero(valid)] = np.where(hit, order[at], -1)
        else:
            found = np.asarray([self._by_id.get(str(x), -1) for x in item_ids], dtype=np.int64)
        missing = [x for x, r in zip(item_ids, found) if r < 0]
        return found[found >= 0], missing

    def ids_of(self, rows: np.ndarray) -> list:
        return self.item_ids[rows].tolist()

    # -- users -------------------------------------------------------------------------------
    def user_vector(self, user_id: str) -> np.ndarray | None:
        """(U,) stored vector of a user (original id as text); None for an unknown user."""
        return self.users.vector(str(user_id))

    def seen(self, user_id: str) -> np.ndarray:
        """Rows of the items the user interacted with by the cut-off."""
        return self.users.seen(str(user_id))

    # -- search ------------------------------------------------------------------------------
    def recommend(self, vector: np.ndarray, k: int, *, exclude: np.ndarray | None = None,
                  ef_search: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """HNSW top-k rows (k,) and dot-product scores (k,) for one (U,) vector, skipping the
        rows in ``exclude``. Fewer than k come back only when the catalogue runs out."""
        import faiss

        params = faiss.SearchParametersHNSW()
        params.efSearch = max(ef_search or self.ef_search, k)
        if exclude is not None and len(exclude):
            # the selector filters results inside the graph search, so ef need not grow
            # with the number of excluded items
            batch = faiss.IDSelectorBatch(np.asarray(exclude, dtype=np.int64))
            params.sel = faiss.IDSelectorNot(batch)
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        if self._augment:
            query = np.concatenate([query, np.zeros((1, 1), dtype=np.float32)], axis=1)
        found, rows = self.index.search(np.ascontiguousarray(query), min(k, self.num_items),
                                        params=params)
        rows = rows[0][rows[0] >= 0]
        if not self._augment:
            return rows, found[0][:len(rows)]
        # L2 distances rank the items; the scores are their dot products, computed exactly
        scores = self.vectors[rows] @ query[0, :-1]
        order = np.argsort(-scores, kind="stable")
        return rows[order], scores[order]

    def recommend_exact(self, vector: np.ndarray, k: int, *,
                        exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The plain reference of :meth:`recommend`: scores against every item, exact top-k."""
        scores = self.vectors @ np.asarray(vector, dtype=np.float32)  # (V,)
        if exclude is not None and len(exclude):
            scores[np.asarray(exclude, dtype=np.int64)] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.argsort(-scores[top], kind="stable")]
        return top, scores[top]

    def scores(self, vector: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows),) dot products of one vector with the given items."""
        return self.vectors[rows] @ np.asarray(vector, dtype=np.float32)

    def most_popular(self, k: int, *, exclude: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The popularity fallback: top-k rows and their counts in the popularity window."""
        rows, counts = self.popular[:, 0], self.popular[:, 1]
        if exclude is not None and len(exclude):
            keep = ~np.isin(rows, exclude)
            rows, counts = rows[keep], counts[keep]
        return rows[:k], counts[:k]

    def close(self) -> None:
        self.users.close()
