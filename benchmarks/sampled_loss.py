"""Fused against unfused sampled softmax: one ARGUS training step on the simulator, both ways.

Same model, batch and negatives (in-batch capped at 2,048 + uniform); the unfused path is the
plain one the fused function is tested against. Prints seconds per step (forward + backward)
and the share of the step in matmuls, from the torch profiler.

    python benchmarks/sampled_loss.py [--data DIR] [--batch 64] [--history 128] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from _common import markdown_table, write_json


def main() -> None:
    from argusrec.loader import SequenceDataset, collate
    from argusrec.objective import PretrainObjective
    from argusrec.sequences import PreparedData
    from argusrec.train import TrainConfig, build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/argus-bench-finetune/data"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--history", type=int, default=128)
    ap.add_argument("--uniform", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.data.exists():
        from finetune_speedup import ensure_data

        ensure_data(args.data.parent)
    data = PreparedData(args.data)
    cfg = TrainConfig(preset="debug", batch_size=args.batch,
                      model={"d_model": 64, "n_layers": 2, "user_dim": 64,
                             "max_len": args.history, "time_buckets": 24},
                      objective={"next_item_loss": "corrected", "num_uniform": args.uniform})
    model = build_model(cfg, data)
    counts = torch.from_numpy(data.item_counts()).float()
    ds = SequenceDataset(data, split="train", max_len=args.history)
    batch = collate([ds[i] for i in range(args.batch)])
    rows, out = [], {}
    for fused in (False, True):
        objective = PretrainObjective(cfg.objective, model, counts)
        objective.next_item.fused = fused

        def step():
            objective(model, batch).loss.backward()
            model.zero_grad(set_to_none=True)

        step()
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            for _ in range(args.steps):
                step()
            seconds = (time.perf_counter() - started) / args.steps
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events)
        mm = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mm", "aten::addmm",
                                                                    "aten::bmm"))
        name = "fused" if fused else "unfused"
        out[name] = {"seconds_per_step": seconds, "matmul_share": mm / total}
        rows.append([name, f"{seconds:.3f}", f"{100 * mm / total:.0f}%",
                     f"{int(batch.mask.sum()) / seconds:,.0f}"])
    print(f"batch {args.batch} x {args.history}, corrected logQ, in-batch (<= 2,048) + "
          f"{args.uniform} uniform negatives, {args.threads} threads")
    print(markdown_table(["loss path", "s/step", "matmul share", "tokens/s"], rows))
    print(f"speed-up: {out['unfused']['seconds_per_step'] / out['fused']['seconds_per_step']:.2f}x")
    write_json("sampled_loss", {"batch": args.batch, "history": args.history, **out})


if __name__ == "__main__":
    main()
