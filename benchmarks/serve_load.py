"""A bounded loopback load test of `argus serve`: latency, throughput, and a snapshot swap.

    python benchmarks/serve_load.py --items 100000 1000000 [--seconds 15] [--concurrency 1 4]
    python benchmarks/serve_load.py --items --roots runs/snapshots   # exported snapshots

For each catalogue size it serves a snapshot of random unit item vectors (the ones
benchmarks/ann_recall.py writes under WORK/random-N-dD, built here if absent) with uvicorn in a
separate process on 127.0.0.1, stored vectors only (no model). Each phase sends
GET /v1/users/{id}/recommendations?k=100&exclude_seen=true for random known users from
CONCURRENCY asyncio clients, for at most SECONDS and at most MAX_REQUESTS requests, and records
every latency as the client sees it (HTTP included) and every failure (non-200 or error).

The swap phase does the same while a new snapshot is published a third of the way in: a full
copy of the served one under a new label, then `latest` is switched. The service loads and
verifies it in the background and swaps one reference; the phase reports the requests answered
by each label and the failures, which must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
from _common import markdown_table, results_name, start_service, stop_service, write_json
from ann_recall import random_snapshot

from argusrec.snapshot import latest_label, switch_latest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, port: int, ef_search: int | None) -> subprocess.Popen:
    return start_service(root, port, runtime=False, reload_interval=0.5, ef_search=ef_search)


def publish_copy(root: Path, label: str) -> float:
    """Copy the served snapshot to a new label and switch `latest` to it; seconds taken."""
    started = time.perf_counter()
    source = root / latest_label(root)
    tmp = root / f".{label}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    manifest = json.loads((tmp / "manifest.json").read_text())
    manifest["label"] = label
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(root / label, ignore_errors=True)
    tmp.rename(root / label)
    switch_latest(root, label)
    return time.perf_counter() - started


async def load(port: int, users: int, *, concurrency: int, seconds: float, max_requests: int,
               swap_at: float | None = None, root: Path | None = None) -> dict:
    latencies, failures, labels = [], [], {}
    sent = 0
    rng = np.random.default_rng(concurrency)
    swap: dict = {}
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < deadline:
            sent += 1
            user = int(rng.integers(users))
            started = time.perf_counter()
            try:
                r = await client.get(f"/v1/users/{user}/recommendations",
                                     params={"k": 100, "exclude_seen": "true"})
                elapsed = time.perf_counter() - started
                if r.status_code != 200:
                    failures.append(f"HTTP {r.status_code}")
                    continue
                label = r.json()["snapshot"]
                labels[label] = labels.get(label, 0) + 1
                latencies.append(elapsed)
            except httpx.HTTPError as e:
                failures.append(repr(e))

    async def swapper() -> None:
        await asyncio.sleep(swap_at)
        label = f"swap-{int(time.time())}"
        swap["label"] = label
        swap["publish_s"] = await asyncio.to_thread(publish_copy, root, label)
        published = time.perf_counter()
        while time.perf_counter() < deadline and label not in labels:
            await asyncio.sleep(0.01)
        swap["seen_after_s"] = round(time.perf_counter() - published, 2)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30,
                                 limits=limits) as client:
        started = time.perf_counter()
        tasks = [worker(client) for _ in range(concurrency)]
        if swap_at is not None:
            tasks.append(swapper())
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {"concurrency": concurrency, "requests": len(latencies) + len(failures),
            "failed": len(failures), "failures": failures[:10], "seconds": round(wall, 2),
            "rps": round(len(latencies) / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2) if len(ms) else None,
            "p99_ms": round(float(np.percentile(ms, 99)), 2) if len(ms) else None,
            "labels": labels, **({"swap": swap} if swap else {})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--roots", type=Path, nargs="*", default=[],
                        help="snapshots directories of `argus export` to serve as well; their "
                        "users must be 0..USERS-1")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--ef-search", type=int, default=None,
                        help="HNSW search width (default: the snapshot's)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/argus-bench-ann"))
    parser.add_argument("--name", default="serve_load", type=results_name, help="results file name")
    args = parser.parse_args()
    runs, rows = [], []
    targets = [(args.work / f"random-{n}-d{args.dim}", n) for n in args.items]
    targets += [(root, None) for root in args.roots]
    for root, n in targets:
        if n is not None and not (root / "latest").exists():
            random_snapshot(root, n, args.dim, users=args.users)
        if n is None:
            n = json.loads((root / latest_label(root) / "manifest.json").read_text()
                           )["counts"]["items"]
        port = free_port()
        started = time.perf_counter()
        server = start_server(root, port, args.ef_search)
        startup = time.perf_counter() - started
        try:
            asyncio.run(load(port, args.users, concurrency=2, seconds=3, max_requests=300))
            for c in args.concurrency:
                result = asyncio.run(load(port, args.users, concurrency=c, seconds=args.seconds,
                                          max_requests=args.max_requests))
                runs.append({"items": n, "source": str(root), "phase": "steady", **result})
            c = max(args.concurrency)
            result = asyncio.run(load(port, args.users, concurrency=c, seconds=args.seconds,
                                      max_requests=args.max_requests,
                                      swap_at=args.seconds / 3, root=root))
            runs.append({"items": n, "source": str(root), "phase": "swap", **result})
        finally:
            stop_service(server)
        runs[-1]["server_startup_s"] = round(startup, 1)
    for r in runs:
        rows.append([f"{r['items']:,}", r["phase"], r["concurrency"], f"{r['requests']:,}",
                     r["rps"], r["p50_ms"], r["p99_ms"], r["failed"],
                     ", ".join(f"{k}: {v:,}" for k, v in r["labels"].items())])
    print(markdown_table(["items", "phase", "clients", "requests", "req/s", "p50 ms", "p99 ms",
                          "failed", "answered by"], rows))
    payload = {"dim": args.dim, "ef_search": args.ef_search, "cpu_count": os.cpu_count(),
               "runs": runs}
    print(f"wrote {write_json(args.name, payload)}")


if __name__ == "__main__":
    main()
