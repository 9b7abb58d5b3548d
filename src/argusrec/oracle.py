"""Ground truth of a simulated music service: its world, its feedback model, and the Oracle.

:mod:`argusrec.simulate` asks :func:`build_world` for a world (genres -> artists with
Zipf-sized catalogues -> albums -> tracks whose vectors sit near their artist's; users whose
taste drifts from a base vector towards a drift vector over their active window) and lets every
piece of feedback in the log be driven by the *true affinity* at the event's time. This module
owns that world and affinity, so the simulator and :class:`Oracle` share one definition: the
affinity an evaluation reads back is the one that produced the log (up to float32 rounding).
The truth is stored in ``<out_dir>/truth/``: ``config.json`` (format version, the resolved
SimulatorConfig under "config", the calibrated FeedbackModel under "feedback"), ``users.npz``
and ``items.npz`` (the arrays of :class:`World`), and ``listens.parquet`` (one row per listen of
the log, :data:`LISTENS_SCHEMA`: the true probability of the item it played and the feedback
expectations it was drawn with; truth written before it existed lacks it and still loads).

Affinity of user u for item i at time t (all vectors unit length)::

    w        = w_max[u] * clip((t - t0[u]) / (t1[u] - t0[u]), 0, 1)
    taste(t) = normalise((1 - w) * base[u] + w * drift[u])
    a        = affinity_scale * <taste(t), v[i]> + bias[i]

Because base and drift are unit vectors, <taste(t), v> only needs the two dot products
<base, v> and <drift, v> and the constant <base, drift>; the simulator precomputes those once per
candidate and evaluates any time in closed form.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from argusrec.errors import DataError

if TYPE_CHECKING:  # simulate imports this module; the config is only needed for type hints
    from argusrec.simulate import SimulatorConfig

TRUTH_DIR = "truth"
TRUTH_FORMAT_VERSION = 1  # listens.parquet came later as an optional file: old truth still loads
LISTENS_FILE = "listens.parquet"

# truth/listens.parquet: one row per listen, in the log's order; uid, timestamp, item_id and
# is_organic are those of the listen's row in multi_event.parquet. Float columns are float32.
LISTENS_SCHEMA = pa.schema([
    ("uid", pa.uint32()),
    ("timestamp", pa.uint32()),
    ("item_id", pa.uint32()),
    ("is_organic", pa.uint8()),
    # log p(item | user, session phase, traffic type): the mixture the item was drawn from
    ("logp_true", pa.float32()),
    # log p(item) under the logging policy's serving distribution (its pool softmax mixed with
    # exploration); on recommendation listens this is logp_true
    ("logp_policy", pa.float32()),
    ("p_like", pa.float32()),  # FeedbackModel.like_probability(affinity at timestamp)
    ("p_dislike", pa.float32()),  # FeedbackModel.dislike_probability(same)
    ("expected_played_ratio_pct", pa.float32()),  # E[played_ratio_pct | affinity]
    # whether this listen can still be the track's first like (dislike): a user likes a track
    # once, so a like *event* is impossible after the first (reaction_event_probabilities)
    ("like_open", pa.bool_()),
    ("dislike_open", pa.bool_()),
])


def reaction_event_probabilities(
    p_like: np.ndarray, p_dislike: np.ndarray, like_open: np.ndarray, dislike_open: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The chance that a listen produces a like event and a dislike event, from the columns of
    ``listens.parquet``: the truth behind a like / dislike label merged onto a listen.

    A like event needs the like draw and a track not liked before. The like and dislike draws
    share one uniform u (like: u < p_like; dislike: u > 1 - p_dislike and no like), so a dislike
    event has probability min(p_dislike, 1 - p_like) on a track not disliked before.
    """
    p_like = np.asarray(p_like, dtype=np.float64)
    p_dislike = np.asarray(p_dislike, dtype=np.float64)
    return (np.where(like_open, p_like, 0.0),
            np.where(dislike_open, np.minimum(p_dislike, 1.0 - p_like), 0.0))

# Yambda-50M's events per user at these quantiles (YambdaStats_50m.csv gives 0/25/50/75/100 %;
# the 90 % and 98 % knots are fitted so that log-linear interpolation matches its mean 4,779 and
# std 5,561 as well).
_ACTIVITY_Q = np.array([0.0, 0.25, 0.5, 0.75, 0.9, 0.98, 1.0])
_ACTIVITY_V = np.array([11.0, 687.0, 2654.0, 6856.0, 14125.0, 18750.0, 27699.0])
_YAMBDA_MEAN_EVENTS = 4779.0
_HOME_GENRE_SHARE = 0.75  # share of a user's home artists from their main genre
_CHURNED_SHARE = 0.2  # users whose active window ends before the log does

# Skipped listens stop somewhere in the track; their played ratio centre sits this many logits
# below the full-listen logit, so skips are mostly short but still rise with affinity.
_SKIP_SHIFT = 1.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically safe logistic function."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def drift_weight(
    w_max: np.ndarray, t0: np.ndarray, t1: np.ndarray, t: np.ndarray
) -> np.ndarray:
    """Weight of the drift vector at time ``t`` (seconds): a linear ramp over [t0, t1]."""
    span = np.maximum(t1 - t0, 1.0)
    return w_max * np.clip((t - t0) / span, 0.0, 1.0)


def taste_cosine(
    w: np.ndarray, base_dot: np.ndarray, drift_dot: np.ndarray, base_drift: np.ndarray
) -> np.ndarray:
    """<taste(t), v> from <base, v>, <drift, v>, <base, drift> and the drift weight ``w``.

    The norm of (1 - w) base + w drift is sqrt((1-w)^2 + w^2 + 2 w (1-w) <base, drift>), since
    both vectors are unit length.
    """
    norm2 = (1.0 - w) ** 2 + w**2 + 2.0 * w * (1.0 - w) * base_drift
    return ((1.0 - w) * base_dot + w * drift_dot) / np.sqrt(np.maximum(norm2, 1e-12))


@dataclass(frozen=True)
class FeedbackModel:
    """Link functions from true affinity ``a`` to feedback; offsets are calibrated per run.

    A listen is played in full with probability sigmoid(play_slope * a + play_offset); a skip
    plays 100 * sigmoid(play_slope * a + play_offset - 1.5 + skip_noise * z) percent, z ~ N(0, 1).
    A listen is followed by a like with probability sigmoid(like_slope * a + like_offset) and by a
    dislike with probability sigmoid(-dislike_slope * a + dislike_offset) (mutually exclusive).
    """

    affinity_scale: float
    play_slope: float
    play_offset: float
    skip_noise: float
    like_slope: float
    like_offset: float
    dislike_slope: float
    dislike_offset: float

    def full_listen_probability(self, a: np.ndarray) -> np.ndarray:
        """Probability that a listen plays the whole track."""
        return sigmoid(self.play_slope * a + self.play_offset)

    def played_ratio_pct(self, a: np.ndarray, u_full: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Played percentage (0-100) from affinity and the event's own random numbers."""
        logit = self.play_slope * a + self.play_offset
        skip = 100.0 * sigmoid(logit - _SKIP_SHIFT + self.skip_noise * z)
        # A skip never reaches 100 %, so 100 always means "played in full".
        return np.where(u_full < sigmoid(logit), 100.0, np.minimum(np.floor(skip), 99.0))

    def expected_played_ratio_pct(self, a: np.ndarray) -> np.ndarray:
        """E[played_ratio_pct | a], integrating the skip noise by Gauss-Hermite quadrature."""
        nodes, weights = np.polynomial.hermite_e.hermegauss(24)
        weights = weights / weights.sum()
        logit = self.play_slope * np.asarray(a, dtype=np.float64) + self.play_offset
        skip = 100.0 * sigmoid(
            logit[..., None] - _SKIP_SHIFT + self.skip_noise * nodes
        ) @ weights
        p_full = sigmoid(logit)
        return p_full * 100.0 + (1.0 - p_full) * skip

    def like_probability(self, a: np.ndarray) -> np.ndarray:
        """Probability that a listen is followed by a like."""
        return sigmoid(self.like_slope * a + self.like_offset)

    def dislike_probability(self, a: np.ndarray) -> np.ndarray:
        """Probability that a listen is followed by a dislike."""
        return sigmoid(-self.dislike_slope * a + self.dislike_offset)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _sample(rng: np.random.Generator, cdf: np.ndarray, n: int | tuple[int, ...]) -> np.ndarray:
    """Indices drawn in proportion to the increments of an unnormalised CDF."""
    idx = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    return np.minimum(idx, cdf.size - 1)


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + l) for every (s, l), without a Python loop."""
    ends = np.cumsum(lengths)
    return np.repeat(starts - (ends - lengths), lengths) + np.arange(ends[-1] if ends.size else 0)


@dataclass
class World:
    """The simulated service's hidden state. Item arrays are indexed by item_id, user arrays by uid.

    Shapes: I items, A artists, U users, D = ``cfg.dim``; vectors are unit length.
    """

    cfg: SimulatorConfig
    span_seconds: float
    item_vec: np.ndarray  # (I, D) float32
    item_bias: np.ndarray  # (I,) quality bias, part of the true affinity
    item_logpop: np.ndarray  # (I,) log popularity (Zipf-Mandelbrot over a noisy artist order)
    item_cdf: np.ndarray  # (I,) cumulative popularity: the charts
    explore_cdf: np.ndarray  # (I,) cumulative tempered popularity: the policy's exploration
    track_length: np.ndarray  # (I,) uint32 seconds
    item_artist: np.ndarray  # (I,)
    item_album: np.ndarray  # (I,)
    artist_vec: np.ndarray  # (A, D)
    artist_items: np.ndarray  # (I,) item ids grouped by artist, each artist's hits first
    artist_offsets: np.ndarray  # (A + 1,) artist a owns artist_items[off[a]:off[a + 1]]
    base: np.ndarray  # (U, D) float32 base taste
    drift: np.ndarray  # (U, D) float32 where the taste drifts to
    base_drift: np.ndarray  # (U,) <base, drift>
    drift_max: np.ndarray  # (U,) drift weight reached at t1
    t0: np.ndarray  # (U,) first second of the user's active window
    t1: np.ndarray  # (U,) last second of it
    policy: np.ndarray  # (U, D) float32 the logging policy's stale, noisy taste estimate
    organic: np.ndarray  # (U,) probability that a session is organic
    n_listens: np.ndarray  # (U,) listens to simulate
    home_offsets: np.ndarray  # (U + 1,) user u's home artists: home_artists[off[u]:off[u + 1]]
    home_artists: np.ndarray  # (sum of home artists,)
    drift_artists: np.ndarray  # (U, cfg.drift_artists)

    @cached_property
    def chart_probability(self) -> np.ndarray:
        """(I,) the probability of each item under :meth:`chart_sample`."""
        return np.diff(self.item_cdf, prepend=0.0) / self.item_cdf[-1]

    @cached_property
    def explore_probability(self) -> np.ndarray:
        """(I,) the probability of each item under :meth:`explore_sample`."""
        return np.diff(self.explore_cdf, prepend=0.0) / self.explore_cdf[-1]

    def chart_sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` item ids drawn by popularity: what the charts and search surface."""
        return _sample(rng, self.item_cdf, n)

    def explore_sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` item ids drawn by tempered popularity: the logging policy's exploration."""
        return _sample(rng, self.explore_cdf, n)

    def candidate_pool(self, uid: int, rng: np.random.Generator) -> np.ndarray:
        """Sorted unique item ids a user's plays are drawn from (besides the charts).

        The top tracks of the user's home and drift artists plus a popularity sample: scoring
        this pool instead of the catalogue keeps a user's cost independent of the catalogue size.
        """
        lo, hi = self.home_offsets[uid], self.home_offsets[uid + 1]
        arts = np.unique(np.concatenate([self.home_artists[lo:hi], self.drift_artists[uid]]))
        starts = self.artist_offsets[arts]
        lengths = np.minimum(self.artist_offsets[arts + 1] - starts, self.cfg.artist_pool_cap)
        own = self.artist_items[_ranges(starts, lengths)]
        return np.unique(np.concatenate([own, self.chart_sample(rng, self.cfg.pool_popular)]))

    def user_truth(self) -> dict[str, np.ndarray]:
        """Per-user arrays saved as ``truth/users.npz``."""
        names = ("base", "drift", "base_drift", "drift_max", "t0", "t1", "policy", "organic",
                 "n_listens", "home_offsets", "home_artists", "drift_artists")
        return {k: getattr(self, k) for k in names}

    def item_truth(self) -> dict[str, np.ndarray]:
        """Per-item arrays saved as ``truth/items.npz`` (plus the artists' vectors)."""
        return {
            "vector": self.item_vec, "bias": self.item_bias,
            "popularity": np.exp(self.item_logpop), "track_length": self.track_length,
            "artist": self.item_artist, "album": self.item_album, "artist_vector": self.artist_vec,
        }


def _noise(rng: np.random.Generator, n: int, d: int, std: float) -> np.ndarray:
    """(n, d) float32 Gaussian noise whose per-vector norm is about ``std``."""
    return rng.standard_normal((n, d), dtype=np.float32) * np.float32(std / np.sqrt(d))


@dataclass(frozen=True)
class _Catalogue:
    """The drawn catalogue, tracks in artist blocks (each artist's hits first) before ids.

    Shapes: I items, A artists, D = ``cfg.dim``; block arrays are in block order, so
    ``by_id`` turns them into arrays indexed by item_id.
    """

    artist_vec: np.ndarray  # (A, D) unit vectors near their genre's
    artist_genre: np.ndarray  # (A,)
    artist_pop: np.ndarray  # (A,) summed popularity of each artist's tracks
    offsets: np.ndarray  # (A + 1,) artist a's block is [off[a], off[a + 1])
    block_artist: np.ndarray  # (I,)
    block_album: np.ndarray  # (I,)
    logpop: np.ndarray  # (I,) normalised log popularity
    block_vec: np.ndarray  # (I, D) unit vectors near their artist's
    item_id: np.ndarray  # (I,) the item id of each block position
    track: np.ndarray  # (I,) float track seconds, indexed by item_id (drawn i.i.d.)

    def by_id(self, values: np.ndarray) -> np.ndarray:
        """Block-order ``values`` rearranged so that row i belongs to item_id i."""
        out = np.empty_like(values)
        out[self.item_id] = values
        return out


def _draw_catalogue(rng: np.random.Generator, cfg: SimulatorConfig) -> _Catalogue:
    """Genres -> artists with Zipf-sized catalogues -> albums -> tracks, with popularity."""
    n_items, n_art, d = int(cfg.items or 0), int(cfg.artists or 0), cfg.dim
    n_genres = min(cfg.genres, n_art)
    # Artist rank 0 is the biggest: sizes are 1 + a Zipf-weighted share of the rest.
    genre_vec = _unit(rng.standard_normal((n_genres, d), dtype=np.float32))
    weight = np.arange(1, n_art + 1, dtype=np.float64) ** -cfg.artist_zipf
    sizes = 1 + rng.multinomial(n_items - n_art, weight / weight.sum())
    artist_genre = rng.integers(0, n_genres, n_art)
    artist_vec = _unit(genre_vec[artist_genre] + _noise(rng, n_art, d, cfg.artist_spread))
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    block_artist = np.repeat(np.arange(n_art), sizes)  # catalogue in artist blocks
    position = np.arange(n_items) - offsets[block_artist]
    album_break = rng.random(n_items) < 1.0 / cfg.album_mean_tracks
    album_break[offsets[:-1]] = True
    block_album = np.cumsum(album_break) - 1
    # Popularity rank favours big artists and early tracks, shuffled by Gumbel noise; its shape
    # is Zipf-Mandelbrot, whose offset flattens the head as real charts are.
    key = -np.log1p(block_artist) * cfg.artist_zipf - np.log1p(position) + rng.gumbel(size=n_items)
    rank = np.empty(n_items, dtype=np.float64)
    rank[np.argsort(-key, kind="stable")] = np.arange(n_items)
    logpop = -cfg.popularity_zipf * np.log(rank + 1.0 + cfg.popularity_offset * n_items)
    logpop -= np.log(np.exp(logpop - logpop.max()).sum()) + logpop.max()
    # Inside each artist block, hits first: the pool takes an artist's top tracks.
    resort = np.lexsort((-logpop, block_artist))
    block_artist, block_album, logpop = block_artist[resort], block_album[resort], logpop[resort]
    block_vec = _unit(artist_vec[block_artist] + _noise(rng, n_items, d, cfg.item_spread))
    item_id = rng.permutation(n_items)  # ids carry no information, as in a real log
    track = rng.lognormal(np.log(cfg.track_seconds_median), cfg.track_seconds_sigma, n_items)
    artist_pop = np.bincount(block_artist, weights=np.exp(logpop), minlength=n_art)
    return _Catalogue(artist_vec=artist_vec, artist_genre=artist_genre, artist_pop=artist_pop,
                      offsets=offsets, block_artist=block_artist, block_album=block_album,
                      logpop=logpop, block_vec=block_vec, item_id=item_id, track=track)


def _draw_home_artists(rng: np.random.Generator, cfg: SimulatorConfig,
                       cat: _Catalogue) -> tuple[np.ndarray, np.ndarray]:
    """Each user's home artists, mostly from a main genre: (all of them, count per user (U,))."""
    n_users, n_art = cfg.users, len(cat.artist_vec)
    n_genres = min(cfg.genres, n_art)
    artist_genre, artist_pop = cat.artist_genre, cat.artist_pop
    genre_pop = np.bincount(artist_genre, weights=artist_pop, minlength=n_genres)
    user_genre = _sample(rng, np.cumsum(genre_pop), n_users)
    n_home = 1 + rng.poisson(cfg.home_artists - 1.0, n_users)
    owner = np.repeat(np.arange(n_users), n_home)
    by_genre = np.argsort(artist_genre, kind="stable")
    g_cum = np.cumsum(artist_pop[by_genre])
    g_start = np.searchsorted(artist_genre[by_genre], np.arange(n_genres))
    g_end = np.append(g_start[1:], n_art)
    g_before = np.where(g_start > 0, g_cum[np.maximum(g_start - 1, 0)], 0.0)
    g_total = g_cum[np.maximum(g_end - 1, 0)] - g_before
    # Genre g's artists own the interval (g, g + 1] of one flat CDF: one searchsorted for all.
    genre_of = artist_genre[by_genre]
    flat = genre_of + (g_cum - g_before[genre_of]) / np.maximum(g_total[genre_of], 1e-300)
    g = user_genre[owner]
    in_genre = np.searchsorted(flat, g + rng.random(owner.size), side="right")
    in_genre = by_genre[np.clip(in_genre, g_start[g], g_end[g] - 1)]
    anywhere = _sample(rng, np.cumsum(artist_pop), owner.size)
    home = np.where(rng.random(owner.size) < _HOME_GENRE_SHARE, in_genre, anywhere)
    return home, n_home


@dataclass(frozen=True)
class _Tastes:
    """Per-user taste: base and drift vectors, the policy's estimate and the organic share."""

    home_offsets: np.ndarray  # (U + 1,)
    home_artists: np.ndarray  # (sum of home artists,)
    base: np.ndarray  # (U, D)
    drift_artists: np.ndarray  # (U, cfg.drift_artists)
    drift: np.ndarray  # (U, D)
    drift_max: np.ndarray  # (U,)
    policy: np.ndarray  # (U, D)
    organic: np.ndarray  # (U,)


def _draw_tastes(rng: np.random.Generator, cfg: SimulatorConfig, cat: _Catalogue) -> _Tastes:
    """Users: a base taste near their home artists, a drift towards a few other artists."""
    n_users, d = cfg.users, cfg.dim
    home, n_home = _draw_home_artists(rng, cfg, cat)
    artist_vec = cat.artist_vec
    home_offsets = np.concatenate([[0], np.cumsum(n_home)])
    home_mean = np.add.reduceat(artist_vec[home], home_offsets[:-1], axis=0) / n_home[:, None]
    base = _unit(home_mean + _noise(rng, n_users, d, cfg.taste_noise))
    drift_artists = _sample(rng, np.cumsum(cat.artist_pop), (n_users, cfg.drift_artists))
    drift = _unit(artist_vec[drift_artists].mean(axis=1)
                  + _noise(rng, n_users, d, cfg.taste_noise))
    drift_max = np.clip(cfg.drift * rng.uniform(0.5, 1.5, n_users), 0.0, 1.0)
    policy = _unit(base + _noise(rng, n_users, d, cfg.policy_noise))
    share = cfg.organic_share
    organic = (rng.beta(4 * share, 4 * (1 - share), n_users) if 0 < share < 1
               else np.full(n_users, share))
    return _Tastes(home_offsets=home_offsets, home_artists=home, base=base,
                   drift_artists=drift_artists, drift=drift, drift_max=drift_max,
                   policy=policy, organic=organic)


def _draw_activity(rng: np.random.Generator, cfg: SimulatorConfig,
                   span: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Listens per user and active windows: (n_listens, t0, window length), each (U,)."""
    n_users = cfg.users
    # Stratified draws from Yambda's quantile function, so even a few hundred users reproduce
    # its shape; feedback events come on top of listens, so listens are a bit fewer.
    strata = (rng.permutation(n_users) + rng.random(n_users)) / n_users
    events = np.exp(np.interp(strata, _ACTIVITY_Q, np.log(_ACTIVITY_V)))
    events *= cfg.mean_events_per_user / _YAMBDA_MEAN_EVENTS * cfg.events_scale
    extra = cfg.like_rate * (1 + cfg.unlike_rate) + cfg.dislike_rate * (1 + cfg.undislike_rate)
    n_listens = np.maximum(1, np.round(events / (1.0 + extra))).astype(np.int64)
    # Active windows: mostly long; heavy users get at least twice their listening time.
    need = n_listens * (cfg.track_seconds_median + 60.0) * 2.0
    length = np.clip(np.maximum(span * rng.beta(2.0, 0.7, n_users), need), 3600.0, span - 5.0)
    # A log is a snapshot of a live service: most users are still active at its end (so the
    # last day, Yambda's test day, is as busy as any), a minority churned at a random time.
    churned = rng.random(n_users) < _CHURNED_SHARE
    t0 = np.floor(np.where(churned, rng.random(n_users), 1.0) * (span - 5.0 - length))
    return n_listens, t0, length


def build_world(cfg: SimulatorConfig) -> World:
    """Draw catalogue and users from ``cfg`` (resolved: items and artists set)."""
    # One generator, drawn from in this order (catalogue, tastes, activity, item biases): the
    # order is part of the result, so a new draw goes at the end.
    rng = np.random.default_rng([cfg.seed, 0])
    span = float(cfg.days) * 86_400.0
    cat = _draw_catalogue(rng, cfg)
    tastes = _draw_tastes(rng, cfg, cat)
    n_listens, t0, length = _draw_activity(rng, cfg, span)
    item_logpop = cat.by_id(cat.logpop)
    base, drift = tastes.base, tastes.drift
    return World(
        cfg=cfg, span_seconds=span,
        item_vec=cat.by_id(cat.block_vec),
        item_bias=rng.normal(0.0, cfg.item_bias_std, int(cfg.items or 0)),
        item_logpop=item_logpop, item_cdf=np.cumsum(np.exp(item_logpop)),
        explore_cdf=np.cumsum(np.exp(cfg.explore_popularity * (item_logpop - item_logpop.max()))),
        track_length=np.clip(np.round(cat.track), 30, 1800).astype(np.uint32),
        item_artist=cat.by_id(cat.block_artist), item_album=cat.by_id(cat.block_album),
        artist_vec=cat.artist_vec, artist_items=cat.item_id, artist_offsets=cat.offsets,
        base=base, drift=drift, base_drift=np.einsum("ud,ud->u", base, drift).astype(np.float64),
        drift_max=tastes.drift_max, t0=t0, t1=t0 + length, policy=tastes.policy,
        organic=tastes.organic, n_listens=n_listens, home_offsets=tastes.home_offsets,
        home_artists=tastes.home_artists, drift_artists=tastes.drift_artists,
    )


def save_truth(
    out_dir: Path,
    config: dict[str, Any],
    feedback: FeedbackModel,
    users: dict[str, np.ndarray],
    items: dict[str, np.ndarray],
) -> None:
    """Write ``truth/`` under ``out_dir``: the resolved config, the feedback model, the arrays."""
    truth = out_dir / TRUTH_DIR
    truth.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": TRUTH_FORMAT_VERSION,
        "config": config,
        "feedback": asdict(feedback),
    }
    (truth / "config.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    np.savez(truth / "users.npz", **users)
    np.savez(truth / "items.npz", **items)


class Oracle:
    """The true affinity (and feedback probabilities) of a simulated log, reloaded from disk.

    Arrays are indexed by the log's ``uid`` and ``item_id`` (dense, 0-based). Vectorised methods
    take equal-length arrays of uid, item_id and timestamp (seconds from the log's start).
    ``listens_path`` is the truth's ``listens.parquet``, read by :meth:`listens`.
    """

    def __init__(
        self,
        config: dict[str, Any],
        feedback: FeedbackModel,
        users: dict[str, np.ndarray],
        items: dict[str, np.ndarray],
        listens_path: Path | None = None,
    ) -> None:
        self.config = config
        self.feedback = feedback
        self.users = users
        self.items = items
        self.listens_path = listens_path
        self.n_users = int(users["base"].shape[0])
        self.n_items = int(items["vector"].shape[0])

    @classmethod
    def load(cls, out_dir: str | Path) -> Oracle:
        """Load the ground truth that :func:`argusrec.simulate.simulate` wrote to ``out_dir``."""
        truth = Path(out_dir) / TRUTH_DIR
        meta_path = truth / "config.json"
        if not meta_path.is_file():
            raise DataError(
                "no simulator ground truth here (truth/config.json is missing)",
                path=out_dir,
                fix="pass the directory that argusrec.simulate.simulate wrote",
            )
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != TRUTH_FORMAT_VERSION:
            raise DataError(
                f"truth format version {meta.get('format_version')!r} is not "
                f"{TRUTH_FORMAT_VERSION}",
                path=meta_path,
                fix="re-run the simulator with this version of argusrec",
            )
        with np.load(truth / "users.npz") as f:
            users = {k: f[k] for k in f.files}
        with np.load(truth / "items.npz") as f:
            items = {k: f[k] for k in f.files}
        return cls(meta["config"], FeedbackModel(**meta["feedback"]), users, items,
                   listens_path=truth / LISTENS_FILE)

    def listens(self, columns: list[str] | None = None) -> pa.Table:
        """Every listen of the log with its next-item and feedback truth (:data:`LISTENS_SCHEMA`).

        Raises:
            DataError: the truth predates ``listens.parquet`` (or was not loaded from disk).
        """
        path = self.listens_path
        if path is None or not path.is_file():
            raise DataError(
                "this ground truth has no next-item truth (truth/listens.parquet is missing: "
                "it was written by an older argusrec)",
                path=path.parent if path is not None else None,
                fix="re-run `argus simulate` with this version of argusrec (same options and "
                    "seed give the same log, now with truth/listens.parquet)",
            )
        return pq.read_table(path, columns=columns)

    def _check(
        self, uid: np.ndarray, item_id: np.ndarray, timestamp: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        uid = np.asarray(uid, dtype=np.int64).ravel()
        item_id = np.asarray(item_id, dtype=np.int64).ravel()
        timestamp = np.asarray(timestamp, dtype=np.float64).ravel()
        if not (uid.shape == item_id.shape == timestamp.shape):
            raise DataError(
                f"uid, item_id and timestamp have lengths {uid.size}, {item_id.size}, "
                f"{timestamp.size}",
                fix="pass arrays of equal length, one entry per event",
            )
        if uid.size and (uid.min() < 0 or uid.max() >= self.n_users):
            raise DataError(
                f"uid out of range [0, {self.n_users})", column="uid",
                fix="pass uids from the simulated log",
            )
        if item_id.size and (item_id.min() < 0 or item_id.max() >= self.n_items):
            raise DataError(
                f"item_id out of range [0, {self.n_items})", column="item_id",
                fix="pass item ids from the simulated catalogue",
            )
        return uid, item_id, timestamp

    def affinity(
        self, uid: np.ndarray, item_id: np.ndarray, timestamp: np.ndarray
    ) -> np.ndarray:
        """True affinity (logit scale) of each (uid, item_id) at ``timestamp``; shape (n,)."""
        uid, item_id, timestamp = self._check(uid, item_id, timestamp)
        out = np.empty(uid.size, dtype=np.float64)
        u, it = self.users, self.items
        # Chunks keep the (n, D) gathers small when scoring a whole log.
        for lo in range(0, uid.size, 1 << 20):
            s = slice(lo, lo + (1 << 20))
            us, vs = uid[s], it["vector"][item_id[s]]
            base_dot = np.einsum("nd,nd->n", u["base"][us], vs)
            drift_dot = np.einsum("nd,nd->n", u["drift"][us], vs)
            w = drift_weight(u["drift_max"][us], u["t0"][us], u["t1"][us], timestamp[s])
            cos = taste_cosine(w, base_dot, drift_dot, u["base_drift"][us])
            out[s] = self.feedback.affinity_scale * cos + it["bias"][item_id[s]]
        return out

    def full_listen_probability(
        self, uid: np.ndarray, item_id: np.ndarray, timestamp: np.ndarray
    ) -> np.ndarray:
        """Probability that a listen of the item at that time plays in full; shape (n,)."""
        return self.feedback.full_listen_probability(self.affinity(uid, item_id, timestamp))

    def expected_played_ratio_pct(
        self, uid: np.ndarray, item_id: np.ndarray, timestamp: np.ndarray
    ) -> np.ndarray:
        """Expected ``played_ratio_pct`` of a listen at that time; shape (n,)."""
        return self.feedback.expected_played_ratio_pct(self.affinity(uid, item_id, timestamp))

    def like_probability(
        self, uid: np.ndarray, item_id: np.ndarray, timestamp: np.ndarray
    ) -> np.ndarray:
        """Probability that a listen at that time is followed by a like; shape (n,).

        The simulator keeps only a user's first like of a track, so this is the chance per listen
        before that rule.
        """
        return self.feedback.like_probability(self.affinity(uid, item_id, timestamp))

    def dislike_probability(
        self, uid: np.ndarray, item_id: np.ndarray, timestamp: np.ndarray
    ) -> np.ndarray:
        """Probability that a listen at that time is followed by a dislike; shape (n,)."""
        return self.feedback.dislike_probability(self.affinity(uid, item_id, timestamp))

    def catalogue_affinity(self, uid: int, timestamp: float) -> np.ndarray:
        """Affinity of one user for every catalogue item at one time; shape (n_items,).

        The oracle's ranking (``np.argsort(-scores)``) is the upper bound a recommender can reach.
        """
        n = self.n_items
        return self.affinity(
            np.full(n, uid), np.arange(n), np.full(n, timestamp, dtype=np.float64)
        )
