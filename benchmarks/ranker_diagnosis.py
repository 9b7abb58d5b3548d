"""Why the ARGUS score adds little to the final ranker: what the ordinary features already carry.

On a fine-tuned run of the simulator (e.g. one arm of `argus study`), with the simulator's
truth beside it, this reports on the test period:

- PairAccuracy of every ordinary feature alone, its sign chosen on the ranker's training
  period (validation), of the ARGUS score alone and of the oracle's true affinity alone;
- the ranker with ordinary features, + the ARGUS score, + the oracle's affinity (what a
  perfect model's score would add on top of the same features), and + both;
- CatBoost's feature importances (PredictionValuesChange) of the ranker with the ARGUS score.

    python benchmarks/ranker_diagnosis.py RUN --oracle SIM_DIR [--choose-iterations] [--json NAME]

With ``--choose-iterations`` every ranker chooses its tree count on the latest quarter of its
training period (RankConfig.choose_iterations, up to 1,000 trees) instead of the fixed 400.

A ranker that gains little even from the oracle's affinity means the ordinary features
already carry most of what orders these impressions: the ceiling on any model's uplift.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _common import markdown_table, results_name, write_json
from argusrec.checkpoint import load_model, need_data
from argusrec.finetune import FinetuneConfig
from argusrec.metrics import pair_accuracy
from argusrec.rank import ORDINARY, RankConfig, _matrix, event_features, fit_ranker, with_features
from argusrec.scoring import impression_pairs, oracle_scores, score_impressions


def frames(run: Path, oracle: Path) -> tuple[dict, FinetuneConfig]:
    """The scored impressions of validation and test with their features and the truth."""
    model, config, data = load_model(run)
    data = need_data(data, config, "the diagnosis")
    ft = FinetuneConfig(**config["finetune"]) if config.get("finetune") else FinetuneConfig()
    events = event_features(data, ft.pairs)
    out = {}
    for split in ("val", "test"):
        table, _, _ = score_impressions(model, ft.dataset(data, split, model.cfg.max_len),
                                        vectors=True)
        joined = with_features(table, events)
        out[split] = joined.with_columns(oracle=oracle_scores(joined, data, oracle))
    return out, ft


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a fine-tuned run directory")
    parser.add_argument("--oracle", type=Path, required=True, help="the simulator's output")
    parser.add_argument("--json", default="ranker_diagnosis", type=results_name,
                        help="results/NAME.json")
    parser.add_argument("--choose-iterations", action="store_true",
                        help="each ranker chooses its tree count (up to 1,000) on the latest "
                        "quarter of its training period")
    args = parser.parse_args()
    split, ft = frames(args.run, args.oracle)
    train, test = split["val"], split["test"]
    pairs = {name: impression_pairs(frame, ft.pairs) for name, frame in split.items()}

    def accuracy(frame_name: str, score: np.ndarray) -> float:
        order, better, worse, weight = pairs[frame_name]
        return pair_accuracy(np.nan_to_num(np.asarray(score, dtype=np.float64)[order],
                                           nan=-1e18), better, worse, weight)["PairAccuracy"]

    alone = []
    for column in [*ORDINARY, "score", "oracle"]:
        sign = 1.0 if accuracy("val", train[column].to_numpy()) >= 0.5 else -1.0
        alone.append({"feature": column, "sign": sign,
                      "pair_accuracy": accuracy("test", sign * test[column].to_numpy())})
    cfg = RankConfig(threads=2, **({"choose_iterations": True, "iterations": 1000}
                                   if args.choose_iterations else {}))
    rankers, importances = [], {}
    for name, extra in (("ordinary", []), ("+ ARGUS score", ["score"]),
                        ("+ oracle affinity", ["oracle"]), ("+ both", ["score", "oracle"])):
        columns = ORDINARY + extra
        model, trees = fit_ranker(cfg, train, columns, [], ft.pairs)
        rankers.append({"ranker": name, "trees": trees,
                        "pair_accuracy": accuracy("test", model.predict(_matrix(test, columns,
                                                                                [])))})
        if extra == ["score"]:
            importances = dict(zip(columns, map(float, model.get_feature_importance(
                type="PredictionValuesChange"))))
    base = rankers[0]["pair_accuracy"]
    for row in rankers:
        row["uplift"] = row["pair_accuracy"] / base - 1.0
    print(markdown_table(["feature", "PairAccuracy alone (test)", "importance with ARGUS"],
                         [[r["feature"], f"{r['pair_accuracy']:.4f}",
                           f"{importances.get(r['feature'], float('nan')):.1f}"]
                          for r in sorted(alone, key=lambda r: -r["pair_accuracy"])]))
    print()
    print(markdown_table(["ranker", "trees", "PairAccuracy (test)", "uplift"],
                         [[r["ranker"], r["trees"], f"{r['pair_accuracy']:.4f}",
                           f"{r['uplift']:+.2%}"] for r in rankers]))
    path = write_json(args.json, {"run": str(args.run), "choose_iterations":
                                  args.choose_iterations, "alone": alone, "rankers": rankers,
                                  "importances": importances})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
