"""`argus bench`: one versioned suite of encoders x losses x seeds on one dataset.

For each encoder (the ARGUS transformer, HSTU, SASRec) and next-item loss (full softmax, logQ,
corrected logQ) and seed, the suite prepares the dataset once, pretrains with the default
configuration of the dataset's size class, stops early on the *validation* metric (never on
test), evaluates the best checkpoint on the test split, and writes a Markdown table and JSON
with the mean and spread over seeds.

Every run has a wall-clock budget (the size class's, or ``budget`` minutes): its lr schedule
is planned to end inside it (argusrec.fit), so a suite's length is known before it starts.
The losses ``auto`` choose each encoder's loss on validation: the first seed of every loss,
then the other seeds of the loss whose validation metric was best (the default suite: three
encoders, 15 runs, :data:`SUITE_HOURS` hours at two runs side by side).

Named datasets follow the public protocols: ``ml-1m`` (SASRec's file) and ``beauty``
(S3-Rec's file) use leave-one-out; ``ml-100k`` a global temporal split; ``simulator`` the
built-in simulator with Yambda's protocol. Any event file in a supported format can be given
by path (``--format``).

Tuning that generalises: the configuration depends only on the size class of the data
(:func:`size_class`), never on a dataset's test results. The window is the smallest of
32 / 64 / 128 / 200 that covers 90% of users' histories.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from argusrec.errors import DataError
from argusrec.evaluate import evaluate
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.sequences import PreparedData
from argusrec.simulate import SimulatorConfig, simulate
from argusrec.configs import apply_overrides
from argusrec.train import TrainConfig, pretrain, sasrec_overrides
from argusrec.workers import process_pool

log = logging.getLogger(__name__)

SUITE_VERSION = "v2"  # v2: a time budget per run, losses chosen on validation
# Where the named datasets' files were found before --data-dir: ../shared/data of a checkout.
CHECKOUT_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
NAMED = {
    "ml-1m": ("ml-1m/ml-1m.txt", "sasrec", "leave-one-out"),
    "beauty": ("amazon-beauty/Beauty.txt", "s3rec", "leave-one-out"),
    "ml-100k": ("ml-100k/ml-100k.inter", "recbole", "temporal"),
}
ENCODERS = ("argus", "hstu", "sasrec")
LOSSES = ("full", "logq", "corrected")
AUTO = "auto"  # the losses: each encoder's chosen on validation (see the module docstring)

# Size classes by training events. Per class: model width, layers, dropout, batch, lr, the
# optimizer and the step budget; early stopping ends most runs sooner. The medium class's
# optimizer (plain Adam, beta2 0.999, no clipping) and dropout 0.1 won on ML-1M *validation*
# NDCG@10 (docs/benchmarks.md, "Pretraining: ML-1M"). Random batches (no length grouping)
# won on both ML-1M (medium) and Beauty (small) validation over full-length runs.
_ADAM = {"weight_decay": 0.0, "betas": (0.9, 0.999), "grad_clip": 0.0}
# The modern block (RMSNorm, QK-norm, ReLU^2, zero-initialised output projections, rotary
# positions) with NorMuon on the matrices: the medium class's SASRec. Over 3 seeds of
# 30-minute runs on ML-1M it won on validation NDCG@10 (docs/benchmarks.md, "The modern
# recipe"). Not yet measured for the ARGUS and HSTU encoders or on the small class.
MODERN = {"model.norm": "rms", "model.qk_norm": True, "model.activation": "relu2",
          "model.zero_init_out": True, "model.positions": "rotary",
          "optim.optimizer": "normuon"}
# ``budget``: wall-clock minutes per run (None: the step cap alone), sized so that the default
# suite (15 runs, two side by side) fits three hours on a 2-core CPU.
SIZE_CLASSES = {
    "small": dict(max_events=300_000, d_model=64, n_layers=2, dropout=0.5, batch_size=128,
                  lr=1e-3, optim=_ADAM, max_steps=8000, eval_every=400, group_by_length=False,
                  budget=20.0),
    "medium": dict(max_events=5_000_000, d_model=64, n_layers=2, dropout=0.1, batch_size=128,
                   lr=1e-3, optim=_ADAM, max_steps=8000, eval_every=600, group_by_length=False,
                   budget=20.0, sasrec=MODERN),
    "large": dict(max_events=None, d_model=256, n_layers=4, dropout=0.1, batch_size=64,
                  lr=5e-4, max_steps=20000, eval_every=1000, budget=None),
}
SUITE_HOURS = 2.6  # 15 runs x 20 minutes / 2 side by side, plus preparing and testing


def size_class(train_events: int) -> str:
    for name, c in SIZE_CLASSES.items():
        if c["max_events"] is None or train_events <= c["max_events"]:
            return name
    return "large"


def window_length(lengths: np.ndarray) -> int:
    """The smallest of 32 / 64 / 128 / 200 covering 90% of the users' histories."""
    p90 = float(np.percentile(lengths, 90)) if len(lengths) else 200
    return next((w for w in (32, 64, 128) if p90 <= w), 200)


def default_config(data, encoder: str, loss: str, seed: int, *, patience: int = 4,
                   threads: int | None = None, max_steps: int | None = None,
                   budget: float | None = None) -> dict[str, Any]:
    """The suite's TrainConfig fields for one run on a prepared dataset. ``budget``: minutes
    per run (None: the size class's; 0: no time budget, the step cap alone)."""

    users = data.users()
    train_events = int(users["n_train"].sum())
    c = SIZE_CLASSES[size_class(train_events)]
    model = {"d_model": c["d_model"], "n_layers": c["n_layers"], "n_heads": 2,
             "user_dim": c["d_model"], "dropout": c["dropout"],
             "max_len": window_length(users["n_events"].to_numpy()),
             "encoder": "hstu" if encoder == "hstu" else "transformer"}
    if encoder == "sasrec":
        model.update(user_head="none", item_tower="tied")
    fields: dict[str, Any] = {
        "preset": "debug", "model": model, "seed": seed,
        "batch_size": max(1, min(c["batch_size"], len(users) // 2)),  # tiny data: 2+ batches
        "objective": {"next_item_loss": loss, "num_uniform": 1024},
        "optim": {"lr": c["lr"], "warmup_steps": 100, **c.get("optim", {})},
        "max_steps": max_steps or c["max_steps"], "eval_every": c["eval_every"],
        "patience": patience, "eval_max_users": 3000, "checkpoint_every": 10**9,
        "group_by_length": c.get("group_by_length", True),
        "max_minutes": (budget or None) if budget is not None else c["budget"],
        "threads": threads}
    if encoder == "sasrec":
        fields = apply_overrides(fields, {**sasrec_overrides(), **c.get("sasrec", {})})
    return fields


def default_data_dir() -> Path | None:
    """The directory of the named datasets: $ARGUS_DATA_DIR, else a checkout's ../shared/data
    when it exists, else None."""
    if os.environ.get("ARGUS_DATA_DIR"):
        return Path(os.environ["ARGUS_DATA_DIR"])
    return CHECKOUT_DATA if CHECKOUT_DATA.exists() else None


def resolve_dataset(name: str, work: Path, fmt: str | None = None, *,
                    data_dir: str | Path | None = None) -> tuple[Path, str]:
    """Prepare a named dataset or an event file once under ``work``; (prepared dir, label).

    A named dataset is read from ``data_dir`` (default: :func:`default_data_dir`), e.g.
    ``data_dir/ml-1m/ml-1m.txt``.
    """

    prepared = work / "data"
    if name == "simulator":
        label = "simulator"
        if not prepared.exists():

            simulate(SimulatorConfig(seed=0), work / "events", progress=False, overwrite=True)
            prepare(work / "events", prepared, PrepareConfig(merge_reactions=True, split=SplitConfig(
                gap=1800, test_duration=86_400, val_duration=86_400)), progress=False)
        return prepared, label
    if name in NAMED:
        rel, fmt, split = NAMED[name]
        root = Path(data_dir) if data_dir is not None else default_data_dir()
        if root is None:
            raise DataError(f"no data directory to find {name} in (it expects DIR/{rel})",
                            fix=f"pass --data-dir DIR or set ARGUS_DATA_DIR=DIR, with the "
                            f"file at DIR/{rel}; or pass the file's path instead of {name}")
        source, label = root / rel, name
        if not source.exists():
            raise DataError(f"the {name} file is not here", path=source,
                            fix=f"put it at {source}, pass --data-dir (or set ARGUS_DATA_DIR) "
                            f"to the directory holding {rel}, or pass the file's path")
    else:
        source, label = Path(name), Path(name).stem
        untimed = fmt in ("sasrec", "s3rec")  # one-line formats: order, no timestamps
        split = "leave-one-out" if untimed else "temporal"
        if not source.exists():
            raise DataError("no such event file", path=source,
                            fix="pass ml-1m, beauty, ml-100k, simulator or a file path")
    if not prepared.exists():
        if split == "leave-one-out":
            prepare(source, prepared, PrepareConfig(format=fmt or "auto", split=SplitConfig(
                kind="leave-one-out")), progress=False)
        else:  # the last 10% of events for test, validation as long again before it
            probe = prepare(source, work / "probe", PrepareConfig(
                format=fmt or "auto", split=SplitConfig(test_fraction=0.1)), progress=False,
                overwrite=True)
            bounds = json.loads((Path(probe.out) / "meta.json").read_text())["split"]
            span = int(bounds["time_max"] - bounds["test_start"] + 1)
            prepare(source, prepared, PrepareConfig(format=fmt or "auto", split=SplitConfig(
                cutoff=int(bounds["test_start"]), val_duration=span)), progress=False)
    return prepared, label


# The published numbers for the named datasets (HR@10, NDCG@10), printed beside ours. Sources
# and protocols: docs/benchmarks.md, "Published numbers beside ours".
PUBLISHED = {
    "ml-1m": [("SASRec+ full CE (Klenitskiy & Vasilev 2023)", 0.3152, 0.1821),
              ("SASRec+ 3,000 negatives (Klenitskiy & Vasilev 2023)", 0.3159, 0.1857),
              ("gSASRec (Petrov & Macdonald 2023)", 0.3003, 0.1726),
              ("BERT4Rec (Klenitskiy & Vasilev 2023)", 0.2843, 0.1537)],
    "beauty": [("SASRec+SS (eSASRec benchmark)", 0.0921, 0.0531),
               ("ICLRec (as reported with BSARec)", 0.0744, 0.0403),
               ("BSARec (Shin et al. 2024)", 0.1008, 0.0611)],
}


def _one_run(prepared: str, run_dir: str, fields: dict[str, Any], exclude: bool,
             progress: bool) -> dict[str, Any]:
    """Pretrain one configuration, score its best checkpoint on test, and record the result in
    RUN_DIR/result.json (with the configuration, so a rerun can reuse it)."""

    run_dir_p = Path(run_dir)
    if run_dir_p.exists():  # an unfinished run starts afresh
        shutil.rmtree(run_dir_p)
    started = time.perf_counter()
    summary = pretrain(prepared, run_dir_p, TrainConfig(**fields), progress=progress)
    seconds = time.perf_counter() - started
    results = evaluate(run_dir_p, which="best", ks=(10, 20), exclude_seen=exclude,
                       progress=False)
    record = {"HR@10": results["HR@10"], "HR@20": results["HR@20"],
              "NDCG@10": results["NDCG@10"], "NDCG@20": results["NDCG@20"],
              "val_" + fields.get("eval_metric", "NDCG@10"): summary.best_value,
              "best_step": summary.best_step, "steps": summary.steps, "train_seconds": seconds,
              "tokens_per_second": summary.tokens_per_second,
              "parameters": summary.parameters["total"],
              "encoder_parameters": summary.parameters["encoder"]}
    tmp = run_dir_p / "result.json.tmp"
    tmp.write_text(json.dumps({"fields": fields, "exclude_seen": exclude, "result": record},
                              indent=2, default=str) + "\n")
    tmp.replace(run_dir_p / "result.json")
    return record


def _finished(run_dir: Path, fields: dict[str, Any], exclude: bool) -> dict[str, Any] | None:
    """The recorded result of a run finished with exactly this configuration, else None."""
    path = run_dir / "result.json"
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    same = json.loads(json.dumps({"fields": fields, "exclude_seen": exclude}, default=str))
    return saved["result"] if {k: saved[k] for k in same} == same else None


def run_suite(dataset: str, out: str | Path, *, fmt: str | None = None,
              encoders=ENCODERS, losses=(AUTO,), seeds=(0, 1, 2), max_steps: int | None = None,
              budget: float | None = None, patience: int = 4, threads: int | None = None,
              exclude_seen: bool | None = None, jobs: int = 1,
              data_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Run the suite; write OUT/results.json and OUT/results.md; return the results.

    Runs that finished before with the same configuration are reused, so a suite can be
    completed over several sessions, and one interrupted run costs only itself. ``jobs`` > 1
    trains that many runs at once in separate processes (a GPU, or a machine with many cores:
    each run gets ``threads`` or an equal share of the cores). ``data_dir`` holds the named
    datasets (:func:`resolve_dataset`). ``losses`` ``("auto",)`` chooses each encoder's loss
    on validation (the module docstring); ``budget``: minutes per run (:func:`default_config`).
    """

    if jobs < 1:
        raise DataError(f"--jobs must be at least 1, got {jobs}", fix="pass --jobs 1 or more")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prepared, label = resolve_dataset(dataset, out, fmt, data_dir=data_dir)
    data = PreparedData(prepared)
    loo = data.info.split.kind == "leave-one-out"
    exclude = loo if exclude_seen is None else exclude_seen
    if jobs > 1 and threads is None:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    choose = tuple(losses) == (AUTO,)

    def plan_of(cells):
        return [(e, x, s, f"{e}-{x}-s{s}",
                 default_config(data, e, x, s, patience=patience, threads=threads,
                                max_steps=max_steps, budget=budget)) for e, x, s in cells]

    def run(plan):
        return _run_plan(plan, prepared, out, exclude, jobs, label, progress)

    records: dict[str, dict[str, Any]] = {}
    chosen: dict[str, str] = {}
    if choose:  # the first seed of every loss, then the best loss's other seeds
        first = plan_of([(e, x, seeds[0]) for e in encoders for x in LOSSES])
        records.update(run(first))
        key = "val_NDCG@10"
        for e in encoders:
            chosen[e] = max(LOSSES, key=lambda x: records[f"{e}-{x}-s{seeds[0]}"][key])
        rest = plan_of([(e, chosen[e], s) for e in encoders for s in seeds[1:]])
        records.update(run(rest))
        plan = first + rest
    else:
        plan = plan_of([(e, x, s) for e in encoders for x in losses for s in seeds])
        records.update(run(plan))
    runs = [{"encoder": e, "loss": x, "seed": s, **records[name]} for e, x, s, name, _ in plan]
    kept = [r for r in runs if not chosen or chosen[r["encoder"]] == r["loss"]]
    result = {"suite": SUITE_VERSION, "dataset": label, "prepared": str(prepared),
              "protocol": data.info.split.kind, "exclude_seen": exclude,
              "size_class": size_class(int(data.users()["n_train"].sum())),
              "budget_minutes": plan[0][4]["max_minutes"] if plan else None,
              "chosen_losses": chosen, "runs": runs, "summary": summarise(kept),
              "losses_tried": summarise([r for r in runs if r not in kept]) if chosen else [],
              "published": PUBLISHED.get(label, [])}
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(out / "results.json")
    (out / "results.md").write_text(markdown(result) + "\n")
    return result


def _run_plan(plan, prepared, out: Path, exclude: bool, jobs: int, label: str,
              progress: bool) -> dict[str, dict[str, Any]]:
    """Every run of ``plan`` (encoder, loss, seed, name, fields): reused when it finished
    with the same configuration, else trained (``jobs`` at once); their records by name."""
    records: dict[str, dict[str, Any]] = {}
    todo = []
    for _, _, _, name, fields in plan:
        done = _finished(out / "runs" / name, fields, exclude)
        if done is not None:
            records[name] = done
            if progress:
                log.info("== %s %s: finished before, reused ==", label, name)
        else:
            todo.append((name, fields))
    if jobs == 1:
        for name, fields in todo:
            if progress:
                log.info("== %s %s ==", label, name)
            records[name] = _one_run(str(prepared), str(out / "runs" / name), fields, exclude,
                                     progress)
    elif todo:
        with process_pool(jobs) as pool:
            futures = {pool.submit(_one_run, str(prepared), str(out / "runs" / name), fields,
                                   exclude, False): name for name, fields in todo}
            for future, name in futures.items():
                records[name] = future.result()
                if progress:
                    log.info("== %s %s: NDCG@10 %.4f ==", label, name,
                             records[name]["NDCG@10"])
    return records


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation over seeds, per (encoder, loss)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["encoder"], r["loss"]), []).append(r)
    rows = []
    for (encoder, loss), rs in groups.items():
        row: dict[str, Any] = {"encoder": encoder, "loss": loss, "seeds": len(rs)}
        for key in ("HR@10", "HR@20", "NDCG@10", "NDCG@20", "val_NDCG@10", "train_seconds",
                    "tokens_per_second"):
            values = [r.get(key, math.nan) for r in rs]
            row[key] = statistics.fmean(values)
            row[key + "_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
        row["parameters"] = rs[0]["parameters"]
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    def pm(row, key, digits=4):
        std = row[key + "_std"]
        return (f"{row[key]:.{digits}f}" if math.isnan(std)
                else f"{row[key]:.{digits}f} ± {std:.{digits}f}")

    def table(rows):
        out = ["| encoder | loss | seeds | HR@10 | NDCG@10 | HR@20 | NDCG@20 | val NDCG@10 "
               "| train s | tokens/s | parameters |",
               "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        out += [f"| {r['encoder']} | {r['loss']} | {r['seeds']} | {pm(r, 'HR@10')} | "
                f"{pm(r, 'NDCG@10')} | {pm(r, 'HR@20')} | {pm(r, 'NDCG@20')} | "
                f"{pm(r, 'val_NDCG@10')} | {r['train_seconds']:.0f} | "
                f"{r['tokens_per_second']:,.0f} | {r['parameters']:,} |" for r in rows]
        return out

    budget = result.get("budget_minutes")
    lines = [f"Suite {result['suite']} on {result['dataset']} ({result['protocol']}, seen items "
             f"{'excluded' if result['exclude_seen'] else 'kept'}, size class "
             f"{result['size_class']}, "
             + (f"{budget:g} minutes per run" if budget else "no time budget")
             + "); mean ± std over seeds, best checkpoint by validation NDCG@10", ""]
    lines += table(result["summary"])
    if result.get("losses_tried"):
        lines += ["", "Losses tried on the first seed and not chosen (validation NDCG@10 "
                  "chose each encoder's loss):", ""] + table(result["losses_tried"])
    if result.get("published"):
        lines += ["", "Published on the same file and protocol (HR@10 / NDCG@10; sources in "
                  "docs/benchmarks.md):", "", "| model | HR@10 | NDCG@10 |", "|---|---:|---:|"]
        lines += [f"| {name} | {hr:.4f} | {ndcg:.4f} |" for name, hr, ndcg in result["published"]]
    return "\n".join(lines)
