"""ANN quality: recall@100 of the snapshot's HNSW index against exact search, and its latency.

    python benchmarks/ann_recall.py --items 100000 1000000 [--dim 32] [--work /tmp/argus-bench-ann]
    python benchmarks/ann_recall.py --snapshot runs/snapshots/2026-11-23   # an exported one

For ``--items N`` it writes a snapshot of N random unit item vectors (and 10,000 random users)
with `argusrec.snapshot.write_snapshot` (HNSW M=32, efConstruction=200, the export defaults),
unless WORK/random-N already holds one; the queries are random unit vectors. For
``--snapshot`` the queries are the stored user vectors. Exact top-100 comes from
`Snapshot.recommend_exact`; latency is one query at a time on one thread, as the service runs.
Random unit vectors have no structure, the hardest case for a graph index; model vectors do
better at the same efSearch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faiss
import numpy as np
from _common import markdown_table, results_name, write_json

from argusrec.snapshot import Snapshot, write_snapshot


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def random_snapshot(root: Path, n: int, dim: int, *, users: int = 10_000, label: str = "random",
                    seed: int = 0, m: int = 32, ef_construction: int = 200,
                    ef_search: int = 512) -> tuple[Path, float]:
    """A snapshot of n random unit items under root/<label>; (path, seconds to write)."""
    rng = np.random.default_rng(seed)
    vectors = unit(rng, n, dim)
    item_ids = np.arange(n, dtype=np.int64) * 3 + 1  # original ids unlike the rows

    def batches():
        for lo in range(0, users, 1000):
            keys = [str(u) for u in range(lo, min(users, lo + 1000))]
            seen = [rng.choice(n, 20, replace=False).astype(np.int32) for _ in keys]
            yield keys, unit(rng, len(keys), dim), seen

    popular = np.stack([np.arange(min(n, 1000)), np.arange(min(n, 1000), 0, -1)], axis=1)
    started = time.perf_counter()
    path = write_snapshot(root, label, item_ids=item_ids, vectors=vectors, users=batches(),
                          popular=popular, manifest={"model": None, "data": {
                              "source": f"random unit vectors, seed {seed}"}},
                          hnsw_m=m, ef_construction=ef_construction, ef_search=ef_search,
                          overwrite=True, progress=True)
    return path, time.perf_counter() - started


def measure(snap: Snapshot, queries: np.ndarray, efs: list[int], k: int = 100) -> list[dict]:
    exact = [set(snap.recommend_exact(q, k)[0].tolist()) for q in queries]
    faiss.omp_set_num_threads(1)
    out = []
    for ef in efs:
        times, hits = [], 0
        for q, truth in zip(queries, exact):
            started = time.perf_counter()
            rows, _ = snap.recommend(q, k, ef_search=ef)
            times.append(time.perf_counter() - started)
            hits += len(truth & set(rows.tolist()))
        ms = np.asarray(times) * 1000
        out.append({"ef_search": ef, "recall": round(hits / (k * len(queries)), 4),
                    "p50_ms": round(float(np.percentile(ms, 50)), 3),
                    "p99_ms": round(float(np.percentile(ms, 99)), 3)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="*", default=[])
    parser.add_argument("--snapshot", type=Path, nargs="*", default=[])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ef", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--work", type=Path, default=Path("/tmp/argus-bench-ann"))
    parser.add_argument("--name", default="ann_recall", type=results_name)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    runs = []
    for n in args.items:
        root = args.work / f"random-{n}-d{args.dim}"
        build_s = None
        if not (root / "latest").exists():
            _, build_s = random_snapshot(root, n, args.dim)
        snap = Snapshot.latest(root)
        runs.append({"source": f"random unit, {n:,} items", "items": n, "dim": snap.dim,
                     "build_s": build_s or snap.manifest["write_seconds"],
                     "index_build_s": snap.manifest["index"]["build_seconds"],
                     "results": measure(snap, unit(rng, args.queries, snap.dim), args.ef)})
    for path in args.snapshot:
        snap = Snapshot.open(path)
        keys = snap.users.keys()
        chosen = rng.choice(len(keys), min(args.queries, len(keys)), replace=False)
        queries = np.stack([snap.user_vector(keys[i]) for i in chosen])
        runs.append({"source": f"exported {path}", "items": snap.num_items, "dim": snap.dim,
                     "build_s": snap.manifest["write_seconds"],
                     "index_build_s": snap.manifest["index"]["build_seconds"],
                     "results": measure(snap, queries, args.ef)})
    rows = [[r["source"], f"{r['items']:,}", r["dim"], r["index_build_s"], x["ef_search"],
             x["recall"], x["p50_ms"], x["p99_ms"]] for r in runs for x in r["results"]]
    print(markdown_table(["items", "count", "dim", "HNSW build s", "efSearch", "recall@100",
                          "p50 ms", "p99 ms"], rows))
    print(f"wrote {write_json(args.name, {'queries': args.queries, 'runs': runs})}")


if __name__ == "__main__":
    main()
