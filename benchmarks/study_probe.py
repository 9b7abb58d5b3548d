"""Variants of `argus study`'s reference arm, run outside the study's groups: a probe.

A question like "is the pretraining budget what limits the study?" or "does the model use
its history once items are exact?" wants a few pretrainings that differ from the study's
reference in one or two fields, each scored like the study scores it (test next-item and
feedback metrics, and where asked the fine-tuned score under the same final ranker), plus
the validation figures that tell a real gain from a lucky test period, and the pretrained
model's zero-shot PairAccuracy (its own next-item score of each shown item, before any
fine-tuning). This runs them:

    python benchmarks/study_probe.py DATA OUT --config study-sim --oracle SIM_DIR \\
        --arm exact-644-lr5e-3:model.item_embedding=exact,max_steps=644,optim.lr=0.005 \\
        --arm 2048-1288:model.max_len=2048,max_steps=1288 [--arm ...] \\
        [--finetune-arm low-lr:exact-644-lr5e-3:optim.lr=0.0003] \\
        [--seeds 0] [--jobs 2] [--finetune NAME,NAME|all] [--json study_probe]

Each ``--arm NAME:key=value,...`` sets dotted fields of the study config's ``pretrain``
section (values read as YAML: 0.005, 2048, exact, true); an arm called ``reference``, the
study's own pretraining, comes first. As in the study, a pretraining without max_steps gets
the reference's step budget. Pretrainings go to OUT/pretrain/NAME-sSEED (with their
validation figures in val.json), fine-tunings to OUT/finetune/NAME-sSEED; a rerun reuses
every finished run. The table goes to stdout and OUT/probe.md, everything to
benchmarks/results/JSON.json. The study's config is only read: the overrides live in this
probe's runs, and neither the config file nor a study's OUT is changed.

A question about fine-tuning ("does a lower fine-tuning lr keep what a better pretraining
learned?") wants the same pretraining fine-tuned differently: ``--finetune-arm
NAME:ARM:key=value,...`` fine-tunes arm ARM's pretraining with dotted overrides of the
study's ``finetune`` section (``optim.lr=0.0003``, ``from_scratch=true``), ranks it the same
way, and adds a row NAME that repeats ARM's pretraining figures. It goes to
OUT/finetune/NAME-sSEED.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

from _common import markdown_table, results_name, write_json
from argusrec.cli import _load_yaml
from argusrec.errors import DataError
from argusrec.evaluate import evaluate
from argusrec.finetune import FinetuneConfig, evaluate_pairs
from argusrec.sequences import PreparedData
from argusrec.study import (StudyConfig, _fields, _pool_map, _stats, _write, reference_steps,
                            run_finetune, run_pretrain)
from argusrec.train import TrainConfig

REFERENCE = "reference"
VAL_METRICS = ("entropy/next_item", "HR@100", "AUC/like", "AUC/played_ratio",
               "logloss/played_ratio")
# The table's columns after arm, overrides: (key in a run's row, heading, digits).
COLUMNS = [("pretrain_steps", "steps", 0), ("pretrain_minutes", "pretrain min", 1),
           ("val/entropy/next_item", "val entropy", 3),
           ("entropy/next_item", "test entropy", 3), ("HR@100", "test HR@100", 4),
           ("AUC/like", "test AUC like", 4), ("AUC/played_ratio", "test AUC played", 4),
           ("zero_shot", "zero-shot PairAcc", 4),
           ("val/argus_alone", "val PairAcc (best)", 4), ("argus_alone", "PairAcc alone", 4),
           ("uplift", "uplift", 2),
           ("finetune_steps", "fine-tune steps", 0)]


# -- the arms ---------------------------------------------------------------------------------

def parse_arm(text: str) -> tuple[str, dict, str]:
    """``NAME:key=value,...`` as (name, {dotted key: value}, the overrides as written)."""
    name, sep, body = text.partition(":")
    name = name.strip()
    if not sep or not name or "/" in name or name == REFERENCE:
        raise SystemExit(f"--arm {text!r}: write it as NAME:dotted.key=value,... with a NAME "
                         f"that has no '/' and is not {REFERENCE!r} (that arm is always run)")
    overrides = {}
    for item in (i.strip() for i in body.split(",")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise SystemExit(f"--arm {name}: {item!r} is not key=value; write e.g. "
                             f"{name}:model.max_len=2048,max_steps=1288")
        try:
            overrides[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise SystemExit(f"--arm {name}: the value of {key.strip()} ({value!r}) is not a "
                             "YAML scalar; quote or fix it") from None
    return name, overrides, body.strip()


def parse_finetune_arm(text: str, pretrain_arms: list[str]) -> tuple[str, str, dict, str]:
    """``NAME:ARM:key=value,...`` as (name, the pretraining arm, {dotted key: value}, the
    overrides as written)."""
    name, sep, rest = text.partition(":")
    base, sep2, body = rest.partition(":")
    if not sep or not sep2 or base.strip() not in pretrain_arms:
        raise SystemExit(f"--finetune-arm {text!r}: write it as NAME:ARM:dotted.key=value,... "
                         f"where ARM is one of the pretraining arms ({', '.join(pretrain_arms)})")
    name, overrides, written = parse_arm(f"{name}:{body}")
    return name, base.strip(), overrides, written


def checked_fields(section, schema, flag: str, name: str, overrides: dict, seed: int,
                   threads: int | None) -> dict:
    """One arm's fields for one seed: ``section`` (the study config's pretrain or finetune)
    with the arm's dotted overrides, checked as ``schema`` before any run. ``flag`` and the
    section's name go into the message of a bad override."""
    what = "pretrain" if schema is TrainConfig else "finetune"
    try:
        fields = _fields(section, overrides, seed, threads)
    except (AttributeError, TypeError):  # a dotted key that walks into a scalar field
        raise SystemExit(f"{flag} {name}: a key goes below a field that has no sub-fields "
                         f"({', '.join(overrides)}); see `argus config {what}` for the "
                         "fields") from None
    try:
        schema(**fields)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: "
                             f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors())
        raise SystemExit(f"{flag} {name}: invalid {what} override ({problems}); fix the key "
                         f"or value (see `argus config {what}`)") from None
    return fields


# -- one run (in a worker process when --jobs > 1) --------------------------------------------

def probe_pretrain(data: str, run_dir: str, fields: dict, finetune: dict) -> dict:
    """:func:`argusrec.study.run_pretrain` (test figures), plus the validation figures and
    the pretrained model's own PairAccuracy on the impressions before any fine-tuning (its
    next-item score of each shown item, with the study's lag and pairs: the zero-shot
    ranker), kept in RUN/val.json. run_pretrain deletes a run whose spec changed before
    training it again, so a val.json that is still there belongs to the run beside it."""
    result = run_pretrain(data, run_dir, fields)
    path = Path(run_dir) / "val.json"
    val = json.loads(path.read_text()) if path.exists() else {}
    if not val or "zero_shot" not in val:
        if fields.get("threads"):  # a reused run never went through pretrain's thread setting
            import torch  # deferred: the parent process only plans and prints

            torch.set_num_threads(fields["threads"])
        if "entropy/next_item" not in val:
            metrics = evaluate(run_dir, split="val", ks=(10, 100), progress=False)
            val = {k: metrics[k] for k in VAL_METRICS if k in metrics}
        cfg = FinetuneConfig(**finetune)
        val["zero_shot"] = {split: evaluate_pairs(run_dir, split=split, cfg=cfg)["PairAccuracy"]
                            for split in ("val", "test")}
        _write(path, val)
    zero_shot = val["zero_shot"]
    return {**result, "zero_shot": zero_shot["test"], "val/zero_shot": zero_shot["val"],
            **{f"val/{k}": v for k, v in val.items() if k != "zero_shot"}}


# -- the table --------------------------------------------------------------------------------

def summarise(runs: list[dict], arms: list[tuple[str, dict, str]]) -> list[dict]:
    """Per arm: mean, sample std and count of every column over its seeds."""
    rows = []
    for name, overrides, written in arms:
        mine = [r for r in runs if r["arm"] == name]
        rows.append({"arm": name, "overrides": overrides, "written": written,
                     "stats": {key: _stats([r.get(key) for r in mine]) for key, _, _ in COLUMNS}})
    return rows


def _cell(key: str, stat: dict, digits: int, seeds: int) -> str:
    if stat["n"] == 0 or stat["mean"] != stat["mean"]:
        return "-"
    scale, unit, fmt = (100, "%", "+.2f") if key == "uplift" else (1, "", f".{digits}f")
    text = f"{scale * stat['mean']:{fmt}}{unit}"
    if seeds > 1:
        text += f" ± {scale * stat['std']:.{digits}f}"
    return text


def markdown(result: dict) -> str:
    seeds = len(result["seeds"])
    spread = " (mean ± sample std)" if seeds > 1 else ""
    lines = [f"Probe of `argus study`'s reference pretraining on {result['data']}: "
             f"{seeds} seed(s) per arm{spread}; {result['seconds'] / 60:.1f} min with "
             f"{result['jobs']} jobs. Reference: {result['reference_steps']} steps.", ""]
    lines.append(markdown_table(["arm", "overrides", *[h for _, h, _ in COLUMNS]], [
        [row["arm"], row["written"] or "(the study's)",
         *[_cell(key, row["stats"][key], digits, seeds) for key, _, digits in COLUMNS]]
        for row in result["summary"]]))
    oracle = _stats([r.get("oracle_pair_accuracy") for r in result["runs"]])
    if oracle["n"]:
        lines += ["", f"Oracle PairAccuracy (the ceiling of PairAcc alone): {oracle['mean']:.4f}"]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------

def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        seeds = []
    if not seeds:
        raise SystemExit(f"--seeds {text!r}: give comma-separated integers, e.g. --seeds 0,1,2")
    return seeds


def _one_line(e: DataError) -> str:
    return e.message().replace("\n  fix: ", "; fix: ")


def setup(args: argparse.Namespace) -> tuple[StudyConfig, PreparedData, int]:
    """The study config (the reference's step budget filled in) and the data, or a one-line
    SystemExit that names the fix."""
    try:
        cfg = StudyConfig(**_load_yaml(Path(args.config))) if args.config else StudyConfig()
    except DataError as e:
        raise SystemExit(f"--config: {_one_line(e)}") from None
    except ValidationError as e:
        raise SystemExit(f"--config {args.config}: not a StudyConfig ({e.errors()[0]['msg']} "
                         f"at {'.'.join(map(str, e.errors()[0]['loc']))}); see `argus config "
                         "study`") from None
    if not args.data.is_dir():
        raise SystemExit(f"DATA {args.data} is not a directory; pass a dataset made by "
                         "`argus prepare ... --val-duration ... --test-duration ...`")
    try:
        data = PreparedData(args.data)
    except DataError as e:
        raise SystemExit(_one_line(e)) from None
    if not data.info.counts.split_events.get("val"):
        raise SystemExit(f"{args.data} has no validation period; prepare it with --val-duration")
    if args.oracle is not None and not args.oracle.is_dir():
        raise SystemExit(f"--oracle {args.oracle} is not a directory; pass the simulator's "
                         "output (`argus simulate OUT`), or leave --oracle out")
    steps = reference_steps(cfg, data)
    if cfg.pretrain.max_steps is None:  # every arm gets the reference's budget, as in the study
        cfg = cfg.model_copy(update={"pretrain": cfg.pretrain.model_copy(
            update={"max_steps": steps})})
    return cfg, data, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", type=Path, help="a prepared dataset with validation and test "
                        "periods")
    parser.add_argument("out", type=Path, help="directory for the probe's runs and probe.md")
    parser.add_argument("--config", help="the study's config: a YAML path or a shipped "
                        "config's name (study-sim); default: StudyConfig's defaults")
    parser.add_argument("--oracle", type=Path, help="the simulator's output: the oracle's "
                        "PairAccuracy beside the fine-tuned arms")
    parser.add_argument("--arm", action="append", default=[], metavar="NAME:KEY=VALUE,...",
                        help="a variant of the reference pretraining (repeatable); dotted "
                        "keys of the config's pretrain section, values as YAML")
    parser.add_argument("--finetune-arm", action="append", default=[],
                        metavar="NAME:ARM:KEY=VALUE,...", help="fine-tune pretraining arm ARM "
                        "with dotted overrides of the config's finetune section (repeatable)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once, in separate "
                        "processes of one thread each (default: 1)")
    parser.add_argument("--finetune", default="", metavar="NAME,NAME|all",
                        help="arms to fine-tune and rank with the study's fine-tuning "
                        "(default: none)")
    parser.add_argument("--json", default="study_probe", type=results_name,
                        help="results/NAME.json (default: study_probe)")
    args = parser.parse_args()
    if args.jobs < 1:
        raise SystemExit(f"--jobs {args.jobs}: give 1 or more")
    seeds = _seeds(args.seeds)
    arms = [(REFERENCE, {}, ""), *map(parse_arm, args.arm)]
    names = [a[0] for a in arms]
    ft_arms = [parse_finetune_arm(text, names) for text in args.finetune_arm]
    if len(set(names + [a[0] for a in ft_arms])) < len(names) + len(ft_arms):
        raise SystemExit("two --arm or --finetune-arm share a name; give every arm its own "
                         "NAME")
    tuned = names if args.finetune.strip() == "all" else \
        [n.strip() for n in args.finetune.split(",") if n.strip()]
    unknown = [n for n in tuned if n not in names]
    if unknown:
        raise SystemExit(f"--finetune: no arm called {', '.join(unknown)}; choose from "
                         f"{', '.join(names)}, or all")
    cfg, _, steps = setup(args)
    threads = 1 if args.jobs > 1 else None
    pretrains = {(name, seed): (str(args.out / "pretrain" / f"{name}-s{seed}"), checked_fields(
        cfg.pretrain, TrainConfig, "--arm", name, overrides, seed, threads))
        for name, overrides, _ in arms for seed in seeds}
    # every fine-tuning: (name, seed) -> (the pretraining arm, its fields)
    tunings = {(name, seed): (name, _fields(cfg.finetune, {}, seed, threads))
               for name in tuned for seed in seeds}
    tunings.update({(name, seed): (base, checked_fields(
        cfg.finetune, FinetuneConfig, "--finetune-arm", name, overrides, seed, threads))
        for name, base, overrides, _ in ft_arms for seed in seeds})

    started = time.perf_counter()
    print(f"pretraining {len(pretrains)} runs, {args.jobs} at a time", file=sys.stderr,
          flush=True)
    pre = dict(zip(pretrains, _pool_map(probe_pretrain, [
        (str(args.data), run, fields, _fields(cfg.finetune, {}, seed, threads))
        for (_, seed), (run, fields) in pretrains.items()], args.jobs)))
    calls = list(tunings)
    if calls:
        print(f"fine-tuning {len(calls)} runs", file=sys.stderr, flush=True)
    oracle = str(args.oracle) if args.oracle is not None else None
    ft = dict(zip(calls, _pool_map(run_finetune, [
        (str(args.data), pretrains[tunings[call][0], call[1]][0],
         str(args.out / "finetune" / f"{call[0]}-s{call[1]}"), tunings[call][1],
         cfg.rank.model_dump(), oracle, str(args.out / "ranker-cache")) for call in calls],
        args.jobs)))

    def best_validation(name: str, seed: int) -> dict:
        """The fine-tuning's best validation PairAccuracy (what chooses between fine-tunings;
        the test figures only report): checkpoints/best reads "CHECKPOINT METRIC VALUE"."""
        best = args.out / "finetune" / f"{name}-s{seed}" / "checkpoints" / "best"
        if (name, seed) not in ft or not best.exists():
            return {}
        return {"val/argus_alone": float(best.read_text().split()[2])}

    def row(name: str, base: str, seed: int) -> dict:
        return {"arm": name, "pretrain_arm": base, "seed": seed,
                "max_steps": pretrains[base, seed][1]["max_steps"], **pre[base, seed],
                "pretrain_minutes": pre[base, seed]["pretrain_seconds"] / 60,
                **ft.get((name, seed), {}), **best_validation(name, seed)}

    runs = [row(name, name, seed) for name, _, _ in arms for seed in seeds]
    runs += [row(name, base, seed) for name, base, _, _ in ft_arms for seed in seeds]
    rows = [*arms, *[(name, overrides, f"{base} + fine-tune {written}")
                     for name, base, overrides, written in ft_arms]]
    result = {"config": cfg.model_dump(mode="json"), "data": str(args.data), "oracle": oracle,
              "seeds": seeds, "reference_steps": steps, "jobs": args.jobs, "threads": threads,
              "arms": [{"name": n, "overrides": o} for n, o, _ in arms], "finetuned": tuned,
              "finetune_arms": [{"name": n, "pretrain_arm": b, "overrides": o}
                                for n, b, o, _ in ft_arms],
              "runs": runs, "summary": summarise(runs, rows),
              "seconds": time.perf_counter() - started}
    table = markdown(result)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe.md").write_text(table + "\n")
    print(f"-> {args.out / 'probe.md'}\nwrote {write_json(args.json, result)}")


if __name__ == "__main__":
    main()
