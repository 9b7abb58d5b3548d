"""One training loop for every stage: pretraining and fine-tuning differ in data, heads and
loss, not in how a step, a checkpoint, a resume or a parallel wrapper works.

:func:`fit` takes a model, a :class:`Task` (the stage's dataset, how a batch becomes a loss,
how to validate, what configs to save) and the loop's settings, and carries: deterministic
batches (a pure function of seed and epoch, so a resume continues exactly), gradient
accumulation, bf16 autocast, clipping, skipping non-finite steps, TensorBoard logging,
validation with early stopping and a ``best`` checkpoint, a wall-clock budget that plans the
schedule's length (``max_minutes``), atomic checkpoints, SIGTERM/SIGINT, resume, and DDP /
FSDP2 applied from outside the model (argusrec.parallel) under torchrun.
Each rank takes every world_size-th micro-batch of one global order (no two ranks see the
same example), and rank 0 writes logs and consolidated checkpoints; in the sharded format
(state too large for one host) every rank writes its own shards (argusrec.checkpoint).
"""

from __future__ import annotations

import itertools
import logging
import math
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from argusrec.checkpoint import (Checkpoint, checkpoint_format, mark_best, save_checkpoint,
                                 save_sharded_checkpoint)
from argusrec.errors import DataError
from argusrec.optim import OptimConfig, build_optimizer, build_schedule
from argusrec.parallel import (World, all_reduce, barrier, full_state, load_full_state,
                               load_sharded_state, local_part, parallelize, sharded_state)
from argusrec.sequences import PreparedData

# The loop's clock, one name so that tests can replace it without touching time.perf_counter.
clock = time.perf_counter

log = logging.getLogger(__name__)
OPTIMIZER_SLOTS = 2  # AdamW keeps two tensors per parameter (exp_avg, exp_avg_sq)


@dataclass(frozen=True)
class Loop:
    """The loop's settings, which both stages' configs carry under these names."""

    batch_size: int
    max_steps: int | None
    epochs: float | None  # None: one pass, or under max_minutes as many as it allows
    seed: int
    optim: OptimConfig
    num_workers: int = 0
    group_by_length: bool = True
    bf16: bool | None = None
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    checkpoint_format: str = "auto"
    eval_every: int = 0
    eval_metric: str = "NDCG@10"
    patience: int = 0
    parallel: str = "auto"
    activation_checkpointing: bool = False
    compile: bool = False
    nonfinite_patience: int = 10
    max_minutes: float | None = None

    @classmethod
    def of(cls, cfg: Any) -> "Loop":
        """The settings of a stage's config (TrainConfig, FinetuneConfig); one a stage does
        not carry (fine-tuning has no checkpoint_format) keeps the default here."""
        return cls(**{name: getattr(cfg, name) for name in cls.__dataclass_fields__
                      if hasattr(cfg, name)})


def resumed_config(saved: Any, given: Any, resumable: tuple[str, ...], out: Path) -> Any:
    """A stage's config as it was saved, with the changes of ``given`` that are safe to apply
    on resume (the dotted names in ``resumable``, e.g. the step budget); any other difference
    is an error naming the fields. ``saved`` and ``given`` are the same pydantic class."""
    if given is None:
        return saved
    old, new = _flat(saved.model_dump()), _flat(given.model_dump())
    changed = {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}
    refused = sorted(changed - set(resumable))
    if refused:
        raise DataError(
            "--resume continues the run as it was saved; these options differ from it: "
            + ", ".join(f"{n} ({old.get(n)!r} saved, {new.get(n)!r} given)" for n in refused),
            path=out, fix="leave them out (the saved config is used), or start a new run, "
            "e.g. with --init-from to begin from this one's weights")
    fields = saved.model_dump()
    for name in changed:
        node = fields
        *parents, leaf = name.split(".")
        for key in parents:
            node = node[key]
        node[leaf] = new[name]
    return type(saved)(**fields)


def _flat(fields: dict, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr": 1}} -> {"optim.lr": 1}; a ``model`` dict of overrides stays one
    value."""
    out = {}
    for key, value in fields.items():
        if isinstance(value, dict) and key != "model":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


@dataclass
class StepResult:
    """One micro-batch's loss (a scalar tensor to backpropagate), how many tokens it covered,
    and scalars to log (summed over the run too, e.g. pairs seen)."""

    loss: Tensor
    tokens: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Task:
    """What one stage gives the loop.

    name: the progress bar's label; log_prefix: TensorBoard's (train/..., finetune/...).
    dataset, collate: the examples and how a list of them becomes a batch (with ``.to``).
    lengths: (N,) example lengths for length-grouped batches, or None.
    step: (model, wrapped, batch) -> StepResult; ``wrapped`` is the parallel wrapper, through
        which the forward pass must go.
    validate: model -> the validation metric (higher is better), or None.
    configs: the resolved configs to save in every checkpoint, by stage name.
    scalars: extra TensorBoard scalars of the model at a log step (lr is logged anyway).
    reseed: a seed for the global RNG just before the loop (fine-tuning's dropout); None
        keeps the caller's RNG state (pretraining seeds it when it builds the model).
    """

    name: str
    log_prefix: str
    dataset: Any
    collate: Callable
    lengths: np.ndarray | None
    step: Callable[[nn.Module, nn.Module, Any], StepResult]
    validate: Callable[[nn.Module], float] | None
    configs: dict[str, dict]
    scalars: Callable[[nn.Module], dict[str, float]] | None = None
    reseed: int | None = None


@dataclass
class TrainSummary:
    """What a run of :func:`fit` did (``metrics``: the last step's, e.g. pairs per batch)."""

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
    skipped_steps: int = 0
    metric_sums: dict[str, float] = field(default_factory=dict)
    budget_steps: int | None = None  # the steps a time budget planned (max_minutes)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


def fit(model: nn.Module, task: Task, loop: Loop, out: Path, data: PreparedData,
        world: World, device: torch.device, *, resume: Checkpoint | None = None,
        progress: bool = True, stop_after: int | None = None) -> TrainSummary:
    """Train ``model`` (on ``device``) on ``task`` into ``out``; see the module docstring.

    ``resume`` is the checkpoint to continue from (its weights, optimizer, schedule, RNG and
    data position). ``stop_after`` ends the run after that many optimizer steps as if
    interrupted (a checkpoint is written), which tests use to check that a resume is exact.
    """
    run = _Run(model, task, loop, out, data, world, device, resume)
    return run.train(progress=progress, stop_after=stop_after)


class _Run:
    """One call of :func:`fit`: its pieces, set up in the order that keeps a resume exact
    (the RNG is drawn from in the same places every time), and its steps, named."""

    def __init__(self, model: nn.Module, task: Task, loop: Loop, out: Path, data: PreparedData,
                 world: World, device: torch.device, resume: Checkpoint | None) -> None:
        self.model, self.task, self.loop, self.out, self.data = model, task, loop, out, data
        self.world, self.device = world, device
        if len(task.dataset) < loop.batch_size * world.size:
            raise DataError(f"{len(task.dataset)} training examples, fewer than one batch of "
                            f"{loop.batch_size} per rank x {world.size}", path=data.path,
                            fix="lower --batch-size")
        order = BatchOrder(len(task.dataset), loop.batch_size, loop.seed,
                           task.lengths if loop.group_by_length else None)
        per_step = loop.optim.grad_accum * world.size  # micro-batches of the order per step
        # the step cap; a time budget (max_minutes) plans ``total`` at or below it. Under a
        # budget with neither max_steps nor epochs set the budget alone ends the run, so that
        # `--max-minutes 60` trains for an hour, not for the one pass epochs would default to.
        if loop.max_steps:
            self.cap = loop.max_steps
        elif loop.epochs is None and loop.max_minutes is not None:
            self.cap = self.UNCAPPED
        else:
            self.cap = max(1, int((loop.epochs or 1.0) * order.per_epoch / per_step))
        self.total = self.cap
        self.elapsed_before = 0.0  # seconds trained before a resume (the budget counts them)
        self.started, self.first_step = clock(), 0  # set again when training starts
        self.bf16 = loop.bf16 if loop.bf16 is not None else (
            device.type == "cuda" and torch.cuda.is_bf16_supported())
        self.wrapped = parallelize(model, world, mode=loop.parallel,
                                   activation_checkpointing=loop.activation_checkpointing,
                                   compile=loop.compile, bf16=self.bf16)
        if task.reseed is not None:
            torch.manual_seed(task.reseed)
        self.optimizer = build_optimizer(model, loop.optim)
        self.scheduler = build_schedule(self.optimizer, lambda: self.total, loop.optim)
        self.format = checkpoint_format(
            loop.checkpoint_format, fsdp=world.distributed and loop.parallel == "fsdp",
            state_bytes=state_bytes(model))
        self.step, self.micro, self.stale, self.nonfinite = 0, 0, 0, 0
        state = self._resume(resume)
        barrier(world)  # nobody creates the run directory before everybody checked it
        if world.main:
            out.mkdir(parents=True, exist_ok=True)
        if world.distributed:  # dropout and negatives differ per rank; the order does not
            torch.manual_seed(loop.seed * 7919 + world.rank)

        from torch.utils.data import DataLoader  # deferred: heavy, only training needs it
        from torch.utils.tensorboard import SummaryWriter

        # The loader gets its own generator: creating its iterator must not draw from the
        # global RNG, whose state a resumed run restores (dropout and negatives use it).
        mine = itertools.islice(order.from_position(self.micro), world.rank, None, world.size)
        loader = DataLoader(task.dataset, batch_sampler=mine, collate_fn=task.collate,
                            num_workers=loop.num_workers, pin_memory=device.type == "cuda",
                            generator=torch.Generator().manual_seed(loop.seed))
        self.batches = iter(loader)
        if resume is not None and not world.distributed:
            _set_rng_state(state["rng"])
        self.writer = (SummaryWriter(str(out / "tensorboard"),
                                     purge_step=self.step + 1 if resume is not None else None)
                       if world.main else None)
        self.summary = TrainSummary(out=str(out), steps=self.step, tokens=0, seconds=0.0,
                                    final_loss=math.nan, parameters=model.parameter_counts())
        self.wrapped.train()
        if resume is not None:  # early-stopping state continues too
            self.summary.best_value = state.get("best_value", -math.inf)
            self.summary.best_step, self.stale = state.get("best_step"), state.get("stale", 0)

    def _resume(self, resume: Checkpoint | None) -> dict:
        """Load the checkpoint's weights, optimizer and schedule; its resume state."""
        if resume is None:
            if (self.out / "checkpoints").exists():
                raise DataError("this run directory already has checkpoints", path=self.out,
                                fix="pass --resume to continue it, or choose a new directory")
            return {}
        state = resume.resume_state()
        if resume.sharded:
            tensors, _ = sharded_state(self.wrapped, self.optimizer)
            load_sharded_state(self.wrapped, self.optimizer, resume.read_shards(tensors),
                               state["param_groups"])
        else:
            load_full_state(self.wrapped, resume.weights(), self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.micro = state["step"], state["micro"]
        self.elapsed_before = state.get("elapsed", 0.0)
        if self.loop.max_minutes is not None and state.get("total") is not None:
            self.total = min(self.cap, max(state["total"], self.step + 1))
        if self.step >= self.total:
            raise DataError(f"the run is already complete: step {self.step} of {self.total}",
                            path=self.out,
                            fix=f"pass --max-steps above {self.step} to train it longer")
        return state

    def train(self, *, progress: bool, stop_after: int | None) -> TrainSummary:
        summary, world = self.summary, self.world
        self.started, self.first_step = clock(), self.step
        # a run only its budget ends shows no total until the budget has planned one
        bar = tqdm(total=None if self.total == self.UNCAPPED else self.total,
                   initial=self.step, desc=self.task.name, unit="step",
                   disable=not (progress and world.main), dynamic_ncols=True)
        try:
            with _StopFlag() as stop:
                while self.step < self.total:
                    loss, tokens, metrics = self._optimizer_step()
                    summary.tokens += tokens
                    summary.losses.append(loss)
                    elapsed = clock() - self.started
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}",
                                    tok_s=f"{summary.tokens / max(elapsed, 1e-9):,.0f}")
                    self._log(loss, metrics)
                    interrupted = stop.set or (stop_after is not None and
                                               self.step >= stop_after)
                    interrupted = bool(all_reduce(interrupted, world, op="max"))
                    self._plan_budget(bar, validated=False)
                    improved, patience_out = self._validate(bar)
                    if improved or (self.loop.eval_every and
                                    self.step % self.loop.eval_every == 0):
                        self._plan_budget(bar, validated=True)
                    if (self.step % self.loop.checkpoint_every == 0 or self.step == self.total
                            or interrupted or improved or patience_out):
                        self._checkpoint(improved)
                    if interrupted or patience_out:
                        summary.stopped_early = True
                        break
        finally:
            bar.close()
            if self.writer is not None:
                self.writer.close()
        summary.steps = self.step
        summary.seconds = clock() - self.started
        summary.budget_steps = self.total if self.loop.max_minutes is not None else None
        summary.final_loss = summary.losses[-1] if summary.losses else math.nan
        return summary

    # steps after which a time budget first plans the run (the rate has settled by then)
    PLAN_AFTER = 30
    # the step cap of a run that only a time budget ends
    UNCAPPED = 10**9

    def _plan_budget(self, bar, *, validated: bool) -> None:
        """With ``max_minutes``: plan ``total`` (the steps the cosine schedule decays over) so
        that training, validations included, ends inside the budget, never above the step cap.
        Planned once the rate has settled and again after every validation (whose cost then
        counts in the rate); the budget's end makes the current step the last, which is
        validated and checkpointed like any last step. Every rank plans from the slowest
        rank's clock, so all agree."""
        budget = self.loop.max_minutes
        if budget is None or self.step >= self.total:  # no budget, or the run's last step
            return
        done = self.step - self.first_step
        if not (validated or done == self.PLAN_AFTER or self._over_budget()):
            return
        elapsed = all_reduce(clock() - self.started, self.world, op="max")
        spent = self.elapsed_before + elapsed
        left = budget * 60 - spent
        if left <= 0:
            total = self.step
        else:
            total = self.step + int(left / (elapsed / max(done, 1)))
        total = max(self.step, min(self.cap, total))
        if total != self.total:
            self.total = total
            bar.total = total
            bar.refresh()

    def _over_budget(self) -> bool:
        """The budget is spent (checked every step; agreed over ranks)."""
        spent = self.elapsed_before + clock() - self.started
        return bool(all_reduce(spent >= self.loop.max_minutes * 60, self.world, op="max"))

    def _optimizer_step(self) -> tuple[float, int, dict[str, float]]:
        """Accumulate the micro-batches, then clip and update (or skip a non-finite step);
        (mean loss, tokens, the last micro-batch's metrics), summed over ranks."""
        loop, world, accum = self.loop, self.world, self.loop.optim.grad_accum
        loss_sum, tokens, metrics = 0.0, 0, {}
        for _ in range(accum):
            batch = next(self.batches).to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                result = self.task.step(self.model, self.wrapped, batch)
            (result.loss / accum).backward()
            loss_sum += float(result.loss.detach()) / accum
            tokens += result.tokens
            metrics = result.metrics
            for k, v in metrics.items():
                self.summary.metric_sums[k] = self.summary.metric_sums.get(k, 0.0) + float(v)
            self.micro += world.size
        # with grad_clip 0 the norm is only measured (clipping to infinity is a no-op)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(),
                                              loop.optim.grad_clip or math.inf)
        bad = not (math.isfinite(loss_sum) and bool(torch.isfinite(norm)))
        if bool(all_reduce(bad, world, op="max")):
            self.nonfinite = _skip_nonfinite(self.nonfinite + 1, self.step + 1, loss_sum,
                                             loop.nonfinite_patience, self.out)
            self.summary.skipped_steps += 1
        else:
            self.optimizer.step()
            self.nonfinite = 0
        with warnings.catch_warnings():  # a skipped first step is not a misordering
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        if world.distributed:
            loss_sum = all_reduce(loss_sum, world) / world.size
            tokens = int(all_reduce(tokens, world))
        return loss_sum, tokens, metrics

    def _log(self, loss: float, metrics: dict[str, float]) -> None:
        """TensorBoard scalars every ``log_every`` steps and at the last one (rank 0)."""
        if self.writer is None or not (self.step % self.loop.log_every == 0 or
                                       self.step == self.total):
            return
        prefix = self.task.log_prefix
        self.writer.add_scalar(f"{prefix}/loss", loss, self.step)
        self.writer.add_scalar(f"{prefix}/lr", self.scheduler.get_last_lr()[0], self.step)
        extra = self.task.scalars(self.model) if self.task.scalars is not None else {}
        for k, v in {**extra, **metrics}.items():
            self.writer.add_scalar(f"{prefix}/{k}", v, self.step)

    def _validate(self, bar) -> tuple[bool, bool]:
        """Validate when due; (improved on the best so far, patience run out)."""
        task, loop, summary = self.task, self.loop, self.summary
        if task.validate is None or not loop.eval_every or not (
                self.step % loop.eval_every == 0 or self.step == self.total):
            return False, False
        value = task.validate(self.model)  # every rank: FSDP gathers together
        self.wrapped.train()
        if self.writer is not None:
            self.writer.add_scalar(f"val/{loop.eval_metric}", value, self.step)
            message = f"step {self.step}: val {loop.eval_metric} {value:.4f}"
            if bar.disable:  # no bar to print beside: a library message (quiet runs, workers)
                log.info(message)
            else:
                bar.write(message)
        if value > summary.best_value:
            summary.best_value, summary.best_step, self.stale = value, self.step, 0
            return True, False
        self.stale += 1
        return False, bool(loop.patience) and self.stale >= loop.patience

    def _checkpoint(self, improved: bool) -> None:
        """Write a checkpoint in the run's format (a collective), refusing non-finite weights,
        and point ``best`` at it when it improved."""
        if self.format == "sharded":
            tensors, groups = sharded_state(self.wrapped, self.optimizer)
            _check_finite({k: v for k, v in tensors.items() if k.startswith("model.")},
                          self.step, self.out, self.world)
            path = save_sharded_checkpoint(
                self.out, step=self.step, tensors=tensors, data=self.data,
                keep=self.loop.keep_checkpoints, configs=self.task.configs,
                state={**self._loop_state(), "param_groups": groups})
        else:
            model_state, optim_state = full_state(self.wrapped, self.optimizer)
            _check_finite(model_state, self.step, self.out, self.world)
            path = save_checkpoint(
                self.out, step=self.step, weights=model_state, data=self.data,
                keep=self.loop.keep_checkpoints, configs=self.task.configs,
                state={**self._loop_state(), "optimizer": optim_state}
            ) if self.world.main else None
        if improved and self.world.main:
            mark_best(self.out, path, self.loop.eval_metric, self.summary.best_value)
        barrier(self.world)

    def _loop_state(self) -> dict[str, Any]:
        """What `--resume` needs besides the weights and the optimizer's tensors."""
        return {"scheduler": self.scheduler.state_dict(), "rng": _rng_state(),
                "micro": self.micro, "best_value": self.summary.best_value,
                "best_step": self.summary.best_step, "stale": self.stale,
                "world_size": self.world.size, "total": self.total,
                "elapsed": self.elapsed_before + clock() - self.started}


def state_bytes(model: nn.Module) -> int:
    """The model and AdamW state's size, gathered in one place: parameters x bytes per element
    x (1 + optimizer slots)."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) * (1 + OPTIMIZER_SLOTS)


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


def _skip_nonfinite(count: int, step: int, loss: float, patience: int, out: Path) -> int:
    """Warn of a skipped step; raise when ``count`` in a row reach the patience."""
    log.warning("step %d: the loss (%s) or its gradients are not finite; the step is skipped "
                "(%d in a row)", step, f"{loss:.4g}", count)
    if count >= patience:
        raise DataError(
            f"training diverged: {count} steps in a row had a non-finite loss or gradients "
            f"(last at step {step}); the last good checkpoint is kept", path=out,
            fix="lower --lr (or raise optim.warmup_steps / set optim.grad_clip), then "
                "--resume or start again from the last good checkpoint with --init-from")
    return count


def _check_finite(weights: dict[str, torch.Tensor], step: int, out: Path, world: World) -> None:
    """Refuse to checkpoint non-finite weights: a bad checkpoint must never replace, or prune,
    the last good one. ``weights``: this rank's (shards, or the full state where only rank 0
    holds it); every rank raises when any rank finds one."""
    broken = [k for k, v in weights.items() if v.is_floating_point() and
              not bool(torch.isfinite(local_part(v)).all())]
    if all_reduce(len(broken), world, op="max"):
        named = f" ({', '.join(broken[:3])}{' ...' if len(broken) > 3 else ''})" if broken else ""
        raise DataError(f"the weights are not finite at step {step}{named}; no checkpoint was "
                        "written and the last good one is kept", path=out,
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
