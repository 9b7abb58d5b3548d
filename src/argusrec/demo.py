"""`argus demo`: the whole pipeline on the embedded simulator, with no downloads.

Today it runs simulate -> prepare (Yambda's protocol: global temporal split, a 30-minute gap,
one day of test) -> pretrain a small ARGUS model (next-item + feedback prediction, corrected
logQ) -> evaluate it on the test day, and prints what each stage made. Later stages (finetune,
export, serve) join the chain as they land.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from argusrec.evaluate import evaluate, report
from argusrec.loader import SequenceDataset
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.simulate import SimulatorConfig, simulate
from argusrec.train import TrainConfig, pretrain

# A small model that trains in under two minutes on 2 cores.
DEMO_TRAIN = dict(preset="debug", model={"d_model": 64, "n_layers": 2, "n_heads": 2,
                                         "user_dim": 64, "max_len": 256, "time_buckets": 24},
                  objective={"next_item_loss": "corrected", "num_uniform": 512},
                  optim={"lr": 2e-3, "warmup_steps": 20}, batch_size=32, epochs=6)

DAY = 86_400


def run_demo(workdir: str | Path = "runs/demo", *, users: int | None = None, seed: int = 0,
             train: dict | None = None) -> dict:
    """Run the demo pipeline into ``workdir`` (replaced) and return what each stage reported.

    ``train`` overrides fields of the demo's TrainConfig (tests use a few steps).
    """
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.perf_counter()

    print("== 1/4 simulate: a music-streaming service (Yambda schema) ==")
    sim_config = SimulatorConfig(seed=seed, **({"users": users} if users else {}))
    sim = simulate(sim_config, workdir / "events")
    print(f"   {sim.events:,} events, {sim.users:,} users, {sim.items:,} items, "
          f"{sim.likes:,} likes, {sim.dislikes:,} dislikes, organic share "
          f"{sim.organic_share:.2f} ({sim.seconds:.1f}s)")

    print("== 2/4 prepare: ids, stable sort, likes onto listens, temporal split (30-min gap, "
          "1 day test) ==")
    config = PrepareConfig(merge_reactions=True, split=SplitConfig(
        kind="temporal", gap=1800, test_duration=DAY, val_duration=DAY))
    prep = prepare(workdir / "events", workdir / "data", config)
    s = prep.split_events
    print(f"   {prep.events:,} events, {prep.users:,} users, {prep.items:,} items, "
          f"{prep.shards} shard(s), {prep.events_per_second:,.0f} events/s")
    print(f"   train {s['train']:,} | val {s['val']:,} | gap {s['gap']:,} | test {s['test']:,}")

    fields = {**DEMO_TRAIN, "seed": seed, **(train or {})}
    cfg = TrainConfig(**fields)
    windows = len(SequenceDataset(workdir / "data", split="train",
                                  max_len=cfg.resolved_model().max_len))
    print(f"== 3/4 pretrain: ARGUS ({cfg.preset} preset, width {cfg.resolved_model().d_model}),"
          f" next-item ({cfg.objective.next_item_loss} logQ) + feedback, {windows:,} windows ==")
    run = pretrain(workdir / "data", workdir / "model", cfg)
    print(f"   {run.steps} steps, loss {run.losses[0]:.3f} -> {run.final_loss:.3f}, "
          f"{run.tokens_per_second:,.0f} tokens/s, {run.seconds:.1f}s")

    print("== 4/4 evaluate: the test day, history from before only ==")
    results = evaluate(workdir / "model", ks=(10, 100), progress=False)
    print(report({k: v for k, v in results.items() if not k.startswith("MRR@")},
                 "next positive item (full catalogue) and feedback"))
    seconds = time.perf_counter() - started
    print(f"done in {seconds:.1f}s. Next: argus info {workdir / 'data'}; "
          f"argus evaluate {workdir / 'model'}; tensorboard --logdir {workdir / 'model'}")
    return {"simulate": sim, "prepare": prep, "pretrain": run, "evaluate": results,
            "train_windows": windows, "seconds": seconds}
