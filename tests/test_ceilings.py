"""Tests of the ground-truth ceilings: truth/listens.parquet (argusrec.simulate) and
argusrec.ceilings, on a small simulated service (150 users, 30 days; a few seconds in all)."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import argusrec.simulate as sim
from argusrec.ceilings import gap_closed, oracle_ceilings, popularity_entropy, split_targets
from argusrec.errors import DataError
from argusrec.loader import SequenceDataset, collate
from argusrec.objective import target_positions
from argusrec.oracle import Oracle, build_world
from argusrec.prepare import PrepareConfig, prepare
from argusrec.sequences import PreparedData
from argusrec.simulate import SimulatorConfig, simulate

SMALL = SimulatorConfig(users=150, items=4000, days=30, events_scale=0.05, seed=3)
# _content_digest of SMALL's multi_event.parquet, recorded before truth/listens.parquet existed:
# computing the truth must not move a single random draw.
SMALL_LOG_DIGEST = "a8537b005639f945c1bdc9352f87a41e5c228a2247bc13fc62dba6546cbe9dbe"


def _content_digest(path: Path) -> str:
    """sha256 of a Parquet table's values and nulls, column by column (independent of how a
    pyarrow version lays out the file's bytes)."""
    table = pq.read_table(path)
    h = hashlib.sha256()
    for name in table.column_names:
        col = table[name]
        h.update(name.encode())
        h.update(col.is_null().to_numpy(zero_copy_only=False).tobytes())
        if col.type == "string":
            h.update("\n".join(col.to_pylist()).encode())
        else:
            h.update(col.fill_null(0).to_numpy(zero_copy_only=False).tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ceilings") / "log"
    simulate(SMALL, out, progress=False)
    return out


@pytest.fixture(scope="module")
def listens(run: Path) -> pl.DataFrame:
    return pl.read_parquet(run / "truth" / "listens.parquet")


@pytest.fixture(scope="module")
def merged(run: Path) -> PreparedData:
    out = run.parent / "merged"
    prepare(run, out, PrepareConfig(merge_reactions=True), progress=False)
    return PreparedData(out)


def _full_distribution(world, ch: sim._Choice, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(I,) the true distribution listen k's item was drawn from, and the policy's, built over
    the whole catalogue from the popularity vector (not from the samplers' CDFs)."""
    cfg, n_items = world.cfg, world.item_vec.shape[0]

    def pool_part(row: int) -> np.ndarray:
        dense = np.zeros(n_items)
        dense[ch.pool] = ch.probs[row] / ch.probs[row].sum()
        return dense

    pop = np.exp(world.item_logpop)
    chart = pop / pop.sum()
    explore = np.exp(cfg.explore_popularity * (world.item_logpop - world.item_logpop.max()))
    explore /= explore.sum()
    policy = cfg.explore_share * explore + (1 - cfg.explore_share) * pool_part(cfg.phases)
    if ch.organic[k]:
        return cfg.search_share * chart + (1 - cfg.search_share) * pool_part(ch.row[k]), policy
    return policy, policy


def test_stored_probability_is_the_full_mixture_over_the_catalogue(
        run: Path, listens: pl.DataFrame) -> None:
    world = build_world(SMALL.resolved())
    checked = {True: 0, False: 0}
    for uid in (0, 7, 42):
        ch = sim._choose(world, uid)
        rows = listens.filter(pl.col("uid") == uid)
        np.testing.assert_array_equal(rows["item_id"].to_numpy(), ch.item)
        np.testing.assert_array_equal(rows["is_organic"].to_numpy(), ch.organic)
        for k in np.linspace(0, ch.item.size - 1, 8).astype(int):
            p, policy = _full_distribution(world, ch, int(k))
            assert p.sum() == pytest.approx(1.0, abs=1e-9)
            assert policy.sum() == pytest.approx(1.0, abs=1e-9)
            item = ch.item[k]
            assert p[item] > 0
            assert rows["logp_true"][int(k)] == pytest.approx(np.log(p[item]), abs=1e-5)
            assert rows["logp_policy"][int(k)] == pytest.approx(np.log(policy[item]), abs=1e-5)
            checked[bool(ch.organic[k])] += 1
    assert min(checked.values()) > 0  # both traffic types were checked


def test_reference_distribution_is_what_the_sampler_draws() -> None:
    """Replays _choose's two-branch draw for one organic row and the policy row many times: the
    frequencies must follow the reference distribution (chi-square over 20 bins of it)."""
    world = build_world(SMALL.resolved())
    cfg, ch = world.cfg, sim._choose(world, 7)
    rng = np.random.default_rng(0)
    n = 200_000
    for organic in (True, False):
        k = int(np.flatnonzero(ch.organic == organic)[0])
        row = int(ch.row[k])
        p, _ = _full_distribution(world, ch, k)
        item = ch.pool[sim._sample_rows(ch.probs, np.full(n, row), rng)]
        share = cfg.search_share if organic else cfg.explore_share
        off = rng.random(n) < share
        item[off] = (world.chart_sample if organic else world.explore_sample)(rng, int(off.sum()))
        counts = np.bincount(item, minlength=p.size)
        order = np.argsort(p)
        bins = np.searchsorted(np.cumsum(p[order]), np.linspace(0, 1, 21)[1:-1])
        observed = np.array([c.sum() for c in np.split(counts[order], bins)])
        expected = n * np.array([q.sum() for q in np.split(p[order], bins)])
        chi2 = float(((observed - expected) ** 2 / expected).sum())
        assert chi2 < 60.0, (organic, chi2)  # 19 degrees of freedom: p < 1e-5


def test_log_is_unchanged_by_the_truth_table(run: Path, listens: pl.DataFrame,
                                             tmp_path: Path) -> None:
    assert _content_digest(run / "multi_event.parquet") == SMALL_LOG_DIGEST
    bare = tmp_path / "bare"
    simulate(SMALL, bare, progress=False, listen_truth=False)
    assert not (bare / "truth" / "listens.parquet").exists()
    assert ((bare / "multi_event.parquet").read_bytes()
            == (run / "multi_event.parquet").read_bytes())
    again = tmp_path / "again"
    simulate(SMALL, again, progress=False)
    assert ((again / "truth" / "listens.parquet").read_bytes()
            == (run / "truth" / "listens.parquet").read_bytes())
    # the listens are the log's listen rows, in order, with their ids and timestamps
    log = pl.read_parquet(run / "multi_event.parquet").filter(pl.col("event_type") == "listen")
    for name in ("uid", "timestamp", "item_id", "is_organic"):
        assert log[name].to_list() == listens[name].to_list(), name


def test_feedback_columns_are_the_oracles(run: Path, listens: pl.DataFrame) -> None:
    oracle = Oracle.load(run)
    args = (listens["uid"].to_numpy(), listens["item_id"].to_numpy(),
            listens["timestamp"].to_numpy())
    for column, truth in (("p_like", oracle.like_probability(*args)),
                          ("p_dislike", oracle.dislike_probability(*args)),
                          ("expected_played_ratio_pct", oracle.expected_played_ratio_pct(*args))):
        np.testing.assert_allclose(listens[column].to_numpy(), truth, rtol=2e-5, err_msg=column)
    # like_open: True up to a track's first like, then False for good; only liked tracks close
    log = pl.read_parquet(run / "multi_event.parquet")
    liked = log.filter(pl.col("event_type") == "like").select("uid", "item_id").unique()
    per_track = listens.group_by("uid", "item_id", maintain_order=True).agg(
        pl.col("like_open").cast(pl.Int8).diff().max().alias("reopens"),
        (~pl.col("like_open")).any().alias("closed"))
    assert (per_track["reopens"].fill_null(0) <= 0).all()
    closed = per_track.filter("closed").select("uid", "item_id")
    assert len(closed.join(liked, on=["uid", "item_id"], how="anti")) == 0


def test_old_truth_loads_and_names_the_fix(tmp_path: Path, merged: PreparedData) -> None:
    old = tmp_path / "old"
    simulate(SMALL, old, progress=False, listen_truth=False)
    oracle = Oracle.load(old)  # affinity still works without listens.parquet
    assert oracle.affinity([0], [1], [0.0]).shape == (1,)
    with pytest.raises(DataError, match="listens.parquet is missing") as e:
        oracle.listens()
    assert "argus simulate" in str(e.value)
    with pytest.raises(DataError, match="argus simulate"):
        oracle_ceilings(merged, old)


def test_targets_are_the_events_evaluate_scores(merged: PreparedData) -> None:
    targets = split_targets(merged, "test")
    # evaluate_model's windows: max_len 32 here, stride max_len // 4
    dataset = SequenceDataset(merged, split="test", max_len=32, stride=8, min_len=2)
    batch = collate([dataset[i] for i in range(len(dataset))])
    sel = target_positions(batch)
    assert len(targets) == int(sel.sum())
    names = list(merged.feedback_fields)
    labels = batch.feedback[sel].numpy()
    for f, name in enumerate(names):
        assert np.nansum(targets[f"fb_{name}"].to_numpy()) == pytest.approx(
            float(np.nansum(labels[:, f]))), name
    assert set(targets["event_type"].unique()) >= {"listen"}


def test_oracle_ceilings_on_a_prepared_dataset(run: Path, merged: PreparedData) -> None:
    ceilings = oracle_ceilings(merged, run)
    baseline = popularity_entropy(merged)
    assert ceilings["targets/next_item"] > 1000
    assert ceilings["targets/all"] >= ceilings["targets/next_item"]
    assert ceilings["entropy/next_item"] < baseline - 1.0
    assert ceilings["entropy/next_item_policy"] == pytest.approx(
        ceilings["entropy/next_item/recommendation"], rel=1e-6)
    assert ceilings["AUC/like"] > 0.7
    assert ceilings["AUC/dislike"] > 0.6
    assert ceilings["AUC/played_ratio"] > 0.7
    assert ceilings["logloss/like"] < math.log(2)
    # also found from the truth directory itself
    assert oracle_ceilings(merged, run / "truth")["entropy/next_item"] == pytest.approx(
        ceilings["entropy/next_item"])


def test_reaction_rows_are_scored_by_their_type_without_merging(run: Path) -> None:
    """Unmerged, a like label sits only on like (1) and unlike (0) events: the event type,
    which the model also sees, decides it, so the ceiling is perfect."""
    out = run.parent / "unmerged"
    prepare(run, out, progress=False)
    ceilings = oracle_ceilings(PreparedData(out), run)
    assert ceilings["AUC/like"] == 1.0
    assert ceilings["logloss/like"] < 1e-5


def test_ceilings_refuse_another_logs_truth(merged: PreparedData, tmp_path: Path) -> None:
    other = tmp_path / "other"
    simulate(SMALL.model_copy(update={"seed": 4}), other, progress=False)
    with pytest.raises(DataError, match="no matching listen"):
        oracle_ceilings(merged, other)


def test_gap_closed() -> None:
    assert gap_closed(0.75, 0.5, 1.0, higher_is_better=True) == pytest.approx(0.5)
    assert gap_closed(7.0, 8.0, 6.0, higher_is_better=False) == pytest.approx(0.5)
    assert gap_closed(8.5, 8.0, 6.0, higher_is_better=False) == pytest.approx(-0.25)
    assert math.isnan(gap_closed(0.7, 0.8, 0.6, higher_is_better=True))
    assert math.isnan(gap_closed(0.7, 0.8, 0.8, higher_is_better=True))
