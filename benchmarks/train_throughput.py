"""Training throughput: tokens/s, training targets/s and peak memory of `argus pretrain`.

Two configurations, each in a fresh process, 2 threads:

- `sasrec-ml1m`: SASRec's usual ML-1M setup (2 blocks, width 64, history 200, batch 128, full
  softmax over the 3,416 items, every position after the first of a window a target). Issue 3's
  target: >= 26K tokens/s, 3x RePlay's SASRec on this machine (~8.6K); RecBole runs ~13K
  tokens/s but only ~110 training targets/s (one target per prefix sample).
- `argus-3m-512`: the ~3.2M-parameter ARGUS preset at history 512 on a simulated log, corrected
  logQ with 1024 uniform + in-batch negatives, feedback prediction on.

    python benchmarks/train_throughput.py [--steps 150] [--only sasrec-ml1m]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from _common import SHARED_DATA, markdown_table, run_child, write_json

ARGUS = str(Path(sys.executable).with_name("argus"))


def ensure_data(work: Path) -> dict[str, Path]:
    paths = {}
    ml1m = work / "ml-1m"
    if not ml1m.exists():
        run_child([ARGUS, "prepare", str(SHARED_DATA / "ml-1m" / "ml-1m.txt"), str(ml1m),
                   "--split", "leave-one-out", "--quiet"])
    paths["sasrec-ml1m"] = ml1m
    sim = work / "sim-data"
    if not sim.exists():
        run_child([ARGUS, "simulate", str(work / "sim"), "--users", "1000", "--quiet"])
        run_child([ARGUS, "prepare", str(work / "sim"), str(sim), "--gap", "1800",
                   "--test-duration", "86400", "--quiet"])
    paths["argus-3m-512"] = sim
    return paths


CONFIGS = {
    "sasrec-ml1m": ["--config", "sasrec-ml1m", "--sasrec"],  # a shipped config, by name
    "argus-3m-512": ["--preset", "3m", "--max-len", "512", "--batch-size", "16",
                     "--loss", "corrected", "--threads", "2"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--work", type=Path, default=Path("/tmp/argus-bench-train"))
    parser.add_argument("--only", choices=list(CONFIGS), default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = ensure_data(args.work)
    rows, results = [], {}
    for name, flags in CONFIGS.items():
        if args.only and name != args.only:
            continue
        out = args.work / f"run-{name}"
        shutil.rmtree(out, ignore_errors=True)
        run = run_child([ARGUS, "pretrain", str(data[name]), str(out), *flags,
                         "--max-steps", str(args.steps), "--quiet"])
        line = run["stdout"].strip().splitlines()[-1]
        tokens_s = float(re.search(r"([\d,]+) tokens/s", line).group(1).replace(",", ""))
        params = int(re.search(r"encoder ([\d,]+) parameters", line).group(1).replace(",", ""))
        targets_per_token = _targets_per_token(data[name], name)
        results[name] = {"tokens_per_s": tokens_s, "targets_per_s": tokens_s * targets_per_token,
                         "encoder_parameters": params, "peak_rss_gb": run["peak_rss_gb"],
                         "steps": args.steps, "line": line}
        rows.append([name, f"{params:,}", f"{tokens_s:,.0f}",
                     f"{tokens_s * targets_per_token:,.0f}", f"{run['peak_rss_gb']:.2f}"])
    print(markdown_table(["configuration", "encoder params", "tokens/s", "targets/s",
                          "peak RSS GB (max so far)"], rows))
    print(f"wrote {write_json('train_throughput', {'results': results})}")


def _targets_per_token(data: Path, name: str) -> float:
    """Share of tokens that are training targets (all but each window's first event)."""
    from argusrec.loader import SequenceDataset

    max_len = 200 if name == "sasrec-ml1m" else 512
    ds = SequenceDataset(data, split="train", max_len=max_len,
                         positives_only=name == "sasrec-ml1m")
    lengths = ds.windows[:, 3] - ds.windows[:, 2]
    return float((lengths - 1).sum() / lengths.sum())


if __name__ == "__main__":
    main()
