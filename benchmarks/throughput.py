"""Pretraining throughput per preset and history length: tokens/s, step time, peak memory, MFU.

Each (preset, history) runs in a fresh process: one warm-up step, then ``--steps`` timed
optimizer steps of the ARGUS objective (next-item with corrected logQ + feedback) on a simulated
log with long histories. Model FLOPs utilisation = analytic training FLOPs per token
(argusrec.scaling.flops_per_token) x tokens/s / the device's peak: on CPU the measured peak of
a large float32 matmul on the same threads, on CUDA the dense bf16 peak of the GPU.

    python benchmarks/throughput.py [--data DIR] [--configs 3m:512,3m:2048,3m:8192] [--steps 3]
    python benchmarks/throughput.py --device cuda --configs 126m:8192,1b:8192 --bf16
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import markdown_table, write_json

GPU_PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
# "resident GB": weights, optimizer state and data between steps; "step MB/token": what a
# step's peak adds on top of that (activations, gradients, loss buffers) per token.
HEADER = ["preset", "encoder params", "history", "batch", "tokens/s", "step s", "peak GB",
          "resident GB", "step MB/token", "MFLOP/token", "MFU", "act. ckpt", "compile"]


def cpu_peak(threads: int, trials: int = 5) -> float:
    """The best of several timed 2048 x 2048 float32 matmul runs (FLOP/s): a measured peak,
    since a CPU's rate varies with load and clocks."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(trials):
        started, n = time.perf_counter(), 4
        for _ in range(n):
            a @ b
        best = max(best, 2 * 2048**3 * n / (time.perf_counter() - started))
    return best


def _resident_gb() -> float:
    """This process's resident memory now (Linux /proc), in GiB."""
    import os

    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**30


def child(args) -> dict:
    import torch

    from argusrec.loader import SequenceDataset, collate
    from argusrec.objective import PretrainObjective
    from argusrec.parallel import World, parallelize
    from argusrec.scaling import flops_per_token
    from argusrec.sequences import PreparedData
    from argusrec.optim import build_optimizer
    from argusrec.train import TrainConfig, build_model

    torch.set_num_threads(args.threads)
    preset, length = args.one.split(":")
    length = int(length)
    device = torch.device(args.device)
    data = PreparedData(args.data)
    model_fields = {"max_len": length, "positions": "rotary"}
    cfg = TrainConfig(preset=preset, model=model_fields, batch_size=max(1, args.tokens // length),
                      objective={"next_item_loss": "corrected", "num_uniform": 1024})
    model = build_model(cfg, data).to(device)
    counts = torch.from_numpy(data.item_counts()).float()
    objective = PretrainObjective(cfg.objective, model, counts).to(device)
    checkpointing = length >= args.checkpoint_from
    wrapped = parallelize(model, World(), activation_checkpointing=checkpointing,
                          compile=args.compile, bf16=args.bf16)
    optimizer = build_optimizer(model, cfg.optim)
    dataset = SequenceDataset(data, split="train", max_len=length)
    full = [i for i in range(len(dataset))
            if dataset.windows[i, 3] - dataset.windows[i, 2] == length]
    if len(full) < cfg.batch_size:
        raise SystemExit(f"only {len(full)} full windows of {length} events")
    batch = collate([dataset[i] for i in full[: cfg.batch_size]]).to(device)
    tokens = int(batch.mask.sum())

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            loss = objective(model, batch, forward=wrapped).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    # Between steps only weights, Adam's state and the data are resident: what the peak adds
    # on top of that is the step's working memory (activations, gradients, loss buffers).
    resident = _resident_gb() if device.type == "cpu" else None
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / args.steps
    if device.type == "cuda":
        peak_mem = torch.cuda.max_memory_allocated() / 2**30
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in GPU_PEAK_BF16.items() if k in name), float("nan"))
    else:
        peak_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        peak = args.peak
    if device.type == "cuda":
        resident = torch.cuda.memory_allocated() / 2**30
    flops = flops_per_token(model.cfg, negatives=min(tokens, 2048) + 1024)
    counts_p = model.parameter_counts()
    return {"preset": preset, "history": length, "batch": cfg.batch_size, "tokens": tokens,
            "step_seconds": seconds, "tokens_per_second": tokens / seconds,
            "peak_memory_gb": peak_mem, "memory_per_token_mb": peak_mem * 1024 / tokens,
            "resident_between_steps_gb": resident,
            "step_memory_per_token_mb": (peak_mem - resident) * 1024 / tokens,
            "flops_per_token": flops["total"], "device_peak_flops": peak,
            "mfu": flops["total"] * tokens / seconds / peak,
            "activation_checkpointing": checkpointing, "encoder_parameters":
            counts_p["encoder"], "device": args.device}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/argus-bench-finetune/data"))
    ap.add_argument("--configs", default="debug:512,3m:512,3m:2048,3m:8192")
    ap.add_argument("--tokens", type=int, default=8192, help="tokens per step (batch x history)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--checkpoint-from", type=int, default=4096,
                    help="activation checkpointing at this history and longer")
    ap.add_argument("--tag", default="", help="suffix of the JSON file name")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--peak", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(child(args)))
        return
    if not args.data.exists():
        sys.path.insert(0, str(Path(__file__).parent))
        from finetune_speedup import ensure_data

        ensure_data(args.data.parent)
    rows, results = [], []
    peak = cpu_peak(args.threads) if args.device == "cpu" else 0.0
    for one in args.configs.split(","):
        argv = [sys.executable, __file__, "--one", one, "--peak", str(peak), *sys.argv[1:]]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{one}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        results.append(r)
        rows.append([r["preset"], f"{r['encoder_parameters']:,}", r["history"], r["batch"],
                     f"{r['tokens_per_second']:,.0f}", f"{r['step_seconds']:.2f}",
                     f"{r['peak_memory_gb']:.2f}", f"{r['resident_between_steps_gb']:.2f}",
                     f"{r['step_memory_per_token_mb']:.3f}",
                     f"{r['flops_per_token'] / 1e6:,.1f}", f"{100 * r['mfu']:.1f}%",
                     "yes" if r["activation_checkpointing"] else "no",
                     "yes" if args.compile else "no"])
        print(markdown_table(HEADER, rows[-1:]), flush=True)
    print(markdown_table(HEADER, rows))
    write_json(f"throughput_{args.device}{args.tag}", {"results": results})


if __name__ == "__main__":
    main()
