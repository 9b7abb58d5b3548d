"""The final ranker: gradient boosting over impressions, with and without the ARGUS score.

This is how the ARGUS paper measures a model's value in production (DESIGN.md, "Evaluation"):
a CatBoost ranker with ordinary features is trained on the impressions of one period, once
without and once with the fine-tuned ARGUS score (and optionally the user and item vectors)
as extra features, and both are compared by PairAccuracy on the next period. The reported
figure is the relative uplift PA(with) / PA(without) - 1.

The ordinary features are running counters over the whole log, each from events strictly
before the impression: item popularity and like rate, the user's activity, user-item and
user-artist repeat counts, recency, track length and context. The ARGUS features come from the
user state lagged as in fine-tuning (one day by default), as in the daily deployment.

Protocol: the ranker learns on the validation period and is scored on the test period; the
ARGUS model saw neither (it was fine-tuned on the training period).

Legend: N impressions, U user-vector width.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from argusrec.checkpoint import load_model, need_data
from argusrec.errors import DataError
from argusrec.finetune import FinetuneConfig
from argusrec.impressions import grade_events
from argusrec.metrics import pair_accuracy
from argusrec.scoring import impression_pairs, oracle_scores, score_impressions
from argusrec.sequences import GAP, PreparedData

ORDINARY = ["item_events", "item_likes", "item_like_rate", "item_grade_mean", "item_age",
            "user_events", "user_item_events", "user_item_likes", "since_user_item",
            "since_previous", "user_artist_events", "track_length", "hour",
            "session_position"]


class RankConfig(BaseModel):
    """The CatBoost final ranker."""

    model_config = ConfigDict(extra="forbid")

    loss: Literal["YetiRank", "PairLogit"] = Field("YetiRank", description="CatBoost ranking "
                                                   "loss; a group is one user's session")
    iterations: int = Field(400, ge=1, description="trees; with choose_iterations, the most "
                            "it may choose")
    choose_iterations: bool = Field(
        False, description="choose the number of trees on the training period itself: fit on "
        "its earlier part, score every 10th tree count by PairAccuracy on its last "
        "`holdout` share (by time), then refit on the whole period with the best count. "
        "A fixed count overfits a small period (on the simulator's 7.9K validation "
        "impressions, 400 trees of depth 6 rank worse than their best single feature)")
    holdout: float = Field(0.25, gt=0, lt=1, description="with choose_iterations: the share "
                           "of the training period's impressions, the latest, that chooses")
    learning_rate: float = Field(0.05, gt=0)
    depth: int = Field(6, ge=1, le=16)
    vectors: bool = Field(False, description="also a ranker with the user and item vectors "
                          "as features")
    train_split: Literal["val", "test"] = Field("val", description="the ranker learns here")
    eval_split: Literal["val", "test"] = Field("test", description="and is scored here")
    seed: int = Field(0, ge=0, description="CatBoost's seed (the first, with `seeds`)")
    seeds: int = Field(1, ge=1, le=16, description="fit every ranker with this many CatBoost "
                       "seeds (seed, seed + 1, ...) and report each one's mean PairAccuracy: "
                       "on the simulator one seed's uplift moves by about ±0.3 points, more "
                       "than three fine-tuning seeds move it")
    threads: int | None = Field(None, ge=1)


# -- ordinary features ------------------------------------------------------------------------
def event_features(data: PreparedData, pairs_cfg) -> pl.DataFrame:
    """Every event outside the gap with running-count features (strictly earlier events only).

    Columns: event (the global event number, shard after shard), user, item, timestamp and the
    ORDINARY features that do not need sessions.
    """
    frames = []
    feedback = list(data.feedback_fields)
    extras = data.info.fields.extra
    base = 0
    for shard in data.shards:
        ev = shard.events
        n = len(ev["item"])
        cols: dict[str, Any] = {
            "event": np.arange(base, base + n, dtype=np.int64),
            "user": np.repeat(np.asarray(shard.users, dtype=np.int64), np.diff(shard.offsets)),
            "timestamp": np.asarray(ev["timestamp"], dtype=np.int64),
            "item": np.asarray(ev["item"], dtype=np.int64),
            "split": np.asarray(ev["split"]),
            "grade": grade_events({f: np.asarray(ev[f"fb_{f}"]) for f in feedback},
                                  data.feedback_fields, pairs_cfg),
            "liked": (np.asarray(ev["fb_like"]) == 1) if "like" in feedback
            else np.zeros(len(ev["item"]), dtype=bool),
            "track_length": (np.asarray(ev["x_track_length"], dtype=np.float64)
                             if "track_length" in extras
                             else np.full(len(ev["item"]), np.nan)),
        }
        frames.append(pl.DataFrame(cols))
        base += n
    events = pl.concat(frames).filter(pl.col("split") != GAP).drop("split")
    items = data.items()
    artist = "artist_index" if "artist_index" in items.columns else None
    events = events.join(items.select(pl.col("index").cast(pl.Int64).alias("item"),
                                      (pl.col(artist) if artist else pl.lit(0)).cast(pl.Int64)
                                      .alias("artist")), on="item", how="left")
    graded = pl.col("grade").is_not_nan()
    grade0 = pl.when(graded).then(pl.col("grade")).otherwise(0.0)
    liked = pl.col("liked").cast(pl.Int64)
    events = events.sort(["timestamp", "user"], maintain_order=True).with_columns(
        item_events=pl.int_range(pl.len()).over("item"),
        item_likes=(liked.cum_sum() - liked).over("item"),
        item_grade_sum=(grade0.cum_sum() - grade0).over("item"),
        item_graded=(graded.cast(pl.Int64).cum_sum() - graded.cast(pl.Int64)).over("item"),
        item_age=pl.col("timestamp") - pl.col("timestamp").first().over("item"),
    ).sort(["user", "timestamp"], maintain_order=True).with_columns(
        user_events=pl.int_range(pl.len()).over("user"),
        user_item_events=pl.int_range(pl.len()).over(["user", "item"]),
        user_item_likes=(liked.cum_sum() - liked).over(["user", "item"]),
        user_artist_events=pl.int_range(pl.len()).over(["user", "artist"]),
        since_user_item=(pl.col("timestamp") - pl.col("timestamp").shift(1))
        .over(["user", "item"]),
        since_previous=(pl.col("timestamp") - pl.col("timestamp").shift(1)).over("user"),
    ).with_columns(
        item_like_rate=pl.col("item_likes") / (pl.col("item_events") + 20),
        item_grade_mean=pl.col("item_grade_sum") / pl.col("item_graded").clip(lower_bound=1),
        hour=(pl.col("timestamp") // 3600) % 24,
    )
    if artist is None:
        events = events.with_columns(user_artist_events=pl.lit(None, dtype=pl.Int64))
    return events.select(["event", "user", "item", "timestamp",
                          *[c for c in ORDINARY if c != "session_position"]])


def with_features(table: pl.DataFrame, events: pl.DataFrame) -> pl.DataFrame:
    """Scored impressions (event, user, item, timestamp, session, grade, score) joined with
    their ordinary features, sorted by user, session and time (CatBoost needs groups contiguous)."""
    out = table.with_row_index("row").join(events.drop(["user", "item", "timestamp"]),
                                           on="event", how="left")
    out = out.sort(["user", "session", "timestamp"]).with_columns(
        session_position=pl.int_range(pl.len()).over(["user", "session"]))
    return out


# -- the ranker -------------------------------------------------------------------------------
@dataclass
class RankSummary:
    rows: list[dict[str, Any]] = field(default_factory=list)
    train_impressions: int = 0
    eval_impressions: int = 0
    eval_pairs: int = 0
    seconds: float = 0.0
    uplift: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _catboost_classes():
    """CatBoostRanker and Pool, or a DataError naming the extra that installs them."""
    try:  # deferred: catboost is the optional `rank` extra, needed by this verb only
        from catboost import CatBoostRanker, Pool
    except ImportError:
        raise DataError("the final ranker needs catboost, which is not installed",
                        fix="pip install 'argusrec[rank]'") from None
    return CatBoostRanker, Pool


def _catboost(cfg: RankConfig, X: np.ndarray, y: np.ndarray, group: np.ndarray):
    CatBoostRanker, Pool = _catboost_classes()
    model = CatBoostRanker(loss_function=cfg.loss, iterations=cfg.iterations,
                           learning_rate=cfg.learning_rate, depth=cfg.depth,
                           random_seed=cfg.seed, thread_count=cfg.threads or -1, verbose=False,
                           allow_writing_files=False)
    model.fit(Pool(X, label=y, group_id=group))
    return model


def fit_ranker(cfg: RankConfig, frame: pl.DataFrame, columns: list[str],
               extra: list[np.ndarray], pairs) -> tuple[Any, int]:
    """A CatBoost ranker on ``frame``'s impressions (``columns`` plus ``extra`` arrays) and
    the number of trees it has: ``cfg.iterations``, or with ``cfg.choose_iterations`` the
    count that maximises PairAccuracy (under ``pairs``, a PairConfig) on the latest
    ``cfg.holdout`` of the impressions when fitted on the rest."""
    y, groups = frame["grade"].to_numpy(), _session_groups(frame)
    X = _matrix(frame, columns, extra)
    if not cfg.choose_iterations:
        return _catboost(cfg, X, y, groups), cfg.iterations
    times = frame["timestamp"].to_numpy()
    held = times > np.quantile(times, 1.0 - cfg.holdout)
    if held.all() or not held.any():
        raise DataError(f"choose_iterations: the ranker's {len(frame):,} training impressions "
                        "cannot be split by time", fix="turn choose_iterations off, or give "
                        "the ranker a longer training period")
    first = _catboost(cfg, X[~held], y[~held], groups[~held])
    order, better, worse, weight = impression_pairs(frame.filter(pl.Series(held)), pairs)
    best, best_count, period = -1.0, cfg.iterations, 10
    for k, score in enumerate(first.staged_predict(X[held], eval_period=period)):
        value = pair_accuracy(np.asarray(score)[order], better, worse, weight)["PairAccuracy"]
        if value > best:
            best, best_count = value, min((k + 1) * period, cfg.iterations)
    return _catboost(cfg.model_copy(update={"iterations": best_count}), X, y, groups), best_count


def _session_groups(frame: pl.DataFrame) -> np.ndarray:
    """A CatBoost group id per impression: its user's session."""
    return (frame["user"].to_numpy() << 32) + frame["session"].to_numpy()


def _matrix(frame: pl.DataFrame, columns: list[str], extra: list[np.ndarray]) -> np.ndarray:
    X = frame.select(columns).cast(pl.Float64).fill_null(np.nan).to_numpy()
    return np.concatenate([X, *extra], axis=1) if extra else X


def _inputs_digest(*arrays: np.ndarray) -> Any:
    """A running sha256 over arrays' shapes, types and bytes: what one ranker fit learns from
    and is scored on."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape};".encode())
        digest.update(a.tobytes())
    return digest


def _cached_fit(cache: Path | None, digest, cfg: RankConfig, fit) -> dict[str, Any]:
    """One seed's fit result, read from ``cache`` when a fit of the same inputs and settings
    is there (JSON, keyed by a sha256 of both), else ``fit()`` and stored there."""
    if cache is None:
        return fit()
    import catboost  # its version is part of the key: another version may fit other trees

    key = digest.copy()
    settings = cfg.model_dump(mode="json", exclude={"seeds"})
    settings["threads"] = cfg.threads or os.cpu_count()  # CatBoost's -1: every core
    key.update(json.dumps([settings, catboost.__version__], sort_keys=True).encode())
    path = cache / f"{key.hexdigest()[:32]}.json"
    if path.exists():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # a damaged entry is fitted again and replaced
    result = fit()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result) + "\n")
    tmp.replace(path)
    return result


def rank(run: str | Path, *, cfg: RankConfig | None = None, which: str = "latest",
         oracle: str | Path | None = None, data: PreparedData | None = None,
         out_json: str | Path | None = None, progress: bool = False,
         cache: str | Path | None = None) -> RankSummary:
    """Train the final ranker with and without the ARGUS features of a fine-tuned model and
    report PairAccuracy on the evaluation period and the relative uplift.

    ``cache``: a directory of finished CatBoost fits (JSON), keyed by everything a fit depends
    on (its training matrix, labels, groups and times, the scored matrix and pairs, the
    settings and CatBoost's version). A fit already there is read, not refitted: the ranker on
    ordinary features, the same for every model ranked on one prepared log, is fitted once,
    and more ``seeds`` reuse the seeds fitted before."""
    cfg = cfg or RankConfig()
    _catboost_classes()  # fail before the scoring, not after it
    cache = None if cache is None else Path(cache)
    if cache is not None and cache.exists() and not cache.is_dir():
        raise DataError("the ranker cache must be a directory, and this is a file",
                        path=cache, fix="give --cache a new or existing directory")
    started = time.perf_counter()
    model, config, data = load_model(run, data, which=which)
    data = need_data(data, config, "the final ranker")
    saved = config.get("finetune")
    ft = FinetuneConfig(**saved) if saved else FinetuneConfig()
    events = event_features(data, ft.pairs)
    frames, vectors = {}, {}
    for split in (cfg.train_split, cfg.eval_split):
        dataset = ft.dataset(data, split, model.cfg.max_len)
        if dataset.num_impressions == 0:
            raise DataError(f"no {split} impressions with history", path=data.path,
                            fix="prepare with --val-duration so the ranker has a period to "
                                "learn on, and check that the log has impressions")
        table, users, items = score_impressions(model, dataset, progress=progress, vectors=True)
        joined = with_features(table, events)
        rows = joined["row"].to_numpy()
        frames[split], vectors[split] = joined, (users[rows], items[rows])
    train, test = frames[cfg.train_split], frames[cfg.eval_split]
    order, better, worse, weight = impression_pairs(test, ft.pairs)
    summary = RankSummary(train_impressions=len(train), eval_impressions=len(test),
                          eval_pairs=len(better))

    def report(name: str, score: np.ndarray) -> dict[str, Any]:
        row = {"model": name, **pair_accuracy(np.asarray(score)[order], better, worse, weight)}
        summary.rows.append(row)
        return row

    report("ARGUS score alone", test["score"].to_numpy())
    variants = [("ranker, ordinary features", [], False),
                ("ranker + ARGUS score", ["score"], False)]
    if cfg.vectors:
        variants.append(("ranker + ARGUS score + vectors", ["score"], True))
    results = {}
    for name, extra_cols, with_vectors in variants:
        columns = ORDINARY + extra_cols
        extra_train = list(vectors[cfg.train_split]) if with_vectors else []
        extra_test = list(vectors[cfg.eval_split]) if with_vectors else []
        X_test = _matrix(test, columns, extra_test)
        digest = None if cache is None else _inputs_digest(
            _matrix(train, columns, extra_train), train["grade"].to_numpy(),
            _session_groups(train), train["timestamp"].to_numpy(), X_test, order, better,
            worse, weight, np.frombuffer(ft.pairs.model_dump_json().encode(), np.uint8))

        def fit_one(seed_cfg: RankConfig) -> dict[str, Any]:
            ranker, trees = fit_ranker(seed_cfg, train, columns, extra_train, ft.pairs)
            accuracy = pair_accuracy(np.asarray(ranker.predict(X_test))[order], better, worse,
                                     weight)
            return {**accuracy, "seed": seed_cfg.seed, "trees": trees}

        fits = []
        for seed in range(cfg.seed, cfg.seed + cfg.seeds):
            seed_cfg = cfg.model_copy(update={"seed": seed})
            fits.append(_cached_fit(cache, digest, seed_cfg, lambda c=seed_cfg: fit_one(c)))
        results[name] = _mean_of_fits(name, fits)
        summary.rows.append(results[name])
    if oracle is not None:
        report("oracle (true affinity, the ceiling)", oracle_scores(test, data, oracle))
    base = results["ranker, ordinary features"]
    for name, row in results.items():
        if name == "ranker, ordinary features":
            continue
        for key in ("PairAccuracy", "PairAccuracy/weighted"):
            summary.uplift[f"{name}: {key}"] = row[key] / base[key] - 1.0
    summary.seconds = time.perf_counter() - started
    if out_json is not None:
        path = Path(out_json)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        tmp.replace(path)
    return summary


def _mean_of_fits(name: str, fits: list[dict[str, Any]]) -> dict[str, Any]:
    """One ranker's row: each metric's mean over its CatBoost seeds; with several seeds also
    their sample std and every seed's figures (``fits``)."""
    metrics = [k for k in fits[0] if k not in ("seed", "trees")]
    row: dict[str, Any] = {"model": name,
                           **{k: float(np.mean([f[k] for f in fits])) for k in metrics}}
    row["trees"] = fits[0]["trees"] if len(fits) == 1 else [f["trees"] for f in fits]
    if len(fits) > 1:
        row["PairAccuracy/std"] = float(np.std([f["PairAccuracy"] for f in fits], ddof=1))
        row["fits"] = fits
    return row


def rank_report(summary: RankSummary, title: str = "final ranker") -> str:
    """The uplift table as text."""
    lines = [f"{title}: trained on {summary.train_impressions:,} impressions, scored on "
             f"{summary.eval_impressions:,} ({summary.eval_pairs:,} pairs)",
             f"  {'model':<40} {'PairAcc':>8} {'weighted':>9}"]
    for row in summary.rows:
        spread = (f"  ± {row['PairAccuracy/std']:.4f} over {len(row['fits'])} ranker seeds"
                  if "fits" in row else "")
        lines.append(f"  {row['model']:<40} {row['PairAccuracy']:>8.4f} "
                     f"{row['PairAccuracy/weighted']:>9.4f}{spread}")
    for name, value in summary.uplift.items():
        lines.append(f"  uplift {name}: {100 * value:+.2f}%")
    return "\n".join(lines)
