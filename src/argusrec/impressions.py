"""Impressions, their feedback grades, and the pairs that fine-tuning and PairAccuracy use.

An *impression* is an item the recommender showed, with the user's response
(DESIGN.md, "The data model"): a recommendation-context event when the log has an
``is_organic`` context field, otherwise every event that carries feedback (a MovieLens
rating, for example). Each impression gets a *grade* from its feedback:

- music-style feedback (played ratio, like, dislike): dislike < skip < listen < like, where a
  skip played less than ``listen_threshold`` of the track;
- a numeric signal such as a rating: the value itself.

Pairs are two impressions of one user with different grades that were shown close together (in
the same session, or within ``pair_window`` seconds). A pair's weight is the difference of the
two grade values, so like-vs-skip weighs more than listen-vs-skip (DESIGN.md, "The losses").

:class:`ImpressionDataset` turns a prepared dataset into examples: a window of a user's history
(at most ``max_len`` events) with the impressions whose user state lies in it. Windows are
chosen by *state*: consecutive windows of a user step back by ``stride``, and an impression
belongs to the window whose last ``stride`` positions hold its state, so every impression is
scored once, with at least ``max_len - stride`` events of history before it (or the user's
whole history when it is shorter). argusrec.scoring scores them in one pass per window.

Legend: N impressions, P pairs, B windows, C context fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from argusrec.batch import Batch
from argusrec.errors import DataError
from argusrec.loader import PreparedDataset, collate, split_history
from argusrec.sequences import SPLIT_CODES, PreparedData

DAY = 86_400
RECOMMENDATION = 2  # ctx_is_organic code of recommendation traffic (argusrec.sequences)

GRADE_NAMES = ("dislike", "skip", "listen", "like")


class PairConfig(BaseModel):
    """Which events are impressions, how they are graded, and which of them form pairs."""

    model_config = ConfigDict(extra="forbid")

    impressions: Literal["auto", "recommendation", "all"] = Field(
        "auto", description="recommendation: events with is_organic = recommendation; all: "
        "every event with feedback; auto: recommendation when the log has is_organic")
    listen_threshold: float = Field(0.5, ge=0, le=1, description="played ratio at or above "
                                    "which a listen is not a skip")
    grade_values: dict[str, float] = Field(
        default_factory=lambda: {"dislike": 0.0, "skip": 1.0, "listen": 2.0, "like": 4.0},
        description="value of each music-style grade; a pair weighs the difference")
    grade_field: str | None = Field(None, description="numeric feedback field used as the "
                                    "grade (default: the first value-kind field, e.g. rating)")
    pair_within: Literal["session", "window"] = Field(
        "session", description="pair impressions of one session, or within pair_window seconds")
    session_gap: int = Field(1800, ge=1, description="seconds of silence that end a session")
    pair_window: int = Field(3600, ge=1, description="seconds (pair_within=window)")
    weighting: Literal["grade", "uniform"] = Field(
        "grade", description="pair weight: difference of grade values, or 1")

    def values(self) -> np.ndarray:
        missing = [g for g in GRADE_NAMES if g not in self.grade_values]
        if missing:
            raise ValueError(f"grade_values needs {', '.join(missing)}")
        return np.array([self.grade_values[g] for g in GRADE_NAMES], dtype=np.float64)


def grade_events(feedback: dict[str, np.ndarray], kinds: dict[str, str],
                 cfg: PairConfig) -> np.ndarray:
    """(E,) float grade value per event from its feedback signals; NaN where there is none.

    ``feedback`` maps a signal name to (E,) float values (NaN = absent), ``kinds`` to its kind.
    """
    n = len(next(iter(feedback.values()))) if feedback else 0
    field = cfg.grade_field or next((f for f, k in kinds.items() if k == "value"), None)
    if field is not None:
        if field not in feedback:
            raise ValueError(f"grade_field {field!r} is not a feedback signal of this data; "
                             f"it has {', '.join(feedback) or 'none'}")
        return np.asarray(feedback[field], dtype=np.float64)
    values = cfg.values()
    grade = np.full(n, np.nan)
    ratio = next((np.asarray(feedback[f], dtype=np.float64) for f, k in kinds.items()
                  if k == "ratio"), None)
    if ratio is not None:
        heard = ~np.isnan(ratio)
        grade[heard] = np.where(ratio[heard] >= cfg.listen_threshold, values[2], values[1])
    for name, value in (("like", values[3]), ("dislike", values[0])):
        if name in feedback:
            grade[np.asarray(feedback[name]) == 1] = value
    if ratio is None and "like" not in feedback and "dislike" not in feedback:
        binary = next((f for f, k in kinds.items() if k == "binary"), None)
        if binary is not None:  # a click-style signal: clicked vs not
            signal = np.asarray(feedback[binary], dtype=np.float64)
            grade = np.where(np.isnan(signal), np.nan,
                             np.where(signal == 1, values[3], values[1]))
    return grade


def sessions(timestamp: np.ndarray, gap: int) -> np.ndarray:
    """(E,) session number of each event of one user's time-sorted history."""
    if len(timestamp) == 0:
        return np.zeros(0, dtype=np.int64)
    breaks = np.diff(np.asarray(timestamp, dtype=np.int64)) > gap
    return np.concatenate([[0], np.cumsum(breaks)]).astype(np.int64)


def make_pairs(group: np.ndarray, time: np.ndarray, grade: np.ndarray, cfg: PairConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of impressions with different grades inside one group (a user's session, or a
    user when pairing by window), as (better (P,), worse (P,), weight (P,)) index arrays.

    Impressions must be sorted by group, then time. With ``pair_within="window"`` two
    impressions pair only when their times are at most ``pair_window`` apart.
    """
    group, time, grade = np.asarray(group), np.asarray(time), np.asarray(grade)
    n = len(group)
    if n < 2:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    starts = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
    sizes = np.diff(np.concatenate([starts, [n]]))
    firsts, seconds = [], []
    for size in np.unique(sizes[sizes >= 2]):
        base = starts[sizes == size]  # (G,) groups of this size, all pairs i < j at once
        i, j = np.triu_indices(int(size), k=1)
        firsts.append((base[:, None] + i).ravel())
        seconds.append((base[:, None] + j).ravel())
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0)
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    keep = grade[a] != grade[b]
    if cfg.pair_within == "window":
        keep &= np.abs(time[a] - time[b]) <= cfg.pair_window
    a, b = a[keep], b[keep]
    swap = grade[a] < grade[b]
    better, worse = np.where(swap, b, a), np.where(swap, a, b)
    weight = (grade[better] - grade[worse] if cfg.weighting == "grade"
              else np.ones(len(better)))
    return better.astype(np.int64), worse.astype(np.int64), weight.astype(np.float64)


class ImpressionDataset(PreparedDataset):
    """Windows of users' histories with the impressions scored from them.

    Args:
        data: a prepared dataset.
        split: whose impressions are examples (train, val or test). History is every event
            before the impression except the gap (for train: training events only).
        max_len: the encoder window, in events.
        lag: seconds between the last event a user state may include and the impression.
        state_from: where the lag counts back from: the impression itself, or the first
            event of the impression's session (one user state per session, never inside it).
        stride: how far windows of one user step back (default ``max_len // 2``).
        min_history: impressions with fewer events of history are skipped.
        max_impressions: impressions per example; a window with more is split into examples.
        pairs: impression, grade and pairing rules.
    """

    def __init__(self, data: str | Path | PreparedData, *, split: str = "train",
                 max_len: int = 512, lag: int = DAY,
                 state_from: Literal["impression", "session"] = "impression",
                 stride: int | None = None,
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
        if state_from not in ("impression", "session"):
            raise DataError(f"unknown state_from '{state_from}'", fix="use impression or session")
        self.data = data if isinstance(data, PreparedData) else PreparedData(data)
        self.split, self.code = split, SPLIT_CODES[split]
        self.max_len, self.lag, self.stride = max_len, lag, stride
        self.state_from = state_from
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
        session = sessions(ts, self.pairs.session_gap)
        # the lag counts back from the anchor: the impression, or its session's first event
        anchor = imp
        if self.state_from == "session":
            anchor = np.searchsorted(session, session[imp], side="left")
        state = np.minimum(np.searchsorted(ts, ts[anchor] - self.lag, side="right") - 1,
                           anchor - 1)
        ok = state >= self.min_history - 1
        self.skipped["short_history"] += int((~ok & (state >= 0)).sum())
        self.skipped["no_state"] += int((state < 0).sum())
        imp, state = imp[ok], state[ok]
        if len(imp) == 0:
            return
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
