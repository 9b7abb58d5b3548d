"""Why the study's ARGUS score without context gave the higher ranker uplift (issue 18).

For fine-tuned runs of `argus study` (the reference `argus-sN` and `argus-no-context-sN`),
on the test week:

- the uplift of the ranker + ARGUS score over the ordinary ranker under several CatBoost
  seeds (the study fits one, seed 0): how much of a difference between two arms the
  ranker's own seed can make;
- the same with groups of ordinary features left out (user-item counts, item counts and
  rates, the session's hour / gap / position): whether the ordinary features carry what a
  score with context knows;
- the within-session rank correlation of the score with each ordinary feature.

    python benchmarks/context_diagnosis.py DATA RUNS/finetune argus-s0 argus-no-context-s0 ...
        [--which best] [--ranker-seeds 4] [--drop-groups] [--json NAME]

``--which`` picks the checkpoint (the study ranks ``best``, the step with the best
validation PairAccuracy).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import polars as pl

from _common import markdown_table, results_name, write_json
from argusrec.checkpoint import load_model
from argusrec.finetune import FinetuneConfig
from argusrec.metrics import pair_accuracy
from argusrec.rank import ORDINARY, RankConfig, _matrix, event_features, fit_ranker, with_features
from argusrec.scoring import impression_pairs, score_impressions
from argusrec.sequences import PreparedData

DROP = {"no user-item": ["user_item_events", "user_item_likes", "since_user_item"],
        "no item": ["item_events", "item_likes", "item_like_rate", "item_grade_mean",
                    "item_age"],
        "no session": ["hour", "since_previous", "session_position"]}


def correlations(test: pl.DataFrame) -> dict[str, float]:
    """Each ordinary feature's Spearman correlation with the score within a session (sessions
    of 3 or more impressions), averaged with the sessions' sizes as weights."""
    cols = [c for c in ORDINARY if test[c].null_count() < len(test)]
    ranked = test.with_columns([pl.col(c).rank().over(["user", "session"]).alias("r_" + c)
                                for c in cols + ["score"]])
    out = {}
    for c in cols:
        per = (ranked.group_by(["user", "session"])
               .agg(pl.corr("r_score", "r_" + c).alias("c"), pl.len().alias("n"))
               .filter(pl.col("n") >= 3).drop_nulls("c").filter(pl.col("c").is_not_nan()))
        out[c] = float((per["c"] * per["n"]).sum() / per["n"].sum())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="the study's prepared dataset")
    parser.add_argument("finetune", type=Path, help="the study's OUT/finetune folder")
    parser.add_argument("runs", nargs="+", help="run names under it")
    parser.add_argument("--which", default="best", help="checkpoint: best or latest")
    parser.add_argument("--ranker-seeds", type=int, default=4, help="CatBoost seeds 0..N-1")
    parser.add_argument("--drop-groups", action="store_true",
                        help="also rank without each group of ordinary features (seed 0)")
    parser.add_argument("--json", default="study-sim-context-diagnosis", type=results_name)
    args = parser.parse_args()
    data = PreparedData(args.data)
    events = None
    out, rows = {}, []
    for name in args.runs:
        model, config, _ = load_model(args.finetune / name, data, which=args.which)
        ft = FinetuneConfig(**config["finetune"])
        if events is None:
            events = event_features(data, ft.pairs)
        frames = {s: with_features(score_impressions(model, ft.dataset(data, s,
                                                                       model.cfg.max_len)),
                                   events) for s in ("val", "test")}
        test = frames["test"]
        order, better, worse, weight = impression_pairs(test, ft.pairs)

        def accuracy(columns: list[str], seed: int) -> float:
            cfg = RankConfig(choose_iterations=True, iterations=1000, seed=seed)
            ranker, _ = fit_ranker(cfg, frames["val"], columns, [], ft.pairs)
            score = np.asarray(ranker.predict(_matrix(test, columns, [])))
            return pair_accuracy(score[order], better, worse, weight)["PairAccuracy"]

        alone = pair_accuracy(test["score"].to_numpy()[order], better, worse,
                              weight)["PairAccuracy"]
        seeds = []
        for seed in range(args.ranker_seeds):
            base, full = accuracy(ORDINARY, seed), accuracy(ORDINARY + ["score"], seed)
            seeds.append({"seed": seed, "ranker": base, "ranker_with_argus": full,
                          "uplift": full / base - 1})
        result = {"argus_alone": alone, "ranker_seeds": seeds, "correlation": correlations(test)}
        if args.drop_groups:
            result["dropped"] = {}
            for group, drop in DROP.items():
                kept = [c for c in ORDINARY if c not in drop]
                base, full = accuracy(kept, 0), accuracy(kept + ["score"], 0)
                result["dropped"][group] = {"ranker": base, "ranker_with_argus": full,
                                            "uplift": full / base - 1}
        out[name] = result
        uplifts = [100 * s["uplift"] for s in seeds]
        rows.append([name, f"{alone:.4f}", " ".join(f"{u:+.2f}" for u in uplifts),
                     f"{np.mean(uplifts):+.2f}"])
        print(name, rows[-1][1:], flush=True)
    print(markdown_table(["run", "PairAcc alone", "uplift % per ranker seed", "mean"], rows))
    path = write_json(args.json, {"which": args.which, "runs": out})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
