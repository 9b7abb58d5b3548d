"""One-pass fine-tuning against re-running the encoder per impression (issue 4's speed-up).

Both methods compute the same pairwise loss and its gradients for the same impressions, with the
same model, at the same history length:

- one pass: each window goes through the encoder once; every impression reads its user state;
- per impression: every impression becomes its own sequence (the window up to its state),
  batched ``--ref-batch`` at a time, the way a per-impression training pipeline feeds them.

The speed-up is the ratio of impressions per second (forward + backward), and also of
forward-only scoring. A simulated log with long histories (events_scale 1.0) is prepared if
``--data`` is not given.

    python benchmarks/finetune_speedup.py [--data DIR] [--history 512] [--examples 6]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from _common import markdown_table, write_json


def ensure_data(work: Path) -> Path:
    from argusrec.prepare import PrepareConfig, SplitConfig, prepare
    from argusrec.simulate import SimulatorConfig, simulate

    data = work / "data"
    if not data.exists():
        simulate(SimulatorConfig(users=300, events_scale=1.0, seed=0), work / "events",
                 progress=False, overwrite=True)
        prepare(work / "events", data, PrepareConfig(merge_reactions=True, split=SplitConfig(
            gap=1800, test_duration=7 * 86400, val_duration=7 * 86400)), progress=False)
    return data


def per_impression_batch(samples: list[dict]) -> tuple:
    """Every impression of the samples as its own prefix sequence: (batch of windows, index of
    the last event per sequence, impression fields)."""
    keys = ("item", "timestamp", "event_type", "context", "feedback", "positive", "target")
    prefixes, fields = [], {k: [] for k in ("item", "context", "event_type", "gap")}
    for s in samples:
        for n, p in enumerate(s["imp_state"]):
            prefix = {k: s[k][: p + 1] for k in keys}
            prefix["user"] = s["user"]
            prefixes.append(prefix)
            for k in fields:
                fields[k].append(s[f"imp_{k}"][n])
    return prefixes, {k: torch.as_tensor(np.stack(v)) for k, v in fields.items()}


def reference_scores(model, prefixes: list[dict], fields: dict, ref_batch: int) -> torch.Tensor:
    from argusrec.loader import collate

    out = []
    for lo in range(0, len(prefixes), ref_batch):
        chunk = prefixes[lo:lo + ref_batch]
        batch = collate(chunk)
        states = model.event_states(batch)
        last = torch.tensor([len(p["item"]) - 1 for p in chunk])
        h = states[torch.arange(len(chunk)), last]
        sl = slice(lo, lo + len(chunk))
        user = model.user_vectors_at(h, fields["context"][sl], fields["event_type"][sl],
                                     fields["gap"][sl])
        out.append((user * model.item_vectors(fields["item"][sl])).sum(-1) / model.temperature)
    return torch.cat(out)


def main() -> None:
    from argusrec.impressions import ImpressionDataset, collate_impressions
    from argusrec.losses import pairwise_loss
    from argusrec.scoring import score_batch
    from argusrec.sequences import PreparedData
    from argusrec.train import TrainConfig, build_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, help="a prepared dataset with impressions")
    ap.add_argument("--work", type=Path, default=Path("/tmp/argus-bench-finetune"))
    ap.add_argument("--history", type=int, default=512)
    ap.add_argument("--examples", type=int, default=6, help="windows measured")
    ap.add_argument("--ref-batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--preset", default="3m", help="model preset (default: the ~3.2M one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = PreparedData(args.data or ensure_data(args.work))
    cfg = TrainConfig(preset=args.preset, model={"max_len": args.history})
    model = build_model(cfg, data).train()
    dataset = ImpressionDataset(data, split="train", max_len=args.history, lag=86400)
    # the fullest windows: the case the method is for (long histories, many impressions)
    full = np.flatnonzero(dataset.examples[:, 3] - dataset.examples[:, 2] == args.history)
    counts = dataset.examples[full, 5] - dataset.examples[full, 4]
    chosen = full[np.argsort(-counts, kind="stable")][: args.examples]
    samples = [dataset[int(i)] for i in chosen]
    batch = collate_impressions(samples, dataset.pairs)
    n_imp = int(batch.item.numel())
    prefixes, fields = per_impression_batch(samples)

    def timed(fn, repeats: int) -> float:
        fn()  # warm-up
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - started) / repeats

    def one_pass_train():
        loss = pairwise_loss(score_batch(model, batch), batch.better, batch.worse, batch.weight)
        loss.backward()
        model.zero_grad(set_to_none=True)

    def reference_train():
        # Memory-bounded, as a per-impression pipeline must be: the pairwise loss's gradient
        # with respect to every score first (no graph), then forward + backward per chunk of
        # impressions with that gradient.
        with torch.no_grad():
            score = reference_scores(model, prefixes, fields, args.ref_batch)
        score.requires_grad_(True)
        pairwise_loss(score, batch.better, batch.worse, batch.weight).backward()
        for lo in range(0, len(prefixes), args.ref_batch):
            sl = slice(lo, lo + args.ref_batch)
            part = reference_scores(model, prefixes[sl], {k: v[sl] for k, v in fields.items()},
                                    args.ref_batch)
            part.backward(score.grad[sl])
        model.zero_grad(set_to_none=True)

    with torch.no_grad():
        model.eval()
        fast = score_batch(model, batch)
        slow = reference_scores(model, prefixes, fields, args.ref_batch)
        max_diff = float((fast - slow).abs().max())
        t_fast_fwd = timed(lambda: score_batch(model, batch), 3)
        t_slow_fwd = timed(lambda: reference_scores(model, prefixes, fields, args.ref_batch), 1)
    model.train()
    t_fast = timed(one_pass_train, 3)
    t_slow = timed(reference_train, 1)
    rows = [["forward + backward (training)", f"{n_imp / t_fast:,.0f}", f"{n_imp / t_slow:,.1f}",
             f"{t_slow / t_fast:,.0f}x"],
            ["forward only (scoring)", f"{n_imp / t_fast_fwd:,.0f}", f"{n_imp / t_slow_fwd:,.1f}",
             f"{t_slow_fwd / t_fast_fwd:,.0f}x"]]
    print(f"{len(samples)} windows of {args.history} events, {n_imp:,} impressions "
          f"({n_imp / len(samples):.0f} per window), preset {args.preset}, "
          f"{args.threads} threads; max |one-pass - reference| score = {max_diff:.2e}")
    print(markdown_table(["pass", "one-pass impressions/s", "per-impression impressions/s",
                          "speed-up"], rows))
    write_json("finetune_speedup", {
        "history": args.history, "windows": len(samples), "impressions": n_imp,
        "preset": args.preset, "threads": args.threads, "max_abs_score_diff": max_diff,
        "train_seconds": {"one_pass": t_fast, "per_impression": t_slow},
        "score_seconds": {"one_pass": t_fast_fwd, "per_impression": t_slow_fwd},
        "speedup_train": t_slow / t_fast, "speedup_score": t_slow_fwd / t_fast_fwd})


if __name__ == "__main__":
    main()
