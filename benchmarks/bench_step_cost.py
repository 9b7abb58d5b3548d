"""The benchmark suite's cost per step against the plain `argus pretrain`, on Amazon Beauty.

Two runs side by side at one thread each, in both cases (how `argus bench --jobs 2` runs on
two cores): `argus bench beauty --encoders sasrec --losses full --seeds 2 --jobs 2`, then two
`argus pretrain --config sasrec-beauty` runs (seeds 0 and 1). Both validate every 400 steps.
Prints steps/s per job and writes benchmarks/results/bench_step_cost.json. Run it with
nothing else on the machine.

    python benchmarks/bench_step_cost.py --data-dir ../shared/data --work /tmp/step-cost
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from _common import SHARED_DATA, markdown_table, write_json

ARGUS = [sys.executable, "-m", "argusrec.cli"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=SHARED_DATA)
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-step-cost"))
    p.add_argument("--steps", type=int, default=800)
    args = p.parse_args()
    if not (args.data_dir / "amazon-beauty" / "Beauty.txt").exists():
        raise SystemExit(f"no {args.data_dir}/amazon-beauty/Beauty.txt; pass --data-dir")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bench_dir = args.work / "bench"
    shutil.rmtree(args.work, ignore_errors=True)
    subprocess.run(ARGUS + ["bench", "beauty", "--encoders", "sasrec", "--losses", "full",
                            "--seeds", "2", "--jobs", "2", "--max-steps", str(args.steps),
                            "--budget", "0", "--data-dir", str(args.data_dir),
                            "--out", str(bench_dir), "--quiet"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    rows, record = [], {}
    for s in (0, 1):
        r = json.loads((bench_dir / "runs" / f"sasrec-full-s{s}" / "result.json").read_text())
        r = r["result"]
        record[f"bench-s{s}"] = {"steps": r["steps"], "seconds": r["train_seconds"]}
    plain = [subprocess.Popen(ARGUS + ["pretrain", str(bench_dir / "data"),
                                       str(args.work / f"plain-s{s}"), "--config",
                                       "sasrec-beauty", "--max-steps", str(args.steps),
                                       "--threads", "1", "--eval-every", "400", "--seed",
                                       str(s), "--quiet"], env=env, stdout=subprocess.PIPE,
                              text=True)
             for s in (0, 1)]
    for s, proc in enumerate(plain):
        text, _ = proc.communicate()
        # the CLI's last line: "trained at step N: loss L, T tokens/s, S s; ..."
        found = re.search(r"(?:trained|stopped) at step (\d+): .*?, ([\d.]+)s;", text)
        if proc.returncode or not found:
            raise SystemExit(f"plain pretrain seed {s} failed:\n{text}")
        record[f"plain-s{s}"] = {"steps": int(found[1]), "seconds": float(found[2])}
    for name, r in record.items():
        rows.append([name, r["steps"], f"{r['seconds']:.1f}", f"{r['steps'] / r['seconds']:.2f}"])
    print(markdown_table(["run", "steps", "train seconds", "steps/s"], rows))
    write_json("bench_step_cost", {"runs": record})


if __name__ == "__main__":
    main()
