"""`argus pretrain`: ARGUS next-item + feedback pretraining, as a task of the shared loop.

The model, the data and the objective are this stage's (argusrec.model, argusrec.loader,
argusrec.objective); how a step, a checkpoint, a resume and a parallel wrapper work is
argusrec.fit's, shared with fine-tuning. `--resume` takes the run's saved config
(:func:`resume_config`), and `--init-from` a new run's first weights from another run,
carried to this dataset's vocabulary (:func:`warm_start`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_serializer, field_validator)

from argusrec.checkpoint import Checkpoint
from argusrec.device import resolve_device
from argusrec.errors import DataError
from argusrec.events import IS_ORGANIC as ORGANIC
from argusrec.evaluate import evaluate_model
from argusrec.fit import Loop, StepResult, Task, TrainSummary, fit, resumed_config
from argusrec.loader import SequenceDataset, collate
from argusrec.model import (PRESETS, ArgusModel, DataSpec, ModelConfig, ModelOverrides,
                            model_config)
from argusrec.objective import ObjectiveConfig, PretrainObjective
from argusrec.optim import OptimConfig
from argusrec.parallel import init_world, rank_device
from argusrec.sequences import PreparedData
from argusrec.vocab import Vocabulary, adapt_state


class TrainConfig(BaseModel):
    """Everything `argus pretrain` needs; saved resolved inside every checkpoint."""

    model_config = ConfigDict(extra="forbid")

    preset: str = Field("debug", description="model size preset (debug, 3m, 32m, 126m, 1b)")
    model: ModelOverrides = Field(default_factory=ModelOverrides,
                                  description="ModelConfig fields set over the preset's")
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    batch_size: int = Field(32, ge=1, description="windows per micro-batch")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; None = epochs")
    max_minutes: float | None = Field(
        None, gt=0, description="a wall-clock budget for training, validations included: the "
        "schedule's cosine is planned to end inside it (from the measured step rate) and the "
        "run stops at it; max_steps or epochs, when set, still cap the steps")
    epochs: float | None = Field(
        None, gt=0, description="passes over the training windows (when max_steps is None); "
        "None: one pass, or under max_minutes as many as the budget allows")
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
    checkpoint_format: Literal["auto", "consolidated", "sharded"] = Field(
        "auto", description="consolidated: rank 0 gathers the full model and optimizer state "
        "into one safetensors file; sharded: every rank writes its own shards with "
        "torch.distributed.checkpoint, nothing gathered (state too large for one host; resumes "
        "on any world size); auto: sharded for an FSDP run whose state would fill over half of "
        "one host's memory, else consolidated")
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

    @field_validator("model", mode="after")
    @classmethod
    def _model_resolves(cls, model: BaseModel, info: ValidationInfo) -> BaseModel:
        """Resolve the ModelConfig now, so fields that do not fit together (n_heads that does
        not divide d_model) fail when the config is loaded, not when the model is built."""
        if "preset" in info.data:  # else the unknown preset is reported on its own
            try:
                model_config(info.data["preset"], **model.model_dump(exclude_none=True))
            except ValidationError as e:
                raise ValueError("; ".join(
                    ".".join(str(p) for p in err["loc"]) + (": " if err["loc"] else "")
                    + err["msg"].removeprefix("Value error, ") for err in e.errors())) from None
        return model

    @field_serializer("model")
    def _only_given(self, model: BaseModel) -> dict[str, Any]:
        """Saved as the overrides given, so a later --preset still sizes the model."""
        return model.model_dump(exclude_none=True)

    def resolved_model(self) -> ModelConfig:
        return model_config(self.preset, **self.model.model_dump(exclude_none=True))


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


# Fields `--resume` may change: they do not alter what was trained so far. Everything else
# comes from the run's saved config.
# The topology ones (parallel, accumulation) let a run saved on N ranks resume on M.
RESUMABLE = ("max_steps", "max_minutes", "epochs", "eval_every", "patience", "checkpoint_every",
             "keep_checkpoints", "log_every", "threads", "num_workers", "device",
             "eval_max_users", "nonfinite_patience", "parallel", "activation_checkpointing", "compile",
             "optim.grad_accum", "checkpoint_format")


def resume_config(ckpt: Checkpoint, given: TrainConfig | None) -> TrainConfig:
    """The config ``ckpt`` was saved with, with the changes of ``given`` that are safe to
    apply (:data:`RESUMABLE`); any other difference is an error naming the fields."""
    return resumed_config(TrainConfig(**ckpt.config["train"]), given, RESUMABLE,
                          ckpt.path.parent.parent)


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



def target_counts(cfg: TrainConfig, data: PreparedData) -> tuple[np.ndarray, tuple[int, int] | None]:
    """The next-item targets' item counts (for the logQ correction) and, for
    ``nip_targets="organic"``, the (context column, code) that marks an organic event."""
    targets = cfg.objective.nip_targets
    if targets != "organic":
        return data.item_counts(positives=targets == "positive" or cfg.positives_only), None
    fields = data.info.fields.context
    if ORGANIC not in fields or "organic" not in fields[ORGANIC].values:
        raise DataError("objective.nip_targets is 'organic' but the data has no is_organic "
                        "context with the value 'organic'", path=data.path,
                        fix="prepare a log with an is_organic column, or use "
                            "--objective.nip_targets all")
    if cfg.positives_only:
        raise DataError("objective.nip_targets 'organic' cannot be combined with positives_only",
                        fix="choose one of the two")
    code = fields[ORGANIC].values.index("organic") + 1
    return data.item_counts_where(ORGANIC, "organic"), (sorted(fields).index(ORGANIC), code)

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
    out = Path(out)
    ckpt = Checkpoint.newest_intact(out) if resume else None
    cfg = resume_config(ckpt, cfg) if ckpt is not None else (cfg or TrainConfig())
    data = PreparedData(data_path)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = init_world(cfg.device)
    device = rank_device(world, resolve_device(cfg.device))
    dataset = SequenceDataset(data, split="train", max_len=cfg.resolved_model().max_len,
                              positives_only=cfg.positives_only,
                              windows_per_user=cfg.windows_per_user or None)
    model = build_model(cfg, data)
    if init_from is not None and ckpt is None:
        warm_start(model, init_from, data)
    model = model.to(device)
    counts, organic = target_counts(cfg, data)
    objective = PretrainObjective(cfg.objective, model, torch.from_numpy(counts).float(),
                                  organic=organic).to(device)

    def step(model: ArgusModel, wrapped, batch) -> StepResult:
        result = objective(model, batch, forward=wrapped)
        return StepResult(result.loss, int(batch.mask.sum()), result.metrics)

    task = Task(name="pretrain", log_prefix="train", dataset=dataset, collate=collate,
                lengths=dataset.lengths, step=step,
                validate=(lambda m: validate(m, data, cfg)) if cfg.eval_every else None,
                configs={"train": cfg.model_dump(), "model": cfg.resolved_model().model_dump()},
                scalars=lambda m: {"temperature": float(m.temperature.detach())})
    return fit(model, task, Loop.of(cfg), out, data, world, device, resume=ckpt,
               progress=progress, stop_after=stop_after)
