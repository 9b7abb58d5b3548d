"""Benchmark the training loader: index build time and tokens/s over a prepared dataset.

    python benchmarks/loader_throughput.py DATA [--max-len 512] [--batch-size 64] [--batches 200]

Reads DATA (an `argus prepare` output), builds the training windows, then times `--batches`
batches with 0 and 2 worker processes. Tokens are real (non-padding) events per second.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import markdown_table, write_json

from argusrec.loader import SequenceDataset, make_loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path)
    parser.add_argument("--max-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()

    started = time.perf_counter()
    dataset = SequenceDataset(args.data, split="train", max_len=args.max_len)
    index_s = time.perf_counter() - started
    rows, results = [], {"index_seconds": round(index_s, 2), "windows": len(dataset),
                         "runs": []}
    for workers in (0, 2):
        loader = make_loader(dataset, batch_size=args.batch_size, num_workers=workers, seed=0)
        it = iter(loader)
        next(it)  # start-up (worker spawn) is not throughput
        tokens, started = 0, time.perf_counter()
        for _ in range(args.batches):
            tokens += int(next(it).mask.sum())
        seconds = time.perf_counter() - started
        run = {"workers": workers, "batches_per_s": round(args.batches / seconds, 1),
               "tokens_per_s": round(tokens / seconds)}
        results["runs"].append(run)
        rows.append([workers, args.batch_size, args.max_len, run["batches_per_s"],
                     f"{run['tokens_per_s']:,}"])
    print(f"{len(dataset):,} training windows indexed in {index_s:.2f}s")
    print(markdown_table(["workers", "batch", "max_len", "batches/s", "tokens/s"], rows))
    print(f"wrote {write_json('loader_throughput', results)}")


if __name__ == "__main__":
    main()
