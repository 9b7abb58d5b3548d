"""Why lag 0 fine-tunes worse than a one-day lag: fine-tuned models scored under each state rule.

Each fine-tuned model (`argus finetune` run directories, trained at some lag) is scored on the
same split with user states taken by each rule:

- a lag in seconds: the state after the last event at least that long before the impression
  (0: right before it, every impression its own state; 86400: the daily deployment);
- ``session``: the state right before the impression's session began (one state per session).

For every rule the table gives PairAccuracy and the share of the split's pairs whose two
impressions were scored from one and the same user state. Pairs are formed inside a session
(`pairs.pair_within`), so with lag 0 the two sides of every pair come from different states:
a pair's score difference then mixes the item difference with the change of the user state
between the two impressions, which the ranking loss is not about.

    python benchmarks/lag_diagnosis.py DATA RUN [RUN ...] [--rules 0,86400,session] [--split test]
        [--json NAME]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from _common import markdown_table, results_name, write_json
from argusrec.checkpoint import load_model
from argusrec.finetune import FinetuneConfig
from argusrec.impressions import DAY
from argusrec.metrics import pair_accuracy
from argusrec.scoring import impression_pairs, score_impressions
from argusrec.sequences import PreparedData

DEFAULT_RULES = "0,3600,21600,86400,259200,604800,session"


def parse_rules(text: str) -> dict[str, dict]:
    """``0,86400,session`` -> {rule name: FinetuneConfig fields}: a lag in seconds counted back
    from each impression, or ``session`` (lag 0 counted back from the session's first event)."""
    rules = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "session":
            rules["session"] = dict(lag=0, state_from="session")
        elif part.isdigit():
            rules[f"lag-{part}s"] = dict(lag=int(part), state_from="impression")
        else:
            raise argparse.ArgumentTypeError(f"rule {part!r}: give seconds or 'session'")
    return rules


def recent_replays(dataset, seconds: int) -> np.ndarray:
    """(N,) bool per impression of ``dataset``: its item was played by the user in the
    ``seconds`` before it (a replay the freshest states can see and a day-old one may not)."""
    flag = np.zeros(dataset.num_impressions, dtype=bool)
    for s, j, _, _, lo, hi in dataset.examples:
        shard = dataset.data.shards[int(s)]
        kept = dataset._kept(shard, int(j))
        item = np.asarray(shard.events["item"][kept])
        ts = np.asarray(shard.events["timestamp"][kept], dtype=np.int64)
        for r in range(int(lo), int(hi)):
            k = int(dataset.impressions[r, 0])
            first = np.searchsorted(ts, ts[k] - seconds, side="left")
            flag[r] = bool((item[first:k] == item[k]).any())
    return flag


def score_rule(model, ft: FinetuneConfig, data: PreparedData, split: str,
               replay_seconds: int) -> dict:
    dataset = ft.dataset(data, split, model.cfg.max_len)
    table = score_impressions(model, dataset)
    order, better, worse, weight = impression_pairs(table, dataset.pairs)
    score = table["score"].to_numpy()[order]
    result = pair_accuracy(score, better, worse, weight)
    state = dataset.impressions[:, 1].astype(np.int64)[order]
    user = table["user"].to_numpy()[order]
    same = (state[better] == state[worse]) & (user[better] == user[worse])
    result["shared_state"] = float(same.mean()) if len(same) else float("nan")
    result["impressions"] = dataset.num_impressions
    replay = recent_replays(dataset, replay_seconds)[order]
    touched = replay[better] | replay[worse]
    result["replay_pairs"] = float(touched.mean()) if len(touched) else float("nan")
    for name, keep in (("with_replay", touched), ("without_replay", ~touched)):
        part = pair_accuracy(score, better[keep], worse[keep], weight[keep])
        result[f"PairAccuracy/{name}"] = part["PairAccuracy"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", type=Path, help="the prepared dataset the runs were tuned on")
    ap.add_argument("runs", type=Path, nargs="+", help="argus finetune run directories")
    ap.add_argument("--split", default="test", choices=["val", "test"])
    ap.add_argument("--rules", type=parse_rules, default=parse_rules(DEFAULT_RULES),
                    help=f"state rules to score with (default {DEFAULT_RULES})")
    ap.add_argument("--replay-seconds", type=int, default=86_400,
                    help="an impression is a recent replay when the user played its item "
                         "this long before it (default one day)")
    ap.add_argument("--which", default="best", help="checkpoint: best or latest")
    ap.add_argument("--json", default="lag_diagnosis", type=results_name,
                    help="results file name: benchmarks/results/NAME.json")
    args = ap.parse_args()
    data = PreparedData(args.data)
    rows, started = [], time.perf_counter()
    for run in args.runs:
        model, config, _ = load_model(run, data, which=args.which)
        saved = config.get("finetune")
        ft = FinetuneConfig(**saved) if saved else FinetuneConfig()
        for rule, fields in args.rules.items():
            result = score_rule(model, ft.model_copy(update=fields), data, args.split,
                                args.replay_seconds)
            rows.append({"run": str(run), "trained_lag": ft.lag,
                         "trained_state_from": ft.state_from, "scored_with": rule, **result})
            print(f"{run.name}: trained lag {ft.lag}, scored {rule}: PairAccuracy "
                  f"{result['PairAccuracy']:.4f}, shared state {result['shared_state']:.3f}",
                  flush=True)
    header = ["run", "trained lag", "scored with", "PairAccuracy", "pairs", "shared state",
              "pairs with a recent replay", "PairAccuracy with", "without"]
    print(markdown_table(header, [[Path(r["run"]).name, r["trained_lag"], r["scored_with"],
                                   f"{r['PairAccuracy']:.4f}", r["pairs"],
                                   f"{r['shared_state']:.3f}", f"{r['replay_pairs']:.3f}",
                                   f"{r['PairAccuracy/with_replay']:.4f}",
                                   f"{r['PairAccuracy/without_replay']:.4f}"] for r in rows]))
    write_json(args.json, {"split": args.split, "which": args.which,
                "seconds": time.perf_counter() - started, "rows": rows})


if __name__ == "__main__":
    main()
