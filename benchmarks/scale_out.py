"""Benchmark the scale-out paths: `argus prepare --engine spark` against polars, and the
export on 2 torchrun ranks against one process, on the same machine.

1. **prepare**: the same simulated log prepared by each engine in a fresh process
   (Yambda's protocol: `--gap 1800 --test-duration 86400`): wall time, input events/s and the
   peak resident memory of the whole process tree (Spark's JVM and Python workers included);
   the two datasets are checked equal.
2. **export**: a small model (`--preset debug`, a few steps) trained on the prepared data,
   exported on CPU by one process and by `torchrun --nproc-per-node 2`: users/s over the
   user-encoding stage, and the two snapshots' user vectors checked equal.

    python benchmarks/scale_out.py --events-dir /tmp/bench/sim/users-10000 --work /tmp/bench-scale

Spark runs in local mode on this machine's cores (`--spark-master local[2]`), so the figure is
the engine's overhead at equal hardware, not a cluster's throughput (docs/scale.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from _common import RESULTS, markdown_table, run_tree_peak, write_json

BIN = Path(sys.executable).parent
ARGUS = str(BIN / "argus")
PREPARE = ["--gap", "1800", "--test-duration", "86400", "--quiet"]


def bench_prepare(events: Path, work: Path, master: str, driver_memory: str) -> list[dict]:
    rows = []
    for engine in ("polars", "spark"):
        out = work / f"data-{engine}"
        shutil.rmtree(out, ignore_errors=True)
        extra = ["--engine", "spark", "--spark-master", master] if engine == "spark" else []
        # local mode: the driver JVM is the executor too; its heap is set before it starts
        env = ({"PYSPARK_SUBMIT_ARGS": f"--driver-memory {driver_memory} pyspark-shell"}
               if engine == "spark" else None)
        run = run_tree_peak([ARGUS, "prepare", str(events), str(out), *PREPARE, *extra],
                            env=env)
        meta = json.loads((out / "meta.json").read_text())
        n = meta["counts"]["input_events"]
        rows.append({"engine": engine, "events": n, "shards": len(meta["shards"]),
                     "seconds": round(run["seconds"], 1),
                     "events_per_second": round(n / run["seconds"]),
                     "peak_rss_gb": round(run["peak_rss_gb"], 2)})
        print(rows[-1], flush=True)
    a, b = (json.loads((work / f"data-{e}" / "meta.json").read_text()) for e in ("polars", "spark"))
    same = all(a[k] == b[k] for k in ("counts", "split", "fields", "shards"))
    for row in rows:
        row["same_dataset_meta"] = same
    return rows


def bench_export(data: Path, work: Path, steps: int) -> list[dict]:
    run_dir = work / "run"
    if not (run_dir / "latest").exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        run_tree_peak([ARGUS, "pretrain", str(data), str(run_dir), "--preset", "debug",
                       "--max-steps", str(steps), "--quiet"])
    rows = []
    for ranks in (1, 2):
        out = work / f"snapshots-{ranks}"
        shutil.rmtree(out, ignore_errors=True)
        command = [ARGUS] if ranks == 1 else [str(BIN / "torchrun"), "--nproc-per-node", "2",
                                               "-m", "argusrec.cli"]
        # a small HNSW build: the index is built once by rank 0 either way, and is not timed
        run = run_tree_peak([*command, "export", str(run_dir), str(out), "--device", "cpu",
                             "--parquet", "--hnsw-m", "8", "--ef-construction", "40",
                             "--quiet"], env={"OMP_NUM_THREADS": "1"})
        manifest = json.loads((_latest(out) / "manifest.json").read_text())
        users = manifest["counts"]["users"] if "counts" in manifest else manifest.get("users")
        stage = _stage_seconds(run["stdout"], "users")
        print(run["stdout"].strip(), flush=True)
        rows.append({"ranks": ranks, "users": users, "seconds": round(run["seconds"], 1),
                     "user_stage_seconds": stage,
                     "users_per_second": round(users / stage) if stage else None,
                     "peak_rss_gb": round(run["peak_rss_gb"], 2)})
        print(rows[-1], flush=True)
    rows[1]["same_vectors"] = _same_vectors(work / "snapshots-1", work / "snapshots-2")
    return rows


def _latest(snapshots: Path) -> Path:
    return snapshots / (snapshots / "latest").read_text().strip()


def _stage_seconds(stdout: str, name: str) -> float | None:
    """The seconds `argus export` reports for one stage ("users 12.3s")."""
    for part in stdout.replace("(", ",").replace(")", ",").split(","):
        words = part.split()
        if len(words) == 2 and words[0] == name and words[1].endswith("s"):
            return float(words[1][:-1])
    return None


def _same_vectors(a: Path, b: Path) -> bool:
    from argusrec.export_parallel import read_user_vectors

    x, y = (read_user_vectors(_latest(p)).sort("user") for p in (a, b))
    return bool(x["user"].equals(y["user"]) and np.allclose(
        np.stack(x["vector"].to_numpy()), np.stack(y["vector"].to_numpy()), atol=1e-5))


def _earlier() -> dict:
    path = RESULTS / "scale_out.json"
    if not path.exists():
        return {}
    return {k: v for k, v in json.loads(path.read_text()).items() if k in ("prepare", "export")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events-dir", type=Path, required=True, help="a simulated log")
    parser.add_argument("--work", type=Path, default=Path("/tmp/argus-bench-scale"))
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument("--spark-driver-memory", default="4g", help="local mode's JVM heap")
    parser.add_argument("--steps", type=int, default=20, help="pretraining steps of the model "
                        "the export encodes with (its speed does not depend on them)")
    parser.add_argument("--skip", choices=("prepare", "export"), default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    result: dict = _earlier() if args.skip else {}  # the part not rerun stays as measured
    if args.skip != "prepare":
        result["prepare"] = bench_prepare(args.events_dir, args.work, args.spark_master,
                                          args.spark_driver_memory)
        print(markdown_table(["engine", "events", "shards", "wall s", "events/s", "peak RSS GB"],
                             [[r["engine"], f"{r['events']:,}", r["shards"], r["seconds"],
                               f"{r['events_per_second']:,}", r["peak_rss_gb"]]
                              for r in result["prepare"]]))
    if args.skip != "export":
        result["export"] = bench_export(args.work / "data-polars", args.work, args.steps)
        print(markdown_table(["ranks", "users", "wall s", "user stage s", "users/s",
                              "peak RSS GB"],
                             [[r["ranks"], f"{r['users']:,}", r["seconds"],
                               r["user_stage_seconds"], r["users_per_second"], r["peak_rss_gb"]]
                              for r in result["export"]]))
    print(f"wrote {write_json('scale_out', result)}")


if __name__ == "__main__":
    main()
