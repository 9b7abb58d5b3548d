"""`argus demo`: the whole pipeline on the embedded simulator, with no downloads.

Today it runs simulate -> prepare (Yambda's protocol: global temporal split, a 30-minute gap,
one day of test) -> one training batch from the loader, and prints what each stage made.
Later stages (pretrain, evaluate, finetune, export, serve) join the chain as they land.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from argusrec.loader import SequenceDataset, make_loader
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.simulate import SimulatorConfig, simulate

DAY = 86_400


def run_demo(workdir: str | Path = "runs/demo", *, users: int | None = None, seed: int = 0,
             max_len: int = 256, batch_size: int = 16) -> dict:
    """Run the demo pipeline into ``workdir`` (replaced) and return what each stage reported."""
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    started = time.perf_counter()

    print("== 1/3 simulate: a music-streaming service (Yambda schema) ==")
    sim_config = SimulatorConfig(seed=seed, **({"users": users} if users else {}))
    sim = simulate(sim_config, workdir / "events")
    print(f"   {sim.events:,} events, {sim.users:,} users, {sim.items:,} items, "
          f"{sim.likes:,} likes, {sim.dislikes:,} dislikes, organic share "
          f"{sim.organic_share:.2f} ({sim.seconds:.1f}s)")

    print("== 2/3 prepare: ids, stable sort, temporal split (30-min gap, 1 day test) ==")
    config = PrepareConfig(split=SplitConfig(kind="temporal", gap=1800, test_duration=DAY,
                                             val_duration=DAY))
    prep = prepare(workdir / "events", workdir / "data", config)
    s = prep.split_events
    print(f"   {prep.events:,} events, {prep.users:,} users, {prep.items:,} items, "
          f"{prep.shards} shard(s), {prep.events_per_second:,.0f} events/s")
    print(f"   train {s['train']:,} | val {s['val']:,} | gap {s['gap']:,} | test {s['test']:,}")

    print(f"== 3/3 load: training windows of up to {max_len} events ==")
    dataset = SequenceDataset(workdir / "data", split="train", max_len=max_len)
    batch = next(iter(make_loader(dataset, batch_size=batch_size, seed=seed)))
    print(f"   {len(dataset):,} training windows; one batch: item {tuple(batch.item.shape)}, "
          f"context {tuple(batch.context.shape)} {dataset.context_names}, feedback "
          f"{tuple(batch.feedback.shape)} {dataset.feedback_names}, "
          f"{int(batch.target.sum()):,} targets")
    test = SequenceDataset(workdir / "data", split="test", max_len=max_len, stride=max_len // 4)
    print(f"   {len(test):,} test windows over {int(prep.split_events['test']):,} test events")
    seconds = time.perf_counter() - started
    print(f"done in {seconds:.1f}s. Inspect the dataset with: argus info {workdir / 'data'}")
    print("(pretraining, evaluation, fine-tuning and serving join this demo in later releases)")
    return {"simulate": sim, "prepare": prep, "train_windows": len(dataset),
            "test_windows": len(test), "seconds": seconds}
