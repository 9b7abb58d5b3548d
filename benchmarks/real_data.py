"""Load and prepare the real benchmark logs in ../shared/data; print their counts and timings.

- ML-1M (SASRec file), leave-one-out: users, items, events, test targets.
- Amazon Beauty (S3-Rec file), leave-one-out.
- ML-100K (RecBole .inter), ratings as feedback with real timestamps, global temporal split
  (one cut-off for all users, chosen so the last 10% of events by time are test).

    python benchmarks/real_data.py [--work /tmp/argus-real]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from _common import SHARED_DATA, markdown_table, write_json

from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.readers import read_events
from argusrec.sequences import PreparedData

DATASETS = {
    "ml-1m": ("ml-1m/ml-1m.txt", "sasrec", SplitConfig(kind="leave-one-out")),
    "beauty": ("amazon-beauty/Beauty.txt", "s3rec", SplitConfig(kind="leave-one-out")),
    "ml-100k": ("ml-100k/ml-100k.inter", "recbole", SplitConfig(kind="temporal",
                                                                 test_fraction=0.1)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/argus-real"))
    args = parser.parse_args()
    if not SHARED_DATA.exists():
        raise SystemExit(f"{SHARED_DATA} is absent")
    shutil.rmtree(args.work, ignore_errors=True)
    rows, results = [], {}
    for name, (rel, fmt, split) in DATASETS.items():
        path = SHARED_DATA / rel
        started = time.perf_counter()
        log = read_events(path, fmt)
        frame = log.frame.collect()
        load_s = time.perf_counter() - started
        summary = prepare(path, args.work / name, PrepareConfig(format=fmt, split=split),
                          progress=False)
        data = PreparedData(args.work / name)
        targets = data.meta["counts"]["split_users_with_targets"]
        r = {"events": frame.height, "users": frame["user"].n_unique(),
             "items": frame["item"].n_unique(), "feedback": list(log.feedback),
             "has_time": log.has_time, "load_seconds": round(load_s, 3),
             "prepare_seconds": round(summary.seconds, 3), "split": split.kind,
             "split_events": summary.split_events, "users_with_test": targets["test"],
             "users_with_val": targets["val"], "boundaries": summary.boundaries}
        results[name] = r
        s = summary.split_events
        rows.append([name, f"{r['users']:,}", f"{r['items']:,}", f"{r['events']:,}",
                     split.kind, f"{s['train']:,} / {s['val']:,} / {s['test']:,}",
                     f"{targets['test']:,}", r["load_seconds"], r["prepare_seconds"]])
    print(markdown_table(["dataset", "users", "items", "events", "split",
                          "train / val / test events", "users with test", "load s",
                          "prepare s"], rows))
    b = results["ml-100k"]["boundaries"]
    print(f"ml-100k temporal cut-off: train < {b['train_end']} <= test "
          f"(timestamps {b['time_min']}..{b['time_max']})")
    print(f"wrote {write_json('real_data', {'datasets': results})}")


if __name__ == "__main__":
    main()
