"""The final ranker: running-count features against plain loops, and the uplift report."""

import numpy as np
import polars as pl
import pytest

from argusrec.finetune import FinetuneConfig, finetune
from argusrec.impressions import PairConfig
from argusrec.rank import ORDINARY, RankConfig, event_features, rank, rank_report
from argusrec.sequences import GAP, PreparedData


def _flat(data: PreparedData) -> pl.DataFrame:
    shard = data.shards[0]
    ev = shard.events
    return pl.DataFrame({
        "user": np.repeat(np.asarray(shard.users, dtype=np.int64), np.diff(shard.offsets)),
        "timestamp": np.asarray(ev["timestamp"], dtype=np.int64),
        "item": np.asarray(ev["item"], dtype=np.int64),
        "split": np.asarray(ev["split"]),
    }).filter(pl.col("split") != GAP)


def test_running_counts_use_strictly_earlier_events(sim_data):
    data = PreparedData(sim_data)
    feats = event_features(data, PairConfig())
    flat = _flat(data)
    assert len(feats) == len(flat)
    rows = flat.to_dicts()
    table = {(r["user"], r["item"], r["timestamp"]): r for r in feats.to_dicts()}
    rng = np.random.default_rng(0)
    for k in rng.choice(len(rows), 40, replace=False):
        r = rows[k]
        mine = table[(r["user"], r["item"], r["timestamp"])]
        # "earlier": by time, then user, then the order of the user's prepared sequence
        earlier_item = [x for i, x in enumerate(rows) if x["item"] == r["item"]
                        and (x["timestamp"], x["user"], i) < (r["timestamp"], r["user"], k)]
        same_user = [x for x in rows[:k] if x["user"] == r["user"]]
        assert mine["item_events"] == len(earlier_item)
        assert mine["user_events"] == len(same_user)
        assert mine["user_item_events"] == sum(x["item"] == r["item"] for x in same_user)
        previous = [x["timestamp"] for x in same_user if x["item"] == r["item"]]
        assert mine["since_user_item"] == (r["timestamp"] - max(previous) if previous else None)


def test_rank_reports_uplift_with_and_without_argus(sim_data, tmp_path):
    finetune(sim_data, None, tmp_path / "ft", FinetuneConfig(max_steps=4, batch_size=4, lag=0),
             progress=False, model_fields={"preset": "debug"})
    summary = rank(tmp_path / "ft", cfg=RankConfig(iterations=20, vectors=True, threads=1),
                   out_json=tmp_path / "rank.json")
    names = [r["model"] for r in summary.rows]
    assert names == ["ARGUS score alone", "ranker, ordinary features", "ranker + ARGUS score",
                     "ranker + ARGUS score + vectors"]
    assert summary.eval_pairs > 0 and summary.train_impressions > 0
    for row in summary.rows:
        assert 0.0 <= row["PairAccuracy"] <= 1.0
    base = summary.rows[1]["PairAccuracy"]
    assert summary.uplift["ranker + ARGUS score: PairAccuracy"] == pytest.approx(
        summary.rows[2]["PairAccuracy"] / base - 1)
    assert (tmp_path / "rank.json").exists()
    assert "uplift" in rank_report(summary)
    assert len(ORDINARY) >= 10


def test_ranker_seeds_report_the_mean_of_single_seed_fits(sim_data, tmp_path):
    """--seeds 2 against two plain runs at seed 0 and seed 1: each ranker's PairAccuracy is
    their mean, the uplift is taken between the means, and the score alone is unchanged."""
    finetune(sim_data, None, tmp_path / "ft", FinetuneConfig(max_steps=4, batch_size=4, lag=0),
             progress=False, model_fields={"preset": "debug"})
    single = [rank(tmp_path / "ft", cfg=RankConfig(iterations=15, threads=1, seed=seed))
              for seed in (0, 1)]
    both = rank(tmp_path / "ft", cfg=RankConfig(iterations=15, threads=1, seeds=2))
    for k, row in enumerate(both.rows):
        expected = np.mean([s.rows[k]["PairAccuracy"] for s in single])
        assert row["PairAccuracy"] == pytest.approx(expected)
    assert "fits" not in both.rows[0]  # the score alone needs no ranker
    assert [f["seed"] for f in both.rows[2]["fits"]] == [0, 1]
    assert both.rows[2]["PairAccuracy/std"] == pytest.approx(np.std(
        [s.rows[2]["PairAccuracy"] for s in single], ddof=1))
    assert both.uplift["ranker + ARGUS score: PairAccuracy"] == pytest.approx(
        both.rows[2]["PairAccuracy"] / both.rows[1]["PairAccuracy"] - 1)
    assert "ranker seeds" in rank_report(both)


def test_cached_fits_are_read_not_refitted_and_match_a_fresh_fit(sim_data, tmp_path,
                                                                  monkeypatch):
    """With a cache, a second rank of the same run fits nothing and reports the same rows;
    going from 1 ranker seed to 2 fits only the new seed; another model (other scores, so
    the ranker that sees them is refitted) reuses the ordinary-feature ranker."""
    import argusrec.rank as rank_module

    for name in ("a", "b"):
        finetune(sim_data, None, tmp_path / name, FinetuneConfig(max_steps=4, batch_size=4,
                                                                 lag=0, seed=ord(name)),
                 progress=False, model_fields={"preset": "debug"})
    cache, cfg = tmp_path / "cache", RankConfig(iterations=15, threads=1)
    plain = rank(tmp_path / "a", cfg=cfg)
    first = rank(tmp_path / "a", cfg=cfg, cache=cache)
    assert [r["PairAccuracy"] for r in first.rows] == [r["PairAccuracy"] for r in plain.rows]
    assert len(list(cache.glob("*.json"))) == 2  # ordinary, and ordinary + score

    fits = []
    real_fit = rank_module.fit_ranker
    monkeypatch.setattr(rank_module, "fit_ranker",
                        lambda c, frame, columns, *a: fits.append((c.seed, columns)) or
                        real_fit(c, frame, columns, *a))
    again = rank(tmp_path / "a", cfg=cfg, cache=cache)
    assert fits == [] and again.rows == first.rows and again.uplift == first.uplift
    two = rank(tmp_path / "a", cfg=cfg.model_copy(update={"seeds": 2}), cache=cache)
    assert sorted(seed for seed, _ in fits) == [1, 1]  # seed 0 of both rankers was cached
    assert [f["PairAccuracy"] for f in two.rows[1]["fits"]][0] == first.rows[1]["PairAccuracy"]
    fits.clear()
    other = rank(tmp_path / "b", cfg=cfg, cache=cache)
    assert [columns for _, columns in fits] == [ORDINARY + ["score"]]
    assert other.rows[1]["PairAccuracy"] == first.rows[1]["PairAccuracy"]


def test_missing_catboost_names_the_extra_before_any_work(monkeypatch, tmp_path):
    import sys

    from argusrec.errors import DataError

    monkeypatch.setitem(sys.modules, "catboost", None)  # `import catboost` now fails
    with pytest.raises(DataError, match=r"argusrec\[rank\]"):
        rank(tmp_path / "no-such-run")  # the missing extra is named before the run is opened


def test_chosen_tree_count_is_the_best_on_the_latest_impressions(sim_data, tmp_path):
    """fit_ranker's staged choice against a plain loop: a ranker of each tree count fitted on
    the earlier impressions, scored on the latest quarter."""
    from argusrec.checkpoint import load_model
    from argusrec.metrics import pair_accuracy
    from argusrec.rank import _catboost, _matrix, _session_groups, fit_ranker, with_features
    from argusrec.scoring import impression_pairs, score_impressions

    cfg_ft = FinetuneConfig(max_steps=4, batch_size=4, lag=0)
    finetune(sim_data, None, tmp_path / "ft", cfg_ft, progress=False,
             model_fields={"preset": "debug"})
    model, _, data = load_model(tmp_path / "ft")
    frame = with_features(score_impressions(model, cfg_ft.dataset(data, "test",
                                                                  model.cfg.max_len)),
                          event_features(data, cfg_ft.pairs))
    columns = ORDINARY + ["score"]
    cfg = RankConfig(iterations=30, choose_iterations=True, threads=1)
    _, trees = fit_ranker(cfg, frame, columns, [], cfg_ft.pairs)

    times = frame["timestamp"].to_numpy()
    held = times > np.quantile(times, 0.75)
    order, better, worse, weight = impression_pairs(frame.filter(pl.Series(held)),
                                                    cfg_ft.pairs)
    X, y, groups = _matrix(frame, columns, []), frame["grade"].to_numpy(), \
        _session_groups(frame)
    plain = {}
    for k in (10, 20, 30):
        m = _catboost(cfg.model_copy(update={"iterations": k}), X[~held], y[~held],
                      groups[~held])
        plain[k] = pair_accuracy(m.predict(X[held])[order], better, worse,
                                 weight)["PairAccuracy"]
    assert trees == max(plain, key=lambda k: (plain[k], -k))
    fixed, count = fit_ranker(cfg.model_copy(update={"choose_iterations": False}), frame,
                              columns, [], cfg_ft.pairs)
    assert count == 30 and fixed.tree_count_ == 30


def test_a_cache_that_is_a_file_is_refused_before_any_work(tmp_path):
    from argusrec.errors import DataError

    (tmp_path / "cache").write_text("not a directory")
    with pytest.raises(DataError, match="directory"):
        rank(tmp_path / "no-such-run", cache=tmp_path / "cache")
