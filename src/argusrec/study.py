"""`argus study`: the ARGUS paper's findings, measured on one dataset with seeds and ceilings.

Every arm is the whole recipe: pretrain (or not), fine-tune the two-tower ranker until its
validation PairAccuracy stops improving, then train the same CatBoost final ranker with and
without the fine-tuned score. Each arm runs once per seed; the table gives the mean and the
spread (sample standard deviation), and a difference from the group's reference inside the
larger of the two spreads is called a tie. The groups (ARGUS arXiv 2507.15994, "Experiments"):

- ``objectives``: ARGUS (every event, next-item + feedback prediction), without the feedback
  head, without context, full ARGUS (three tokens per event), SASRec (positives only,
  next-item only), and no pretraining at all; and three arms that diagnose ARGUS against
  SASRec: next-item targets on positives only or on organic events only (all events still in
  the input and the feedback loss), and the feedback head given h_{t-1} * item_t;
- ``encoders``: the transformer against HSTU at the same encoder parameter count;
- ``sizes``: four model sizes over two orders of magnitude, equal training tokens (the
  paper's uplift and entropies against log10(parameters), with a fitted line);
- ``history``: history lengths at equal tokens per step and at equal steps;
- ``finetune``: a short fine-tuning against fine-tuning to convergence;
- ``lag``: user states as of the impression (lag 0) against as of the day before.

An arm that appears in several groups (the reference ARGUS run is in all of them) is trained
once per seed. Runs are directories under OUT/pretrain and OUT/finetune with their result
JSON; running the command again reuses every finished run, so a study can be completed over
several sessions. With the simulator's truth (``oracle``) the table carries the ceilings:
the oracle's PairAccuracy, next-item entropy and feedback AUCs, and the share of the gap to
them each arm closes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from argusrec.ceilings import gap_closed, oracle_ceilings, popularity_entropy
from argusrec.configs import apply_overrides
from argusrec.errors import DataError
from argusrec.evaluate import evaluate
from argusrec.finetune import FinetuneConfig, finetune
from argusrec.model import encoder_parameter_count
from argusrec.rank import RankConfig, rank
from argusrec.sequences import PreparedData
from argusrec.train import TrainConfig, pretrain, sasrec_overrides
from argusrec.workers import process_pool

log = logging.getLogger(__name__)

GROUPS = ("objectives", "encoders", "sizes", "history", "finetune", "lag")
REFERENCE = "argus"  # the arm every group compares with

# A small ARGUS model that trains on one core in minutes (next-item + feedback, corrected logQ).
STUDY_PRETRAIN = dict(preset="debug", model={"d_model": 64, "n_layers": 2, "n_heads": 2,
                                             "user_dim": 64, "time_buckets": 24,
                                             "max_len": 512},
                      objective={"next_item_loss": "corrected", "num_uniform": 512},
                      optim={"lr": 2e-3, "warmup_steps": 20}, batch_size=16, epochs=1,
                      checkpoint_every=10**6)
# Fine-tuning until validation stops improving: up to 3 epochs, PairAccuracy every 100 steps.
STUDY_FINETUNE = dict(lag=86_400, epochs=3, batch_size=8, eval_every=100, patience=3,
                      checkpoint_every=10**6)


class StudyConfig(BaseModel):
    """What `argus study` runs."""

    model_config = ConfigDict(extra="forbid")

    groups: list[str] = Field(list(GROUPS), description="which groups of arms to run: "
                              + ", ".join(GROUPS))
    seeds: list[int] = Field([0, 1, 2], min_length=1, description="seeds of every arm "
                             "(pretraining and fine-tuning)")
    pretrain: TrainConfig = Field(default_factory=lambda: TrainConfig(**STUDY_PRETRAIN),
                                  description="the reference ARGUS pretraining")
    finetune: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig(**STUDY_FINETUNE),
                                     description="fine-tuning of every arm")
    rank: RankConfig = Field(default_factory=RankConfig, description="the final ranker")
    sizes: list[tuple[int, int]] = Field(
        [(32, 2), (64, 2), (128, 3), (256, 4)], description="(width, layers) of the sizes "
        "group, at the reference's tokens")
    history_lengths: list[int] = Field([128, 512, 2048], description="history lengths of the "
                                       "history group")
    short_finetune_steps: int = Field(50, ge=1, description="the finetune group's short arm")

    @field_validator("groups")
    @classmethod
    def _known(cls, groups: list[str]) -> list[str]:
        bad = [g for g in groups if g not in GROUPS]
        if bad:
            raise ValueError(f"unknown group {', '.join(bad)}; choose from {', '.join(GROUPS)}")
        return groups


@dataclass(frozen=True)
class Arm:
    """One arm of a group: how its pretraining and fine-tuning differ from the reference."""

    group: str
    name: str
    pretrain: dict[str, Any] | None  # dotted overrides of the reference; None: no pretraining
    finetune: dict[str, Any] = field(default_factory=dict)
    x: float | None = None  # the group's axis (parameters, history length), for plots
    pretrain_only: bool = False  # no fine-tuning (full ARGUS: see FULL_ARGUS_NOTE)


# Why full ARGUS has no fine-tuned figures: one-pass fine-tuning scores an impression from the
# state after the last event before its lag, with the impression's context added by the user
# head; full ARGUS reads the user vector off a context token *inside* the sequence, so a
# lagged state with a new context needs a pass per impression.
FULL_ARGUS_NOTE = ("full ARGUS is pretrained and evaluated only: its user vector is a context "
                   "token's state, so a lagged user state needs one pass per impression")


def arms(cfg: StudyConfig, data: PreparedData) -> list[Arm]:
    """Every arm of the chosen groups, the reference first."""
    base = cfg.pretrain.resolved_model()
    out = [Arm("objectives", REFERENCE, {})]
    if "objectives" in cfg.groups:
        out += [Arm("objectives", "argus-no-feedback-head",
                    {"objective.feedback_weight": 0.0, "model.feedback_head": False}),
                Arm("objectives", "argus-no-context", {"model.use_context": False}),
                Arm("objectives", "full-argus", {"model.variant": "full"},
                    pretrain_only=True),
                Arm("objectives", "sasrec", sasrec_overrides()),
                # diagnosis arms: which of SASRec's differences from ARGUS matters
                Arm("objectives", "argus-nip-positive", {"objective.nip_targets": "positive"}),
                Arm("objectives", "argus-nip-organic", {"objective.nip_targets": "organic"}),
                Arm("objectives", "argus-feedback-interaction",
                    {"model.feedback_interaction": True}),
                Arm("objectives", "no-pretraining", None, {"from_scratch": True})]
    if "encoders" in cfg.groups:
        width = hstu_width(base.model_copy(update={"encoder": "hstu"}),
                           encoder_parameter_count(base))
        out.append(Arm("encoders", "hstu", {"model.encoder": "hstu", "model.d_model": width,
                                            "model.user_dim": base.user_dim}))
    if "sizes" in cfg.groups:
        for width, layers in cfg.sizes:
            size = {"model.d_model": width, "model.n_layers": layers,
                    "model.n_heads": max(1, width // 32), "model.user_dim": width}
            same = (width, layers) == (base.d_model, base.n_layers)
            out.append(Arm("sizes", REFERENCE if same else f"size-{width}x{layers}",
                           {} if same else size,
                           x=encoder_parameter_count(base.model_copy(update={
                               "d_model": width, "n_layers": layers,
                               "n_heads": max(1, width // 32)}))))
    if "history" in cfg.groups:
        tokens = cfg.pretrain.batch_size * base.max_len
        for length in cfg.history_lengths:
            same = length == base.max_len
            out.append(Arm("history", REFERENCE if same else f"history-{length}-equal-tokens",
                           {} if same else {"model.max_len": length,
                                            "batch_size": max(1, tokens // length)},
                           x=length))
            if not same:
                out.append(Arm("history", f"history-{length}-equal-steps",
                               {"model.max_len": length}, x=length))
    if "finetune" in cfg.groups:
        out.append(Arm("finetune", "short-finetune", {},
                       {"max_steps": cfg.short_finetune_steps, "eval_every": 0, "patience": 0}))
    if "lag" in cfg.groups:
        out.append(Arm("lag", "lag-0", {}, {"lag": 0}))
    return out


def hstu_width(hstu, target: int) -> int:
    """The HSTU width (a multiple of its heads) whose encoder has the parameter count nearest
    to ``target``: the encoders group compares at equal parameters."""
    step = hstu.n_heads * 2
    widths = range(step, 16 * hstu.d_model + step, step)
    return min(widths, key=lambda d: abs(encoder_parameter_count(
        hstu.model_copy(update={"d_model": d})) - target))


def reference_steps(cfg: StudyConfig, data: PreparedData) -> int:
    """Optimizer steps of the reference pretraining (its epochs over the training events, at
    its tokens per step): the budget of arms compared at equal steps or tokens."""
    if cfg.pretrain.max_steps is not None:
        return cfg.pretrain.max_steps
    events = int(data.users()["n_train"].sum())
    tokens = cfg.pretrain.batch_size * cfg.pretrain.resolved_model().max_len
    return max(1, math.ceil((cfg.pretrain.epochs or 1.0) * events / tokens))


# -- running ----------------------------------------------------------------------------------

def _fields(config: BaseModel, overrides: dict, seed: int, threads: int | None) -> dict:
    """``config``'s fields with an arm's dotted overrides, its seed and the threads set."""
    fields = apply_overrides(config.model_dump(), {**overrides, "seed": seed})
    if threads is not None:
        fields["threads"] = threads
    return json.loads(json.dumps(fields, default=str))


def _pretrain_fields(cfg: StudyConfig, arm: Arm, seed: int, threads: int | None) -> dict:
    return _fields(cfg.pretrain, arm.pretrain, seed, threads)


def _finetune_fields(cfg: StudyConfig, arm: Arm, seed: int, threads: int | None) -> dict:
    return _fields(cfg.finetune, arm.finetune, seed, threads)


# Fields that say where and how fast a run trains, not what it learns: a finished run is
# reused whatever they were (a study continued with another --jobs or --threads).
_PLACEMENT = ("threads", "device", "num_workers")


# Paths a fine-tuning's spec names: compared as absolute paths, so that `events` and
# `/tmp/study/events` (the same directory, typed two ways) reuse the same run.
_PATHS = ("pretrained", "oracle")


def _what(spec: dict) -> dict:
    return {key: ({k: v for k, v in value.items() if k not in _PLACEMENT}
                  if isinstance(value, dict) else
                  str(Path(value).resolve()) if key in _PATHS and value is not None else value)
            for key, value in spec.items()}


# What a run recorded before a config field existed ran with: the field's value when it was
# added (its default then). A record that lacks a field is compared as if it held this value,
# not the field's current default, so flipping a default never matches old runs to new
# settings. A new field goes in with its default; an existing entry never changes.
_BEFORE: dict = json.loads((files("argusrec") / "fields_before.json").read_text())


def _reused(path: Path, spec: dict, ignore: tuple[str, ...] = ()) -> dict | None:
    """A finished run's recorded result, if it ran with ``spec`` (placement aside; a field
    the record predates counts as holding its value from before, ``_BEFORE``; the ``ignore``
    keys are not compared)."""
    if not path.exists():
        return None
    record = json.loads(path.read_text())

    def compared(spec: dict) -> dict:
        return _what({k: v for k, v in spec.items() if k not in ignore})

    saved = compared(record.get("spec", {}))
    new = _missing_as_before(saved, compared(spec), _BEFORE)
    return record["result"] if saved == new else None


def _missing_as_before(saved: dict, new: dict, before: dict) -> dict:
    """``new`` without the keys that ``saved`` lacks and that hold their value from before."""
    out = {}
    for key, value in new.items():
        old = before.get(key) if isinstance(before, dict) else None
        if key not in saved and key in (before or {}) and old == value:
            continue
        if isinstance(value, dict) and isinstance(saved.get(key), dict):
            value = _missing_as_before(saved[key], value, old or {})
        out[key] = value
    return out


def _write(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    tmp.replace(path)


def run_pretrain(data: str, run_dir: str, fields: dict) -> dict:
    """Pretrain one arm and score it on test; the result is recorded in RUN/study.json."""
    run = Path(run_dir)
    spec = {"pretrain": fields}
    done = _reused(run / "study.json", spec)
    if done is not None:
        return done
    if run.exists():  # an unfinished run starts afresh
        shutil.rmtree(run)
    started = time.perf_counter()
    summary = pretrain(data, run, TrainConfig(**fields), progress=False)
    metrics = evaluate(run, ks=(10, 100), progress=False)
    result = {"pretrain_seconds": time.perf_counter() - started, "pretrain_steps": summary.steps,
              "encoder_parameters": summary.parameters["encoder"],
              "tokens": summary.tokens,
              **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
    _write(run / "study.json", {"spec": spec, "result": result})
    return result


def run_finetune(data: str, pretrained: str, run_dir: str, fields: dict,
                 rank_fields: dict, oracle: str | None, rank_cache: str | None = None) -> dict:
    """Fine-tune one arm (from ``pretrained``), train the final ranker on it, record both.
    ``rank_cache``: the directory of CatBoost fits shared by the study's arms (`rank`'s
    ``cache``), so the ordinary-feature ranker is fitted once, not once per arm."""
    run = Path(run_dir)
    spec = {"pretrained": pretrained, "finetune": fields, "rank": rank_fields,
            "oracle": oracle}
    done = _reused(run / "study.json", spec)
    if done is not None:
        return done
    cfg = FinetuneConfig(**fields)
    # The same fine-tuning with another ranker (or oracle): rank its model again, no training.
    tuned = _reused(run / "study.json", spec, ignore=("rank", "oracle"))
    started = time.perf_counter()
    if tuned is None:
        if run.exists():
            shutil.rmtree(run)
        summary = finetune(data, pretrained, run, cfg, progress=False)
        tuned = {"finetune_seconds": time.perf_counter() - started,
                 "finetune_steps": summary.steps, "finetune_best_step": summary.best_step}
    which = "best" if cfg.eval_every else "latest"
    ranked = rank(run, cfg=RankConfig(**rank_fields), which=which, oracle=oracle,
                  cache=rank_cache)
    by_model = {r["model"]: r for r in ranked.rows}
    result = {**{k: tuned[k] for k in ("finetune_seconds", "finetune_steps",
                                       "finetune_best_step")},
              "argus_alone": by_model["ARGUS score alone"]["PairAccuracy"],
              "ranker": by_model["ranker, ordinary features"]["PairAccuracy"],
              "ranker_with_argus": by_model["ranker + ARGUS score"]["PairAccuracy"],
              "uplift": ranked.uplift["ranker + ARGUS score: PairAccuracy"],
              "eval_pairs": ranked.eval_pairs}
    oracle_row = by_model.get("oracle (true affinity, the ceiling)")
    if oracle_row is not None:
        result["oracle_pair_accuracy"] = oracle_row["PairAccuracy"]
    _write(run / "study.json", {"spec": spec, "result": result})
    return result


@dataclass
class _Job:
    arm: Arm
    seed: int
    pretrain_dir: Path  # the run fine-tuning starts from (its weights, or only its shape)
    pretrained: bool  # False: the arm is not pretrained (pretrain_dir gives the architecture)
    finetune_dir: Path
    finetune_fields: dict


def _plan(cfg: StudyConfig, data: PreparedData, out: Path,
          threads: int | None) -> tuple[list[_Job], dict[str, dict]]:
    """One job per arm and seed (an arm in several groups is one job), and the pretraining
    runs they need by directory: arms with the same pretraining share one run."""
    jobs: dict[tuple[str, int], _Job] = {}
    runs: dict[str, dict] = {}
    by_fields: dict[str, Path] = {}
    for arm in arms(cfg, data):
        for seed in cfg.seeds:
            if (arm.name, seed) in jobs:
                continue
            fields = _pretrain_fields(cfg, arm if arm.pretrain is not None else
                                      Arm(arm.group, REFERENCE, {}), seed, threads)
            key = json.dumps(fields, sort_keys=True)
            if key not in by_fields:
                name = arm.name if arm.pretrain is not None else REFERENCE
                by_fields[key] = out / "pretrain" / f"{name}-s{seed}"
                runs[str(by_fields[key])] = fields
            jobs[arm.name, seed] = _Job(arm, seed, by_fields[key], arm.pretrain is not None,
                                        out / "finetune" / f"{arm.name}-s{seed}",
                                        _finetune_fields(cfg, arm, seed, threads))
    return list(jobs.values()), runs


def _pool_map(fn, calls: list[tuple], jobs: int) -> list:
    if jobs == 1 or len(calls) <= 1:
        return [fn(*call) for call in calls]
    with process_pool(jobs) as pool:
        return [f.result() for f in [pool.submit(fn, *call) for call in calls]]


def study(data: str | Path, out: str | Path, cfg: StudyConfig | None = None, *,
          oracle: str | Path | None = None, jobs: int = 1, threads: int | None = None,
          progress: bool = True) -> dict[str, Any]:
    """Run every arm and seed into ``out``; write study.json, study.md and the plots there."""
    cfg = cfg or StudyConfig()
    if jobs < 1:
        raise DataError(f"--jobs must be at least 1, got {jobs}", fix="pass --jobs 1 or more")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prepared = PreparedData(data)
    if not prepared.info.counts.split_events.get("val"):
        raise DataError("the study needs a validation period (early stopping, the ranker)",
                        path=prepared.path, fix="prepare with --val-duration")
    if jobs > 1 and threads is None:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    started = time.perf_counter()
    if cfg.pretrain.max_steps is None:  # every arm gets the reference's step budget
        cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(
            update={"max_steps": reference_steps(cfg, prepared)})})
    plan, pretrains = _plan(cfg, prepared, out, threads)
    if progress:
        log.info("study: %d arms x %d seeds: %d pretraining runs, %d fine-tuning runs",
                 len({j.arm.name for j in plan}), len(cfg.seeds), len(pretrains), len(plan))
    pre_results = dict(zip(pretrains, _pool_map(
        run_pretrain, [(str(data), d, f) for d, f in pretrains.items()], jobs)))
    rank_fields = cfg.rank.model_dump()
    oracle_s = str(oracle) if oracle is not None else None
    tuned = [j for j in plan if not j.arm.pretrain_only]
    ft_results = dict(zip([id(j) for j in tuned], _pool_map(run_finetune, [
        (str(data), str(j.pretrain_dir), str(j.finetune_dir), j.finetune_fields, rank_fields,
         oracle_s, str(out / "ranker-cache")) for j in tuned], jobs)))
    runs = []
    for job in plan:
        ft = ft_results.get(id(job), {})
        row = {"arm": job.arm.name, "seed": job.seed, **ft}
        if job.pretrained:
            row.update(pre_results[str(job.pretrain_dir)])
        runs.append(row)
    ceilings = {}
    if oracle is not None:
        ceilings = oracle_ceilings(prepared, oracle, split="test")
        ceilings["entropy/popularity"] = popularity_entropy(prepared, "test")
    result = {"config": cfg.model_dump(mode="json"), "data": str(data),
              "oracle": oracle_s, "seeds": cfg.seeds,
              "arms": [vars(a) for a in arms(cfg, prepared)], "runs": runs,
              "ceilings": ceilings, "summary": summarise(runs, arms(cfg, prepared), ceilings),
              "seconds": time.perf_counter() - started, "jobs": jobs, "threads": threads}
    _write(out / "study.json", result)
    (out / "study.md").write_text(markdown(result) + "\n")
    plot_study(result, out)
    return result


# -- the table --------------------------------------------------------------------------------

# Columns of the table: (key in a run's result, heading, higher is better).
COLUMNS = [("argus_alone", "PairAcc alone", True), ("uplift", "ranker uplift", True),
           ("ranker_with_argus", "ranker + ARGUS", True),
           ("entropy/next_item", "next-item entropy", False),
           ("logloss/played_ratio", "played log loss", False), ("HR@100", "HR@100", True),
           ("AUC/like", "AUC like", True), ("AUC/played_ratio", "AUC played", True)]


def _stats(values: list[float]) -> dict[str, float]:
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float)
    if v.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "n": int(v.size)}


def summarise(runs: list[dict], all_arms: list[Arm], ceilings: dict) -> list[dict]:
    """One row per group and arm: mean and spread of every column over seeds, the verdict
    against the group's reference (better, worse, or tie inside the spread), and the share
    of the gap to the oracle closed where the oracle is known."""
    by_arm: dict[str, list[dict]] = {}
    for run in runs:
        by_arm.setdefault(run["arm"], []).append(run)
    rows = []
    for arm in all_arms:
        stats = {key: _stats([r.get(key) for r in by_arm.get(arm.name, [])])
                 for key, _, _ in COLUMNS}
        rows.append({"group": arm.group, "arm": arm.name, "x": arm.x, "stats": stats})
    reference = {key: s for key, s in rows[0]["stats"].items()}
    for row in rows:
        row["verdict"] = {key: _verdict(row["stats"][key], reference[key], better)
                          for key, _, better in COLUMNS}
        row["gap_closed"] = _gaps(row, by_arm.get(row["arm"], []), ceilings)
    return rows


def _verdict(stat: dict, ref: dict, higher_is_better: bool) -> str:
    if stat["n"] == 0 or ref["n"] == 0:
        return ""
    diff = stat["mean"] - ref["mean"]
    if abs(diff) <= max(stat["std"], ref["std"]):
        return "tie"
    return "better" if (diff > 0) == higher_is_better else "worse"


def _gaps(row: dict, runs: list[dict], ceilings: dict) -> dict[str, float]:
    """Shares of the gap closed: the fine-tuned score alone from chance (0.5) to the oracle's
    PairAccuracy; the ranker from its ordinary features to the oracle; next-item entropy from
    the popularity baseline to the true entropy; like AUC from chance to the oracle's."""
    stats = row["stats"]
    out = {}
    oracle_pa = _stats([r.get("oracle_pair_accuracy") for r in runs])["mean"]
    if not math.isnan(oracle_pa):
        out["argus_alone"] = gap_closed(stats["argus_alone"]["mean"], 0.5, oracle_pa, True)
        ranker = _stats([r.get("ranker") for r in runs])["mean"]
        out["ranker_with_argus"] = gap_closed(stats["ranker_with_argus"]["mean"], ranker,
                                              oracle_pa, True)
    if "entropy/next_item" in ceilings and "entropy/popularity" in ceilings:
        out["entropy/next_item"] = gap_closed(stats["entropy/next_item"]["mean"],
                                              ceilings["entropy/popularity"],
                                              ceilings["entropy/next_item"], False)
    if "AUC/like" in ceilings:
        out["AUC/like"] = gap_closed(stats["AUC/like"]["mean"], 0.5, ceilings["AUC/like"],
                                     True)
    return out


def _cell(stat: dict, digits: int = 4) -> str:
    if stat["n"] == 0 or math.isnan(stat["mean"]):
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def markdown(result: dict) -> str:
    """The study's table: one section per group, the reference first, then the ceilings."""
    lines = [f"Study of {result['data']}: {len(result['seeds'])} seeds per arm "
             f"(mean ± sample std); {result['seconds'] / 60:.1f} min with {result['jobs']} "
             "jobs. A verdict against the reference (argus) inside the larger spread is a tie.",
             ""]
    heads = [h for _, h, _ in COLUMNS]
    reference = next(r for r in result["summary"] if r["arm"] == REFERENCE)
    for group in GROUPS:
        rows = [r for r in result["summary"] if r["group"] == group and r["arm"] != REFERENCE]
        if not rows:
            continue
        if group == "objectives" and any(r["arm"] == "full-argus" for r in rows):
            notes = [f"full-argus: {FULL_ARGUS_NOTE}."]
        else:
            notes = []
        rows = [reference, *rows]
        lines += [f"**{group}**", "", "| arm | " + " | ".join(heads) + " |",
                  "|---|" + "---:|" * len(heads)]
        for r in rows:
            cells = []
            for key, _, _ in COLUMNS:
                text = _cell(r["stats"][key], 2 if key == "entropy/next_item" else 4)
                if key == "uplift" and r["stats"][key]["n"]:
                    s = r["stats"][key]
                    text = f"{100 * s['mean']:+.2f}% ± {100 * s['std']:.2f}"
                verdict = r["verdict"][key] if r["arm"] != REFERENCE else ""
                cells.append(text + (f" ({verdict})" if verdict else ""))
            lines.append(f"| {r['arm']} | " + " | ".join(cells) + " |")
        lines += ["", *notes, *([""] if notes else [])]
    if result["ceilings"]:
        lines += ["**ceilings** (the simulator's truth on the test period)", ""]
        lines += [f"- {k}: {v:.4f}" for k, v in sorted(result["ceilings"].items())
                  if isinstance(v, float)]
        ref = next(r for r in result["summary"] if r["arm"] == REFERENCE)
        lines += [f"- reference closes {100 * v:.1f}% of the gap on {k}"
                  for k, v in ref["gap_closed"].items() if not math.isnan(v)]
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------------------

def plot_study(result: dict, out: Path) -> list[Path]:
    """study-sizes.png (uplift, both pretraining losses and the score alone against log10
    parameters, fitted lines: the paper's scaling figure) and
    study-history.png (PairAccuracy alone and uplift against history length), where the
    study ran those groups."""
    import matplotlib  # deferred: plotting is the study's last step only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    rows = {r["arm"]: r for r in result["summary"]}
    by_group = {}
    for arm in result["arms"]:
        by_group.setdefault(arm["group"], []).append(arm)
    if len(by_group.get("sizes", [])) >= 2:
        arms_ = sorted(by_group["sizes"], key=lambda a: a["x"])
        x = np.log10([a["x"] for a in arms_])
        fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
        panels = (("uplift", "ranker uplift"), ("entropy/next_item", "next-item entropy (test)"),
                  ("logloss/played_ratio", "feedback log loss, played ratio (test)"),
                  ("argus_alone", "PairAccuracy, fine-tuned score alone"))
        for ax, (key, title) in zip(axes, panels):
            y = np.array([rows[a["name"]]["stats"][key]["mean"] for a in arms_])
            e = np.array([rows[a["name"]]["stats"][key]["std"] for a in arms_])
            ax.errorbar(x, y, yerr=e, fmt="o", capsize=3)
            ok = ~np.isnan(y)
            if ok.sum() >= 2:
                b, a = np.polyfit(x[ok], y[ok], 1)
                ax.plot(x, a + b * x, "--", label=f"{a:.3f} {b:+.4f} log10(N)")
                ax.legend(fontsize=8)
            ax.set_xlabel("log10(encoder parameters)")
            ax.set_title(title, fontsize=10)
        fig.tight_layout()
        written.append(_save(fig, out / "study-sizes.png"))
        plt.close(fig)
    if len(by_group.get("history", [])) >= 2:
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.8))
        for ax, key, title in zip(axes, ("argus_alone", "uplift"),
                                  ("PairAccuracy, fine-tuned score alone", "ranker uplift")):
            for kind, marker in (("equal-tokens", "o-"), ("equal-steps", "s--")):
                arms_ = sorted([a for a in by_group["history"]
                                if a["name"] == REFERENCE or a["name"].endswith(kind)],
                               key=lambda a: a["x"])
                xs = [a["x"] for a in arms_]
                y = [rows[a["name"]]["stats"][key]["mean"] for a in arms_]
                e = [rows[a["name"]]["stats"][key]["std"] for a in arms_]
                ax.errorbar(xs, y, yerr=e, fmt=marker, capsize=3, label=kind)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("history length (events)")
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=8)
        fig.tight_layout()
        written.append(_save(fig, out / "study-history.png"))
        plt.close(fig)
    return written


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path
