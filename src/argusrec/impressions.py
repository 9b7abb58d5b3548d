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

Legend: N impressions, P pairs.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

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


def pair_accuracy(score: np.ndarray, better: np.ndarray, worse: np.ndarray,
                  weight: np.ndarray) -> dict[str, float]:
    """Share of pairs ordered correctly (ties count half), unweighted and weighted."""
    if len(better) == 0:
        return {"PairAccuracy": float("nan"), "PairAccuracy/weighted": float("nan"), "pairs": 0}
    s_b, s_w = np.asarray(score)[better], np.asarray(score)[worse]
    correct = (s_b > s_w) + 0.5 * (s_b == s_w)
    return {"PairAccuracy": float(correct.mean()),
            "PairAccuracy/weighted": float((correct * weight).sum() / weight.sum()),
            "pairs": int(len(better))}
