"""`argus demo`: the whole pipeline on the embedded simulator, with no downloads.

It runs simulate -> prepare (Yambda's protocol: global temporal split, a 30-minute gap,
one day of test) -> pretrain a small ARGUS model (next-item + feedback prediction, corrected
logQ) -> evaluate it on the test day -> fine-tune it as a two-tower ranker in one causal pass
(PairAccuracy against the simulator's ceiling) -> export a daily snapshot -> start the HTTP
service on it and answer one request, and prints what each stage made.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np

from argusrec.errors import DataError
from argusrec.evaluate import evaluate, report
from argusrec.finetune import FinetuneConfig, evaluate_pairs, finetune as run_finetune
from argusrec.loader import SequenceDataset
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.sequences import TEST, PreparedData
from argusrec.serve import create_app
from argusrec.simulate import SimulatorConfig, simulate
from argusrec.export import export
from argusrec.train import TrainConfig, pretrain

# A small model that trains in well under a minute on 2 cores. The feedback head also gets
# h_{t-1} * item_t: with this budget, on a week of validation of the 300-user simulator, it
# lifts like / dislike / played-ratio AUC from 0.53 / 0.66 / 0.67 to 0.57 / 0.77 / 0.72
# (means of 3 seeds; the oracle reaches 0.78 / 0.88 / 0.88 there).
DEMO_TRAIN = dict(preset="debug", model={"d_model": 64, "n_layers": 2, "n_heads": 2,
                                         "user_dim": 64, "max_len": 256, "time_buckets": 24,
                                         "feedback_interaction": True},
                  objective={"next_item_loss": "corrected", "num_uniform": 512},
                  optim={"lr": 2e-3, "warmup_steps": 20}, batch_size=32, epochs=6)

DEMO_FINETUNE = dict(lag=86_400, epochs=1, batch_size=8, lr=1e-3, max_len=256)

DAY = 86_400

# Marks a directory as the demo's own, so a rerun may replace it and nothing else.
MARKER = ".argus-demo"


def run_demo(workdir: str | Path = "runs/demo", *, users: int | None = None, seed: int = 0,
             train: dict | None = None, finetune: dict | None = None) -> dict:
    """Run the demo pipeline into ``workdir`` and return what each stage reported.

    ``workdir`` must be absent, empty, or a previous demo's (which is replaced).
    ``train`` and ``finetune`` override fields of the demo's configs (tests use a few steps).
    """
    if users is not None and users < 1:  # 0 would silently mean the default size
        raise DataError(f"users must be at least 1, got {users}",
                        fix="pass --users 1 or more, or leave it out for the default size")
    workdir = Path(workdir)
    _fresh_workdir(workdir)
    started = time.perf_counter()

    print("== 1/7 simulate: a music-streaming service (Yambda schema) ==")
    sim_config = SimulatorConfig(seed=seed, **({"users": users} if users else {}))
    sim = simulate(sim_config, workdir / "events")
    print(f"   {sim.events:,} events, {sim.users:,} users, {sim.items:,} items, "
          f"{sim.likes:,} likes, {sim.dislikes:,} dislikes, organic share "
          f"{sim.organic_share:.2f} ({sim.seconds:.1f}s)")

    print("== 2/7 prepare: ids, stable sort, likes onto listens, temporal split (30-min gap, "
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
    print(f"== 3/7 pretrain: ARGUS ({cfg.preset} preset, width {cfg.resolved_model().d_model}),"
          f" next-item ({cfg.objective.next_item_loss} logQ) + feedback, {windows:,} windows ==")
    run = pretrain(workdir / "data", workdir / "model", cfg)
    print(f"   {run.steps} steps, loss {run.losses[0]:.3f} -> {run.final_loss:.3f}, "
          f"{run.tokens_per_second:,.0f} tokens/s, {run.seconds:.1f}s")

    print("== 4/7 evaluate: the test day, history from before only ==")
    results = evaluate(workdir / "model", ks=(10, 100), progress=False)
    print(report({k: v for k, v in results.items() if not k.startswith("MRR@")},
                 "next positive item (full catalogue) and feedback"))
    note = _feedback_note(results, PreparedData(workdir / "data"))
    if note:
        print(note)
    print("== 5/7 finetune: two-tower ranking over impressions, one causal pass, 1-day lag ==")
    ft_cfg = FinetuneConfig(**{**DEMO_FINETUNE, **(finetune or {})})
    ft = run_finetune(workdir / "data", workdir / "model", workdir / "ranker", ft_cfg,
                      progress=False)
    pairs = evaluate_pairs(workdir / "ranker", split="test", oracle=workdir / "events")
    print(f"   {ft.steps} steps over {ft.impressions:,} impressions, {ft.seconds:.1f}s; test "
          f"PairAccuracy {pairs['PairAccuracy']:.4f} (weighted "
          f"{pairs['PairAccuracy/weighted']:.4f}), oracle ceiling "
          f"{pairs['oracle/PairAccuracy']:.4f}, {pairs['pairs']:,} pairs")

    print("== 6/7 export: user vectors -> LMDB, item vectors -> HNSW, manifest ==")
    snap = export(workdir / "ranker", workdir / "snapshots", progress=False)
    print(f"   snapshot {snap.label}: {snap.users:,} users, {snap.items:,} items, "
          f"{snap.bytes / 2**20:.1f} MiB, {snap.seconds:.1f}s")

    print("== 7/7 serve: the HTTP service on the snapshot, one request ==")
    answer = _one_request(workdir / "snapshots", workdir / "ranker")
    seconds = time.perf_counter() - started
    path = answer["url"].split("/", 3)[3]  # the demo's own port was a temporary one
    print(f"done in {seconds:.1f}s. Serve it yourself: argus serve {workdir / 'snapshots'} "
          f"--model {workdir / 'ranker'}; then curl 'http://127.0.0.1:8000/{path}'")
    return {"simulate": sim, "prepare": prep, "pretrain": run, "evaluate": results,
            "train_windows": windows, "finetune": ft, "pairs": pairs, "export": snap,
            "serve": answer, "seconds": seconds}


def _fresh_workdir(workdir: Path) -> None:
    """Create ``workdir`` with the demo's marker, replacing only a directory that carries it."""
    if (workdir / MARKER).exists():
        shutil.rmtree(workdir)
    elif workdir.exists() and (not workdir.is_dir() or any(workdir.iterdir())):
        raise DataError("the demo's directory exists, is not empty and was not made by "
                        "`argus demo`", path=workdir,
                        fix="pass --workdir with a new or empty directory, or remove this one")
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / MARKER).write_text("made by `argus demo`, which replaces this directory\n")


def _feedback_note(results: dict, data: PreparedData) -> str:
    """The feedback AUCs beside the test day's likes and dislikes they rest on: at the demo's
    size a handful, so the AUCs are noise, and the note keeps them from reading as a bug."""
    parts = []
    for signal in ("like", "dislike"):
        if f"AUC/{signal}" in results and signal in data.feedback_fields:
            n = sum(int(np.sum((np.asarray(s.events["split"]) == TEST)
                               & (np.asarray(s.events[f"fb_{signal}"]) == 1)))
                    for s in data.shards)
            auc = results[f"AUC/{signal}"]
            shown = "n/a" if math.isnan(auc) else f"{auc:.2f}"  # NaN: no such event in test
            parts.append(f"{signal} AUC {shown} on {n:,} {signal}{'' if n == 1 else 's'}")
    if not parts:
        return ""
    return (f"   {', '.join(parts)} in the test day: noise at the demo's size\n"
            "   (docs/benchmarks.md, \"Pretraining on the long-history simulator\", has a "
            "larger run)")


def _one_request(snapshots: Path, model_run: Path) -> dict:
    """Start the service on a free loopback port, ask for one user's top 10, stop it."""
    import json
    import socket
    import threading
    import urllib.request

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(snapshots, model_run=model_run, reload_interval=None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        user = PreparedData(snapshots.parent / "data").users()["user"][0]
        url = f"http://127.0.0.1:{port}/v1/users/{user}/recommendations?k=10&exclude_seen=true"
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.loads(response.read())
        top = ", ".join(str(i["item_id"]) for i in body["items"][:5])
        print(f"   GET {url}\n   -> {len(body['items'])} items (top 5: {top})")
        return {"url": url, "response": body}
    finally:
        server.should_exit = True
        thread.join(timeout=10)
