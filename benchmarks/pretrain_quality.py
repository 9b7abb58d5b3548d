"""Pretraining quality on the simulator: ARGUS against SASRec, and the four next-item losses.

One simulated service (`--users`), prepared with Yambda's protocol (30-minute gap, one day of
test; likes and dislikes merged onto the listens they follow). Every run trains for the same number of epochs with the same seed, then is evaluated on
the test day (history from before only) for the next *positive* item over the full catalogue,
seen items kept: HR@100 (= Recall@100, one target per row), NDCG@10, next-item entropy, and the
feedback AUC for likes (ARGUS only; SASRec has no feedback head).

    python benchmarks/pretrain_quality.py --users 600 --epochs 8 [--only losses]

- `argus` vs `sasrec`: ARGUS trains next-item on all events plus feedback prediction; SASRec is
  the same transformer on positives only, next-item loss only.
- `loss-*`: ARGUS with full softmax / sampled without correction / logQ / corrected logQ.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from _common import markdown_table, write_json

from argusrec.evaluate import evaluate
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.simulate import SimulatorConfig, simulate
from argusrec.configs import apply_overrides
from argusrec.train import TrainConfig, pretrain, sasrec_overrides

BASE = dict(preset="debug", model={"d_model": 64, "n_layers": 2, "n_heads": 2, "user_dim": 64,
                                   "max_len": 256, "time_buckets": 24},
            objective={"next_item_loss": "corrected", "num_uniform": 512},
            optim={"lr": 2e-3, "warmup_steps": 50}, batch_size=32, threads=2)


RUNS = {
    "argus": {},
    "sasrec": sasrec_overrides(),
    "loss-full": {"objective.next_item_loss": "full"},
    "loss-sampled": {"objective.next_item_loss": "sampled"},
    "loss-logq": {"objective.next_item_loss": "logq"},
    "loss-corrected": {"objective.next_item_loss": "corrected"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=600)
    parser.add_argument("--epochs", type=float, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/argus-bench-quality"))
    parser.add_argument("--only", choices=["models", "losses"], default=None)
    args = parser.parse_args()
    data = args.work / f"data-{args.users}"
    if not data.exists():
        simulate(SimulatorConfig(users=args.users, seed=args.seed), args.work / "events",
                 overwrite=True, progress=False)
        prepare(args.work / "events", data, PrepareConfig(merge_reactions=True, split=SplitConfig(
            gap=1800, test_duration=86_400)), overwrite=True, progress=False)
    names = [n for n in RUNS if args.only is None
             or (args.only == "losses") == n.startswith("loss-")]
    rows, results = [], {}
    for name in names:
        out = args.work / f"run-{name}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = TrainConfig(**apply_overrides(BASE, RUNS[name]), epochs=args.epochs,
                          seed=args.seed)
        started = time.perf_counter()
        run = pretrain(data, out, cfg, progress=False)
        r = evaluate(out, ks=(10, 100), progress=False)
        results[name] = {"train_seconds": time.perf_counter() - started,
                         "tokens_per_s": run.tokens_per_second, "steps": run.steps, **r}
        rows.append([name, f"{r['HR@100']:.4f}", f"{r['NDCG@10']:.4f}",
                     f"{r['entropy/next_item']:.3f}", f"{r.get('AUC/like', float('nan')):.4f}",
                     f"{r['count']:,}", f"{run.tokens_per_second:,.0f}", run.steps])
        print(rows[-1], flush=True)
    print(markdown_table(["run", "Recall@100", "NDCG@10", "next-item entropy", "AUC like",
                          "test positives", "tokens/s", "steps"], rows))
    print(f"wrote {write_json('pretrain_quality' + ('-' + args.only if args.only else ''), {'users': args.users, 'epochs': args.epochs, 'results': results})}")


if __name__ == "__main__":
    main()
