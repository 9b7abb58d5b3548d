"""argusrec.api: Recommender over many users at once, raw histories in DataFrames, id types,
unknown items and users, pandas input, and the train wrapper."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from argusrec.api import Recommender, export, prepare, train
from argusrec.checkpoint import Checkpoint, load_model
from argusrec.errors import DataError
from argusrec.sequences import GAP


@pytest.fixture(scope="module")
def deployed(sim_data, tmp_path_factory):
    work = tmp_path_factory.mktemp("api")
    train(sim_data, work / "run", max_steps=2, progress=False)
    export(work / "run", work / "snapshots", progress=False)
    return work


@pytest.fixture(scope="module")
def rec(deployed):
    with Recommender.load(deployed / "snapshots") as r:
        yield r


def _known_users(rec, n):
    keys = rec.snapshot.users.keys()
    return sorted(keys, key=lambda u: -len(rec.snapshot.seen(u)))[:n]


def _history(data, user: int, cutoff: int, max_len: int) -> pl.DataFrame:
    """One stored user's events by the cut-off as a raw frame: original ids and names."""
    ev = data.user_events(user)
    keep = np.flatnonzero((ev["split"] != GAP) & (ev["timestamp"] <= cutoff))[-max_len:]
    items = data.items().sort("index")["item"]
    types = data.meta["fields"]["event_types"]
    organic = np.asarray(ev["ctx_is_organic"][keep])
    frame = {"user": [int(data.users().sort("index")["user"][user])] * len(keep),
             "item": items.gather(np.asarray(ev["item"][keep]) - 1),
             "timestamp": np.asarray(ev["timestamp"][keep]),
             "event_type": [types[int(c) - 1] for c in ev["event_type"][keep]],
             "is_organic": [None if c == 0 else bool(c == 1) for c in organic]}
    for f in data.feedback_fields:
        values = np.asarray(ev[f"fb_{f}"][keep], dtype=np.float32)
        frame[f] = pl.Series([None if np.isnan(v) else float(v) for v in values],
                             dtype=pl.Float32)
    return pl.DataFrame(frame).with_columns(pl.col("is_organic").cast(pl.Boolean))


def test_many_users_at_once(rec):
    users = [int(u) for u in _known_users(rec, 3)]
    got = rec.recommend(users, k=7)
    assert got.columns == ["user", "item", "score", "rank", "fallback"]
    assert got["user"].dtype == pl.Int64 and got["user"].unique(maintain_order=True).to_list() \
        == users
    snap = rec.snapshot
    for user in users:
        mine = got.filter(pl.col("user") == user)
        rows, scores = snap.recommend(snap.user_vector(str(user)), 7, exclude=snap.seen(str(user)))
        assert mine["item"].to_list() == snap.ids_of(rows)
        np.testing.assert_allclose(mine["score"].to_numpy(), scores, rtol=1e-6)
        assert mine["rank"].to_list() == list(range(1, 8)) and not mine["fallback"].any()
        assert not set(mine["item"].to_list()) & set(snap.ids_of(snap.seen(str(user))))


def test_unknown_user_gets_the_popularity_fallback(rec):
    known = int(_known_users(rec, 1)[0])
    got = rec.recommend([known, 10**12], k=4)
    unknown = got.filter(pl.col("user") == 10**12)
    assert unknown["fallback"].all() and not got.filter(pl.col("user") == known)["fallback"].any()
    assert unknown["item"].to_list() == rec.snapshot.ids_of(rec.snapshot.popular[:4, 0])
    assert unknown["score"].to_list() == rec.snapshot.popular[:4, 1].tolist()


def test_a_raw_history_encodes_to_the_stored_vector(rec, deployed):
    model, _, data = load_model(deployed / "run")
    user = _known_users(rec, 1)[0]
    users = data.users()
    index = int(users.filter(users["user"].cast(str) == user)["index"][0])
    history = _history(data, index, rec.snapshot.manifest["data"]["cutoff"], model.cfg.max_len)
    encoded = rec.encode(history, as_of=rec.snapshot.manifest["data"]["as_of"])
    assert encoded.users.to_list() == [int(user)] and encoded.skipped_events == 0
    np.testing.assert_allclose(encoded.vectors[0], rec.snapshot.user_vector(user),
                               rtol=1e-4, atol=1e-5)
    assert encoded.frame()["vector"].dtype == pl.Array(pl.Float32, encoded.vectors.shape[1])
    # the same answer from the frame, the Encoded and the stored vector (seen items aside)
    direct = rec.recommend(history, k=5, exclude_seen=False,
                           as_of=rec.snapshot.manifest["data"]["as_of"])
    assert direct["item"].to_list() == rec.recommend(encoded, k=5, exclude_seen=False)[
        "item"].to_list() == rec.recommend([int(user)], k=5, exclude_seen=False)["item"].to_list()


def test_unknown_items_are_skipped_and_counted_or_fatal_with_strict(rec, caplog):
    items = rec.snapshot.ids_of(np.array([0, 5, 9]))
    base = {"user": ["a", "a", "a", "b"], "item": [items[0], 987654321, items[1], items[2]],
            "timestamp": [30, 10, 20, 5]}
    history = pl.DataFrame(base)
    with caplog.at_level(logging.WARNING, logger="argusrec.api"):
        encoded = rec.encode(history)
    assert encoded.skipped_events == 1 and encoded.unknown_items == [987654321]
    assert "skipped 1 history event" in caplog.text and "987654321" in caplog.text
    assert encoded.users.to_list() == ["a", "b"] and encoded.vectors.shape[0] == 2
    without = rec.encode(history.filter(pl.col("item") != 987654321))
    np.testing.assert_allclose(encoded.vectors, without.vectors, rtol=1e-6)
    with pytest.raises(DataError, match="987654321"):
        rec.encode(history, strict=True)
    with pytest.raises(DataError, match="987654321"):
        rec.recommend(history, strict=True)
    # nothing known at all: no vector, the popularity fallback
    got = rec.recommend(pl.DataFrame({"user": ["c"], "item": [987654321], "timestamp": [1]}),
                        k=3)
    assert got["fallback"].all() and got["user"].to_list() == ["c"] * 3


def test_bad_histories_are_named(rec):
    item = rec.snapshot.ids_of(np.array([0]))[0]
    with pytest.raises(DataError, match="stars"):
        rec.encode(pl.DataFrame({"user": [1], "item": [item], "timestamp": [1], "stars": [5]}))
    with pytest.raises(DataError, match="teleport"):
        rec.encode(pl.DataFrame({"user": [1], "item": [item], "timestamp": [1],
                                 "event_type": ["teleport"]}))
    with pytest.raises(DataError, match="timestamp"):
        rec.encode(pl.DataFrame({"user": [1], "item": [item]}))
    with pytest.raises(DataError, match="list of user ids"):
        rec.recommend("42")


def test_pandas_input(rec):
    pd = pytest.importorskip("pandas")
    users = [int(u) for u in _known_users(rec, 2)]
    from_pandas = rec.recommend(pd.Series(users), k=3)
    assert isinstance(from_pandas, pl.DataFrame)
    assert from_pandas.equals(rec.recommend(users, k=3))
    items = rec.snapshot.ids_of(np.array([1, 2]))
    history = {"user": ["x", "x"], "item": items, "timestamp": [100, 200]}
    assert rec.recommend(pd.DataFrame(history), k=3).equals(
        rec.recommend(pl.DataFrame(history), k=3))


def test_string_ids_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    n = 1500
    user = rng.integers(0, 30, n)
    events = pl.DataFrame({"user": [f"u{u}" for u in user],
                           "item": [f"sku-{(u * 3 + r) % 60}" for u, r in
                                    zip(user, rng.integers(0, 8, n))],
                           "timestamp": np.sort(rng.integers(0, 20 * 86_400, n))})
    prepare(events, tmp_path / "data", progress=False)
    train(tmp_path / "data", tmp_path / "run", max_steps=2, batch_size=8, progress=False)
    # a run directory: exported into a temporary snapshot that closing removes
    rec = Recommender.load(tmp_path / "run")
    temporary = rec.snapshot.path
    got = rec.recommend(["u1", "u2", "nobody"], k=3)
    assert got["user"].dtype == pl.String and got["item"].dtype == pl.String
    assert set(got["user"]) == {"u1", "u2", "nobody"}
    assert set(got["item"]) <= set(events["item"])
    assert got.filter(pl.col("user") == "nobody")["fallback"].all()
    assert not got.filter(pl.col("user") != "nobody")["fallback"].any()
    history = pl.DataFrame({"user": ["new", "new"], "item": ["sku-1", "sku-2"],
                            "timestamp": [5, 6]})
    fresh = rec.recommend(history, k=4)
    assert fresh["user"].to_list() == ["new"] * 4 and not {"sku-1", "sku-2"} & set(fresh["item"])
    rec.close()
    assert not Path(temporary).exists()


def test_train_sasrec_and_fields(sim_data, tmp_path):
    summary = train(sim_data, tmp_path / "run", max_steps=1, sasrec=True, batch_size=4,
                    model={"max_len": 32}, progress=False)
    assert summary.steps == 1
    config = Checkpoint.open(tmp_path / "run").config
    assert config["train"]["positives_only"] and config["train"]["batch_size"] == 4
    assert config["model"]["max_len"] == 32 and not config["model"]["use_feedback"]


def test_load_names_what_it_takes(tmp_path):
    with pytest.raises(DataError, match="not a snapshot"):
        Recommender.load(tmp_path)
