"""Benchmark the daily cycle on the simulator: append a day, export with new items, swap under load.

    python benchmarks/daily_cycle.py --users 10000 --work /tmp/bench-daily

1. The simulated log (``--events-dir``, or simulated here) is cut at its last day: the base log
   is everything before, the new day is the rest (Yambda directories sharing the side tables).
2. ``argus prepare`` of the base log (Yambda's protocol: 30-minute gap, one day of test).
3. ``argus prepare DAY DATA-2 --base DATA-1 --append`` against a full re-prepare of the whole
   log with ``--base DATA-1``: wall time, input events per second and the child's peak RSS,
   each in a fresh process. The two datasets must agree on every count.
4. A small model trained on the base exports a snapshot of the base (day 1), then, serving it
   under load, exports the appended dataset (day 2): the users and items new since training
   are counted, the service swaps to day 2, and every request's status and latency is kept.

Prints a table and writes benchmarks/results/daily_cycle.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
from _common import markdown_table, run_child, run_own_peak, write_json

ARGUS = str(Path(sys.executable).with_name("argus"))
DAY = 86_400


def split_log(events: Path, work: Path) -> tuple[Path, Path, Path]:
    """(base log, new day, whole log) as Yambda directories."""
    base, day = work / "log-base", work / "log-day"
    if not (day / "multi_event.parquet").exists():
        for d in (base, day):
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir(parents=True)
            for side in events.glob("*.parquet"):
                if side.name != "multi_event.parquet":
                    os.symlink(side.resolve(), d / side.name)
        scan = pl.scan_parquet(events / "multi_event.parquet")
        end = int(scan.select(pl.col("timestamp").max()).collect().item()) + 1
        scan.filter(pl.col("timestamp") < end - DAY).sink_parquet(base / "multi_event.parquet")
        scan.filter(pl.col("timestamp") >= end - DAY).sink_parquet(day / "multi_event.parquet")
    return base, day, events


def timed(name: str, argv: list[str], rows: list, results: dict, events: int) -> dict:
    out = run_own_peak(argv)
    print(out["stdout"].strip(), flush=True)
    results[name] = {"seconds": round(out["seconds"], 2), "events_read": events,
                     "events_per_second": round(events / out["seconds"]),
                     "peak_rss_gb": round(out["peak_rss_gb"], 2), "command": " ".join(argv)}
    rows.append([name, f"{events:,}", f"{out['seconds']:.1f}",
                 f"{events / out['seconds']:,.0f}", f"{out['peak_rss_gb']:.2f}"])
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Load:
    """Concurrent GET recommendations on a loopback server, bounded in time and count."""

    def __init__(self, port: int, users: list[str], *, concurrency: int, max_requests: int,
                 seconds: float) -> None:
        self.port, self.users = port, users
        self.concurrency, self.max_requests, self.seconds = concurrency, max_requests, seconds
        self.stop = threading.Event()
        self.records: list[tuple[float, int, str]] = []  # (latency s, status, label)
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, n: int, http: httpx.AsyncClient, deadline: float) -> None:
        rng = np.random.default_rng(n)
        while not self.stop.is_set() and time.time() < deadline and \
                len(self.records) < self.max_requests:
            user = self.users[int(rng.integers(len(self.users)))]
            started = time.perf_counter()
            try:
                r = http.get(f"/v1/users/{user}/recommendations", params={"k": 100})
                r = await r
                label = r.json().get("snapshot", "") if r.status_code == 200 else ""
                self.records.append((time.perf_counter() - started, r.status_code, label))
            except httpx.HTTPError as e:
                self.records.append((time.perf_counter() - started, 0, repr(e)))

    async def _run(self) -> None:
        deadline = time.time() + self.seconds
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}",
                                     timeout=30) as http:
            await asyncio.gather(*[self._client(n, http, deadline)
                                   for n in range(self.concurrency)])

    def summary(self) -> dict:
        latency = np.asarray([r[0] for r in self.records]) * 1000
        labels: dict[str, int] = {}
        for _, status, label in self.records:
            if status == 200:
                labels[label] = labels.get(label, 0) + 1
        return {"requests": len(self.records),
                "failed": sum(1 for r in self.records if r[1] != 200),
                "by_snapshot": labels,
                "p50_ms": round(float(np.percentile(latency, 50)), 2) if len(latency) else None,
                "p99_ms": round(float(np.percentile(latency, 99)), 2) if len(latency) else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="simulated users")
    parser.add_argument("--work", type=Path, default=Path("/tmp/argus-bench-daily"),
                        help="scratch directory (about 4 GB at 10K users)")
    parser.add_argument("--events-dir", type=Path, default=None,
                        help="an existing simulated log instead of simulating one")
    parser.add_argument("--events-scale", type=float, default=None,
                        help="the simulator's events_scale (1.0: Yambda-50M, 48M events at "
                        "10K users; default the simulator's 0.1)")
    parser.add_argument("--steps", type=int, default=30, help="training steps of the model")
    parser.add_argument("--ef-construction", type=int, default=40,
                        help="HNSW build width of both exports (the build dominates export)")
    parser.add_argument("--concurrency", type=int, default=4, help="load clients")
    parser.add_argument("--max-requests", type=int, default=200_000,
                        help="bound on the requests of the load phase")
    args = parser.parse_args()

    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    scale = f"-x{args.events_scale:g}" if args.events_scale else ""
    events = args.events_dir or work / f"sim-{args.users}{scale}"
    if args.events_dir is None and not (events / "multi_event.parquet").exists():
        extra = []
        if args.events_scale:
            config = work / "simulator.yaml"
            config.write_text(f"events_scale: {args.events_scale}\n")
            extra = ["--config", str(config)]
        print(run_child([ARGUS, "simulate", str(events), "--users", str(args.users), *extra,
                         "--quiet"])["stdout"].strip(), flush=True)
    base_log, day_log, whole = split_log(events, work)
    count = {name: pl.scan_parquet(p / "multi_event.parquet").select(pl.len()).collect().item()
             for name, p in (("base", base_log), ("day", day_log), ("whole", whole))}
    protocol = ["--gap", "1800", "--test-duration", str(DAY), "--quiet", "--overwrite"]
    rows: list = []
    results: dict = {"events": count}
    timed("prepare base log", [ARGUS, "prepare", str(base_log), str(work / "data-1"),
                               *protocol], rows, results, count["base"])
    timed("append one day (--base --append)",
          [ARGUS, "prepare", str(day_log), str(work / "data-2"), "--base",
           str(work / "data-1"), "--append", "--quiet", "--overwrite"], rows, results,
          count["day"])
    timed("full re-prepare (--base)",
          [ARGUS, "prepare", str(whole), str(work / "data-2-full"), "--base",
           str(work / "data-1"), "--quiet", "--overwrite"], rows, results, count["whole"])
    appended = json.loads((work / "data-2" / "meta.json").read_text())
    full = json.loads((work / "data-2-full" / "meta.json").read_text())
    results["append_equals_full"] = {k: appended[k] == full[k]
                                     for k in ("counts", "split", "fields")}
    print(markdown_table(["step", "events read", "wall s", "events/s", "peak RSS GB"], rows))
    print("append agrees with the full re-prepare:", results["append_equals_full"])

    # a model of day 1, its snapshot served, then the day-2 export under load
    run = work / "model-1"
    if not (run / "checkpoints").exists():
        run_child([ARGUS, "pretrain", str(work / "data-1"), str(run), "--preset", "debug",
                   "--max-steps", str(args.steps), "--quiet"])
    snaps = work / "snapshots"
    shutil.rmtree(snaps, ignore_errors=True)
    hnsw = ["--ef-construction", str(args.ef_construction), "--quiet"]
    day1 = run_child([ARGUS, "export", str(run), str(snaps), "--label", "day1", *hnsw])
    print(day1["stdout"].strip(), flush=True)
    port = free_port()
    server = subprocess.Popen([ARGUS, "serve", str(snaps), "--port", str(port),
                               "--reload-interval", "1", "--no-runtime"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        users = pl.read_parquet(work / "data-2" / "users.parquet")["user"].cast(pl.String)
        load = Load(port, users.sample(2000, seed=0).to_list(), concurrency=args.concurrency,
                    max_requests=args.max_requests, seconds=3600)
        load.thread.start()
        time.sleep(5)
        started = time.perf_counter()
        day2 = run_own_peak([ARGUS, "export", str(run), str(snaps), "--data",
                          str(work / "data-2"), "--label", "day2", *hnsw])
        print(day2["stdout"].strip(), flush=True)
        export_seconds = time.perf_counter() - started
        swap_deadline = time.time() + 600
        while time.time() < swap_deadline and not load.summary()["by_snapshot"].get("day2"):
            time.sleep(0.5)
        time.sleep(5)
        load.stop.set()
        load.thread.join()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    manifest = json.loads((snaps / "day2" / "manifest.json").read_text())
    results["export_day2"] = {"seconds": round(export_seconds, 1),
                              "peak_rss_gb": round(day2["peak_rss_gb"], 2),
                              "counts": manifest["counts"], "stdout": day2["stdout"].strip()}
    results["load_during_export_and_swap"] = load.summary()
    print(json.dumps({k: results[k] for k in ("export_day2", "load_during_export_and_swap")},
                     indent=2))
    print("->", write_json("daily_cycle", results))


if __name__ == "__main__":
    main()
