"""`argus finetune`: two-tower ranking fine-tuning in one causal pass, as a task of the loop.

DESIGN.md, "Fine-tuning in one pass". The examples are windows of users' histories with the
impressions scored from them (argusrec.impressions); each window goes through the encoder once
and every impression is scored from the state before it (argusrec.scoring); the loss is
logistic on score differences of pairs of one user's impressions with different grades,
weighted by the grade difference (argusrec.losses.pairwise_loss). The loop, with its
checkpoints, resume, validation (PairAccuracy) and torchrun, is argusrec.fit's.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from argusrec.checkpoint import Checkpoint, load_model, need_data
from argusrec.device import resolve_device
from argusrec.errors import DataError
from argusrec.fit import Loop, StepResult, Task, TrainSummary, fit, resumed_config
from argusrec.impressions import (DAY, ImpressionBatch, ImpressionDataset, PairConfig,
                                  collate_impressions)
from argusrec.losses import pairwise_loss
from argusrec.metrics import pair_accuracy
from argusrec.model import ArgusModel, ModelOverrides
from argusrec.optim import OptimConfig
from argusrec.parallel import init_world, rank_device
from argusrec.scoring import (impression_pairs, oracle_scores, pair_accuracy_on, score_batch,
                              score_impressions)
from argusrec.sequences import PreparedData
from argusrec.train import TrainConfig, build_model


# -- training ---------------------------------------------------------------------------------
_LEGACY_OPTIM = {"lr", "weight_decay", "warmup_steps", "grad_clip"}
FINETUNE_OPTIM = {"lr": 3e-4, "warmup_steps": 50}  # where fine-tuning's defaults differ

# Fields `argus finetune --resume` may change (argusrec.train.RESUMABLE's counterpart).
RESUMABLE = ("max_steps", "max_minutes", "epochs", "eval_every", "patience", "checkpoint_every",
             "keep_checkpoints", "log_every", "threads", "num_workers", "device",
             "nonfinite_patience", "parallel", "activation_checkpointing", "compile",
             "optim.grad_accum")


class FinetuneConfig(BaseModel):
    """Everything `argus finetune` needs; saved inside every checkpoint."""

    model_config = ConfigDict(extra="forbid")

    lag: int = Field(DAY, ge=0, description="seconds between the newest event a user state "
                     "includes and the impression (1 day: daily offline deployment; 0: runtime)")
    state_from: Literal["impression", "session"] = Field(
        "impression", description="where the lag counts back from: each impression, or the "
        "first event of its session (one user state per session, as when the vector is "
        "computed once as the session opens)")
    max_len: int | None = Field(None, ge=2, description="encoder window in events (default: "
                                "the pretrained model's)")
    stride: int | None = Field(None, ge=1, description="step between a user's windows "
                               "(default: max_len / 2)")
    min_history: int = Field(1, ge=1, description="skip impressions with less history")
    max_impressions: int = Field(512, ge=1, description="impressions per example")
    pairs: PairConfig = Field(default_factory=PairConfig)
    optim: OptimConfig = Field(
        default_factory=lambda: OptimConfig(**FINETUNE_OPTIM),
        description="optimizer and schedule (argusrec.optim); fine-tuning's peak lr is lower")
    batch_size: int = Field(8, ge=1, description="windows per micro-batch (per rank)")
    epochs: float | None = Field(
        None, gt=0, description="passes over the examples (without max_steps); None: one "
        "pass, or under max_minutes as many as the budget allows")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps")
    max_minutes: float | None = Field(
        None, gt=0, description="a wall-clock budget for training, validations included: the "
        "schedule's cosine is planned to end inside it (from the measured step rate) and the "
        "run stops at it; max_steps or epochs, when set, still cap the steps")
    from_scratch: bool = Field(False, description="ablation: random initialisation instead of "
                               "the pretrained weights")
    seed: int = Field(0, ge=0)
    device: str = Field("auto")
    threads: int | None = Field(None, ge=1)
    num_workers: int = Field(0, ge=0)
    group_by_length: bool = Field(True, description="batch windows of similar length together")
    bf16: bool | None = Field(None, description="bf16 autocast; None = on where supported")
    log_every: int = Field(10, ge=1, description="steps between TensorBoard points")
    checkpoint_every: int = Field(500, ge=1)
    keep_checkpoints: int = Field(1, ge=1, description="newest checkpoints kept (and the best)")
    eval_every: int = Field(0, ge=0, description="steps between validation PairAccuracy runs "
                            "(on the validation period's impressions); 0 = none")
    eval_metric: str = Field("PairAccuracy", description="validation metric to maximise: "
                             "PairAccuracy or PairAccuracy/weighted")
    patience: int = Field(0, ge=0, description="stop after this many validations without "
                          "improvement; 0 = never stop early")
    parallel: Literal["auto", "none", "ddp", "fsdp"] = Field(
        "auto", description="under torchrun: DDP (auto), FSDP2 or none, as in pretraining")
    activation_checkpointing: bool = Field(False, description="recompute each encoder block "
                                           "in the backward pass")
    compile: bool = Field(False, description="torch.compile each encoder block")
    nonfinite_patience: int = Field(10, ge=1, description="non-finite steps in a row that "
                                    "stop the run (each is skipped with a warning)")

    @model_validator(mode="before")
    @classmethod
    def _optimizer_fields(cls, fields: Any) -> Any:
        """Fine-tuning's optimizer defaults hold for every field an ``optim`` given in part
        leaves out (``--lr`` alone keeps the 50 warmup steps). Configs before the shared
        optimizer had lr, weight_decay, warmup_steps and grad_clip at the top level; they go
        into ``optim``."""
        if not isinstance(fields, dict):
            return fields
        fields = dict(fields)
        given = fields.get("optim") or {}
        if isinstance(given, OptimConfig):
            return fields
        legacy = {name: fields.pop(name) for name in _LEGACY_OPTIM & fields.keys()}
        fields["optim"] = {**FINETUNE_OPTIM, **legacy, **given}
        return fields

    def dataset(self, data: PreparedData, split: str, max_len: int) -> ImpressionDataset:
        return ImpressionDataset(data, split=split, max_len=self.max_len or max_len,
                                 lag=self.lag, state_from=self.state_from, stride=self.stride,
                                 min_history=self.min_history,
                                 max_impressions=self.max_impressions, pairs=self.pairs)


@dataclass
class FinetuneSummary(TrainSummary):
    """What fine-tuning did: the loop's summary, plus the impressions it learned from."""

    examples: int = 0
    impressions: int = 0
    pairs_seen: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


def finetune(data_path: str | Path, pretrained: str | Path | None, out: str | Path,
             cfg: FinetuneConfig | None = None, *, resume: bool = False,
             progress: bool = True, model_fields: dict | None = None,
             stop_after: int | None = None) -> FinetuneSummary:
    """Fine-tune a pretrained ARGUS model as a two-tower ranker on the training impressions.

    ``pretrained`` is a run or checkpoint of `argus pretrain` (or of `argus finetune`, to
    warm-start), on this dataset or an older one; with ``cfg.from_scratch`` its architecture
    is kept and its weights are not (``pretrained`` may then be None if ``model_fields``
    gives a TrainConfig for the architecture). The loop is argusrec.fit's, as pretraining's:
    under torchrun it runs with DDP or FSDP2, and ``resume`` continues the run in ``out``
    exactly. The result is a run directory that `argus pairs`, `rank` and `export` read.
    """
    out = Path(out)
    if not resume and (out / "checkpoints").exists():
        raise DataError("this run directory already has checkpoints", path=out,
                        fix="pass --resume to continue it, or choose a new directory")
    ckpt = Checkpoint.newest_intact(out) if resume else None
    if ckpt is not None:
        cfg = resumed_config(FinetuneConfig(**ckpt.finetune), cfg, RESUMABLE, out)
        pretrained, model_fields = ckpt.path, None
    cfg = cfg or FinetuneConfig()
    data = PreparedData(data_path)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = init_world(cfg.device)
    device = rank_device(world, resolve_device(cfg.device))
    model, train_cfg = _starting_model(pretrained, model_fields, data, cfg,
                                       fresh=cfg.from_scratch and ckpt is None)
    model = model.to(device)
    dataset = cfg.dataset(data, "train", model.cfg.max_len)
    if len(dataset) == 0:
        raise DataError("no training impressions with history", path=data.path,
                        fix="check that the log has recommendation events with feedback, or "
                            "set pairs.impressions: all; lower --min-history or --lag")

    def step(model: ArgusModel, wrapped, batch: ImpressionBatch) -> StepResult:
        loss = pairwise_loss(score_batch(model, batch, forward=wrapped), batch.better,
                             batch.worse, batch.weight)
        return StepResult(loss, int(batch.events.mask.sum()),
                          {"pairs": float(batch.better.numel())})

    # the checkpoint's TrainConfig describes the architecture; fine-tuning settings ride along
    saved_cfg = train_cfg.model_copy(update={"model": ModelOverrides(**model.cfg.model_dump())})
    task = Task(name="finetune", log_prefix="finetune", dataset=dataset,
                collate=functools.partial(collate_impressions, pairs=cfg.pairs),
                lengths=dataset.lengths, step=step,
                validate=_validation(cfg, data, model.cfg.max_len),
                configs={"train": saved_cfg.model_dump(), "model": model.cfg.model_dump(),
                         "finetune": cfg.model_dump()},
                reseed=cfg.seed)
    loop = replace(Loop.of(cfg), batch_size=min(cfg.batch_size, len(dataset)))
    run = fit(model, task, loop, out, data, world, device, resume=ckpt, progress=progress,
              stop_after=stop_after)
    summary = FinetuneSummary(**vars(run), examples=len(dataset),
                              impressions=dataset.num_impressions,
                              pairs_seen=int(run.metric_sums.get("pairs", 0)),
                              skipped=dict(dataset.skipped))
    if world.main:
        _write_summary(out / "finetune.json", cfg, summary)
    return summary


def _starting_model(pretrained: str | Path | None, model_fields: dict | None,
                    data: PreparedData, cfg: FinetuneConfig, *,
                    fresh: bool) -> tuple[ArgusModel, TrainConfig]:
    """The model fine-tuning starts from (the pretrained one, or its architecture with fresh
    weights), on ``data``'s vocabulary, with the parts the ranker does not train frozen."""
    if pretrained is not None:
        model, config, _ = load_model(pretrained, data)
        train_cfg = TrainConfig(**config["train"])
    elif model_fields is not None:
        train_cfg = TrainConfig(**model_fields)
        model = build_model(train_cfg, data)
    else:
        raise DataError("no pretrained model given", fix="pass a run of `argus pretrain`")
    if fresh:
        train_cfg = train_cfg.model_copy(update={"seed": cfg.seed})
        model = build_model(train_cfg, data)
    if cfg.max_len is not None and cfg.max_len > model.cfg.max_len:
        raise DataError(f"max_len {cfg.max_len} is longer than the model's window "
                        f"({model.cfg.max_len} events)", fix=f"pass --max-len "
                        f"{model.cfg.max_len} or less, or pretrain with a longer window")
    # The ranker trains neither the feedback head nor the start state (no impression is
    # scored from before a window's first event): frozen, they are no unused parameters to
    # DDP, and AdamW skips them as it did when their gradients were None.
    for p in [*(model.feedback_head.parameters() if model.feedback_head is not None else []),
              model.start]:
        p.requires_grad_(False)
    return model, train_cfg


def _validation(cfg: FinetuneConfig, data: PreparedData, max_len: int):
    """The loop's validation (PairAccuracy on the validation period), or None."""
    if not cfg.eval_every:
        return None
    val = cfg.dataset(data, "val", max_len)
    if val.num_impressions == 0:
        raise DataError("--eval-every needs validation impressions, and this dataset has "
                        "none", path=data.path, fix="prepare with --val-duration, or "
                        "leave --eval-every out")
    return lambda m: pair_accuracy_on(m, val)[cfg.eval_metric]


def _write_summary(path: Path, cfg: FinetuneConfig, summary: FinetuneSummary) -> None:
    """finetune.json: the config and what the run did (written whole, then renamed)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({
        "config": cfg.model_dump(), "steps": summary.steps, "seconds": summary.seconds,
        "examples": summary.examples, "impressions": summary.impressions,
        "pairs_seen": summary.pairs_seen, "final_loss": summary.final_loss,
        "skipped": summary.skipped}, indent=2) + "\n")
    tmp.replace(path)


def evaluate_pairs(run: str | Path, *, split: str = "test", which: str = "latest",
                   oracle: str | Path | None = None, cfg: FinetuneConfig | None = None,
                   data: PreparedData | None = None, progress: bool = False
                   ) -> dict[str, Any]:
    """PairAccuracy (unweighted and weighted) of a model on ``split`` impressions, with the
    settings it was fine-tuned with (or ``cfg``); with ``oracle`` (the simulator's output
    directory) also the ground truth's PairAccuracy, the ceiling."""
    model, config, data = load_model(run, data, which=which)
    data = need_data(data, config, "PairAccuracy")
    if cfg is None:
        saved = config.get("finetune")
        cfg = FinetuneConfig(**saved) if saved else FinetuneConfig()
    dataset = cfg.dataset(data, split, model.cfg.max_len)
    if dataset.num_impressions == 0:
        raise DataError(f"no {split} impressions with history", path=data.path,
                        fix="evaluate on a split that has recommendation events with feedback")
    started = time.perf_counter()
    table = score_impressions(model, dataset, progress=progress)
    order, better, worse, weight = impression_pairs(table, cfg.pairs)
    results: dict[str, Any] = {"impressions": len(table), **pair_accuracy(
        table["score"].to_numpy()[order], better, worse, weight)}
    if oracle is not None:
        truth = oracle_scores(table, data, oracle)[order]
        results.update({f"oracle/{k}": v for k, v in pair_accuracy(
            truth, better, worse, weight).items() if k != "pairs"})
    results["lag"] = cfg.lag
    results["seconds"] = time.perf_counter() - started
    return results
