"""The `argus` command line: a thin typer layer over library functions.

Each verb parses its options into the library's typed config and calls one function
(STYLE.md principle 4); bad input surfaces as a one-paragraph error, never a traceback.
"""

from __future__ import annotations

import functools
import json
import os
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
import yaml
from pydantic import ValidationError

from argusrec import __version__, configs
from argusrec.cli_fields import (FieldFlagsCommand, UsageError, config_template, field_values,
                                 merge_flags, shortcuts_epilog)
from argusrec.errors import DataError

app = typer.Typer(
    name="argus",
    help="Train autoregressive recommender transformers (the ARGUS recipe) on event logs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"argusrec {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")]
    = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show the full traceback of an unexpected error.")] = False,
) -> None:
    """Train autoregressive recommender transformers (the ARGUS recipe) on event logs."""
    global _DEBUG
    _DEBUG = debug
    _log_to_stderr()


_DEBUG = False  # `argus --debug VERB ...`: unexpected errors keep their traceback


class _Stderr(logging.StreamHandler):
    """Plain messages to whatever sys.stderr is when a record comes (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _log_to_stderr() -> None:
    """Show the library's progress log (INFO) on stderr, once per process; a verb's --quiet
    silences it, since the library logs progress only when asked for progress."""
    logger = logging.getLogger("argusrec")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _friendly(fn):
    """Turn DataError / config validation errors into a clear message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DataError as e:
            typer.secho(f"error: {e.message()}", fg="red", err=True)
            raise typer.Exit(2) from None
        except ValidationError as e:
            # a check across fields has no location: name the config it belongs to
            lines = [f"  {'.'.join(str(p) for p in err['loc']) or e.title}: "
                     f"{err['msg'].removeprefix('Value error, ')}" for err in e.errors()]
            typer.secho("error: invalid options\n" + "\n".join(lines), fg="red", err=True)
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, UsageError, KeyboardInterrupt):
            raise
        except Exception as e:
            if _DEBUG:
                raise
            first = (str(e).strip().splitlines() or [""])[0][:500]
            typer.secho(f"error: unexpected {type(e).__name__}: {first}\n  This is a bug, or an "
                        "input argusrec does not check yet. Run again as `argus --debug "
                        f"{fn.__name__} ...` for the traceback, and report it.", fg="red",
                        err=True)
            raise typer.Exit(1) from None

    return wrapper


def _choice(name: str, *values: str) -> type[Enum]:
    """A choice option's type: --help lists ``values`` and typer refuses any other value with a
    usage error. The values mirror the library's Literal fields (a test ties them); they are
    written out here so that `argus --help` need not import torch."""
    return Enum(name, {v: v for v in values}, type=str)


_Preset = _choice("Preset", "debug", "3m", "32m", "126m", "1b")
_Loss = _choice("Loss", "full", "sampled", "logq", "corrected")
_Encoder = _choice("Encoder", "transformer", "hstu")
_Parallel = _choice("Parallel", "auto", "ddp", "fsdp", "none")
_Format = _choice("Format", "auto", "yambda", "movielens", "recbole", "sasrec", "s3rec", "table")
_SplitKind = _choice("SplitKind", "temporal", "leave-one-out")
_OnDuplicate = _choice("OnDuplicate", "error", "drop", "keep")
_Split = _choice("Split", "test", "val", "train")
_Which = _choice("Which", "latest", "best")
_RankLoss = _choice("RankLoss", "YetiRank", "PairLogit")
_TimeUnit = _choice("TimeUnit", "s", "ms", "us", "ns")
_Engine = _choice("Engine", "polars", "spark")


def _int_list(minimum: int):
    """An option callback: comma-separated integers, each at least ``minimum``, as a list."""
    def parse(text: str | None) -> list[int] | None:
        if text is None:
            return None
        try:
            numbers = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise typer.BadParameter(f"'{text}' is not a list of integers; write it like "
                                     "10,20,100") from None
        if not numbers or min(numbers) < minimum:
            raise typer.BadParameter(f"'{text}': give one or more integers, each at least "
                                     f"{minimum}")
        return numbers

    return parse


def _command(shortcuts: dict[str, str] | None = None):
    """A verb whose config fields are all flags (argusrec.cli_fields); ``shortcuts`` maps
    each named flag's parameter to the field it sets, shown in --help."""
    flags = {f"--{name.replace('_', '-')}": field for name, field in (shortcuts or {}).items()}
    return app.command(cls=FieldFlagsCommand,
                       epilog=shortcuts_epilog(flags) if flags else shortcuts_epilog({}))


def _flags(ctx: typer.Context, config: type, shortcuts: dict[str, str],
           **values: Any) -> dict[str, Any]:
    """The fields set on the command line, by dotted path: the named flags given (``values``
    by parameter; None and False mean not given) and the field flags (`--optim.lr 3e-4`)."""
    named = {shortcuts[name]: value.value if isinstance(value, Enum) else value
             for name, value in values.items() if value is not None and value is not False}
    flag_names = {f"--{name.replace('_', '-')}": field for name, field in shortcuts.items()}
    return merge_flags(ctx, named, field_values(ctx, config, flag_names))


# Appended to every --config help: the option also takes a shipped config's name.
_SHIPPED = f" A path, or a shipped config's name: {', '.join(configs.names())}."


def _load_yaml(path: Optional[Path]) -> dict:
    """A --config's fields: the YAML file at ``path``, else the shipped config of that name."""
    if path is None:
        return {}
    if path.exists():
        text = path.read_text()
    else:
        shipped = configs.find(str(path)) if path.parent == Path(".") else None
        if shipped is None:
            raise DataError("config file does not exist, nor is it a shipped config's name",
                            path=path, fix="check the path, or pass one of the shipped "
                            f"configs: {', '.join(configs.names())}")
        text = shipped.read_text()
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise DataError(f"not valid YAML: {e}", path=path, fix="fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise DataError("expected a mapping of option: value", path=path,
                        fix="write the file as `option: value` lines")
    return data


SIMULATE_FLAGS = {"users": "users", "items": "items", "days": "days", "seed": "seed"}


@_command(SIMULATE_FLAGS)
@_friendly
def simulate(
    ctx: typer.Context,
    out: Annotated[Path, typer.Argument(help="Directory to write (must not exist).")],
    users: Annotated[Optional[int], typer.Option(
        min=1, help="Number of users (10000 is Yambda-50M scale: tens of millions of events).")]
    = None,
    items: Annotated[Optional[int], typer.Option(
        min=1, help="Catalogue size (default: scaled to users).")] = None,
    days: Annotated[Optional[int], typer.Option(min=1, max=49_000, help="Days of history.")]
    = None,
    seed: Annotated[int, typer.Option(
        min=0, help="Random seed; the output is deterministic in it.")] = 0,
    config: Annotated[Optional[Path], typer.Option(help="YAML file overriding simulator "
                                                   "fields." + _SHIPPED)] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Simulate a music-streaming service: Yambda-schema Parquet plus ground truth.

    Users with drifting tastes listen in sessions over many days, to organic picks and to
    recommendations from a noisy logging policy; feedback (listen fraction, likes, dislikes)
    follows the true affinity, saved under OUT/truth for oracle scoring.
    """
    from argusrec.simulate import SimulatorConfig, simulate as run

    flags = _flags(ctx, SimulatorConfig, SIMULATE_FLAGS, users=users, items=items, days=days,
                   seed=seed)
    cfg = SimulatorConfig(**configs.apply_overrides(_load_yaml(config), flags))
    summary = run(cfg, out, overwrite=overwrite, progress=not quiet)
    typer.echo(_simulation_report(summary))


def _simulation_report(summary) -> str:
    return (f"simulated {summary.events:,} events: {summary.users:,} users, "
            f"{summary.items:,} items, {summary.likes:,} likes, {summary.dislikes:,} dislikes, "
            f"organic share {summary.organic_share:.2f}, {summary.seconds:.1f}s -> "
            f"{summary.out_dir}")


# The named flags of `argus prepare` and the PrepareConfig field each sets.
PREPARE_FLAGS = {
    "format": "format", "ignore_extra": "ignore_extra", "split": "split.kind",
    "cutoff": "split.cutoff", "test_fraction": "split.test_fraction", "gap": "split.gap",
    "test_duration": "split.test_duration", "val_duration": "split.val_duration",
    "on_duplicate": "on_duplicate", "min_played_ratio": "min_played_ratio",
    "min_rating": "min_rating", "merge_reactions": "merge_reactions",
    "shard_events": "shard_events", "event_type": "extra_event_types",
    "timestamp_unit": "timestamp_unit"}


@_command(PREPARE_FLAGS)
@_friendly
def prepare(
    ctx: typer.Context,
    source: Annotated[Path, typer.Argument(help="Event log: a file or a directory (Yambda).")],
    out: Annotated[Path, typer.Argument(help="Dataset directory to write (must not exist).")],
    format: Annotated[Optional[_Format], typer.Option(
        "--format", "-f", help="Input format (default: auto, from the path).")] = None,
    column: Annotated[Optional[list[str]], typer.Option(
        "--column", "-c", help="table format: CANONICAL=SOURCE, e.g. user=customer_id, "
        "timestamp=ts, like=liked, context:surface=page (repeat).")] = None,
    ignore_extra: Annotated[bool, typer.Option(
        "--ignore-extra", help="table/recbole: ignore unmapped columns.")] = False,
    split: Annotated[Optional[_SplitKind], typer.Option(
        help="Split (default: temporal).")] = None,
    cutoff: Annotated[Optional[int], typer.Option(
        help="temporal: end of training (a timestamp).")] = None,
    test_fraction: Annotated[Optional[float], typer.Option(
        help="temporal without --cutoff/--test-duration: share of events after the cut-off "
        "[0.1].")] = None,
    gap: Annotated[Optional[int], typer.Option(
        min=0, help="temporal: seconds between train and test (default: 0; Yambda: 1800).")]
    = None,
    test_duration: Annotated[Optional[int], typer.Option(
        min=1, help="temporal: seconds of test, the log's last ones (default: all after the "
        "gap; Yambda: 86400).")] = None,
    val_duration: Annotated[Optional[int], typer.Option(
        min=0, help="temporal: seconds before the cut-off held out for validation (default: "
        "0).")] = None,
    on_duplicate: Annotated[Optional[_OnDuplicate], typer.Option(
        help="What to do with exact duplicate events (default: error).")] = None,
    min_played_ratio: Annotated[Optional[float], typer.Option(
        help="listen fraction that makes a listen positive (default: 0.5).")] = None,
    min_rating: Annotated[Optional[float], typer.Option(
        help="rating that makes a rating positive (default: any rating).")] = None,
    merge_reactions: Annotated[bool, typer.Option(
        "--merge-reactions", help="Yambda-style logs: make each like/dislike the feedback of "
        "the listen it follows, and drop the reaction row.")] = False,
    shard_events: Annotated[Optional[int], typer.Option(
        min=1000, help="target events per shard; bounds memory (default: 4000000).")] = None,
    event_type: Annotated[Optional[list[str]], typer.Option(
        "--event-type", help="An event type besides interaction, listen, like, dislike, "
        "unlike, undislike and rating; its events count as positive interactions (repeat). "
        "Any other unknown type is refused.")] = None,
    timestamp_unit: Annotated[Optional[_TimeUnit], typer.Option(
        help="Unit of the timestamps (default: s); other units are converted to seconds. A "
        "log in milliseconds given as seconds is detected and refused.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="YAML file with these options; flags given on the command line win."
        + _SHIPPED)] = None,
    base: Annotated[Optional[Path], typer.Option(
        help="An earlier prepared dataset: its users, items, event types and context values "
        "keep their codes, new ones get codes after them, and its options are the defaults "
        "(the daily cycle).")] = None,
    append: Annotated[bool, typer.Option(
        "--append", help="With --base: SOURCE holds only the new events; merge them into "
        "the base's shards (the base is never modified).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT if it exists.")] = False,
    engine: Annotated[_Engine, typer.Option(
        help="polars: this process; spark: read, vocabularies and shards as Spark jobs "
        "(pip install 'argusrec[spark]'), for logs beyond one machine. Both write the same "
        "dataset.")] = _Engine.polars,
    spark_master: Annotated[Optional[str], typer.Option(
        help="--engine spark: the master URL, e.g. local[8] or spark://host:7077 (default: "
        "spark-submit's, else local[*]).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Validate an event log, map ids, sort, split, and write per-user sequence shards.

    Streams shard by shard, so logs larger than memory can be prepared. Formats: Yambda
    (directory or file, flat or sequential layout), MovieLens ratings.dat, RecBole .inter,
    SASRec `user item` lines, S3-Rec `uid i1 i2 ...` lines, or any Parquet/CSV with --column.

    Every day: `argus prepare TODAY.parquet DATA-2 --base DATA-1 --append` reads only the
    new events and writes a new dataset with the old codes kept.

    Beyond one machine: `spark-submit $(python -c 'import argusrec.cli as c; print(c.__file__)')
    prepare LOG OUT --engine spark` (or --spark-master URL); OUT on a file system every
    executor sees (docs/scale.md).
    """
    from argusrec.prepare import PrepareConfig, prepare as run
    from argusrec.sequences import PreparedData

    flags = _flags(ctx, PrepareConfig, PREPARE_FLAGS, format=format, ignore_extra=ignore_extra,
                   split=split, cutoff=cutoff, test_fraction=test_fraction, gap=gap,
                   test_duration=test_duration, val_duration=val_duration,
                   on_duplicate=on_duplicate, min_played_ratio=min_played_ratio,
                   min_rating=min_rating, merge_reactions=merge_reactions,
                   shard_events=shard_events, event_type=event_type or None,
                   timestamp_unit=timestamp_unit)
    if column:
        flags["columns"] = _parse_columns(column)
    prepared_base = PreparedData(base) if base is not None else None
    fields = dict(prepared_base.info.config) if prepared_base is not None else {}
    cfg = PrepareConfig(**configs.apply_overrides({**fields, **_load_yaml(config)}, flags))
    summary = run(source, out, cfg, base=prepared_base, append=append, overwrite=overwrite,
                  progress=not quiet, engine=engine.value, spark_master=spark_master)
    typer.echo(_prepare_report(summary))


def _parse_columns(pairs: list[str]) -> dict[str, str]:
    mapping = {}
    for pair in pairs:
        if "=" not in pair:
            raise DataError(f"--column '{pair}' is not CANONICAL=SOURCE",
                            fix="write it like --column user=customer_id")
        key, value = pair.split("=", 1)
        mapping[key.strip()] = value.strip()
    return mapping


def _prepare_report(summary) -> str:
    s = summary.split_events
    lines = [f"prepared {summary.events:,} events, {summary.users:,} users, "
             f"{summary.items:,} items in {summary.shards} shard(s), {summary.seconds:.1f}s "
             f"({summary.events_per_second:,.0f} events/s) -> {summary.out}",
             f"  split: train {s['train']:,}, val {s['val']:,}, gap {s['gap']:,}, "
             f"test {s['test']:,}; dropped {summary.dropped_events:,}"]
    if summary.new_users is not None:
        lines.append(f"  kept the base's codes; new since it: {summary.new_users:,} users, "
                     f"{summary.new_items:,} items"
                     + (f"; read {summary.read_events:,} new events"
                        if summary.read_events is not None else ""))
    if summary.boundaries:
        b = summary.boundaries
        lines.append(f"  time: train < {b['train_end']}, test >= {b['test_start']}"
                     + (f", test < {b['test_end']}" if b.get("test_end") else ""))
    return "\n".join(lines)


@app.command()
@_friendly
def info(
    data: Annotated[Path, typer.Argument(help="A prepared dataset directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print meta.json as is.")] = False,
) -> None:
    """Describe a prepared dataset: counts, split, fields, shards."""
    from argusrec.sequences import PreparedData

    prepared = PreparedData(data)
    if as_json:
        typer.echo(json.dumps(prepared.meta, indent=2))
        return
    info, c = prepared.info, prepared.info.counts
    typer.echo(f"{data}: {c.events:,} events, {c.users:,} users, {c.items:,} items "
               f"({info.source.format}, {len(info.shards)} shard(s))")
    typer.echo(f"  split ({info.split.kind}): "
               + ", ".join(f"{k} {v:,}" for k, v in c.split_events.items()))
    typer.echo("  users with targets: " + ", ".join(
        f"{k} {v:,}" for k, v in c.split_users_with_targets.items()))
    f = info.fields
    typer.echo(f"  context: {', '.join(f.context) or '-'}; feedback: "
               f"{', '.join(f'{k} ({v})' for k, v in f.feedback.items()) or '-'}; "
               f"event types: {', '.join(f.event_types)}")
    if info.source.base:
        typer.echo(f"  daily cycle: base {info.source.base}; appended "
                   f"{len(info.source.appended)} source(s)")


# The named flags of `argus pretrain` and the TrainConfig field each sets.
PRETRAIN_FLAGS = {
    "preset": "preset", "loss": "objective.next_item_loss", "negatives": "objective.num_uniform",
    "max_len": "model.max_len", "encoder": "model.encoder", "batch_size": "batch_size",
    "max_steps": "max_steps", "max_minutes": "max_minutes", "epochs": "epochs",
    "lr": "optim.lr", "device": "device",
    "threads": "threads", "workers": "num_workers", "seed": "seed", "eval_every": "eval_every",
    "patience": "patience", "parallel": "parallel",
    "activation_checkpointing": "activation_checkpointing", "compile": "compile"}


@_command(PRETRAIN_FLAGS)
@_friendly
def pretrain(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A prepared dataset (`argus prepare`).")],
    out: Annotated[Path, typer.Argument(help="Run directory: checkpoints, TensorBoard logs.")],
    preset: Annotated[Optional[_Preset], typer.Option(
        help="Model size (default: debug).")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="YAML with TrainConfig fields (model:, objective:, optim: ...); flags win."
        + _SHIPPED)] = None,
    loss: Annotated[Optional[_Loss], typer.Option(
        help="Next-item loss (default: corrected).")] = None,
    encoder: Annotated[Optional[_Encoder], typer.Option(
        help="Sequence encoder (default: transformer).")] = None,
    negatives: Annotated[Optional[int], typer.Option(
        min=0, help="Uniform negatives per batch for sampled losses (default: 1024).")] = None,
    sasrec: Annotated[bool, typer.Option(
        "--sasrec", help="SASRec: positives only, next-item loss only, no feedback input.")]
    = False,
    max_len: Annotated[Optional[int], typer.Option(min=2, help="History window in events.")]
    = None,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help="Windows per batch (default: 32).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Optimizer steps.")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(
        min=0.01, help="Wall-clock budget in minutes, validations included: the lr schedule is "
        "planned to end inside it and the run stops there. --max-steps or --epochs, when "
        "given, still cap it; without them the budget alone ends the run.")]
    = None,
    epochs: Annotated[Optional[float], typer.Option(
        help="Passes over the data when --max-steps is not given (default: 1, or as many as "
        "--max-minutes allows).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default: 1e-3).")]
    = None,
    device: Annotated[Optional[str], typer.Option(
        help="auto, cpu, cuda or cuda:N (default: auto).")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch.")]
    = None,
    workers: Annotated[Optional[int], typer.Option(min=0, help="Data loader processes.")]
    = None,
    seed: Annotated[Optional[int], typer.Option(min=0, help="Random seed (default: 0).")]
    = None,
    eval_every: Annotated[Optional[int], typer.Option(
        min=0, help="Validate every N steps; the best checkpoint is kept as checkpoints/best.")]
    = None,
    patience: Annotated[Optional[int], typer.Option(
        min=0, help="Stop after N validations without improvement (default: never).")] = None,
    parallel: Annotated[Optional[_Parallel], typer.Option(
        help="Under torchrun: ddp (what auto, the default, takes), fsdp (FSDP2, sharded) or "
        "none.")] = None,
    activation_checkpointing: Annotated[bool, typer.Option(
        "--activation-checkpointing", help="Recompute encoder blocks in backward (long "
        "histories).")] = False,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile each encoder "
                                          "block.")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in OUT from its "
                                         "latest checkpoint, with the config it was saved "
                                         "with (--max-steps and the like may change).")]
    = False,
    init_from: Annotated[Optional[Path], typer.Option(
        "--init-from", help="Start from an earlier run's weights and config (e.g. "
        "yesterday's model on today's dataset); new items get rows in the item table.")]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the model's parameter "
                                          "counts and exit.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Pretrain an ARGUS model (next-item + feedback prediction) on a prepared dataset.

    Checkpoints are written to OUT/checkpoints every --checkpoint-every steps and when the run
    is interrupted (Ctrl-C, SIGTERM); --resume continues exactly where it stopped, with the
    run's saved config (flags that would change what was trained are refused).
    --init-from RUN warm-starts a new run from RUN (its config is the base; flags and
    --config override it).
    TensorBoard logs: OUT/tensorboard. Several processes or machines: launch with torchrun
    (torchrun --nproc_per_node N -m argusrec.cli pretrain ...); --batch-size is per rank.
    """
    from argusrec.checkpoint import Checkpoint
    from argusrec.sequences import PreparedData
    from argusrec.train import TrainConfig, build_model, pretrain as run, sasrec_overrides

    flags = _flags(ctx, TrainConfig, PRETRAIN_FLAGS, preset=preset, loss=loss,
                   negatives=negatives, max_len=max_len, encoder=encoder,
                   batch_size=batch_size, max_steps=max_steps, max_minutes=max_minutes,
                   epochs=epochs, lr=lr,
                   device=device, threads=threads, workers=workers, seed=seed,
                   eval_every=eval_every, patience=patience, parallel=parallel,
                   activation_checkpointing=activation_checkpointing, compile=compile)
    if sasrec:
        flags.update(sasrec_overrides())
    if resume and init_from is not None:
        raise DataError("--resume and --init-from exclude each other",
                        fix="--resume continues OUT; --init-from starts a new run from another")
    start = (Checkpoint.newest_intact(out).config["train"] if resume else
             Checkpoint.open(init_from).config["train"] if init_from is not None else {})
    cfg = TrainConfig(**configs.apply_overrides({**start, **_load_yaml(config)}, flags))
    if dry_run:
        counts = build_model(cfg, PreparedData(data)).parameter_counts()
        typer.echo(f"preset {cfg.preset}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        return
    summary = run(data, out, cfg, resume=resume, init_from=init_from, progress=not quiet)
    typer.echo(f"{'stopped' if summary.stopped_early else 'trained'} at step {summary.steps}: "
               f"loss {summary.final_loss:.4f}, {summary.tokens_per_second:,.0f} tokens/s, "
               f"{summary.seconds:.1f}s; encoder {summary.parameters['encoder']:,} parameters "
               f"-> {out}/checkpoints")


@app.command()
@_friendly
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A run directory or checkpoint.")],
    data: Annotated[Optional[Path], typer.Option(
        help="Prepared dataset (default: the one the model was trained on).")] = None,
    split: Annotated[_Split, typer.Option(help="Period to score.")] = _Split.test,
    which: Annotated[_Which, typer.Option(help="For a run directory: its latest checkpoint or "
                                          "the best one by validation.")] = _Which.latest,
    k: Annotated[str, typer.Option(callback=_int_list(1), help="Cut-offs, comma-separated, "
                                   "each 1 or more.")] = "10,20,50,100",
    exclude_seen: Annotated[bool, typer.Option(
        "--exclude-seen", help="Filter items the user has already interacted with.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Windows per batch.")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
    threads: Annotated[Optional[int], typer.Option(
        min=1, help="CPU threads for torch (default: torch's own choice).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results "
                                                     "as JSON here.")] = None,
    oracle: Annotated[Optional[Path], typer.Option(
        help="The simulator's output directory: also the truth's figures on the same events "
        "and the share of the gap to them the model closes.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Evaluate a checkpoint on test-period events (history from before only).

    Full-catalogue HR/NDCG/MRR/Coverage@K for the next positive item, next-item entropy, and
    feedback log loss / AUC per signal.
    """
    from argusrec.evaluate import evaluate as run, report

    ks: list[int] = k  # the callback parsed it
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    results = run(checkpoint, data, split=split.value, ks=ks, exclude_seen=exclude_seen,
                  batch_size=batch_size, device=device, out_json=json_out, progress=not quiet,
                  which=which.value, oracle=oracle)
    typer.echo(report(results, f"{checkpoint} on {split.value} (seen items "
                                f"{'excluded' if exclude_seen else 'kept'})"))


# The named flags of `argus finetune` and the FinetuneConfig field each sets.
FINETUNE_FLAGS = {
    "lag": "lag", "max_len": "max_len", "min_history": "min_history",
    "max_impressions": "max_impressions", "batch_size": "batch_size", "epochs": "epochs",
    "max_steps": "max_steps", "max_minutes": "max_minutes", "lr": "optim.lr",
    "from_scratch": "from_scratch",
    "device": "device", "threads": "threads", "seed": "seed", "eval_every": "eval_every",
    "patience": "patience", "parallel": "parallel"}


@_command(FINETUNE_FLAGS)
@_friendly
def finetune(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A prepared dataset (`argus prepare`).")],
    pretrained: Annotated[Path, typer.Argument(
        help="A run or checkpoint of `argus pretrain`, or of `argus finetune` to warm-start "
        "(e.g. yesterday's ranker on today's dataset).")],
    out: Annotated[Path, typer.Argument(help="Run directory of the fine-tuned model.")],
    config: Annotated[Optional[Path], typer.Option(
        help="YAML with FinetuneConfig fields (lag, pairs:, lr, ...); flags win." + _SHIPPED)]
    = None,
    lag: Annotated[Optional[int], typer.Option(
        min=0, help="Seconds between the newest event in a user state and the impression "
        "(default: 86400, the daily deployment; 0 = runtime).")] = None,
    max_len: Annotated[Optional[int], typer.Option(
        min=2, help="Encoder window in events (default: the pretrained model's).")] = None,
    min_history: Annotated[Optional[int], typer.Option(
        min=1, help="Skip impressions with fewer events of history (default: 1).")] = None,
    max_impressions: Annotated[Optional[int], typer.Option(
        min=1, help="Impressions per example (default: 512).")] = None,
    pair_window: Annotated[Optional[int], typer.Option(
        min=1, help="Pair impressions shown within this many seconds instead of within a "
        "session.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(
        min=1, help="Windows per step (default: 8).")] = None,
    epochs: Annotated[Optional[float], typer.Option(
        help="Passes (default: 1, or as many as --max-minutes allows).")] = None,
    max_steps: Annotated[Optional[int], typer.Option(min=1, help="Optimizer steps.")] = None,
    max_minutes: Annotated[Optional[float], typer.Option(
        min=0.01, help="Wall-clock budget in minutes, validations included: the lr schedule is "
        "planned to end inside it and the run stops there. --max-steps or --epochs, when "
        "given, still cap it; without them the budget alone ends the run.")]
    = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate (default: 3e-4).")]
    = None,
    from_scratch: Annotated[bool, typer.Option(
        "--from-scratch", help="Ablation: keep the architecture, not the pretrained weights.")]
    = False,
    device: Annotated[Optional[str], typer.Option(
        help="auto, cpu, cuda or cuda:N (default: auto).")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch.")]
    = None,
    seed: Annotated[Optional[int], typer.Option(min=0, help="Random seed (default: 0).")]
    = None,
    eval_every: Annotated[Optional[int], typer.Option(
        min=0, help="Validate (PairAccuracy on the validation period's impressions) every N "
        "steps; the best checkpoint is kept as checkpoints/best.")] = None,
    patience: Annotated[Optional[int], typer.Option(
        min=0, help="Stop after N validations without improvement (default: never).")] = None,
    parallel: Annotated[Optional[_Parallel], typer.Option(
        help="Under torchrun: ddp (default), fsdp (FSDP2, sharded) or none.")] = None,
    resume: Annotated[bool, typer.Option(
        "--resume", help="Continue the fine-tuning run in OUT from its newest intact "
        "checkpoint, with its saved config (PRETRAINED is then not read).")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Fine-tune a pretrained model as a two-tower ranker over impressions, in one causal pass.

    Every impression (a recommendation event with feedback; every rated event when the log has
    no organic/recommendation context) is scored from the user state after the last event at or
    before its time minus --lag. The loss is logistic over pairs of one user's impressions in a
    session that got different feedback, weighted by the grade difference (like vs skip weighs
    more than listen vs skip). Prints PairAccuracy on the validation or test period at the end.

    PRETRAINED may have been trained on an older dataset: new items get rows in the item table.
    When it is itself a fine-tuned run, its fine-tuning config is the base (flags and --config
    override it). The training loop is pretraining's: torchrun (DDP / FSDP2), --resume after
    an interruption, validation with early stopping.
    """
    from argusrec.checkpoint import Checkpoint
    from argusrec.finetune import FinetuneConfig, evaluate_pairs, finetune as run
    flags = _flags(ctx, FinetuneConfig, FINETUNE_FLAGS, lag=lag, max_len=max_len,
                   min_history=min_history, max_impressions=max_impressions,
                   batch_size=batch_size, epochs=epochs, max_steps=max_steps,
                   max_minutes=max_minutes, lr=lr,
                   from_scratch=from_scratch, device=device, threads=threads, seed=seed,
                   eval_every=eval_every, patience=patience, parallel=parallel)
    if pair_window is not None:
        flags.update({"pairs.pair_within": "window", "pairs.pair_window": pair_window})
    source = Checkpoint.newest_intact(out) if resume else Checkpoint.open(pretrained)
    start = source.finetune or {}
    cfg = FinetuneConfig(**configs.apply_overrides({**start, **_load_yaml(config)}, flags))
    summary = run(data, pretrained, out, cfg, resume=resume, progress=not quiet)
    typer.echo(f"fine-tuned {summary.steps} steps over {summary.examples:,} windows with "
               f"{summary.impressions:,} impressions ({summary.pairs_seen:,} pairs seen), "
               f"loss {summary.losses[0]:.4f} -> {summary.final_loss:.4f}, "
               f"{summary.seconds:.1f}s -> {out}/checkpoints")
    from argusrec.sequences import PreparedData

    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, one report
        return
    split = "val" if PreparedData(data).info.counts.split_events.get("val") else "test"
    results = evaluate_pairs(out, split=split, cfg=cfg)
    typer.echo(_pairs_report(results, f"{out} on {split}"))


def _pairs_report(results: dict, title: str) -> str:
    lines = [title, f"  impressions {results['impressions']:,}, pairs {results['pairs']:,}, "
             f"lag {results['lag']} s"]
    for key in ("PairAccuracy", "PairAccuracy/weighted", "oracle/PairAccuracy",
                "oracle/PairAccuracy/weighted"):
        if key in results:
            lines.append(f"  {key:<30} {results[key]:.4f}")
    return "\n".join(lines)


@app.command()
@_friendly
def pairs(
    checkpoint: Annotated[Path, typer.Argument(help="A run directory or checkpoint.")],
    data: Annotated[Optional[Path], typer.Option(
        help="Prepared dataset (default: the one the model was trained on).")] = None,
    split: Annotated[_Split, typer.Option(help="Period to score.")] = _Split.test,
    lag: Annotated[Optional[int], typer.Option(
        min=0, help="Seconds of lag (default: the model's fine-tuning setting, else 86400).")]
    = None,
    oracle: Annotated[Optional[Path], typer.Option(
        help="The simulator's output directory: also report the ground truth's PairAccuracy "
             "(the ceiling).")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results "
                                                     "as JSON here.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """PairAccuracy of a model on test-period impressions: the share of pairs of one user's
    impressions in a session with different feedback that it orders correctly, unweighted and
    weighted by the grade difference."""
    from argusrec.finetune import FinetuneConfig, evaluate_pairs
    from argusrec.sequences import PreparedData

    cfg = None
    if lag is not None:
        cfg = FinetuneConfig(lag=lag)
    results = evaluate_pairs(checkpoint, split=split.value, oracle=oracle, cfg=cfg,
                             data=PreparedData(data) if data else None, progress=not quiet)
    if json_out is not None:
        _write_json(json_out, results)
    typer.echo(_pairs_report(results, f"{checkpoint} on {split.value}"))


RANK_FLAGS = {"loss": "loss", "iterations": "iterations", "vectors": "vectors",
              "threads": "threads", "seeds": "seeds"}


@_command(RANK_FLAGS)
@_friendly
def rank(
    ctx: typer.Context,
    checkpoint: Annotated[Path, typer.Argument(help="A fine-tuned run (`argus finetune`).")],
    config: Annotated[Optional[Path], typer.Option(
        help="YAML with RankConfig fields (loss, iterations, depth, ...); flags win."
        + _SHIPPED)] = None,
    loss: Annotated[Optional[_RankLoss], typer.Option(
        help="CatBoost ranking loss (default: YetiRank); a group is one user's session.")]
    = None,
    iterations: Annotated[Optional[int], typer.Option(
        min=1, help="Boosting rounds (default: 400).")] = None,
    vectors: Annotated[bool, typer.Option(
        "--vectors", help="Also a ranker with the user and item vectors as features.")] = False,
    oracle: Annotated[Optional[Path], typer.Option(
        help="The simulator's output directory: add the true affinity's PairAccuracy.")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CatBoost threads.")] = None,
    seeds: Annotated[Optional[int], typer.Option(
        min=1, max=16, help="Fit each ranker with this many CatBoost seeds and report the "
        "mean (default: 1). One seed's uplift moves by about ±0.3 points on the simulator; "
        "use 3 or more when comparing models.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the results "
                                                     "as JSON here.")] = None,
    cache: Annotated[Optional[Path], typer.Option(
        help="A directory that keeps every CatBoost fit (JSON, keyed by its inputs and "
        "settings): ranking another model of the same log reads the ordinary-feature ranker "
        "from it, and more --seeds fit only the new ones.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Train a CatBoost final ranker on validation-period impressions with ordinary features
    (popularity, like rate, user-item and user-artist counts, recency, track length, context),
    with and without the ARGUS score, and report PairAccuracy on the test period and the
    relative uplift. Needs a dataset prepared with --val-duration."""
    from argusrec.rank import RankConfig, rank as run, rank_report
    flags = _flags(ctx, RankConfig, RANK_FLAGS, loss=loss, iterations=iterations,
                   vectors=vectors, threads=threads, seeds=seeds)
    cfg = RankConfig(**configs.apply_overrides(_load_yaml(config), flags))
    summary = run(checkpoint, cfg=cfg, oracle=oracle, out_json=json_out, progress=not quiet,
                  cache=cache)
    typer.echo(rank_report(summary))


@_command({"history": "history_lengths"})
@_friendly
def ablate(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A prepared dataset with validation and test "
                                         "periods (`argus prepare --val-duration ...`).")],
    out: Annotated[Path, typer.Argument(help="Directory for every variant's runs.")],
    config: Annotated[Optional[Path], typer.Option(
        help="YAML with AblationConfig fields (pretrain:, finetune:, rank:, "
             "history_lengths: ...)." + _SHIPPED)] = None,
    history: Annotated[Optional[str], typer.Option(
        callback=_int_list(2), help="History lengths to compare, comma-separated, each 2 or "
        "more (default: 128,512,2048).")] = None,
    oracle: Annotated[Optional[Path], typer.Option(
        help="The simulator's output directory: add the oracle's PairAccuracy.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Ablations in one command: pretrain + fine-tune + rank for each history length, and
    fine-tuning without pretraining and a short fine-tuning at the base length, each as the
    final ranker's PairAccuracy uplift. Writes OUT/ablation.json."""
    from argusrec.ablation import AblationConfig, ablate as run, ablation_report

    flags = _flags(ctx, AblationConfig, {"history": "history_lengths"}, history=history)
    cfg = AblationConfig(**configs.apply_overrides(_load_yaml(config), flags))
    result = run(data, out, cfg, oracle=oracle, progress=not quiet)
    typer.echo(ablation_report(result))


@app.command()
@_friendly
def bench(
    dataset: Annotated[str, typer.Argument(
        help="ml-1m, beauty, ml-100k, simulator, or the path of an event file (with "
             "--format).")],
    out: Annotated[Path, typer.Option(help="Directory for the prepared data, every run, and "
                                      "results.md / results.json.")] = Path("runs/bench"),
    format: Annotated[Optional[str], typer.Option(
        "--format", help="Format of a file given by path (sasrec and s3rec files use "
                         "leave-one-out, others a temporal split).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option(
        help="Directory of the named datasets: DIR/ml-1m/ml-1m.txt, "
             "DIR/amazon-beauty/Beauty.txt, DIR/ml-100k/ml-100k.inter (default: "
             "$ARGUS_DATA_DIR, else a checkout's ../shared/data).")] = None,
    encoders: Annotated[str, typer.Option(help="Comma-separated: argus, hstu, sasrec.")]
    = "argus,hstu,sasrec",
    losses: Annotated[str, typer.Option(
        help="Comma-separated: full, logq, corrected; or auto: each encoder's loss chosen on "
             "validation (the first seed of every loss, then the chosen loss's other seeds).")]
    = "auto",
    seeds: Annotated[int, typer.Option(
        min=1, help="Seeds per configuration (mean and spread).")] = 3,
    max_steps: Annotated[Optional[int], typer.Option(
        min=1, help="Step cap per run (default: the size class's).")] = None,
    budget: Annotated[Optional[float], typer.Option(
        min=0, help="Wall-clock minutes per run, validations included: each run's lr schedule "
             "is planned to end inside it (default: the size class's, 20 for ml-1m and "
             "beauty; 0: none, the step cap alone).")] = None,
    patience: Annotated[int, typer.Option(
        min=0, help="Validations without improvement before a run stops.")] = 4,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch.")]
    = None,
    jobs: Annotated[int, typer.Option(
        min=1, help="Runs trained at once, in separate processes (a GPU or many cores); each gets "
             "--threads or an equal share of the cores.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Run the benchmark suite (encoders x losses x seeds) on one dataset.

    Each run is pretrained with the size class's default configuration inside a time budget
    (--budget), stopped early on validation and scored on test: HR and NDCG at 10 and 20,
    training time, tokens/s and parameters, mean ± std over seeds. By default each encoder's
    loss is chosen on validation: 15 runs, about 2.6 hours with --jobs 2 on 2 cores.
    Runs finished before with the same configuration are
    reused, so rerunning the command completes an interrupted suite. For ml-1m and beauty the
    published numbers are printed beside ours."""
    from argusrec.bench import AUTO, ENCODERS, LOSSES, markdown, run_suite

    enc = [e.strip() for e in encoders.split(",") if e.strip()]
    los = [x.strip() for x in losses.split(",") if x.strip()]
    bad = [e for e in enc if e not in ENCODERS] + [x for x in los
                                                   if x not in LOSSES and los != [AUTO]]
    if bad:
        raise DataError(f"unknown encoder or loss: {', '.join(bad)}",
                        fix=f"encoders: {', '.join(ENCODERS)}; losses: {', '.join(LOSSES)}, "
                        f"or {AUTO} alone")
    result = run_suite(dataset, out, fmt=format, encoders=enc, losses=los,
                       seeds=tuple(range(seeds)), max_steps=max_steps, budget=budget,
                       patience=patience,
                       threads=threads, jobs=jobs, data_dir=data_dir, progress=not quiet)
    typer.echo(markdown(result))


@_command({"tokens": "tokens"})
@_friendly
def scaling(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A prepared dataset with a test period.")],
    out: Annotated[Path, typer.Argument(help="Directory for the runs, scaling.json and "
                                        "scaling.png.")],
    config: Annotated[Optional[Path], typer.Option(
        help="YAML with ScalingConfig fields (sizes:, tokens, batch_size, max_len, train:)."
        + _SHIPPED)] = None,
    tokens: Annotated[Optional[int], typer.Option(
        min=1, help="Training tokens per size (default: 2,000,000).")] = None,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads for torch.")]
    = None,
    quiet: Annotated[bool, typer.Option(help="No progress bars.")] = False,
) -> None:
    """Train several model sizes for the same number of tokens, plot test next-item and
    feedback entropy against encoder parameters (log axis) and fit entropy = a + b log10(N),
    the log-linear trend the ARGUS paper reports."""
    from argusrec.scaling import ScalingConfig, run_scaling

    flags = _flags(ctx, ScalingConfig, {"tokens": "tokens"}, tokens=tokens)
    cfg = ScalingConfig(**configs.apply_overrides(_load_yaml(config), flags))
    result = run_scaling(data, out, cfg, threads=threads, progress=not quiet)
    for row in result["rows"]:
        typer.echo(f"{row['size']:<10} {row['encoder_parameters']:>12,} parameters  next-item "
                   f"entropy {row['entropy_next_item']:.4f}  feedback entropy "
                   f"{row['entropy_feedback']:.4f}")
    for key, fit in result["fit"].items():
        typer.echo(f"fit {key}: {fit['a']:.4f} {fit['b']:+.4f} log10(N), R^2 {fit['r2']:.3f}")
    typer.echo(f"-> {out / 'scaling.png'}")


@_command({"groups": "groups"})
@_friendly
def study(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="A prepared dataset with validation and test "
                                         "periods (`argus prepare --val-duration ...`).")],
    out: Annotated[Path, typer.Argument(help="Directory for every run, study.json, study.md "
                                        "and the plots.")],
    oracle: Annotated[Optional[Path], typer.Option(
        help="The simulator's output directory: ceilings from its truth, and the share of "
        "the gap to them each arm closes.")] = None,
    config: Annotated[Optional[Path], typer.Option(
        help="YAML with StudyConfig fields (groups, seeds, pretrain:, finetune:, rank:, "
        "sizes, history_lengths)." + _SHIPPED)] = None,
    groups: Annotated[Optional[str], typer.Option(
        help="Comma-separated groups: objectives, encoders, sizes, history, finetune, lag "
        "(default: all).")] = None,
    seeds: Annotated[Optional[int], typer.Option(
        min=1, help="Seeds per arm, 0..N-1 (default: 3).")] = None,
    jobs: Annotated[int, typer.Option(
        min=1, help="Runs at once, in separate processes; each gets --threads or an equal "
        "share of the cores.")] = 1,
    threads: Annotated[Optional[int], typer.Option(min=1, help="CPU threads per run.")]
    = None,
    quiet: Annotated[bool, typer.Option(help="No progress messages.")] = False,
) -> None:
    """The ARGUS paper's findings on one dataset: every arm pretrained (or not), fine-tuned
    to convergence on validation and put under the same CatBoost ranker, for several seeds.

    Groups: pretraining objectives (ARGUS, without the feedback head, without context, full
    ARGUS, SASRec, no pretraining), encoders at equal parameters (transformer, HSTU), four
    model sizes at equal tokens, history lengths at equal tokens and at equal steps, short
    fine-tuning, lag 0 against one day. Writes OUT/study.md (mean ± spread, ties called),
    OUT/study.json and OUT/study-*.png; a rerun reuses every finished run.
    """
    from argusrec.study import StudyConfig, markdown, study as run

    named = {"groups": [g.strip() for g in groups.split(",") if g.strip()]} if groups else {}
    flags = _flags(ctx, StudyConfig, {"groups": "groups"}, **named)
    if seeds is not None:
        flags["seeds"] = list(range(seeds))
    cfg = StudyConfig(**configs.apply_overrides(_load_yaml(config), flags))
    result = run(data, out, cfg, oracle=oracle, jobs=jobs, threads=threads, progress=not quiet)
    typer.echo(markdown(result))


_Verb = _choice("Verb", "simulate", "prepare", "pretrain", "finetune", "rank", "ablate",
                "scaling", "study")


@app.command("config")
@_friendly
def show_config(
    verb: Annotated[_Verb, typer.Argument(help="The verb whose config to print.")],
    preset: Annotated[Optional[_Preset], typer.Option(
        help="pretrain: the model size whose values the model's null fields take.")] = None,
) -> None:
    """Print a verb's config as YAML: every field with its default and what it does.

    Save it, change what you need and pass it back with --config; any field is also a flag by
    its dotted path (`argus pretrain DATA OUT --optim.lr 3e-4 --model.n_layers 4`).
    """
    from argusrec.ablation import AblationConfig
    from argusrec.finetune import FinetuneConfig
    from argusrec.model import PRESETS
    from argusrec.prepare import PrepareConfig
    from argusrec.rank import RankConfig
    from argusrec.scaling import ScalingConfig
    from argusrec.simulate import SimulatorConfig
    from argusrec.study import StudyConfig
    from argusrec.train import TrainConfig

    kind = {"simulate": SimulatorConfig, "prepare": PrepareConfig, "pretrain": TrainConfig,
            "finetune": FinetuneConfig, "rank": RankConfig, "ablate": AblationConfig,
            "scaling": ScalingConfig, "study": StudyConfig}[verb.value]
    config = TrainConfig(preset=preset.value) if preset is not None else kind()
    notes: tuple[str, ...] = ()
    if verb.value == "pretrain":
        sized = ", ".join(f"{k} {v}" for k, v in PRESETS[config.preset].items())
        notes = (f"model: a null field takes the preset's value (preset {config.preset}: "
                 f"{sized}; every other field its ModelConfig default).",)
    typer.echo(config_template(config, f"argus {verb.value} --config FILE: "
                                       f"{kind.__name__}", notes), nl=False)


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    tmp.replace(path)


@app.command()
@_friendly
def demo(
    workdir: Annotated[Path, typer.Option(help="Where the demo writes its files: a new or "
                                          "empty directory, or a previous demo's (replaced).")]
    = Path("runs/demo"),
    users: Annotated[Optional[int], typer.Option(
        min=1, help="Simulated users (default: the simulator's default size).")] = None,
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = 0,
) -> None:
    """Run the pipeline on the built-in simulator (no downloads).

    simulate -> prepare (Yambda protocol) -> pretrain a small ARGUS model -> evaluate it on
    the test day -> fine-tune it as a two-tower ranker (PairAccuracy against the simulator's
    ceiling) -> export a snapshot -> serve one request. About a minute on 2 cores.
    """
    from argusrec.demo import run_demo

    run_demo(workdir, users=users, seed=seed)


def _register_deployment() -> None:
    from argusrec.cli_deploy import register

    register(app, _friendly)


_register_deployment()  # `argus export` and `argus serve`


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
