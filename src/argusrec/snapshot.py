"""Snapshots: the dated directory a daily export writes and a service reads, swaps and verifies.

DESIGN.md, "Deployment": a daily job (argusrec.export) turns a checkpoint and the event log into a
snapshot that a service loads and later swaps for a newer one. Candidate generation is ANN top-N
by the user vector over the item vectors; the ranking score is their dot product.

Layout of ``OUT_ROOT/<label>/`` (written to a temporary directory and renamed; ``OUT_ROOT/latest``
names the newest label and is replaced atomically):

    manifest.json        versions, model checkpoint, cut-off, counts, index settings, sha256 of
                         every other file
    item_vectors.npy     (V, U) float32; row r is item index r + 1 of the prepared data
    vocab/               the vocabulary of the data it was exported from (argusrec.vocab):
                         items.parquet maps row r to item index r + 1 and its original id (any
                         type: int, string, binary); fields.json the context values, event
                         types and feedback signals; item_embeddings.npy the content vectors
                         when the model uses them. The runtime path builds its model for it.
    items.hnsw           faiss IndexHNSWFlat whose ids are rows, searched by inner product
                         (see build_hnsw)
    popular.npy          (P, 2) int64: row, event count in the popularity window, most first
    users.lmdb/          LMDB with two databases, keyed by the original user id as text:
                         "vectors" -> U float32, "seen" -> int32 rows of items seen by the cut-off

With ``backend="redis"`` the two user databases live in Redis under a per-snapshot key prefix
instead, and the manifest names the server. After each export :func:`prune_snapshots` keeps the
newest few snapshots (and the one ``latest`` names) and deletes the rest, with their Redis keys
(argusrec.retention).

Legend: V items, U user/item-vector width, D model width, B users in a batch, L events, C context
fields, F feedback signals, P popular items.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import sys
import threading
import time
import weakref
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from argusrec import __version__
from argusrec.atomic import sha256_file
from argusrec.errors import DataError
from argusrec.retention import check_keep, prune_snapshots, remove_snapshot
from argusrec.vocab import Vocabulary, id_text

SNAPSHOT_VERSION = 2  # 2: the id map and vocabulary in vocab/
DAY = 86_400
_EMPTY_ROWS = np.zeros(0, dtype=np.int64)



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


def write_snapshot(out_root: str | Path, label: str, *, item_ids,
                   vectors: np.ndarray, users: Iterable[tuple[list[str], np.ndarray,
                                                               list[np.ndarray]]],
                   popular: np.ndarray, manifest: dict, backend: str = "lmdb",
                   redis_url: str | None = None, lmdb_map_size: int = 1 << 30,
                   hnsw_m: int = 32, ef_construction: int = 200, ef_search: int = 512,
                   overwrite: bool = False, keep: int | None = 3,
                   vocabulary: Vocabulary | None = None,
                   extra: dict[str, Path] | None = None,
                   progress: bool = False) -> Path:
    """Write ``out_root/<label>/`` from arrays, switch ``latest`` to it, and prune.

    ``item_ids`` (V,) original ids of rows (any type), or ``vocabulary`` whose items they
    are (saved whole, for the runtime path); ``vectors`` (V, U) float32; ``users`` yields
    batches of (user ids as text, (B, U) vectors, B arrays of seen rows); ``popular`` (P, 2)
    rows and counts; ``manifest`` the fields describing where the vectors came from. Files go to
    a temporary directory that is renamed when complete. ``overwrite`` replaces a snapshot with
    the same label (see :func:`_publish`); ``keep`` (>= 1, the new one included, None for all)
    is how many snapshots :func:`prune_snapshots` leaves in ``out_root`` afterwards.
    ``extra`` maps names inside the snapshot to files or directories of the caller's on the
    same file system (argusrec.export's Parquet user vectors), moved in once the users are
    written, so that they are checksummed and published with the rest.
    """
    if backend not in ("lmdb", "redis"):
        raise DataError(f"unknown user store backend {backend!r}", fix="use lmdb or redis")
    if backend == "redis" and not redis_url:
        raise DataError("the redis backend needs a server", fix="pass --redis-url "
                        "redis://HOST:PORT/DB")
    if not label or "/" in label or label.startswith(".") or label == "latest":
        raise DataError(f"bad snapshot label {label!r}", fix="use a plain name like 2026-11-23")
    check_keep(keep)
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
        if vocabulary is None:
            vocabulary = Vocabulary(items=pl.Series("item", item_ids), context={},
                                    event_types=[], feedback={})
        final = _write_into(tmp, out_root, label, vocabulary=vocabulary, vectors=vectors,
                            users=users, popular=popular, manifest=manifest, backend=backend,
                            redis_url=redis_url, lmdb_map_size=lmdb_map_size, hnsw_m=hnsw_m,
                            ef_construction=ef_construction, ef_search=ef_search,
                            extra=extra or {}, progress=progress)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed export leaves nothing behind
        raise
    prune_snapshots(out_root, keep)
    return final


def _write_into(tmp: Path, out_root: Path, label: str, *, vocabulary, vectors, users, popular,
                manifest, backend, redis_url, lmdb_map_size, hnsw_m, ef_construction,
                ef_search, extra, progress) -> Path:
    import faiss

    started = time.perf_counter()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    np.save(tmp / "item_vectors.npy", vectors)
    vocabulary.save(tmp / "vocab")
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
    for name, source in extra.items():
        Path(source).rename(tmp / name)
    manifest = {
        "format_version": SNAPSHOT_VERSION, "argusrec_version": __version__, "label": label,
        # to the microsecond: prune_snapshots orders snapshots by it, and exports can be quick
        "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"), **manifest,
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
    return _publish(tmp, out_root, label)


def _publish(tmp: Path, out_root: Path, label: str) -> Path:
    """Rename the complete snapshot ``tmp`` to ``out_root/<label>`` and switch ``latest`` to
    it; a snapshot it replaces (``--overwrite``) is deleted, with its Redis keys, only after that.

    Where the kernel swaps two paths in one step (Linux renameat2 RENAME_EXCHANGE) ``<label>``
    never stops existing. Elsewhere the old snapshot is renamed aside first, and for the
    microseconds until the next rename ``<label>`` is missing while ``latest`` may name it: a
    reader resolving it in that window fails to open it and tries again (the service keeps
    serving what it has). A crash before the last step leaves the old snapshot as
    ``.<label>.old-<pid>`` (or ``.tmp-``), which a later :func:`prune_snapshots` removes.
    """
    final = out_root / label
    if not final.exists():
        tmp.rename(final)
        switch_latest(out_root, label)
        return final
    old = out_root / f".{label}.old-{os.getpid()}"
    if old.exists() and not remove_snapshot(old):
        shutil.rmtree(old)  # an earlier overwrite's leftover; the warning named its Redis keys
    if _exchange(tmp, final):
        old = tmp  # the swap left the old snapshot under the temporary name
    else:
        final.rename(old)
        try:
            tmp.rename(final)
        except BaseException:
            old.rename(final)  # put the old one back; the export fails
            raise
    switch_latest(out_root, label)
    remove_snapshot(old)  # a warning, and the directory kept, when its Redis keys stay
    return final


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False (nothing changed) where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    # a file system without RENAME_EXCHANGE answers EINVAL and changes nothing
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


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
        self.vocabulary = Vocabulary.load(path / "vocab")
        ids = self.vocabulary.items
        # ints as an int64 array (searchsorted lookups); other ids as Python objects
        self.item_ids = ids.to_numpy() if ids.dtype.is_integer() else np.asarray(
            ids.to_list() + [None], dtype=object)[:-1]
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
            self._by_id = {id_text(v): r for r, v in enumerate(self.item_ids.tolist())}
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
            found = np.asarray([self._by_id.get(id_text(x), -1) for x in item_ids],
                               dtype=np.int64)
        missing = [x for x, r in zip(item_ids, found) if r < 0]
        return found[found >= 0], missing

    def ids_of(self, rows: np.ndarray) -> list:
        return self.item_ids[rows].tolist()

    # -- users -------------------------------------------------------------------------------
    def user_vector(self, user_id: str) -> np.ndarray | None:
        """(U,) stored vector of a user (its original id, or that id as text: hex for binary
        ids); None for an unknown user."""
        return self.users.vector(id_text(user_id))

    def seen(self, user_id: str) -> np.ndarray:
        """Rows of the items the user interacted with by the cut-off."""
        return self.users.seen(id_text(user_id))

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
