"""A synthetic music-streaming service that writes a Yambda-schema event log plus its ground truth.

``argus simulate`` is the embedded data source of the pipeline (DESIGN.md, "The pipeline"): it
draws a catalogue (genres -> artists with Zipf-sized catalogues -> albums -> tracks whose latent
vectors sit near their artist's), users whose tastes drift over the log's span, and a per-user
history of listening sessions. Organic traffic (``is_organic=1``) follows the user's current taste,
replays their favourites and sometimes picks from the charts; recommendation traffic
(``is_organic=0``) comes from a *logging policy*, a stale and noisy copy of the user's taste mixed
with popularity. Every piece of feedback (played ratio, like, dislike) is driven by the true
affinity at the event's time (:mod:`argusrec.oracle`), so an evaluation can score models against
the truth. Per-user activity follows Yambda-50M's quantiles (mean 4,779 events, median 2,654) and
the files carry Yambda's exact names, columns and dtypes. Users are simulated one at a time from
their own random streams, so the output is byte-identical for a seed and memory stays bounded.
Beside each draw the simulator keeps the distribution it drew from, so ``truth/listens.parquet``
holds the true probability of every listen's item (the next-item ceiling) and its feedback
expectations, computed without a single extra random draw.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator
from tqdm import tqdm

from argusrec.errors import DataError
from argusrec.oracle import (
    LISTENS_FILE,
    LISTENS_SCHEMA,
    TRUTH_DIR,
    FeedbackModel,
    World,
    build_world,
    drift_weight,
    save_truth,
    sigmoid,
    taste_cosine,
)

EVENT_TYPES = ("listen", "like", "dislike", "unlike", "undislike")

MULTI_EVENT_SCHEMA = pa.schema([
    ("uid", pa.uint32()),
    ("timestamp", pa.uint32()),
    ("item_id", pa.uint32()),
    ("is_organic", pa.uint8()),
    ("played_ratio_pct", pa.uint16()),
    ("track_length_seconds", pa.uint32()),
    ("event_type", pa.string()),
])

_CHOICE, _FEEDBACK = 1, 2  # random streams per user: what they play, how they react
_IDLE_SECONDS = 60.0  # the least time between two sessions of one user
_PAUSE_SECONDS = 3.0  # mean pause between two tracks of a session
_PILOT_LISTENS = 2_000_000  # listens whose affinities calibrate the feedback offsets


class SimulatorConfig(BaseModel):
    """Everything that shapes a simulated log; ``resolved()`` fills the size-derived defaults."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(300, ge=1, description="number of users (uid 0..users-1)")
    items: int | None = Field(
        None, ge=1,
        description="catalogue; None = max(5000, 110 * users): ~93 played items/user at scale 1",
    )
    artists: int | None = Field(None, ge=1, description="artists; None = max(1, items // 10)")
    genres: int = Field(24, ge=1, description="genres; artists' vectors cluster around them")
    days: int = Field(300, ge=1, le=49_000, description="span of the log in days (Yambda: ~300)")
    mean_events_per_user: float = Field(
        4779.0, gt=0, description="mean events per user at events_scale=1 (Yambda-50M: 4,779)"
    )
    events_scale: float = Field(
        0.1, gt=0,
        description="multiplies every user's activity; 1.0 = Yambda-50M, 0.1 keeps defaults small",
    )
    dim: int = Field(32, ge=2, le=512, description="dimension of the true latent vectors")
    content_dim: int = Field(64, ge=1, description="dimension of embeddings.parquet vectors")
    content_noise: float = Field(
        0.5, ge=0, description="noise std of content embeddings relative to their signal"
    )
    artist_zipf: float = Field(0.7, ge=0, description="Zipf exponent of artist catalogue sizes")
    popularity_zipf: float = Field(
        1.6, gt=0, description="exponent s of item popularity p(rank) ~ (rank + offset)^-s"
    )
    popularity_offset: float = Field(
        0.005, ge=0, description="Zipf-Mandelbrot offset as a fraction of the catalogue"
    )
    album_mean_tracks: float = Field(10.0, ge=1, description="mean tracks per album")
    artist_spread: float = Field(0.9, ge=0, description="how far artists sit from their genre")
    item_spread: float = Field(0.6, ge=0, description="how far tracks sit from their artist")
    item_bias_std: float = Field(0.5, ge=0, description="std of the items' quality bias")
    affinity_scale: float = Field(4.0, gt=0, description="affinity = scale * cosine + bias")
    home_artists: float = Field(6.0, ge=1, description="mean number of a user's home artists")
    drift_artists: int = Field(3, ge=1, description="artists a user's taste drifts towards")
    taste_noise: float = Field(0.5, ge=0, description="noise of a base taste around its artists")
    drift: float = Field(
        0.5, ge=0, le=1, description="mean weight of the drift vector at the end of a window"
    )
    organic_share: float = Field(0.45, ge=0, le=1, description="mean share of organic sessions")
    choice_sharpness: float = Field(1.0, ge=0, description="organic softmax weight on affinity")
    choice_popularity: float = Field(0.3, description="organic softmax weight on log popularity")
    favourites: int = Field(30, ge=1, description="size of a user's favourites per time phase")
    favourite_share: float = Field(0.15, ge=0, le=1, description="organic plays of favourites")
    search_share: float = Field(0.05, ge=0, le=1, description="organic plays found in the charts")
    policy_noise: float = Field(0.8, ge=0, description="noise of the logging policy's taste copy")
    policy_sharpness: float = Field(1.0, ge=0, description="policy softmax weight on its affinity")
    policy_popularity: float = Field(0.3, description="policy softmax weight on log popularity")
    explore_share: float = Field(
        0.05, ge=0, le=1, description="share of policy picks that explore the catalogue"
    )
    explore_popularity: float = Field(
        0.0, ge=0, description="exploration draws ~ popularity^this (0 uniform, 1 the charts)"
    )
    pool_popular: int = Field(500, ge=1, description="popularity-sampled candidates per user")
    artist_pool_cap: int = Field(100, ge=1, description="top tracks per home/drift artist in pool")
    phases: int = Field(8, ge=1, description="time phases a user's candidate pool is rescored in")
    session_mean_events: float = Field(12.0, ge=1, description="mean listens per session")
    track_seconds_median: float = Field(200.0, gt=0, description="median track length, seconds")
    track_seconds_sigma: float = Field(0.35, ge=0, description="lognormal sigma of track length")
    full_listen_rate: float = Field(
        0.6, gt=0, lt=1, description="share of listens played in full (calibrated)"
    )
    like_rate: float = Field(0.019, ge=0, le=0.5, description="likes per listen (Yambda: 1.9%)")
    dislike_rate: float = Field(
        0.0023, ge=0, le=0.5, description="dislikes per listen (Yambda: 0.23%)"
    )
    unlike_rate: float = Field(0.35, ge=0, le=1, description="share of likes later revoked")
    undislike_rate: float = Field(0.2, ge=0, le=1, description="share of dislikes later revoked")
    feedback_slope: float = Field(1.5, gt=0, description="slope of feedback logits in affinity")
    seed: int = Field(0, ge=0, description="random seed; same seed => byte-identical files")
    shard_users: int = Field(256, ge=1, description="users per written Parquet row group")

    @model_validator(mode="after")
    def _consistent(self) -> SimulatorConfig:
        if self.items is not None and self.artists is not None and self.artists > self.items:
            raise ValueError(f"artists ({self.artists}) must not exceed items ({self.items})")
        if self.like_rate + self.dislike_rate >= 0.5:
            raise ValueError("like_rate + dislike_rate must stay below 0.5")
        return self

    def resolved(self) -> SimulatorConfig:
        """A copy with ``items`` and ``artists`` filled from the size-derived defaults."""
        items = self.items if self.items is not None else max(5_000, 110 * self.users)
        artists = self.artists if self.artists is not None else max(1, items // 10)
        if artists > items:
            raise DataError(
                f"artists ({artists}) exceed items ({items})",
                fix="pass artists <= items",
            )
        return self.model_copy(update={"items": items, "artists": artists})

    @classmethod
    def yambda_50m(cls, **overrides: Any) -> SimulatorConfig:
        """The size of Yambda-50M: 10,000 users at full activity (~48M events)."""
        return cls(**{"users": 10_000, "events_scale": 1.0, **overrides})


@dataclass
class SimulationSummary:
    """What a run produced, in the terms of YambdaStats_50m.csv."""

    out_dir: Path  # the directory written
    events: int  # rows of multi_event.parquet
    listens: int  # rows with event_type "listen"
    users: int  # users simulated (each has at least one event)
    items: int  # items with at least one event (Yambda's unique_items)
    catalogue_items: int  # the whole catalogue (embeddings and mappings cover all of it)
    artists: int  # artists in the catalogue
    likes: int  # like events
    dislikes: int  # dislike events
    unlikes: int  # unlike events
    undislikes: int  # undislike events
    organic_share: float  # share of all events with is_organic = 1
    wall_seconds: float  # time simulate() took, end to end
    user_events: dict[str, float] = field(default_factory=dict)  # mean, std, min, 25%...max
    item_events: dict[str, float] = field(default_factory=dict)  # same, over items with events

    @property
    def seconds(self) -> float:
        """Alias of ``wall_seconds``."""
        return self.wall_seconds


def describe(counts: np.ndarray) -> dict[str, float]:
    """mean, std, min, 25%, 50%, 75%, max of ``counts`` (the columns of YambdaStats_50m.csv)."""
    if counts.size == 0:
        return {}
    q = np.percentile(counts, [25, 50, 75])
    return {
        "mean": float(counts.mean()), "std": float(counts.std(ddof=1)) if counts.size > 1 else 0.0,
        "min": float(counts.min()), "25%": float(q[0]), "50%": float(q[1]), "75%": float(q[2]),
        "max": float(counts.max()),
    }


@dataclass
class _Choice:
    """What one user played, before feedback: per listen (n,), per session (S,)."""

    item: np.ndarray  # (n,) item ids, in play order
    session: np.ndarray  # (n,) session index, non-decreasing
    organic: np.ndarray  # (n,) bool
    session_start: np.ndarray  # (S,) planned start times, seconds, sorted
    base_dot: np.ndarray  # (n,) <base taste, item vector>
    drift_dot: np.ndarray  # (n,) <drift vector, item vector>
    pool: np.ndarray  # (m,) sorted candidate pool of the pool picks
    probs: np.ndarray  # (P + 1, m) pool-pick distributions: one per phase (organic), the policy
    row: np.ndarray  # (n,) the row of ``probs`` each listen's pool pick was drawn from


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _sample_rows(probs: np.ndarray, row: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One draw per event from ``probs[row[e]]`` (R, m) with a single searchsorted call."""
    r, m = probs.shape
    cdf = np.cumsum(probs, axis=1)
    cdf /= cdf[:, -1:]
    # Row k's CDF lives in (k, k + 1], so one flat sorted array serves every row.
    flat = (cdf + np.arange(r)[:, None]).ravel()
    pick = np.searchsorted(flat, row + rng.random(row.size), side="right") - row * m
    return np.clip(pick, 0, m - 1)


def _choose(world: World, uid: int) -> _Choice:
    """Sessions, traffic type and the item of every listen of one user."""
    cfg, rng = world.cfg, np.random.default_rng([world.cfg.seed, uid, _CHOICE])
    n = int(world.n_listens[uid])
    t0, t1 = float(world.t0[uid]), float(world.t1[uid])
    n_sess = int(np.clip(round(n / cfg.session_mean_events), 1, n))
    # Cutting the listens at random points gives roughly geometric session lengths.
    starts = np.zeros(n, dtype=np.int64)
    starts[np.sort(rng.choice(n - 1, n_sess - 1, replace=False)) + 1] = 1
    session = np.cumsum(starts)
    session_start = np.sort(rng.uniform(t0, t1, n_sess))
    phase = np.minimum(((session_start - t0) / max(t1 - t0, 1.0) * cfg.phases).astype(np.int64),
                       cfg.phases - 1)
    organic_session = rng.random(n_sess) < world.organic[uid]

    pool = world.candidate_pool(uid, rng)
    vec = world.item_vec[pool]  # (m, D)
    base_dot = (vec @ world.base[uid]).astype(np.float64)
    drift_dot = (vec @ world.drift[uid]).astype(np.float64)
    mids = t0 + (np.arange(cfg.phases) + 0.5) / cfg.phases * (t1 - t0)
    w = drift_weight(world.drift_max[uid], t0, t1, mids)[:, None]  # (P, 1)
    cos = taste_cosine(w, base_dot[None], drift_dot[None], world.base_drift[uid])  # (P, m)
    aff = cfg.affinity_scale * cos + world.item_bias[pool][None]
    logpop = world.item_logpop[pool][None]
    organic_p = _softmax(cfg.choice_sharpness * aff + cfg.choice_popularity * logpop)
    k = min(cfg.favourites, pool.size)
    top = np.argpartition(-aff, k - 1, axis=1)[:, :k]
    fav = np.zeros_like(organic_p)
    np.put_along_axis(fav, top, 1.0 / k, axis=1)
    organic_p = (1.0 - cfg.favourite_share) * organic_p + cfg.favourite_share * fav
    # The logging policy never saw the drift: it scores with a noisy copy of the base taste.
    policy_aff = cfg.affinity_scale * (vec @ world.policy[uid])
    policy_p = _softmax(cfg.policy_sharpness * policy_aff + cfg.policy_popularity * logpop[0])
    probs = np.vstack([organic_p, policy_p[None]])  # (P + 1, m)

    organic = organic_session[session]
    row = np.where(organic, phase[session], cfg.phases)
    pick = _sample_rows(probs, row, rng)
    item, bdot, ddot = pool[pick], base_dot[pick], drift_dot[pick]
    # Off-pool plays: organic search finds chart hits, policy exploration reaches deep cuts.
    u = rng.random(n)
    search, explore = organic & (u < cfg.search_share), ~organic & (u < cfg.explore_share)
    for mask, hits in ((search, world.chart_sample(rng, int(search.sum()))),
                       (explore, world.explore_sample(rng, int(explore.sum())))):
        item[mask] = hits
        bdot[mask] = world.item_vec[hits] @ world.base[uid]
        ddot[mask] = world.item_vec[hits] @ world.drift[uid]
    return _Choice(item, session, organic, session_start, bdot, ddot, pool, probs, row)


def _next_item_logp(world: World, ch: _Choice) -> tuple[np.ndarray, np.ndarray]:
    """(logp_true, logp_policy), (n,) each: the log-probability of each listen's item under the
    mixture :func:`_choose` drew it from, and under the logging policy's serving distribution.

    Organic: search_share * chart(i) + (1 - search_share) * organic_p[phase](i); recommended:
    explore_share * explore(i) + (1 - explore_share) * policy_p(i). The pool terms are 0 off the
    pool, and a pool item can also come from the charts or exploration: both branches add.
    """
    cfg = world.cfg
    pos = np.minimum(np.searchsorted(ch.pool, ch.item), ch.pool.size - 1)
    in_pool = ch.pool[pos] == ch.item
    probs = ch.probs / ch.probs.sum(axis=1, keepdims=True)  # as _sample_rows normalises them
    pick = np.where(in_pool, probs[ch.row, pos], 0.0)
    served = np.where(in_pool, probs[-1, pos], 0.0)
    explore = cfg.explore_share * world.explore_probability[ch.item]
    search = cfg.search_share * world.chart_probability[ch.item]
    p_true = np.where(ch.organic, search + (1.0 - cfg.search_share) * pick,
                      explore + (1.0 - cfg.explore_share) * pick)
    p_policy = explore + (1.0 - cfg.explore_share) * served
    with np.errstate(divide="ignore"):  # p = 0 only where a branch is switched off: -inf
        return np.log(p_true), np.log(p_policy)


def _affinity(
    world: World, uid: int, ch: _Choice, t: np.ndarray, idx: Any = slice(None)
) -> np.ndarray:
    """True affinity of listens ``idx`` of ``ch`` at times ``t`` (the oracle's formula)."""
    w = drift_weight(world.drift_max[uid], world.t0[uid], world.t1[uid], t)
    cos = taste_cosine(w, ch.base_dot[idx], ch.drift_dot[idx], world.base_drift[uid])
    return world.cfg.affinity_scale * cos + world.item_bias[ch.item[idx]]


def _first_per_item(item: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Indices of the first hit per item (one like per track, as the real service allows)."""
    idx = np.flatnonzero(hit)
    _, first = np.unique(item[idx], return_index=True)
    return np.sort(idx[first])


def _open_until_first(item: np.ndarray, first: np.ndarray) -> np.ndarray:
    """(n,) bool: listen k comes no later than the first hit ``first`` of its item (or none)."""
    keys, inverse = np.unique(item, return_inverse=True)
    bound = np.full(keys.size, item.size)
    bound[inverse[first]] = first
    return np.arange(item.size) <= bound[inverse]


def _feedback(world: World, fb: FeedbackModel, uid: int,
              ch: _Choice) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Timestamps and feedback events of one user: (columns of multi_event, time-ordered;
    per listen (n,): its timestamp, the true affinity there, and whether it could still be the
    item's first like / dislike)."""
    cfg, rng = world.cfg, np.random.default_rng([world.cfg.seed, uid, _FEEDBACK])
    n, span = ch.item.size, world.span_seconds
    u_full, z, u_like, u_when = rng.random(n), rng.standard_normal(n), rng.random(n), rng.random(n)
    pause = rng.exponential(_PAUSE_SECONDS, n)
    track = world.track_length[ch.item].astype(np.float64)

    # Pass 1: how long each track plays decides the timestamps; taste is read at session start
    # because the exact time is not known yet (drift over one session is negligible).
    played = fb.played_ratio_pct(_affinity(world, uid, ch, ch.session_start[ch.session]),
                                 u_full, z) / 100.0 * track
    # At least 5 s between listen starts, so two listens never share a 5-second Yambda
    # timestamp (a replayed favourite would otherwise be an exact duplicate row).
    gap = np.maximum(played + pause, 5.0)
    csum = np.cumsum(gap)
    excl = csum - gap
    first = np.flatnonzero(np.diff(ch.session, prepend=-1))
    last = np.append(first[1:] - 1, n - 1)
    duration = csum[last] - excl[first]
    # Sessions never overlap: start_k = max(planned_k, end_{k-1} + idle), via a running maximum.
    before = np.concatenate([[0.0], np.cumsum(duration + _IDLE_SECONDS)[:-1]])
    start = before + np.maximum.accumulate(ch.session_start - before)
    t_raw = start[ch.session] + excl - excl[first][ch.session]
    # A busy user can be pushed past the end of the log: move their timeline back instead of
    # piling events onto the last second.
    t_raw -= min(max(t_raw[-1] - (span - 5.0), 0.0), t_raw[0])
    t_raw = np.minimum(t_raw, span - 5.0)
    ts = np.floor(t_raw / 5.0) * 5.0  # Yambda's timestamps come in steps of 5 s

    # Pass 2: the recorded feedback uses the true affinity at the recorded timestamp, with the
    # same random numbers, so Oracle.affinity(uid, item, timestamp) is exactly what drove it.
    aff = _affinity(world, uid, ch, ts)
    ratio = fb.played_ratio_pct(aff, u_full, z)
    like = u_like < fb.like_probability(aff)
    dislike = ~like & (u_like > 1.0 - fb.dislike_probability(aff))
    likes, dislikes = _first_per_item(ch.item, like), _first_per_item(ch.item, dislike)

    def during(j: np.ndarray) -> np.ndarray:  # a reaction lands while the track plays
        return np.floor(np.minimum(t_raw[j] + u_when[j] * played[j], span - 5.0) / 5.0) * 5.0

    def revoked(j: np.ndarray, rate: float, sign: float) -> tuple[np.ndarray, np.ndarray]:
        # Revocations happen at a later listen; taste that moved away makes them likelier.
        later = j + 1 + np.floor(rng.random(j.size) * (n - 1 - j)).astype(np.int64)
        ok = j < n - 1
        later = np.minimum(later, n - 1)
        moved = sign * (aff[j] - _affinity(world, uid, ch, ts[later], j))
        p = np.minimum(1.0, rate * 2.0 * sigmoid(cfg.feedback_slope * moved))
        keep = ok & (rng.random(j.size) < p)
        return later[keep], j[keep]

    unlike_at, unliked = revoked(likes, cfg.unlike_rate, 1.0)
    undislike_at, undisliked = revoked(dislikes, cfg.undislike_rate, -1.0)

    listen_idx = np.arange(n)
    # Sequence keys order events in time: listen k, revocations made as it starts, then the
    # reaction to it (which may come up to the track's end), then listen k + 1.
    parts = [  # (time, sequence key, source listen, event type, organic)
        (ts, 4 * listen_idx, listen_idx, 0, ch.organic),
        (ts[unlike_at], 4 * unlike_at + 1, unliked, 3, np.ones(unliked.size, bool)),
        (ts[undislike_at], 4 * undislike_at + 2, undisliked, 4, np.ones(undisliked.size, bool)),
        (during(likes), 4 * likes + 3, likes, 1, ch.organic[likes]),
        (during(dislikes), 4 * dislikes + 3, dislikes, 2, ch.organic[dislikes]),
    ]
    seq = np.concatenate([p[1] for p in parts])
    order = np.argsort(seq, kind="stable")
    src = np.concatenate([p[2] for p in parts])[order]
    etype = np.concatenate([np.full(p[2].size, p[3], np.uint8) for p in parts])[order]
    events = {
        "timestamp": np.concatenate([p[0] for p in parts])[order].astype(np.uint32),
        "item_id": ch.item[src].astype(np.uint32),
        "is_organic": np.concatenate([p[4] for p in parts])[order].astype(np.uint8),
        "played_ratio_pct": ratio[src].astype(np.uint16),
        "track_length_seconds": world.track_length[ch.item[src]],
        "event_type": etype,
    }
    heard = {"timestamp": ts, "affinity": aff, "like_open": _open_until_first(ch.item, likes),
             "dislike_open": _open_until_first(ch.item, dislikes)}
    return events, heard


def _listen_truth(world: World, fb: FeedbackModel, uid: int, ch: _Choice,
                  heard: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One user's rows of ``truth/listens.parquet`` (oracle.LISTENS_SCHEMA), in listen order."""
    logp_true, logp_policy = _next_item_logp(world, ch)
    aff = heard["affinity"]
    return {
        "uid": np.full(ch.item.size, uid, dtype=np.uint32),
        "timestamp": heard["timestamp"].astype(np.uint32),
        "item_id": ch.item.astype(np.uint32),
        "is_organic": ch.organic.astype(np.uint8),
        "logp_true": logp_true,
        "logp_policy": logp_policy,
        "p_like": fb.like_probability(aff),
        "p_dislike": fb.dislike_probability(aff),
        "expected_played_ratio_pct": fb.expected_played_ratio_pct(aff),
        "like_open": heard["like_open"],
        "dislike_open": heard["dislike_open"],
    }


def _calibrate(world: World) -> FeedbackModel:
    """Solve the feedback offsets so the log hits the configured full-listen, like, dislike rates.

    A pilot of users (all of them for small runs, else every k-th by activity, which is what moves
    the rates most: heavy users replay more and can like a track only once) makes its choices with
    the same random streams as the main run (choices do not depend on the offsets), and each
    offset is found by bisection on the expected rate, counting at most one like (dislike) per
    user and track.
    """
    cfg, n_items = world.cfg, world.item_vec.shape[0]
    step = max(1, int(np.ceil(world.n_listens.sum() / _PILOT_LISTENS)))
    pilot = np.argsort(world.n_listens, kind="stable")[step // 2::step]
    affs, keys = [], []
    for uid in pilot:
        ch = _choose(world, int(uid))
        affs.append(_affinity(world, int(uid), ch, ch.session_start[ch.session]))
        keys.append(int(uid) * n_items + ch.item)
    a, key = np.concatenate(affs), np.concatenate(keys)
    order = np.argsort(key, kind="stable")
    a = a[order]
    group_start = np.flatnonzero(np.diff(key[order], prepend=-1))
    slope = cfg.feedback_slope

    def distinct_rate(sign: float, offset: float) -> float:
        p = sigmoid(sign * slope * a + offset)
        none = np.add.reduceat(np.log1p(-np.minimum(p, 1 - 1e-12)), group_start)
        return float((1.0 - np.exp(none)).sum() / a.size)

    def solve(rate_of: Callable[[float], float], target: float) -> float:
        # Bisection to 0.1 % of the target rate: far below the pilot's own sampling error.
        lo, hi = -40.0, 40.0
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            rate = rate_of(mid)
            if abs(rate - target) <= 1e-3 * target:
                break
            lo, hi = (mid, hi) if rate < target else (lo, mid)
        return mid

    return FeedbackModel(
        affinity_scale=cfg.affinity_scale,
        play_slope=slope,
        play_offset=solve(lambda o: float(sigmoid(slope * a + o).mean()), cfg.full_listen_rate),
        skip_noise=1.0,
        like_slope=slope,
        like_offset=solve(lambda o: distinct_rate(1.0, o), cfg.like_rate),
        dislike_slope=slope,
        dislike_offset=solve(lambda o: distinct_rate(-1.0, o), cfg.dislike_rate),
    )


def _table(cols: dict[str, np.ndarray]) -> pa.Table:
    not_listen = cols["event_type"] != 0
    return pa.Table.from_arrays([
        pa.array(cols["uid"]),
        pa.array(cols["timestamp"]),
        pa.array(cols["item_id"]),
        pa.array(cols["is_organic"]),
        pa.array(cols["played_ratio_pct"], mask=not_listen),
        pa.array(cols["track_length_seconds"], mask=not_listen),
        pa.array(EVENT_TYPES).take(pa.array(cols["event_type"])),
    ], schema=MULTI_EVENT_SCHEMA)


def _write_side_tables(world: World, out: Path) -> None:
    """artist_mapping, album_mapping and embeddings.parquet (Yambda's names and dtypes)."""
    cfg, items, n_items = world.cfg, world.artist_items, world.item_vec.shape[0]
    pq.write_table(pa.table({
        "artist_id": pa.array(world.item_artist[items].astype(np.uint32)),
        "item_id": pa.array(items.astype(np.uint32)),
    }), out / "artist_mapping.parquet")
    pq.write_table(pa.table({
        "album_id": pa.array(world.item_album[items].astype(np.uint32)),
        "item_id": pa.array(items.astype(np.uint32)),
    }), out / "album_mapping.parquet")
    # Content embeddings: a fixed random projection of the true vector plus noise, so audio
    # features carry signal about taste without revealing it.
    rng = np.random.default_rng([cfg.seed, 3])
    proj = rng.standard_normal((cfg.dim, cfg.content_dim)).astype(np.float32) * 3.0
    schema = pa.schema([("item_id", pa.uint32()), ("embed", pa.list_(pa.float32())),
                        ("normalized_embed", pa.list_(pa.float32()))])
    with pq.ParquetWriter(out / "embeddings.parquet", schema, compression="zstd") as writer:
        for lo in range(0, n_items, 1 << 16):
            ids = np.arange(lo, min(lo + (1 << 16), n_items))
            embed = world.item_vec[ids] @ proj
            embed += rng.standard_normal(embed.shape, dtype=np.float32) * np.float32(
                3.0 * cfg.content_noise)
            norm = embed / np.maximum(np.linalg.norm(embed, axis=1, keepdims=True), 1e-12)
            offsets = pa.array(np.arange(ids.size + 1, dtype=np.int32) * cfg.content_dim)
            writer.write_table(pa.Table.from_arrays([
                pa.array(ids.astype(np.uint32)),
                pa.ListArray.from_arrays(offsets, pa.array(embed.ravel())),
                pa.ListArray.from_arrays(offsets, pa.array(norm.ravel())),
            ], schema=schema))


def _write_log(world: World, fb: FeedbackModel, path: Path, progress: bool,
               truth: Path | None = None) -> dict[str, Any]:
    """Simulate every user and stream their events to ``multi_event.parquet`` at ``path`` (and
    their listens' truth to ``truth``, when given)."""
    cfg, n_items = world.cfg, world.item_vec.shape[0]
    per_user = np.zeros(cfg.users, dtype=np.int64)
    per_item = np.zeros(n_items, dtype=np.int64)
    by_type = np.zeros(len(EVENT_TYPES), dtype=np.int64)
    organic = 0
    # Timestamps rise within a user, so delta encoding stores them in a third less space.
    encoding = {"use_dictionary": [c for c in MULTI_EVENT_SCHEMA.names if c != "timestamp"],
                "column_encoding": {"timestamp": "DELTA_BINARY_PACKED"}}
    truth_encoding = {"use_dictionary": ["uid", "item_id", "is_organic"],
                      "column_encoding": {"timestamp": "DELTA_BINARY_PACKED"}}
    with ExitStack() as stack:
        writer = stack.enter_context(
            pq.ParquetWriter(path, MULTI_EVENT_SCHEMA, compression="zstd", **encoding))
        truth_writer = None if truth is None else stack.enter_context(
            pq.ParquetWriter(truth, LISTENS_SCHEMA, compression="zstd", **truth_encoding))
        bar = stack.enter_context(
            tqdm(total=cfg.users, unit="user", desc="simulate", disable=not progress))
        for lo in range(0, cfg.users, cfg.shard_users):
            batch, truth_batch = [], []
            for uid in range(lo, min(lo + cfg.shard_users, cfg.users)):
                ch = _choose(world, uid)
                events, heard = _feedback(world, fb, uid, ch)
                events["uid"] = np.full(events["item_id"].size, uid, dtype=np.uint32)
                per_user[uid] = events["item_id"].size
                batch.append(events)
                if truth_writer is not None:
                    truth_batch.append(_listen_truth(world, fb, uid, ch, heard))
                bar.update(1)
            cols = {k: np.concatenate([b[k] for b in batch]) for k in batch[0]}
            per_item += np.bincount(cols["item_id"], minlength=n_items)
            by_type += np.bincount(cols["event_type"], minlength=len(EVENT_TYPES))
            organic += int(cols["is_organic"].sum())
            writer.write_table(_table(cols), row_group_size=cols["uid"].size)
            if truth_writer is not None:
                listens = {k: np.concatenate([b[k] for b in truth_batch]) for k in truth_batch[0]}
                truth_writer.write_table(pa.table(listens).cast(LISTENS_SCHEMA),
                                         row_group_size=listens["uid"].size)
    return {"per_user": per_user, "per_item": per_item, "by_type": by_type, "organic": organic}


def simulate(
    config: SimulatorConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    overwrite: bool = False,
    listen_truth: bool = True,
) -> SimulationSummary:
    """Simulate the service and write a Yambda-schema directory with ``truth/`` beside it.

    Files: ``multi_event.parquet`` (uid, timestamp, item_id, is_organic, played_ratio_pct,
    track_length_seconds, event_type; grouped by user, time-ordered), ``embeddings.parquet``,
    ``artist_mapping.parquet``, ``album_mapping.parquet`` and ``truth/`` for
    :class:`argusrec.oracle.Oracle`, whose ``listens.parquet`` (the next-item and feedback truth
    of every listen) ``listen_truth=False`` leaves out; the log itself does not depend on it.
    Everything is written to a temporary sibling directory and renamed to ``out_dir`` at the
    end, so a failed run leaves nothing behind.

    Raises:
        DataError: ``out_dir`` exists and ``overwrite`` is False.
    """
    began = time.perf_counter()
    cfg = config.resolved()
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise DataError("output directory already exists", path=out,
                        fix="choose a new directory or pass overwrite=True")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        world = build_world(cfg)
        fb = _calibrate(world)
        (tmp / TRUTH_DIR).mkdir()
        counts = _write_log(world, fb, tmp / "multi_event.parquet", progress,
                            tmp / TRUTH_DIR / LISTENS_FILE if listen_truth else None)
        _write_side_tables(world, tmp)
        save_truth(tmp, json.loads(cfg.model_dump_json()), fb, world.user_truth(),
                   world.item_truth())
        if out.exists():  # swap the new directory in, then drop the old one
            if not overwrite:  # appeared while we were simulating
                raise DataError("output directory already exists", path=out,
                                fix="choose a new directory or pass overwrite=True")
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(trash / out.name)
            tmp.rename(out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    per_item, by_type = counts["per_item"], counts["by_type"]
    events = int(by_type.sum())
    return SimulationSummary(
        out_dir=out,
        events=events,
        listens=int(by_type[0]),
        users=cfg.users,
        items=int((per_item > 0).sum()),
        catalogue_items=int(cfg.items or 0),
        artists=int(cfg.artists or 0),
        likes=int(by_type[1]),
        dislikes=int(by_type[2]),
        unlikes=int(by_type[3]),
        undislikes=int(by_type[4]),
        organic_share=counts["organic"] / max(events, 1),
        wall_seconds=time.perf_counter() - began,
        user_events=describe(counts["per_user"]),
        item_events=describe(per_item[per_item > 0]),
    )
