"""prepare: ids, stable sort, both splits, streaming shards, bad input, atomic output."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import polars as pl
import pytest

from argusrec.errors import DataError
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.sequences import GAP, TEST, TRAIN, VAL, PreparedData

from conftest import TABLE_COLUMNS, random_log, write_table

COLUMNS = {**TABLE_COLUMNS, "like": "like"}


def table_config(on_duplicate: str = "keep", **split) -> PrepareConfig:
    # random logs hold exact repeats by chance; the duplicate policy has its own test
    return PrepareConfig(format="table", columns=COLUMNS, on_duplicate=on_duplicate,
                         split=SplitConfig(**split))


def stored_events(data: PreparedData) -> dict[int, dict[str, np.ndarray]]:
    """Original user id -> that user's stored arrays, read through the users table."""
    users = data.users()
    return {row["user"]: data.user_events(row["index"]) for row in users.iter_rows(named=True)}


def reference(rows: dict, cutoff: int, gap: int, val_start: int) -> dict:
    """A plain, obviously-correct stable sort and temporal split, per original user id."""
    per_user = defaultdict(list)
    for row, (u, i, t) in enumerate(zip(rows["user"], rows["item"], rows["timestamp"])):
        per_user[int(u)].append((int(t), row, int(i)))
    out = {}
    for u, events in per_user.items():
        events.sort()  # by time, ties by input row
        split = [TRAIN if t < val_start else VAL if t < cutoff else GAP if t < cutoff + gap
                 else TEST for t, _, _ in events]
        out[u] = ([t for t, _, _ in events], [i for _, _, i in events], split)
    return out


@pytest.mark.parametrize("shard_events", [1_000_000, 1_000])
def test_temporal_split_matches_plain_reference(tmp_path, shard_events):
    rows = random_log(n_events=5000)
    src = write_table(tmp_path / "log.parquet", rows)
    cfg = table_config(cutoff=700, gap=50, val_duration=100)
    cfg.shard_events = shard_events
    summary = prepare(src, tmp_path / "data", cfg, progress=False)
    data = PreparedData(tmp_path / "data")
    assert (summary.shards > 1) == (shard_events == 1_000)
    items = data.items()
    original_item = dict(zip(items["index"].to_list(), items["item"].to_list()))
    expected = reference(rows, cutoff=700, gap=50, val_start=600)
    got = stored_events(data)
    assert set(got) == set(expected)
    for u, (ts, its, split) in expected.items():
        assert got[u]["timestamp"].tolist() == ts
        assert [original_item[i] for i in got[u]["item"].tolist()] == its
        assert got[u]["split"].tolist() == split
    assert summary.events == 5000 and summary.dropped_events == 0
    assert summary.split_events["gap"] == sum(50 > t - 700 >= 0 for t in rows["timestamp"])


def test_ids_counts_and_meta(tmp_path):
    rows = {"user": [5, 5, 5, 9, 9, 9], "item": [30, 10, 30, 20, 30, 10],
            "timestamp": [1, 2, 3, 1, 2, 9], "like": [1.0, 0.0, None, 1.0, 1.0, 0.0]}
    src = write_table(tmp_path / "log.csv", rows)
    prepare(src, tmp_path / "data", table_config(cutoff=3), progress=False)
    data = PreparedData(tmp_path / "data")
    items = data.items()
    # dense 1-based item indices in original-id order; 0 stays padding
    assert items["item"].to_list() == [10, 20, 30] and items["index"].to_list() == [1, 2, 3]
    # training counts (t < 3): item 30 twice (u5 t1, u9 t2), 10 once, 20 once
    assert data.item_counts().tolist() == [0, 1, 1, 2]
    # positives: like == 1 is positive, like == 0 negative, absent -> positive
    assert data.item_counts(positives=True).tolist() == [0, 0, 1, 2]
    meta = json.loads((tmp_path / "data" / "meta.json").read_text())
    assert meta["counts"]["events"] == 6 and meta["counts"]["users"] == 2
    assert meta["split"]["train_end"] == 3 and meta["fields"]["feedback"] == {"like": "binary"}
    u5 = data.user_events(0)
    assert u5["fb_like"].tolist()[:2] == [1.0, 0.0] and np.isnan(u5["fb_like"][2])


def test_ties_keep_input_order(tmp_path):
    rows = {"user": [1, 1, 1, 1], "item": [4, 3, 2, 1], "timestamp": [5, 5, 5, 1],
            "like": [1.0, 1.0, 1.0, 1.0]}
    prepare(write_table(tmp_path / "log.csv", rows), tmp_path / "data",
            table_config(cutoff=5), progress=False)
    data = PreparedData(tmp_path / "data")
    assert data.user_events(0)["item"].tolist() == [1, 4, 3, 2]


def test_auto_cutoff_by_fraction_and_test_duration(tmp_path):
    rows = random_log(n_events=4000, with_ties=False)
    src = write_table(tmp_path / "log.parquet", rows)
    s = prepare(src, tmp_path / "a", table_config(test_fraction=0.2), progress=False)
    share = s.split_events["test"] / s.events
    assert 0.19 <= share <= 0.21
    t = np.sort(rows["timestamp"])
    s = prepare(src, tmp_path / "b", table_config(test_duration=10**8, gap=10**6),
                progress=False)
    assert s.boundaries["test_end"] == t[-1] + 1
    assert s.split_events["test"] == int((t >= t[-1] + 1 - 10**8).sum())


def test_leave_one_out(tmp_path):
    lines = ["1 10", "1 11", "1 12", "1 13", "2 10", "2 14", "3 11", "3 12", "3 13"]
    src = tmp_path / "seq.txt"
    src.write_text("\n".join(lines) + "\n")
    cfg = PrepareConfig(format="sasrec", split=SplitConfig(kind="leave-one-out"))
    s = prepare(src, tmp_path / "data", cfg, progress=False)
    data = PreparedData(tmp_path / "data")
    assert data.user_events(0)["split"].tolist() == [TRAIN, TRAIN, VAL, TEST]
    assert data.user_events(1)["split"].tolist() == [TRAIN, TRAIN]  # fewer than 3 events
    assert data.user_events(2)["split"].tolist() == [TRAIN, VAL, TEST]
    assert s.split_events == {"train": 5, "val": 2, "gap": 0, "test": 2}
    assert data.meta["counts"]["split_users_with_targets"]["test"] == 2


def test_duplicates_error_drop_keep(tmp_path):
    rows = {"user": [1, 1, 1, 2], "item": [7, 7, 8, 7], "timestamp": [3, 3, 4, 3],
            "like": [1.0, 1.0, 1.0, 1.0]}
    src = write_table(tmp_path / "log.csv", rows)
    with pytest.raises(DataError) as e:
        prepare(src, tmp_path / "a", table_config("error", cutoff=4), progress=False)
    assert "duplicate" in str(e.value) and "log.csv" in str(e.value) and "row 2" in str(e.value)
    assert "--on-duplicate" in str(e.value)
    assert not (tmp_path / "a").exists()
    for policy, n in (("drop", 3), ("keep", 4)):
        cfg = table_config(cutoff=4)
        cfg.on_duplicate = policy
        assert prepare(src, tmp_path / policy, cfg, progress=False).events == n


@pytest.mark.parametrize("bad, words", [
    ({"timestamp": [1, -5, 3]}, ["negative", "row 2", "timestamp"]),
    ({"item": [1, None, 3]}, ["null", "row 2", "item"]),
])
def test_bad_values_leave_nothing_behind(tmp_path, bad, words):
    rows = {"user": [1, 1, 2], "item": [1, 2, 3], "timestamp": [1, 2, 3], "like": [1.0] * 3}
    rows.update(bad)
    src = write_table(tmp_path / "log.parquet", rows)
    with pytest.raises(DataError) as e:
        prepare(src, tmp_path / "data", table_config(cutoff=2), progress=False)
    for word in words:
        assert word in str(e.value)
    assert "log.parquet" in str(e.value)
    assert list(tmp_path.iterdir()) == [src]  # no output, no temporary directory


def test_existing_output_and_empty_split(tmp_path):
    src = write_table(tmp_path / "log.csv", {"user": [1, 1], "item": [1, 2],
                                             "timestamp": [1, 2], "like": [1.0, 1.0]})
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match="already exists"):
        prepare(src, tmp_path / "data", table_config(cutoff=2), progress=False)
    with pytest.raises(DataError, match="no training or no test"):
        prepare(src, tmp_path / "other", table_config(cutoff=100), progress=False)


def test_overwrite_replaces(tmp_path):
    src = write_table(tmp_path / "log.csv", {"user": [1, 1], "item": [1, 2],
                                             "timestamp": [1, 2], "like": [1.0, 1.0]})
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "old.txt").write_text("x")
    prepare(src, tmp_path / "data", table_config(cutoff=2), overwrite=True, progress=False)
    assert not (tmp_path / "data" / "old.txt").exists()
    assert PreparedData(tmp_path / "data").num_items == 2


def test_not_a_prepared_dataset(tmp_path):
    with pytest.raises(DataError, match="argus prepare"):
        PreparedData(tmp_path)


@pytest.mark.data
def test_ml1m_leave_one_out(shared_data, tmp_path):
    cfg = PrepareConfig(format="sasrec", split=SplitConfig(kind="leave-one-out"))
    s = prepare(shared_data / "ml-1m" / "ml-1m.txt", tmp_path / "ml1m", cfg, progress=False)
    assert (s.users, s.items, s.events) == (6040, 3416, 999_611)
    assert s.split_events["test"] == 6040 and s.split_events["val"] == 6040
    data = PreparedData(tmp_path / "ml1m")
    assert data.meta["counts"]["split_users_with_targets"]["test"] == 6040
    # SASRec's file is already in time order: user 1's items come back in line order
    items = data.items()
    first = [items["item"][i - 1] for i in data.user_events(0)["item"][:5].tolist()]
    lines = (shared_data / "ml-1m" / "ml-1m.txt").read_text().splitlines()[:5]
    assert first == [int(line.split()[1]) for line in lines]


@pytest.mark.data
def test_ml100k_temporal_split_with_ratings(shared_data, tmp_path):
    cfg = PrepareConfig(format="recbole", split=SplitConfig(test_fraction=0.1))
    s = prepare(shared_data / "ml-100k" / "ml-100k.inter", tmp_path / "ml100k", cfg,
                progress=False)
    assert (s.users, s.items, s.events) == (943, 1682, 100_000)
    assert 9_000 <= s.split_events["test"] <= 11_000
    data = PreparedData(tmp_path / "ml100k")
    assert data.feedback_fields == {"rating": "value"}
    ratings = np.concatenate([np.asarray(sh.events["fb_rating"]) for sh in data.shards])
    assert set(np.unique(ratings).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert data.meta["source"]["has_time"] and data.meta["split"]["time_min"] == 874724710


def test_merge_reactions_moves_likes_onto_listens(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = {"uid": [1, 1, 1, 1, 1], "timestamp": [10, 12, 20, 25, 30],
            "item_id": [5, 5, 6, 7, 5], "is_organic": [1, 1, 0, 0, 1],
            "played_ratio_pct": [100, None, 20, None, 80],
            "track_length_seconds": [200, None, 180, None, 200],
            "event_type": ["listen", "like", "listen", "dislike", "listen"]}
    table = pa.table({"uid": pa.array(rows["uid"], pa.uint32()),
                      "timestamp": pa.array(rows["timestamp"], pa.uint32()),
                      "item_id": pa.array(rows["item_id"], pa.uint32()),
                      "is_organic": pa.array(rows["is_organic"], pa.uint8()),
                      "played_ratio_pct": pa.array(rows["played_ratio_pct"], pa.uint16()),
                      "track_length_seconds": pa.array(rows["track_length_seconds"], pa.uint32()),
                      "event_type": pa.array(rows["event_type"], pa.string())})
    (tmp_path / "log").mkdir()
    pq.write_table(table, tmp_path / "log" / "multi_event.parquet")
    cfg = PrepareConfig(merge_reactions=True, split=SplitConfig(cutoff=26))
    s = prepare(tmp_path / "log", tmp_path / "data", cfg, progress=False)
    data = PreparedData(tmp_path / "data")
    ev = data.user_events(0)
    types = data.meta["fields"]["event_types"]
    assert [types[t - 1] for t in ev["event_type"]] == ["listen", "listen", "dislike", "listen"]
    assert ev["fb_like"][[0, 1, 3]].tolist() == [1.0, 0.0, 0.0]  # the like: the t=10 listen
    assert np.isnan(ev["fb_like"][2])  # the unmatched dislike event says nothing of likes
    assert ev["fb_dislike"][[0, 1, 3]].tolist() == [0.0, 0.0, 0.0]  # no listen of item 7
    assert ev["positive"].tolist() == [True, False, False, True]  # listen fraction decides
    assert data.meta["counts"]["reactions_merged"] == 1 and s.events == 4


# -- in-memory frames and binary ids ----------------------------------------------------------

def written(path) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, np.ndarray]]:
    """users.parquet, items.parquet and every shard array of a prepared directory."""
    arrays = {str(f.relative_to(path)): np.load(f) for f in sorted(path.rglob("shards/*/*.npy"))}
    return pl.read_parquet(path / "users.parquet"), pl.read_parquet(path / "items.parquet"), arrays


def assert_same_dataset(a, b) -> None:
    (users_a, items_a, arrays_a), (users_b, items_b, arrays_b) = written(a), written(b)
    assert users_a.equals(users_b) and items_a.equals(items_b)
    assert arrays_a.keys() == arrays_b.keys() and len(arrays_a) > 0
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)


@pytest.fixture
def sku_log() -> pl.DataFrame:
    rows = random_log(n_events=3000)
    return pl.DataFrame(rows).with_columns(("sku" + pl.col("item").cast(pl.String)).alias("item"))


def test_frame_prepares_like_the_same_parquet(tmp_path, sku_log):
    sku_log.write_parquet(tmp_path / "log.parquet")
    cfg = table_config(cutoff=700, val_duration=100)
    cfg.shard_events = 1_000  # several shards
    prepare(tmp_path / "log.parquet", tmp_path / "file", cfg, progress=False)
    # no mapping: the frame's user/item/timestamp/like columns map to themselves
    bare = PrepareConfig(format="table", on_duplicate="keep", shard_events=1_000,
                         split=cfg.split)
    for name, source, config in [("frame", sku_log, cfg), ("bare", sku_log, bare),
                                 ("auto", sku_log, bare.model_copy(update={"format": "auto"})),
                                 ("lazy", sku_log.lazy().filter(pl.lit(True)), bare)]:
        prepare(source, tmp_path / name, config, progress=False)
        assert_same_dataset(tmp_path / "file", tmp_path / name)
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        assert meta["source"]["path"] == "<DataFrame>"
        assert meta["source"]["files"] == ["<DataFrame>"]
    assert written(tmp_path / "frame")[1].schema["item"] == pl.String
    # a path-based table still needs its mapping, now checked by the reader
    with pytest.raises(DataError, match="needs a column mapping"):
        prepare(tmp_path / "log.parquet", tmp_path / "x", bare, progress=False)


def test_pandas_frame_prepares_like_polars(tmp_path, sku_log):
    pd = pytest.importorskip("pandas")
    cfg = PrepareConfig(on_duplicate="keep", split=SplitConfig(cutoff=700))
    prepare(sku_log, tmp_path / "polars", cfg, progress=False)
    prepare(pd.DataFrame(sku_log.to_dict(as_series=False)), tmp_path / "pandas", cfg,
            progress=False)
    assert_same_dataset(tmp_path / "polars", tmp_path / "pandas")


def test_frame_with_bad_column_type(tmp_path, sku_log):
    bad = sku_log.with_columns(pl.col("like").cast(pl.String).alias("like"))
    bad = bad.with_columns(pl.when(pl.int_range(pl.len()) == 4).then(pl.lit("yes"))
                           .otherwise(pl.col("like")).alias("like"))
    with pytest.raises(DataError) as e:
        prepare(bad, tmp_path / "data", PrepareConfig(), progress=False)
    msg = str(e.value)
    assert "<DataFrame>" in msg and "column 'like'" in msg and "row 5" in msg
    assert list(tmp_path.iterdir()) == []


def test_binary_ids_prepare_end_to_end(tmp_path):
    rows = {"user": [b"u\x00", b"u\x00", b"v", b"v", b"u\x00"],
            "item": [b"\xffa", b"b", b"\xffa", b"c", b"c"], "timestamp": [1, 2, 3, 4, 5]}
    frame = pl.DataFrame(rows, schema={"user": pl.Binary, "item": pl.Binary,
                                       "timestamp": pl.Int64})
    frame.write_parquet(tmp_path / "log.parquet")
    cfg = PrepareConfig(format="table", columns=TABLE_COLUMNS, split=SplitConfig(cutoff=4))
    s = prepare(tmp_path / "log.parquet", tmp_path / "data", cfg, progress=False)
    users, items, _ = written(tmp_path / "data")
    assert users.schema["user"] == pl.Binary and items.schema["item"] == pl.Binary
    assert users["user"].to_list() == [b"u\x00", b"v"]
    assert items["item"].to_list() == [b"b", b"c", b"\xffa"]
    assert (s.users, s.items, s.events, s.split_events["test"]) == (2, 3, 5, 2)
    data = PreparedData(tmp_path / "data")
    original = dict(zip(items["index"].to_list(), items["item"].to_list()))
    assert [original[i] for i in data.user_events(0)["item"].tolist()] == [b"\xffa", b"b", b"c"]
    prepare(frame, tmp_path / "frame", cfg, progress=False)
    assert_same_dataset(tmp_path / "data", tmp_path / "frame")
    # the duplicate check and its message cope with bytes
    with pytest.raises(DataError, match="duplicate"):
        prepare(pl.concat([frame, frame.head(1)]), tmp_path / "dup", cfg, progress=False)


def test_output_paths_that_would_destroy_something_are_refused(tmp_path):
    (tmp_path / "logs").mkdir()
    src = write_table(tmp_path / "logs" / "log.parquet", random_log())
    cfg = PrepareConfig(format="table", columns=TABLE_COLUMNS, ignore_extra=True)
    for out in (tmp_path / "logs", tmp_path / "logs" / "log.parquet", tmp_path):
        with pytest.raises(DataError, match="replace the input|is a file"):
            prepare(src, out, cfg, overwrite=True, progress=False)
    assert src.exists()
    (tmp_path / "afile").write_text("x")
    with pytest.raises(DataError, match="is a file"):
        prepare(src, tmp_path / "afile", cfg, overwrite=True, progress=False)


def test_overwrite_replaces_whole_and_stale_temporaries_are_swept(tmp_path):
    import os
    import subprocess

    src = write_table(tmp_path / "log.parquet", random_log())
    cfg = PrepareConfig(format="table", columns=TABLE_COLUMNS, ignore_extra=True)
    prepare(src, tmp_path / "data", cfg, progress=False)
    dead = subprocess.Popen(["true"])  # a pid that no longer runs
    dead.wait()
    stale = tmp_path / f".data.tmp-{dead.pid}"
    stale.mkdir()
    (stale / "events.parquet").write_text("a copy of the log")
    live = tmp_path / f".data.tmp-{os.getppid()}"
    live.mkdir()
    prepare(src, tmp_path / "data", cfg, overwrite=True, progress=False)
    assert not stale.exists() and live.exists()
    assert (tmp_path / "data" / "meta.json").exists()
    assert not [p for p in tmp_path.iterdir() if ".old-" in p.name or
                p.name.startswith(f".data.tmp-{os.getpid()}")]


@pytest.mark.parametrize("outlier", [None, 10**15])
def test_streamed_quantile_matches_sorting(outlier):
    """stages._edge_after (histograms, for logs larger than memory) against a plain sort: at
    most ``keep`` events after the edge, and at most 1% of the events between the exact
    quantile and the edge, even when one outlier stretches the first histogram over 10^15 s
    (one pass would put every other event into its first bin)."""
    from argusrec.stages import _edge_after

    rng = np.random.default_rng(3)
    ts = np.sort(rng.integers(1_600_000_000, 1_600_000_000 + 10**7, 20_000))
    if outlier is not None:
        ts[-1] = outlier
    scan = pl.LazyFrame({"timestamp": ts})
    values = np.unique(ts)
    after = len(ts) - np.searchsorted(ts, values, side="right")  # events after each value
    for keep in (0, 20, 2_000):
        edge = _edge_after(scan, int(ts.min()), int(ts.max()), len(ts), keep)
        exact = int(values[np.argmax(after <= keep)]) + 1
        assert (ts >= edge).sum() <= keep and edge >= exact
        assert ((ts >= exact) & (ts < edge)).sum() <= 0.01 * len(ts)
