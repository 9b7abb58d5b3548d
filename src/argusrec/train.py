"""`argus pretrain`: the training loop for ARGUS next-item + feedback pretraining.

AdamW with linear warmup and cosine decay, gradient clipping and accumulation, bf16 autocast
where the device supports it, a progress bar with loss and tokens/s, and TensorBoard logs.
The batch order is a pure function of (seed, epoch), and checkpoints carry the model, the
optimizer, the schedule, every random state and the position in the data, so `--resume`
continues exactly where an interrupted run stopped (the loss curve matches; a test).

Checkpoints are written by argusrec.checkpoint (weights, resume state, every stage's config
and the run's vocabulary); SIGTERM and SIGINT save one before stopping. `--resume` takes the
run's saved config (:func:`resume_config`), and `--init-from` a new run's first weights from
another run, carried to this dataset's vocabulary (:func:`warm_start`).
"""

from __future__ import annotations

import logging
import math
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator)
from tqdm.auto import tqdm

from argusrec.checkpoint import Checkpoint, mark_best, save_checkpoint
from argusrec.device import resolve_device
from argusrec.errors import DataError
from argusrec.evaluate import evaluate_model
from argusrec.loader import SequenceDataset, collate
from argusrec.model import PRESETS, ArgusModel, DataSpec, ModelConfig, model_config
from argusrec.objective import ObjectiveConfig, PretrainObjective
from argusrec.parallel import (all_reduce, barrier, full_state, init_world, load_full_state,
                               parallelize, rank_device)
from argusrec.sequences import PreparedData
from argusrec.vocab import Vocabulary, adapt_state

log = logging.getLogger(__name__)



class OptimConfig(BaseModel):
    """Optimizer and schedule."""

    model_config = ConfigDict(extra="forbid")

    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a share of the peak")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay on matrices")
    betas: tuple[float, float] = Field((0.9, 0.98), description="AdamW betas")
    warmup_steps: int = Field(100, ge=0, description="linear warmup steps")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 = no clipping")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")


class TrainConfig(BaseModel):
    """Everything `argus pretrain` needs; saved resolved inside every checkpoint."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field("debug", description="model size preset (debug, 3m, 32m, 126m, 1b)")
    model: dict[str, Any] = Field(default_factory=dict, description="ModelConfig overrides")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    batch_size: int = Field(32, ge=1, description="windows per micro-batch")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; None = epochs")
    epochs: float = Field(1.0, gt=0, description="passes over the training windows "
                          "(when max_steps is None)")
    positives_only: bool = Field(False, description="train on positive events only (SASRec)")
    windows_per_user: int = Field(0, ge=0, description="train on each user's most recent "
                                  "windows only, at most this many; 0 = every window")
    num_workers: int = Field(0, ge=0, description="data loader worker processes")
    group_by_length: bool = Field(True, description="batch windows of similar length together "
                                  "(less padding; order still random per epoch). Random "
                                  "batches (false) cost ~20% throughput on ML-1M (2 threads) but reached "
                                  "a better validation NDCG on ML-1M and Beauty")
    seed: int = Field(0, ge=0, description="seed of initialisation, data order and sampling")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    bf16: bool | None = Field(None, description="bf16 autocast; None = on where supported "
                              "(CUDA with bf16)")
    threads: int | None = Field(None, ge=1, description="CPU threads for torch")
    log_every: int = Field(10, ge=1, description="steps between TensorBoard points")
    checkpoint_every: int = Field(500, ge=1, description="steps between checkpoints")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept (the best one "
                                  "is kept as well)")
    eval_every: int = Field(0, ge=0, description="steps between validation runs; 0 = none")
    eval_metric: str = Field("NDCG@10", description="validation metric to maximise")
    eval_max_users: int | None = Field(None, ge=1, description="validate on the first users "
                                       "only (faster); None = all")
    patience: int = Field(0, ge=0, description="stop after this many validations without "
                          "improvement; 0 = never stop early")
    parallel: Literal["auto", "none", "ddp", "fsdp"] = Field(
        "auto", description="under torchrun: DDP (auto), FSDP2 (fully_shard per block, then "
        "the root) or none; batch_size is per rank, the global batch is world_size times it")
    activation_checkpointing: bool = Field(False, description="recompute each encoder block "
                                           "in the backward pass (long histories)")
    compile: bool = Field(False, description="torch.compile each encoder block")
    nonfinite_patience: int = Field(10, ge=1, description="a step whose loss or gradients are "
                                    "not finite is skipped with a warning; this many in a row "
                                    "stop the run with an error (the last good checkpoint "
                                    "stays)")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        return preset

    @field_validator("model")
    @classmethod
    def _model_resolves(cls, model: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Resolve the ModelConfig now, so a bad model field (a typo, n_heads that does not
        divide d_model) fails when the config is loaded, not when the model is built."""
        if "preset" in info.data:  # else the unknown preset is reported on its own
            try:
                model_config(info.data["preset"], **model)
            except ValidationError as e:
                raise ValueError("; ".join(
                    ".".join(str(p) for p in err["loc"]) + (": " if err["loc"] else "")
                    + err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
        return model

    def resolved_model(self) -> ModelConfig:
        return model_config(self.preset, **self.model)


@dataclass
class TrainSummary:
    out: str
    steps: int
    tokens: int
    seconds: float
    final_loss: float
    losses: list[float] = field(default_factory=list)
    parameters: dict[str, int] = field(default_factory=dict)
    stopped_early: bool = False
    best_value: float = -math.inf
    best_step: int | None = None

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def apply_overrides(fields: dict, overrides: dict[str, Any]) -> dict:
    """A copy of config ``fields`` with dotted keys set: {"model.max_len": 200} sets
    fields["model"]["max_len"]. Used for command-line flags over YAML and for presets."""
    import copy

    out = copy.deepcopy(fields)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def sasrec_overrides() -> dict[str, Any]:
    """SASRec as a configuration of the same code: positives only, next-item loss only, and no
    feedback or context input (the transformer sees the item sequence alone)."""
    return {"positives_only": True, "objective.nip_targets": "positive",
            "objective.feedback_weight": 0.0, "model.use_feedback": False,
            "model.feedback_head": False, "model.use_context": False}


def build_model(cfg: TrainConfig, data: PreparedData) -> ArgusModel:
    """A fresh model for ``data``, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    return ArgusModel(cfg.resolved_model(), DataSpec.from_prepared(data))


def _optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": other, "weight_decay": 0.0}],
                             lr=cfg.lr, betas=cfg.betas)


def lr_factor(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warmup to 1, then cosine decay to ``min_lr_ratio`` at ``total``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class BatchOrder:
    """Deterministic batches: epoch e shuffles window indices with seed (seed, e).

    With ``lengths``, windows are grouped by length: each run of ``group`` batches' worth of
    shuffled windows is sorted by length and cut into batches, and the batches are shuffled.
    Batches then hold windows of similar length, so little compute goes to padding (on ML-1M
    nearly half of a random batch is padding), while every epoch still sees a new order.
    """

    def __init__(self, n: int, batch_size: int, seed: int, lengths: np.ndarray | None = None,
                 group: int = 64) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.lengths, self.group = lengths, group
        self.per_epoch = max(1, n // batch_size)  # drop the ragged tail: equal-size batches

    def epoch(self, e: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
        perm = torch.randperm(self.n, generator=g).numpy()[: self.per_epoch * self.batch_size]
        if self.lengths is not None:
            span = self.group * self.batch_size
            for lo in range(0, len(perm), span):
                part = perm[lo:lo + span]
                perm[lo:lo + span] = part[np.argsort(-self.lengths[part], kind="stable")]
        batches = perm.reshape(self.per_epoch, self.batch_size)
        if self.lengths is not None:
            batches = batches[torch.randperm(self.per_epoch, generator=g).numpy()]
        return batches.tolist()

    def from_position(self, micro: int):
        """Batches from global micro-batch number ``micro`` on, forever."""
        e, i = divmod(micro, self.per_epoch)
        while True:
            yield from self.epoch(e)[i:]
            e, i = e + 1, 0


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Fields `--resume` may change: they do not alter what was trained so far. Everything else
# comes from the run's saved config.
# The topology ones (parallel, accumulation) let a run saved on N ranks resume on M.
RESUMABLE = ("max_steps", "epochs", "eval_every", "patience", "checkpoint_every",
             "keep_checkpoints", "log_every", "threads", "num_workers", "device",
             "eval_max_users", "nonfinite_patience", "parallel", "activation_checkpointing", "compile",
             "optim.grad_accum")


def resume_config(ckpt: Checkpoint, given: TrainConfig | None) -> TrainConfig:
    """The config ``ckpt`` was saved with, with the changes of ``given`` that are safe to
    apply (:data:`RESUMABLE`); any other difference is an error naming the fields."""
    out = ckpt.path.parent.parent
    saved = TrainConfig(**ckpt.config["train"])
    if given is None:
        return saved
    old, new = _flat(saved.model_dump()), _flat(given.model_dump())
    changed = {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}
    refused = sorted(changed - set(RESUMABLE))
    if refused:
        raise DataError(
            "--resume continues the run as it was saved; these options differ from it: "
            + ", ".join(f"{n} ({old.get(n)!r} saved, {new.get(n)!r} given)" for n in refused),
            path=out, fix="leave them out (the saved config is used), or start a new run, "
            "e.g. with --init-from to begin from this one's weights")
    return TrainConfig(**apply_overrides(saved.model_dump(), {n: new[n] for n in changed}))


def _flat(fields: dict, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}; ``model`` overrides stay one value."""
    out = {}
    for key, value in fields.items():
        if isinstance(value, dict) and key != "model":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def warm_start(model: ArgusModel, run: str | Path, data: PreparedData) -> None:
    """Load an earlier run's weights into ``model`` (built for ``data``), carried to ``data``'s
    vocabulary by original id (argusrec.vocab)."""
    source = Checkpoint.open(run)
    state = adapt_state(source.weights(), source.vocabulary(), Vocabulary.of_data(data),
                        model)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise DataError("the earlier run's architecture differs from this one: "
                        + " ".join(first[1:3] or first[:1]), path=source.path,
                        fix="leave the model options out: --init-from uses the earlier run's "
                            "architecture unless --config or flags change it") from None


def validate(model: ArgusModel, data: PreparedData, cfg: TrainConfig) -> float:
    """The validation metric of the model as it is now (it goes back to training mode)."""
    ks = sorted({10, int(cfg.eval_metric.split("@")[1]) if "@" in cfg.eval_metric else 10})
    results = evaluate_model(model, data, split="val", ks=ks, positives_only=cfg.positives_only,
                             max_users=cfg.eval_max_users)
    model.train()
    if cfg.eval_metric not in results:
        raise DataError(f"validation has no metric {cfg.eval_metric!r}",
                        fix="use one of " + ", ".join(sorted(results)))
    return float(results[cfg.eval_metric])


def _skip_nonfinite(count: int, step: int, loss: float, cfg: TrainConfig, out: Path,
                    bar) -> int:
    """Warn of a skipped step; raise when ``count`` in a row reach the patience."""
    log.warning("step %d: the loss (%s) or its gradients are not finite; the step is skipped "
                "(%d in a row)", step, f"{loss:.4g}", count)
    if count >= cfg.nonfinite_patience:
        raise DataError(
            f"training diverged: {count} steps in a row had a non-finite loss or gradients "
            f"(last at step {step}); the last good checkpoint is kept", path=out,
            fix="lower --lr (or raise optim.warmup_steps / set optim.grad_clip), then "
                "--resume or start again from the last good checkpoint with --init-from")
    return count


def _check_finite(weights: dict[str, torch.Tensor], step: int, out: Path) -> None:
    """Refuse to checkpoint non-finite weights: a bad checkpoint must never replace, or prune,
    the last good one."""
    broken = [k for k, v in weights.items() if v.is_floating_point() and
              not bool(torch.isfinite(v).all())]
    if broken:
        raise DataError(f"the weights are not finite at step {step} ({', '.join(broken[:3])}"
                        f"{' ...' if len(broken) > 3 else ''}); no checkpoint was written and "
                        "the last good one is kept", path=out,
                        fix="lower --lr, then resume from the last good checkpoint")


class _StopFlag:
    """Set by SIGTERM / SIGINT; the loop saves a checkpoint and stops after the current step."""

    def __init__(self) -> None:
        self.set = False
        self._old = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.set = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def pretrain(data_path: str | Path, out: str | Path, cfg: TrainConfig | None = None, *,
             resume: bool = False, init_from: str | Path | None = None,
             progress: bool = True, stop_after: int | None = None) -> TrainSummary:
    """Pretrain an ARGUS model on a prepared dataset; checkpoints and logs go to ``out``.

    Under torchrun every rank calls this: each takes every world_size-th micro-batch of one
    global order (no two ranks see the same window), gradients are averaged by DDP or FSDP2
    (:mod:`argusrec.parallel`), and rank 0 writes checkpoints and logs. ``stop_after`` ends the
    run after that many optimizer steps as if interrupted (a checkpoint is written), which
    tests use to check that ``resume`` is exact.

    ``resume`` continues the run in ``out`` with the config it was saved with (``cfg`` may
    change only what :data:`RESUMABLE` lists, e.g. the step budget). ``init_from`` starts
    from an earlier run's weights instead of random ones, carried to this dataset's
    vocabulary (new items, context values and signals get rows; argusrec.vocab).
    """
    import itertools


    out = Path(out)
    if resume:
        ckpt = Checkpoint.newest_intact(out)
        cfg = resume_config(ckpt, cfg)
    cfg = cfg or TrainConfig()
    data = PreparedData(data_path)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = init_world(cfg.device)
    device = rank_device(world, resolve_device(cfg.device))
    model_cfg = cfg.resolved_model()
    dataset = SequenceDataset(data, split="train", max_len=model_cfg.max_len,
                              positives_only=cfg.positives_only,
                              windows_per_user=cfg.windows_per_user or None)
    if len(dataset) < cfg.batch_size * world.size:
        raise DataError(f"{len(dataset)} training windows, fewer than one batch of "
                        f"{cfg.batch_size} per rank x {world.size}", path=data.path,
                        fix="lower --batch-size")
    lengths = dataset.windows[:, 3] - dataset.windows[:, 2] if cfg.group_by_length else None
    order = BatchOrder(len(dataset), cfg.batch_size, cfg.seed, lengths)
    per_step = cfg.optim.grad_accum * world.size  # micro-batches of the global order per step
    total = cfg.max_steps or max(1, int(cfg.epochs * order.per_epoch / per_step))

    model = build_model(cfg, data)
    if init_from is not None and not resume:
        warm_start(model, init_from, data)
    model = model.to(device)
    counts = torch.from_numpy(data.item_counts(positives=cfg.objective.nip_targets ==
                                               "positive" or cfg.positives_only)).float()
    objective = PretrainObjective(cfg.objective, model, counts).to(device)
    bf16 = cfg.bf16 if cfg.bf16 is not None else (
        device.type == "cuda" and torch.cuda.is_bf16_supported())
    wrapped = parallelize(model, world, mode=cfg.parallel,
                          activation_checkpointing=cfg.activation_checkpointing,
                          compile=cfg.compile, bf16=bf16)
    optimizer = _optimizer(model, cfg.optim)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer,
                                                  lambda s: lr_factor(s, total, cfg.optim))
    step, micro = 0, 0
    if resume:
        state = ckpt.resume_state()
        load_full_state(wrapped, ckpt.weights(), optimizer, state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, micro = state["step"], state["micro"]
        if step >= total:
            raise DataError(f"the run is already complete: step {step} of {total}", path=out,
                            fix=f"pass --max-steps above {step} to train it longer")
    elif (out / "checkpoints").exists():
        raise DataError("this run directory already has checkpoints", path=out,
                        fix="pass --resume to continue it, or choose a new directory")
    barrier(world)  # nobody creates the run directory before everybody checked it
    if world.main:
        out.mkdir(parents=True, exist_ok=True)
    if world.distributed:  # dropout and negatives differ per rank; the order does not
        torch.manual_seed(cfg.seed * 7919 + world.rank)

    from torch.utils.data import DataLoader
    from torch.utils.tensorboard import SummaryWriter

    # The loader gets its own generator: creating its iterator must not draw from the global
    # RNG, whose state a resumed run restores (dropout and negative sampling use it).
    mine = itertools.islice(order.from_position(micro), world.rank, None, world.size)
    loader = DataLoader(dataset, batch_sampler=mine, collate_fn=collate,
                        num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))
    batches = iter(loader)
    if resume and not world.distributed:
        _set_rng_state(state["rng"])
    writer = (SummaryWriter(str(out / "tensorboard"), purge_step=step + 1 if resume else None)
              if world.main else None)
    summary = TrainSummary(out=str(out), steps=step, tokens=0, seconds=0.0, final_loss=math.nan,
                           parameters=model.parameter_counts())
    wrapped.train()
    stale = nonfinite = 0
    if resume:  # early-stopping state continues too
        summary.best_value = state.get("best_value", -math.inf)
        summary.best_step, stale = state.get("best_step"), state.get("stale", 0)
    started = time.perf_counter()
    bar = tqdm(total=total, initial=step, desc="pretrain", unit="step",
               disable=not (progress and world.main), dynamic_ncols=True)
    try:
        with _StopFlag() as stop:
            while step < total:
                loss_sum, tokens, metrics = 0.0, 0, {}
                for _ in range(cfg.optim.grad_accum):
                    batch = next(batches).to(device, non_blocking=True)
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                        result = objective(model, batch, forward=wrapped)
                    (result.loss / cfg.optim.grad_accum).backward()
                    loss_sum += float(result.loss.detach()) / cfg.optim.grad_accum
                    tokens += int(batch.mask.sum())
                    metrics = result.metrics
                    micro += world.size
                # with grad_clip 0 the norm is only measured (clipping to infinity is a no-op)
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(),
                                                      cfg.optim.grad_clip or math.inf)
                bad = not (math.isfinite(loss_sum) and bool(torch.isfinite(norm)))
                bad = bool(all_reduce(bad, world, op="max"))
                if bad:
                    nonfinite = _skip_nonfinite(nonfinite + 1, step + 1, loss_sum, cfg, out,
                                                bar)
                else:
                    optimizer.step()
                    nonfinite = 0
                with warnings.catch_warnings():  # a skipped first step is not a misordering
                    warnings.simplefilter("ignore", UserWarning)
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                if world.distributed:
                    loss_sum = all_reduce(loss_sum, world) / world.size
                    tokens = int(all_reduce(tokens, world))
                summary.tokens += tokens
                summary.losses.append(loss_sum)
                elapsed = time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.4f}",
                                tok_s=f"{summary.tokens / max(elapsed, 1e-9):,.0f}")
                if writer is not None and (step % cfg.log_every == 0 or step == total):
                    writer.add_scalar("train/loss", loss_sum, step)
                    writer.add_scalar("train/lr", scheduler.get_last_lr()[0], step)
                    writer.add_scalar("train/temperature", float(model.temperature.detach()), step)
                    for k, v in metrics.items():
                        writer.add_scalar(f"train/{k}", v, step)
                interrupted = stop.set or (stop_after is not None and step >= stop_after)
                interrupted = bool(all_reduce(interrupted, world, op="max"))
                improved = patience_out = False
                if cfg.eval_every and (step % cfg.eval_every == 0 or step == total):
                    value = validate(model, data, cfg)  # every rank: FSDP gathers together
                    wrapped.train()
                    if writer is not None:
                        writer.add_scalar(f"val/{cfg.eval_metric}", value, step)
                        bar.write(f"step {step}: val {cfg.eval_metric} {value:.4f}")
                    improved = value > summary.best_value
                    if improved:
                        summary.best_value, summary.best_step, stale = value, step, 0
                    else:
                        stale += 1
                        patience_out = bool(cfg.patience) and stale >= cfg.patience
                if (step % cfg.checkpoint_every == 0 or step == total or interrupted or improved
                        or patience_out):
                    model_state, optim_state = full_state(wrapped, optimizer)  # collective
                    _check_finite(model_state, step, out)
                    if world.main:
                        path = save_checkpoint(
                            out, step=step, weights=model_state, data=data,
                            keep=cfg.keep_checkpoints,
                            configs={"train": cfg.model_dump(),
                                     "model": cfg.resolved_model().model_dump()},
                            state={"optimizer": optim_state,
                                   "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                                   "micro": micro, "best_value": summary.best_value,
                                   "best_step": summary.best_step, "stale": stale,
                                   "world_size": world.size})
                        if improved:
                            mark_best(out, path, cfg.eval_metric, summary.best_value)
                    barrier(world)
                if interrupted or patience_out:
                    summary.stopped_early = True
                    break
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    summary.steps = step
    summary.seconds = time.perf_counter() - started
    summary.final_loss = summary.losses[-1] if summary.losses else math.nan
    return summary
