"""End to end over the simulator: the demo's whole chain, simulate -> prepare -> pretrain ->
evaluate -> finetune -> export -> serve one request."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from argusrec.demo import MARKER, run_demo
from argusrec.errors import DataError
from argusrec.sequences import PreparedData


def test_demo_pipeline_on_the_simulator(tmp_path, capsys):
    report = run_demo(tmp_path / "demo", users=40, train={"max_steps": 3, "batch_size": 4},
                      finetune={"max_steps": 2, "batch_size": 4})
    out = capsys.readouterr().out
    assert "1/7 simulate" in out and "4/7 evaluate" in out and "HR@10" in out
    assert "7/7 serve" in out and "PairAccuracy" in out
    assert "like AUC" in out and "in the test day: noise at the demo's size" in out
    assert (tmp_path / "demo" / MARKER).exists()
    assert report["finetune"].steps == 2 and report["pairs"]["pairs"] > 0
    assert 0.5 < report["pairs"]["oracle/PairAccuracy"] <= 1
    assert report["export"].users > 0 and len(report["serve"]["response"]["items"]) == 10
    sim, prep = report["simulate"], report["prepare"]
    assert prep.events + prep.dropped_events + prep.reactions_merged == sim.events
    assert prep.reactions_merged > 0  # likes and dislikes became feedback of their listens
    assert prep.split_events["test"] > 0 and prep.split_events["gap"] >= 0
    assert report["train_windows"] > 0 and report["pretrain"].steps == 3
    assert 0 <= report["evaluate"]["HR@10"] <= 1 and report["evaluate"]["count"] > 0

    data = PreparedData(tmp_path / "demo" / "data")
    meta = data.meta
    assert meta["source"]["format"] == "yambda"
    assert set(data.feedback_fields) == {"played_ratio", "like", "dislike"}
    assert data.context_fields == {"is_organic": 3}
    # the Yambda protocol: one day of test after a 30-minute gap
    split = meta["split"]
    assert split["test_start"] - split["train_end"] == 1800
    assert split["test_end"] - split["test_start"] == 86_400
    # item side data from the simulator's artist/album maps and content embeddings
    items = data.items()
    assert {"artist", "artist_index", "album", "album_index", "has_embedding"} <= set(
        items.columns)
    assert items["has_embedding"].all() and (items["artist_index"] > 0).all()
    emb = np.load(tmp_path / "demo" / "data" / "item_embeddings.npy")
    assert emb.shape == (data.num_items + 1, meta["fields"]["item_embedding_dim"])
    source = pl.read_parquet(tmp_path / "demo" / "events" / "embeddings.parquet")
    row = source.filter(pl.col("item_id") == items["item"][0])
    assert np.allclose(emb[1], np.asarray(row["embed"][0], dtype=np.float32))
    # events are stored per user in time order, and listens carry a played ratio
    events = data.user_events(0)
    assert (np.diff(events["timestamp"]) >= 0).all()
    listens = events["event_type"] == meta["fields"]["event_types"].index("listen") + 1
    assert not np.isnan(events["fb_played_ratio"][listens]).any()


def test_demo_replaces_only_its_own_directory(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not made by `argus demo`"):
        run_demo(mine)
    assert (mine / "notes.txt").read_text() == "keep me"
