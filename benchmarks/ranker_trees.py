"""How many trees the final ranker should have: fixed tree counts against the count chosen
on the ranker's own period, on a fine-tuned run of the simulator.

The study's ranker learns on the validation week (7.9K impressions at 100 users) and is
scored on the test week. This splits the validation week by time: each ranker of the grid
(loss x trees x depth) is fitted on its first half and scored on the second half ("hold",
what chooses), and, fitted on the whole week, on the test week (reported only). Three
rankers per cell: the ordinary features, + the ARGUS score, + the oracle's true affinity;
beside them, the ARGUS score and the oracle alone. A ranker that scores below its own best
feature has overfitted its period.

    python benchmarks/ranker_trees.py RUN --oracle SIM_DIR [--json ranker_trees]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import polars as pl

from _common import markdown_table, results_name, write_json
from argusrec.metrics import pair_accuracy
from argusrec.rank import ORDINARY, RankConfig, _matrix, fit_ranker
from argusrec.scoring import impression_pairs
from ranker_diagnosis import frames

RANKERS = {"ordinary": [], "+ ARGUS score": ["score"], "+ oracle": ["oracle"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a fine-tuned run directory")
    parser.add_argument("--oracle", type=Path, required=True, help="the simulator's output")
    parser.add_argument("--trees", default="100,400,1500", help="fixed tree counts")
    parser.add_argument("--json", default="ranker_trees", type=results_name,
                        help="results/NAME.json")
    args = parser.parse_args()
    trees = [int(t) for t in args.trees.split(",")]
    split, ft = frames(args.run, args.oracle)
    val, test = split["val"], split["test"]
    cut = val["timestamp"].quantile(0.5)
    parts = {"fit": val.filter(pl.col("timestamp") <= cut),
             "hold": val.filter(pl.col("timestamp") > cut), "test": test}
    pairs = {k: impression_pairs(f, ft.pairs) for k, f in parts.items()}

    def accuracy(name: str, score) -> float:
        order, better, worse, weight = pairs[name]
        return pair_accuracy(np.asarray(score, dtype=np.float64)[order], better, worse,
                             weight)["PairAccuracy"]

    alone = {c: {k: accuracy(k, parts[k][c].to_numpy()) for k in ("hold", "test")}
             for c in ("score", "oracle")}
    grid = [RankConfig(loss=loss, iterations=n, depth=depth, threads=1)
            for loss, n, depth in itertools.product(("YetiRank", "PairLogit"), trees, (4, 6))]
    grid += [RankConfig(loss=loss, iterations=1000, choose_iterations=True, threads=1)
             for loss in ("YetiRank", "PairLogit")]
    rows = []
    for cfg in grid:
        row = {"loss": cfg.loss, "trees": "chosen" if cfg.choose_iterations else
               cfg.iterations, "depth": cfg.depth}
        for name, extra in RANKERS.items():
            columns = ORDINARY + extra
            model, _ = fit_ranker(cfg, parts["fit"], columns, [], ft.pairs)
            row[f"hold/{name}"] = accuracy("hold", model.predict(_matrix(parts["hold"],
                                                                         columns, [])))
            model, count = fit_ranker(cfg, val, columns, [], ft.pairs)
            row[f"test/{name}"] = accuracy("test", model.predict(_matrix(test, columns, [])))
            row[f"trees/{name}"] = count
        rows.append(row)
        print(row, flush=True)
    print(f"alone: ARGUS score {alone['score']['hold']:.4f} (hold) {alone['score']['test']:.4f}"
          f" (test); oracle {alone['oracle']['hold']:.4f} / {alone['oracle']['test']:.4f}\n")
    print(markdown_table(
        ["loss", "trees", "depth", *[f"hold: {n}" for n in RANKERS],
         *[f"test: {n}" for n in RANKERS]],
        [[r["loss"], r["trees"] if r["trees"] != "chosen" else
          "chosen (" + "/".join(str(r[f"trees/{n}"]) for n in RANKERS) + ")", r["depth"],
          *[f"{r[f'hold/{n}']:.4f}" for n in RANKERS],
          *[f"{r[f'test/{n}']:.4f}" for n in RANKERS]] for r in rows]))
    path = write_json(args.json, {"run": str(args.run), "impressions": {
        k: len(f) for k, f in parts.items()}, "alone": alone, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
