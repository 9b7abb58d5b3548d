"""The modern-recipe ablation: each option alone over a base config, decided on validation.

Every arm is the base config (default: the shipped `sasrec-ml1m`) with one change, trained
for the same wall-clock budget (`--minutes`, validations included: the lr schedule is
planned to end inside it) with several seeds. The table gives, per arm, the best validation
NDCG@10 (what decides), the test HR@10 / NDCG@10 at that checkpoint with seen items excluded
(reported, never used to choose), the steps the budget allowed, and the verdict against the
base: better or worse only when the means differ by more than both spreads, else a tie.

    python benchmarks/recipe_ablation.py PREPARED OUT --minutes 30 --seeds 3 --jobs 2 \\
        --arms base,rms,qk-norm,relu2,zero-init,rotary,normuon,corrected-3000,wide-256

Finished runs are reused (the same arm, seed and config), so the ablation can be completed
over several sessions; `--combine rms,qk-norm,...` adds an arm with several options at once.
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path

from _common import markdown_table, results_name, write_json

from argusrec import configs
from argusrec.bench import _run_plan
from argusrec.train import TrainConfig

# Each option as dotted TrainConfig overrides of the base.
ARMS: dict[str, dict] = {
    "base": {},
    "rms": {"model.norm": "rms"},
    "qk-norm": {"model.qk_norm": True},
    "relu2": {"model.activation": "relu2"},
    "zero-init": {"model.zero_init_out": True},
    "rotary": {"model.positions": "rotary"},
    "normuon": {"optim.optimizer": "normuon"},
    "normuon-lr3e-3": {"optim.optimizer": "normuon", "optim.muon_lr": 3e-3},
    "corrected-3000": {"objective.next_item_loss": "corrected", "objective.num_uniform": 3000},
    "logq-3000": {"objective.next_item_loss": "logq", "objective.num_uniform": 3000},
    "wide-256": {"model.d_model": 256, "model.user_dim": 256},
}


def base_fields(config: str) -> dict:
    """The TrainConfig fields of a shipped config's name or a YAML path."""
    import yaml

    path = Path(config)
    shipped = configs.find(config)
    if not path.exists() and shipped is None:
        raise SystemExit(f"{config}: neither a YAML file nor a shipped config "
                         f"({', '.join(configs.names())})")
    text = path.read_text() if path.exists() else shipped.read_text()
    return TrainConfig(**(yaml.safe_load(text) or {})).model_dump(mode="json")


def arm_overrides(name: str) -> dict:
    """One arm's overrides; ``a+b`` combines named arms."""
    out: dict = {}
    for part in name.split("+"):
        if part not in ARMS:
            raise SystemExit(f"unknown arm {part!r}; choose from {', '.join(ARMS)} (or join "
                             "several with +)")
        out.update(ARMS[part])
    return out


def verdict(row: dict, base: dict, key: str) -> str:
    """better / worse when the means differ by more than the larger spread, else tie."""
    if row is base or math.isnan(row[key + "_std"]) or math.isnan(base[key + "_std"]):
        return "" if row is base else "(one seed)"
    spread = max(row[key + "_std"], base[key + "_std"])
    diff = row[key] - base[key]
    return "tie" if abs(diff) <= spread else ("better" if diff > 0 else "worse")


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="a prepared dataset (argus prepare)")
    p.add_argument("out", type=Path, help="directory for the runs and results.md")
    p.add_argument("--config", default="sasrec-ml1m", help="the base: a shipped config's name "
                   "or a YAML path")
    p.add_argument("--arms", default="base,rms,qk-norm,relu2,zero-init,rotary,normuon,"
                   "corrected-3000,wide-256", help="comma-separated arm names (a+b combines)")
    p.add_argument("--combine", default="", help="also one arm with all these options")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock budget per run")
    p.add_argument("--max-steps", type=int, default=100_000, help="step cap per run")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", type=int, default=1, help="runs side by side (1 thread each "
                   "when more than one)")
    p.add_argument("--eval-every", type=int, default=None, help="default: the config's")
    p.add_argument("--name", default="recipe_ablation", type=results_name,
                   help="benchmarks/results/NAME.json")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)

    names = [a.strip() for a in args.arms.split(",") if a.strip()]
    if args.combine:
        names.append("+".join(a.strip() for a in args.combine.split(",") if a.strip()))
    if "base" not in names:
        names.insert(0, "base")
    base = base_fields(args.config)
    threads = 1 if args.jobs > 1 else base.get("threads")
    plan = []
    for name in names:
        for seed in range(args.seeds):
            fields = configs.apply_overrides(base, {
                **arm_overrides(name), "seed": seed, "threads": threads,
                "max_minutes": args.minutes, "max_steps": args.max_steps,
                "checkpoint_every": 10**9,
                **({"eval_every": args.eval_every} if args.eval_every else {})})
            TrainConfig(**fields)  # a bad arm fails here, before any training
            plan.append((name, "", seed, f"{name}-s{seed}", fields))
    records = _run_plan(plan, args.data, args.out, True, args.jobs, args.data.name,
                        not args.quiet)
    keys = ("val_NDCG@10", "HR@10", "NDCG@10", "steps", "train_seconds")
    rows = []
    for name in names:
        rs = [records[f"{name}-s{s}"] for s in range(args.seeds)]
        row = {"arm": name, "overrides": arm_overrides(name), "seeds": len(rs)}
        for k in keys:
            values = [r[k] for r in rs]
            row[k] = statistics.fmean(values)
            row[k + "_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        rows.append(row)
    ref = rows[0]
    for row in rows:
        row["verdict"] = verdict(row, ref, "val_NDCG@10")

    def pm(r, k):
        return f"{r[k]:.4f}" if math.isnan(r[k + "_std"]) else f"{r[k]:.4f} ± {r[k + '_std']:.4f}"

    table = markdown_table(
        ["arm", "seeds", "val NDCG@10", "vs base", "test HR@10", "test NDCG@10", "steps"],
        [[r["arm"], r["seeds"], pm(r, "val_NDCG@10"), r["verdict"], pm(r, "HR@10"),
          pm(r, "NDCG@10"), f"{r['steps']:.0f}"] for r in rows])
    print(f"{args.config}, {args.minutes:g} minutes per run, seen items excluded; decided on "
          "validation\n\n" + table)
    result = {"config": args.config, "minutes": args.minutes, "seeds": args.seeds,
              "jobs": args.jobs, "rows": rows, "runs": records}
    write_json(args.name, result)
    (args.out / "results.md").write_text(table + "\n")
    return result


if __name__ == "__main__":
    main()
