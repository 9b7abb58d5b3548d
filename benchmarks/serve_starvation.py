"""Does the runtime path starve the ANN path? GET latency while maximum-size histories encode.

    python benchmarks/serve_starvation.py [--preset 3m] [--seconds 10] [--heavy 8] \
        [--workers 1 4] [--work /tmp/argus-bench-starvation]

A small simulated log is prepared, a model of PRESET is trained for a few steps and exported
(under WORK, built once). For each RUNTIME_WORKERS value, `argus serve` runs in its own process
on 127.0.0.1 (torch at one thread per encoding, as `argus serve` sets it) with the runtime path
on, and two phases run for SECONDS each:

- quiet: CONCURRENCY asyncio clients send GET /v1/users/{id}/recommendations?k=100 for random
  known users;
- heavy: the same, while HEAVY clients post POST /v1/recommendations with a history of
  MAX_HISTORY events (the service's default maximum; the model reads its last max_len) back to
  back. A 503 (admission limit, Retry-After) is counted as shed, not as a failure.

Every GET latency is the client's (HTTP included). Failures are non-200 GETs, heavy answers
other than 200/503, and transport errors: they must be 0. Prints a table and writes
benchmarks/results/serve_starvation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
from _common import markdown_table, results_name, start_service, stop_service, write_json
from serve_load import free_port

from argusrec.serve import MAX_HISTORY
from argusrec.snapshot import Snapshot


def build(work: Path, preset: str, users: int, steps: int) -> Path:
    """WORK/snapshots of a PRESET model on a simulated log (built once)."""
    from argusrec.export import export
    from argusrec.prepare import PrepareConfig, SplitConfig, prepare
    from argusrec.simulate import SimulatorConfig, simulate
    from argusrec.train import TrainConfig, pretrain

    root = work / f"{preset}-u{users}"
    if (root / "snapshots" / "latest").exists():
        return root / "snapshots"
    simulate(SimulatorConfig(users=users, events_scale=0.05, seed=1), root / "events",
             progress=False)
    prepare(root / "events", root / "data",
            PrepareConfig(split=SplitConfig(test_fraction=0.2, val_duration=86_400 * 5)),
            progress=False)
    pretrain(root / "data", root / "run", TrainConfig(preset=preset, max_steps=steps),
             progress=False)
    export(root / "run", root / "snapshots", progress=False)
    return root / "snapshots"


def start_server(root: Path, port: int, workers: int, queue: int) -> subprocess.Popen:
    return start_service(root, port, reload_interval=None, runtime_workers=workers,
                         runtime_queue=queue)


async def phase(port: int, users: list[str], body: bytes | None, *, concurrency: int,
                heavy: int, seconds: float) -> dict:
    latencies, failures = [], []
    heavy_ms, heavy_status = [], {}
    rng = np.random.default_rng(0)
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency + heavy,
                          max_keepalive_connections=concurrency + heavy)

    async def reader(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            user = users[int(rng.integers(len(users)))]
            started = time.perf_counter()
            try:
                r = await client.get(f"/v1/users/{user}/recommendations", params={"k": 100})
                if r.status_code != 200:
                    failures.append(f"GET HTTP {r.status_code}")
                    continue
                latencies.append(time.perf_counter() - started)
            except httpx.HTTPError as e:
                failures.append(repr(e))

    async def writer(client: httpx.AsyncClient) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                r = await client.post("/v1/recommendations", content=body,
                                      headers={"content-type": "application/json"})
            except httpx.HTTPError as e:
                failures.append(repr(e))
                continue
            heavy_status[r.status_code] = heavy_status.get(r.status_code, 0) + 1
            if r.status_code == 200:
                heavy_ms.append(time.perf_counter() - started)
            elif r.status_code == 503:
                await asyncio.sleep(float(r.headers.get("retry-after", 1)))
            else:
                failures.append(f"POST HTTP {r.status_code}: {r.text[:200]}")

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120,
                                 limits=limits) as client:
        started = time.perf_counter()
        tasks = [reader(client) for _ in range(concurrency)]
        tasks += [writer(client) for _ in range(heavy if body is not None else 0)]
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    pct = (lambda q: round(float(np.percentile(ms, q)), 2) if len(ms) else None)
    return {"gets": len(latencies), "get_rps": round(len(latencies) / wall, 1),
            "p50_ms": pct(50), "p99_ms": pct(99),
            "max_ms": round(float(ms.max()), 2) if len(ms) else None,
            "heavy_done": len(heavy_ms), "heavy_status": heavy_status,
            "heavy_p50_ms": round(float(np.median(heavy_ms)) * 1000, 1) if heavy_ms else None,
            "failed": len(failures), "failures": failures[:10], "seconds": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="3m")
    parser.add_argument("--users", type=int, default=300, help="simulated users")
    parser.add_argument("--steps", type=int, default=2, help="training steps (a few: only "
                        "the encoder's cost matters here)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=2, help="GET clients")
    parser.add_argument("--heavy", type=int, default=8, help="clients posting histories")
    parser.add_argument("--history", type=int, default=MAX_HISTORY, help="events per history")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4],
                        help="runtime_workers values to serve with")
    parser.add_argument("--queue", type=int, default=8, help="runtime_queue")
    parser.add_argument("--work", type=Path, default=Path("/tmp/argus-bench-starvation"))
    parser.add_argument("--name", default="serve_starvation", type=results_name,
                        help="results file name")
    args = parser.parse_args()

    started = time.perf_counter()
    root = build(args.work, args.preset, args.users, args.steps)
    build_s = time.perf_counter() - started
    snap = Snapshot.latest(root)
    users = snap.users.keys()
    items = snap.ids_of(np.arange(snap.num_items))
    max_len = snap.manifest["model"]["max_len"]
    rng = np.random.default_rng(1)
    history = [{"item_id": items[int(rng.integers(len(items)))],
                "timestamp": 1_000_000 + 60 * i} for i in range(args.history)]
    body = json.dumps({"history": history, "k": 100}).encode()
    snap.close()

    runs = []
    for workers in args.workers:
        port = free_port()
        server = start_server(root, port, workers, args.queue)
        try:
            asyncio.run(phase(port, users, body, concurrency=2, heavy=1, seconds=2))  # warm
            for name, heavy in [("quiet", None), ("heavy", body)]:
                result = asyncio.run(phase(port, users, heavy, concurrency=args.concurrency,
                                           heavy=args.heavy, seconds=args.seconds))
                runs.append({"runtime_workers": workers, "phase": name, **result})
        finally:
            stop_service(server)
    rows = []
    for r in runs:
        quiet = next(q for q in runs if q["runtime_workers"] == r["runtime_workers"]
                     and q["phase"] == "quiet")
        ratio = round(r["p99_ms"] / quiet["p99_ms"], 1) if r["p99_ms"] and quiet["p99_ms"] \
            else None
        rows.append([r["runtime_workers"], r["phase"], f"{r['gets']:,}", r["get_rps"],
                     r["p50_ms"], r["p99_ms"], r["max_ms"], ratio,
                     r["heavy_done"] if r["phase"] == "heavy" else "",
                     r["heavy_p50_ms"] or "", r["heavy_status"].get(503, 0)
                     if r["phase"] == "heavy" else "", r["failed"]])
    print(markdown_table(["workers", "phase", "GETs", "GET/s", "p50 ms", "p99 ms", "max ms",
                          "p99 / quiet", "histories", "history p50 ms", "shed (503)",
                          "failed"], rows))
    payload = {"preset": args.preset, "max_len": max_len, "items": len(items),
               "users": len(users), "history_events": args.history,
               "history_body_bytes": len(body), "heavy_clients": args.heavy,
               "get_clients": args.concurrency, "runtime_queue": args.queue,
               "build_s": round(build_s, 1), "cpu_count": os.cpu_count(), "runs": runs}
    print(f"wrote {write_json(args.name, payload)}")


if __name__ == "__main__":
    main()
