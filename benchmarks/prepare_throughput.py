"""Benchmark `argus prepare`: events per second and peak memory on a simulated log.

Simulates a log (unless --events-dir points at one), then prepares it in a fresh process with
Yambda's protocol (30-minute gap, one day of test) and reports wall time, events/s and the
child's peak RSS. Targets (issue 2): >= 1M events/s on 2 cores; < 4 GB for a 50M-event log.

    python benchmarks/prepare_throughput.py --users 10000 --work /tmp/bench
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from _common import markdown_table, run_child, write_json

ARGUS = str(Path(sys.executable).with_name("argus"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="simulated users")
    parser.add_argument("--work", type=Path, default=Path("/tmp/argus-bench-prepare"),
                        help="scratch directory (large: ~1.5 GB at 10K users)")
    parser.add_argument("--events-dir", type=Path, default=None,
                        help="an existing simulated log to prepare instead of simulating")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    events = args.events_dir or args.work / f"events-{args.users}"
    rows = []
    if args.events_dir is None and not events.exists():
        sim = run_child([ARGUS, "simulate", str(events), "--users", str(args.users), "--quiet"])
        print(sim["stdout"].strip())
    data = args.work / "data"
    shutil.rmtree(data, ignore_errors=True)
    run = run_child([ARGUS, "prepare", str(events), str(data), "--gap", "1800",
                     "--test-duration", "86400", "--quiet"])
    print(run["stdout"].strip())
    meta = json.loads((data / "meta.json").read_text())
    n = meta["counts"]["input_events"]
    result = {"events": n, "users": meta["counts"]["users"], "items": meta["counts"]["items"],
              "shards": len(meta["shards"]), "seconds": round(run["seconds"], 2),
              "events_per_second": round(n / run["seconds"]),
              "peak_rss_gb": round(run["peak_rss_gb"], 2)}
    rows.append([f"{result['events']:,}", f"{result['users']:,}", f"{result['items']:,}",
                 result["shards"], result["seconds"], f"{result['events_per_second']:,}",
                 result["peak_rss_gb"]])
    print(markdown_table(["events", "users", "items", "shards", "wall s", "events/s",
                          "peak RSS GB"], rows))
    path = write_json("prepare_throughput", {"result": result,
                                             "targets": {"events_per_second": 1_000_000,
                                                         "peak_rss_gb_at_50M": 4.0}})
    print(f"wrote {path}")
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
