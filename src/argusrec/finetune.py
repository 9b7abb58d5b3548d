"""Two-tower ranking fine-tuning in one causal pass (DESIGN.md, "Fine-tuning in one pass").

Each example is one window of a user's history (at most ``max_len`` events) plus the impressions
whose user state lies in it. The encoder runs over the window once and gives the state h_j after
every event; impression i (shown at time t_i) is scored from the state after the last event j
at or before t_i - lag (and before i itself):

    u_i = user_head([h_j; context_i]),  v_i = item_tower(item_i),  s_i = <u_i, v_i> / T

so a window with hundreds of impressions costs one encoder pass instead of hundreds. The loss is
logistic on score differences of pairs of one user's impressions with different grades
(argusrec.impressions), weighted by the grade difference.

Windows are chosen by *state*: consecutive windows of a user step back by ``stride`` and an
impression belongs to the window whose last ``stride`` positions hold its state, so every
impression is scored once, with at least ``max_len - stride`` events of history in the window
(or the user's whole history when it is shorter).

:func:`score_reference` re-runs the encoder for every impression; a test holds the one-pass
scores to it.

Legend: B windows, L events, N impressions, P pairs, D width, U user-vector width, C context
fields.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor
from tqdm.auto import tqdm

from argusrec.batch import Batch
from argusrec.checkpoint import Checkpoint, load_model, need_data
from argusrec.device import resolve_device
from argusrec.errors import DataError
from argusrec.fit import Loop, StepResult, Task, TrainSummary, fit, resumed_config
from argusrec.impressions import PairConfig, grade_events, make_pairs, pair_accuracy, sessions
from argusrec.loader import PreparedDataset, collate, split_history
from argusrec.model import ArgusModel
from argusrec.optim import OptimConfig
from argusrec.oracle import Oracle
from argusrec.parallel import init_world, rank_device
from argusrec.sequences import SPLIT_CODES, PreparedData
from argusrec.train import TrainConfig, build_model

DAY = 86_400
RECOMMENDATION = 2  # ctx_is_organic code of recommendation traffic (argusrec.sequences)


class ImpressionDataset(PreparedDataset):
    """Windows of users' histories with the impressions scored from them.

    Args:
        data: a prepared dataset.
        split: whose impressions are examples (train, val or test). History is every event
            before the impression except the gap (for train: training events only).
        max_len: the encoder window, in events.
        lag: seconds between the last event a user state may include and the impression.
        stride: how far windows of one user step back (default ``max_len // 2``).
        min_history: impressions with fewer events of history are skipped.
        max_impressions: impressions per example; a window with more is split into examples.
        pairs: impression, grade and pairing rules.
    """

    def __init__(self, data: str | Path | PreparedData, *, split: str = "train",
                 max_len: int = 512, lag: int = DAY, stride: int | None = None,
                 min_history: int = 1, max_impressions: int = 512,
                 pairs: PairConfig | None = None) -> None:
        if split not in SPLIT_CODES or split == "gap":
            raise DataError(f"unknown split '{split}'", fix="use train, val or test")
        stride = stride or max(1, max_len // 2)
        if not 1 <= stride <= max_len:
            raise DataError(f"need 1 <= stride <= max_len, got {stride} and {max_len}",
                            fix="pick a smaller stride")
        if lag < 0:
            raise DataError(f"lag must be >= 0 seconds, got {lag}", fix="pass --lag 0 or more")
        self.data = data if isinstance(data, PreparedData) else PreparedData(data)
        self.split, self.code = split, SPLIT_CODES[split]
        self.max_len, self.lag, self.stride = max_len, lag, stride
        self.min_history, self.max_impressions = max(1, min_history), max(1, max_impressions)
        self.pairs = pairs or PairConfig()
        self.context_names = sorted(self.data.context_fields)
        self.feedback_names = list(self.data.feedback_fields)
        mode = self.pairs.impressions
        if mode == "recommendation" and "is_organic" not in self.context_names:
            raise DataError("impressions=recommendation needs an is_organic context field",
                            path=self.data.path, fix="use impressions: all")
        self.use_organic = "is_organic" in self.context_names and mode != "all"
        self.skipped = {"short_history": 0, "no_state": 0}
        # global event number of a shard's first event: an impression's key in feature tables
        sizes = [len(shard.events["item"]) for shard in self.data.shards]
        self._base = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._count = 0
        examples, imps = [], []
        for s, shard in enumerate(self.data.shards):
            for j in range(len(shard)):
                self._index_user(s, shard, j, examples, imps)
        # examples: (shard, user position, window start, window stop, first imp, end imp)
        self.examples = np.asarray(examples, dtype=np.int64).reshape(-1, 6)
        # impressions: (event index in the user's kept events, state index, session, grade)
        self.impressions = (np.concatenate(imps) if imps
                            else np.zeros((0, 4), dtype=np.float64))

    # -- index ---------------------------------------------------------------------------------
    def _kept(self, shard, j: int) -> np.ndarray:
        """Shard positions of user j's events that can be history or impressions here."""
        start = int(shard.offsets[j])
        split = np.asarray(shard.events["split"][start:shard.offsets[j + 1]])
        return start + np.flatnonzero(split_history(split, self.code))

    def _grades(self, shard, positions: np.ndarray) -> np.ndarray:
        if not self.feedback_names:  # no signal to grade by: no event is an impression
            return np.full(len(positions), np.nan)
        fb = {f: np.asarray(shard.events[f"fb_{f}"][positions]) for f in self.feedback_names}
        return grade_events(fb, self.data.feedback_fields, self.pairs)

    def _index_user(self, s: int, shard, j: int, examples: list, imps: list) -> None:
        pos = self._kept(shard, j)
        if len(pos) < 2:
            return
        ev = shard.events
        ts = np.asarray(ev["timestamp"][pos], dtype=np.int64)
        grade = self._grades(shard, pos)
        is_imp = (np.asarray(ev["split"][pos]) == self.code) & ~np.isnan(grade)
        if self.use_organic:
            is_imp &= np.asarray(ev["ctx_is_organic"][pos]) == RECOMMENDATION
        imp = np.flatnonzero(is_imp)
        if len(imp) == 0:
            return
        state = np.minimum(np.searchsorted(ts, ts[imp] - self.lag, side="right") - 1, imp - 1)
        ok = state >= self.min_history - 1
        self.skipped["short_history"] += int((~ok & (state >= 0)).sum())
        self.skipped["no_state"] += int((state < 0).sum())
        imp, state = imp[ok], state[ok]
        if len(imp) == 0:
            return
        session = sessions(ts, self.pairs.session_gap)
        order = np.lexsort((imp, state))
        imp, state = imp[order], state[order]
        stop = int(state[-1]) + 1
        while stop > 0:
            start = max(0, stop - self.max_len)
            lo = start if start == 0 else stop - self.stride
            inside = (state >= lo) & (state < stop)
            if inside.any():
                chosen = np.flatnonzero(inside)
                # impressions of this window, sorted by (session, time) for pairing
                rows = chosen[np.lexsort((imp[chosen], session[imp[chosen]]))]
                for c in range(0, len(rows), self.max_impressions):
                    part = rows[c:c + self.max_impressions]
                    first = self._count
                    self._count += len(part)
                    imps.append(np.stack([imp[part], state[part], session[imp[part]],
                                          grade[imp[part]]], axis=1).astype(np.float64))
                    examples.append((s, j, start, stop, first, first + len(part)))
            if lo == 0 or not (state < lo).any():
                break
            stop = int(state[state < lo].max()) + 1

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) events in each example's window (for length-grouped batches)."""
        return self.examples[:, 3] - self.examples[:, 2]  # window stop - window start

    @property
    def num_impressions(self) -> int:
        return len(self.impressions)

    # -- items ---------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        s, j, start, stop, lo, hi = (int(v) for v in self.examples[index])
        shard = self.data.shards[s]
        kept = self._kept(shard, j)
        window, ev = kept[start:stop], shard.events
        rows = self.impressions[lo:hi]
        imp, state = rows[:, 0].astype(np.int64), rows[:, 1].astype(np.int64)
        imp_pos = kept[imp]

        def take(name: str, where: np.ndarray, dtype) -> np.ndarray:
            return np.asarray(ev[name][where], dtype=dtype)

        def context(where: np.ndarray) -> np.ndarray:
            if not self.context_names:
                return np.zeros((len(where), 0), dtype=np.int64)
            return np.stack([take(f"ctx_{c}", where, np.int64) for c in self.context_names], -1)

        feedback = (np.stack([take(f"fb_{f}", window, np.float32) for f in self.feedback_names],
                             -1) if self.feedback_names
                    else np.zeros((len(window), 0), dtype=np.float32))
        imp_time = take("timestamp", imp_pos, np.int64)
        return {
            "user": np.int64(shard.users[j]),
            "item": take("item", window, np.int64),
            "timestamp": take("timestamp", window, np.int64),
            "event_type": take("event_type", window, np.int64),
            "context": context(window),
            "feedback": feedback,
            "positive": take("positive", window, np.bool_),
            "target": np.zeros(len(window), dtype=np.bool_),
            "imp_state": state - start,
            "imp_item": take("item", imp_pos, np.int64),
            "imp_context": context(imp_pos),
            "imp_event_type": take("event_type", imp_pos, np.int64),
            "imp_gap": imp_time - take("timestamp", kept[state], np.int64),
            "imp_time": imp_time,
            "imp_session": rows[:, 2].astype(np.int64),
            "imp_grade": rows[:, 3],
            "imp_id": np.arange(lo, hi, dtype=np.int64),
            "imp_event": self._base[s] + imp_pos,
        }


@dataclass
class ImpressionBatch:
    """Windows (a loader Batch) plus their impressions, flattened, and the training pairs.

    Shapes: window (B,), state, item, event_type, gap, grade, id (N,), context (N, C);
    better, worse (P,) indices into the N impressions, weight (P,).
    """

    events: Batch
    window: Tensor
    state: Tensor
    item: Tensor
    context: Tensor
    event_type: Tensor
    gap: Tensor
    grade: Tensor
    id: Tensor
    better: Tensor
    worse: Tensor
    weight: Tensor

    def to(self, device, non_blocking: bool = False) -> "ImpressionBatch":
        moved = {k: (v.to(device, non_blocking=non_blocking) if isinstance(v, (Tensor, Batch))
                     else v) for k, v in self.__dict__.items()}
        return ImpressionBatch(**moved)


def collate_impressions(samples: list[dict[str, Any]], pairs: PairConfig) -> ImpressionBatch:
    """Pad the windows, flatten the impressions, and list the pairs inside each example."""
    events = collate(samples)
    counts = [len(s["imp_item"]) for s in samples]
    cat = {k: np.concatenate([s[k] for s in samples]) for k in samples[0] if k.startswith("imp_")}
    window = np.repeat(np.arange(len(samples)), counts)
    # a session number is per user; make the pairing group unique per example
    group = window.astype(np.int64)
    if pairs.pair_within == "session":
        group = group * (1 << 40) + cat["imp_session"]
    better, worse, weight = make_pairs(group, cat["imp_time"], cat["imp_grade"], pairs)
    return ImpressionBatch(
        events=events, window=torch.from_numpy(window), state=torch.from_numpy(cat["imp_state"]),
        item=torch.from_numpy(cat["imp_item"]), context=torch.from_numpy(cat["imp_context"]),
        event_type=torch.from_numpy(cat["imp_event_type"]),
        gap=torch.from_numpy(cat["imp_gap"]), grade=torch.from_numpy(cat["imp_grade"]),
        id=torch.from_numpy(cat["imp_id"]), better=torch.from_numpy(better),
        worse=torch.from_numpy(worse), weight=torch.from_numpy(weight).float())


def score_batch(model: ArgusModel, batch: ImpressionBatch, parts: bool = False, *,
                forward=None):
    """(N,) two-tower scores of a batch's impressions from one encoder pass per window; with
    ``parts``, (scores, user vectors (N, U), item vectors (N, U)). ``forward`` is the parallel
    wrapper of ``model`` in training (DDP and FSDP need the pass to go through it)."""
    states = (forward or model)(batch.events, states_only=True).hidden  # (B, L, D)
    h = states[batch.window, batch.state]  # (N, D)
    user = model.user_vectors_at(h, batch.context, batch.event_type, batch.gap)  # (N, U)
    item = model.item_vectors(batch.item)  # (N, U)
    score = (user * item).sum(-1) / model.temperature
    return (score, user, item) if parts else score


def pairwise_loss(score: Tensor, better: Tensor, worse: Tensor, weight: Tensor) -> Tensor:
    """Weighted logistic loss on score differences: sum w * log(1 + e^-(s_b - s_w)) / sum w."""
    if better.numel() == 0:
        return score.sum() * 0.0
    return (weight * F.softplus(score[worse] - score[better])).sum() / weight.sum()


@torch.no_grad()
def score_reference(model: ArgusModel, dataset: ImpressionDataset, index: int) -> np.ndarray:
    """Scores of one example's impressions, re-running the encoder for each impression over the
    window up to its state: the plain method that one-pass scoring must match."""
    sample = dataset[index]
    out = np.zeros(len(sample["imp_item"]))
    window_keys = ("item", "timestamp", "event_type", "context", "feedback", "positive",
                   "target")
    for n, p in enumerate(sample["imp_state"]):
        prefix = {k: sample[k][: p + 1] for k in window_keys}
        prefix["user"] = sample["user"]
        states = model.event_states(collate([prefix]).to(_device(model)))  # (1, p+1, D)
        one = {k: torch.as_tensor(sample[f"imp_{k}"][n:n + 1]).to(_device(model))
               for k in ("item", "context", "event_type", "gap")}
        user = model.user_vectors_at(states[:, -1], one["context"], one["event_type"],
                                     one["gap"])
        out[n] = float((user * model.item_vectors(one["item"])).sum() / model.temperature)
    return out


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


# -- training ---------------------------------------------------------------------------------
_LEGACY_OPTIM = {"lr", "weight_decay", "warmup_steps", "grad_clip"}
FINETUNE_OPTIM = {"lr": 3e-4, "warmup_steps": 50}  # where fine-tuning's defaults differ

# Fields `argus finetune --resume` may change (argusrec.train.RESUMABLE's counterpart).
RESUMABLE = ("max_steps", "epochs", "eval_every", "patience", "checkpoint_every",
             "keep_checkpoints", "log_every", "threads", "num_workers", "device",
             "nonfinite_patience", "parallel", "activation_checkpointing", "compile",
             "optim.grad_accum")


class FinetuneConfig(BaseModel):
    """Everything `argus finetune` needs; saved inside every checkpoint."""

    model_config = ConfigDict(extra="forbid")

    lag: int = Field(DAY, ge=0, description="seconds between the newest event a user state "
                     "includes and the impression (1 day: daily offline deployment; 0: runtime)")
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
    epochs: float = Field(1.0, gt=0, description="passes over the examples (without max_steps)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps")
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
                                 lag=self.lag, stride=self.stride, min_history=self.min_history,
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
    if pretrained is not None:
        model, config, _ = load_model(pretrained, data)
        train_cfg = TrainConfig(**config["train"])
    elif model_fields is not None:
        train_cfg = TrainConfig(**model_fields)
        model = build_model(train_cfg, data)
    else:
        raise DataError("no pretrained model given", fix="pass a run of `argus pretrain`")
    if cfg.from_scratch and ckpt is None:
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

    validation = None
    if cfg.eval_every:
        val = cfg.dataset(data, "val", model.cfg.max_len)
        if val.num_impressions == 0:
            raise DataError("--eval-every needs validation impressions, and this dataset has "
                            "none", path=data.path, fix="prepare with --val-duration, or "
                            "leave --eval-every out")
        validation = lambda m: _pair_accuracy(m, val, cfg)[cfg.eval_metric]  # noqa: E731
    # the checkpoint's TrainConfig describes the architecture; fine-tuning settings ride along
    saved_cfg = train_cfg.model_copy(update={"model": model.cfg.model_dump()})
    task = Task(name="finetune", log_prefix="finetune", dataset=dataset,
                collate=functools.partial(collate_impressions, pairs=cfg.pairs),
                lengths=dataset.lengths, step=step,
                validate=validation,
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
        (out / "finetune.json").write_text(json.dumps({
            "config": cfg.model_dump(), "steps": summary.steps, "seconds": summary.seconds,
            "examples": summary.examples, "impressions": summary.impressions,
            "pairs_seen": summary.pairs_seen, "final_loss": summary.final_loss,
            "skipped": summary.skipped}, indent=2) + "\n")
    return summary


def _pair_accuracy(model: ArgusModel, dataset: ImpressionDataset,
                   cfg: FinetuneConfig) -> dict[str, Any]:
    """PairAccuracy of ``model`` on ``dataset``'s impressions (it goes back to training)."""
    table = score_impressions(model, dataset)
    order, better, worse, weight = impression_pairs(table, cfg.pairs)
    results = pair_accuracy(table["score"].to_numpy()[order], better, worse, weight)
    model.train()
    return results


# -- scoring and PairAccuracy -----------------------------------------------------------------
@torch.no_grad()
def score_impressions(model: ArgusModel, dataset: ImpressionDataset, *, batch_size: int = 16,
                      progress: bool = False, vectors: bool = False):
    """Every impression of ``dataset`` with its one-pass score, as a polars DataFrame:
    event (global event number), user (index), item (index), timestamp, session, grade,
    score; with ``vectors`` also
    (table, user vectors (N, U), item vectors (N, U))."""
    import polars as pl

    model.eval()
    device = _device(model)
    U = model.cfg.user_dim
    user_vecs = np.zeros((dataset.num_impressions, U), dtype=np.float32) if vectors else None
    item_vecs = np.zeros((dataset.num_impressions, U), dtype=np.float32) if vectors else None
    scores = np.zeros(dataset.num_impressions)
    users = np.zeros(dataset.num_impressions, dtype=np.int64)
    items = np.zeros(dataset.num_impressions, dtype=np.int64)
    times = np.zeros(dataset.num_impressions, dtype=np.int64)
    events = np.zeros(dataset.num_impressions, dtype=np.int64)
    for lo in tqdm(range(0, len(dataset), batch_size), desc=f"score {dataset.split}",
                   disable=not progress):
        samples = [dataset[i] for i in range(lo, min(lo + batch_size, len(dataset)))]
        batch = collate_impressions(samples, dataset.pairs).to(device)
        ids = batch.id.cpu().numpy()
        if vectors:
            scored = score_batch(model, batch, parts=True)
            scores[ids] = scored[0].float().cpu().numpy()
            user_vecs[ids] = scored[1].float().cpu().numpy()
            item_vecs[ids] = scored[2].float().cpu().numpy()
        else:
            scores[ids] = score_batch(model, batch).float().cpu().numpy()
        items[ids] = batch.item.cpu().numpy()
        users[ids] = batch.events.user[batch.window].cpu().numpy()
        times[ids] = np.concatenate([s["imp_time"] for s in samples])
        events[ids] = np.concatenate([s["imp_event"] for s in samples])
    table = pl.DataFrame({"event": events, "user": users, "item": items, "timestamp": times,
                          "session": dataset.impressions[:, 2].astype(np.int64),
                          "grade": dataset.impressions[:, 3], "score": scores})
    return (table, user_vecs, item_vecs) if vectors else table


def impression_pairs(table, pairs: PairConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray]:
    """(order, better, worse, weight): pairs of a scored impression table, indices into the
    table sorted by ``order`` (by user, session, time)."""
    order = np.lexsort((table["timestamp"].to_numpy(), table["session"].to_numpy(),
                        table["user"].to_numpy()))
    user = table["user"].to_numpy()[order]
    group = (user if pairs.pair_within == "window"
             else user * (1 << 32) + table["session"].to_numpy()[order])
    better, worse, weight = make_pairs(group, table["timestamp"].to_numpy()[order],
                                       table["grade"].to_numpy()[order], pairs)
    return order, better, worse, weight


def oracle_scores(table, data: PreparedData, oracle_dir: str | Path) -> np.ndarray:
    """The simulator's true affinity of every impression of a scored table: the ceiling."""
    oracle = Oracle.load(oracle_dir)
    users = data.users().sort("index")["user"].to_numpy()
    items = data.items().sort("index")
    item_ids = np.zeros(data.num_items + 1, dtype=np.int64)
    item_ids[items["index"].to_numpy()] = items["item"].to_numpy()
    return oracle.affinity(users[table["user"].to_numpy()], item_ids[table["item"].to_numpy()],
                           table["timestamp"].to_numpy())


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
