"""The daily cycle over the simulator (DESIGN.md, "Deployment: the daily cycle"), with the ids a
shop's log holds (SKU-like strings) as well as integers:

- `prepare --base --append` of a day of events equals a full `prepare --base` of the whole log;
- the string-id twin of the end-to-end test: prepare -> pretrain -> evaluate -> finetune ->
  pairs -> export -> serve, ids coming back as given;
- a run moved to another directory, its dataset deleted, still exports and serves;
- three days: day 1 prepare, train, export, serve; day 2 append new users and items, export
  with the day-1 model, the running service swaps; day 3 warm-start on the appended data,
  export, swap; under load, with no failed request.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import polars as pl
import pytest
import uvicorn

from argusrec.checkpoint import Checkpoint
from argusrec.evaluate import evaluate
from argusrec.export import export
from argusrec.finetune import FinetuneConfig, evaluate_pairs, finetune
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.sequences import PreparedData
from argusrec.serve import create_app
from argusrec.simulate import SimulatorConfig, simulate
from argusrec.snapshot import Snapshot
from argusrec.train import TrainConfig, pretrain

DAY = 86_400
COLUMNS = {"user": "customer", "item": "sku", "timestamp": "ts", "event_type": "kind",
           "is_organic": "organic", "played_ratio": "played"}
SPLIT = SplitConfig(test_duration=DAY, gap=1800, val_duration=2 * DAY)


def _table(events: pl.DataFrame, ids: str) -> pl.DataFrame:
    """The simulator's Yambda events as a shop-like table, ids as ``ids`` (int or str)."""
    user, item = pl.col("uid"), pl.col("item_id")
    if ids == "str":
        user, item = pl.lit("cust-") + user.cast(pl.String), pl.lit("SKU") + item.cast(pl.String)
    return events.select(user.alias("customer"), item.alias("sku"), pl.col("timestamp").alias("ts"),
                         pl.col("event_type").alias("kind"),
                         pl.col("is_organic").cast(pl.Int8).alias("organic"),
                         (pl.col("played_ratio_pct") / 100).alias("played"))


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> tuple[Path, pl.DataFrame]:
    root = tmp_path_factory.mktemp("daily")
    simulate(SimulatorConfig(users=40, events_scale=0.05, items=3000, days=24, seed=5),
             root / "sim", progress=False)
    return root, pl.read_parquet(root / "sim" / "multi_event.parquet")


def _days(log, ids: str, n: int = 3) -> list[Path]:
    """The log cut into n parts: everything up to the last n - 1 days, then one day each."""
    root, events = log
    end = int(events["timestamp"].max()) + 1
    edges = [None] + [end - (n - 1 - d) * DAY for d in range(n - 1)] + [None]
    paths = []
    for d in range(n):
        part = events
        if edges[d] is not None:
            part = part.filter(pl.col("timestamp") >= edges[d])
        if edges[d + 1] is not None:
            part = part.filter(pl.col("timestamp") < edges[d + 1])
        path = root / f"{ids}-day{d + 1}.parquet"
        _table(part, ids).write_parquet(path)
        paths.append(path)
    return paths


def _config(**kw) -> PrepareConfig:
    return PrepareConfig(format="table", columns=COLUMNS, split=SPLIT, shard_events=2_000,
                         **kw)


@pytest.mark.parametrize("ids", ["int", "str"])
def test_append_equals_prepare_with_base(log, ids, tmp_path):
    day1, day2, _ = _days(log, ids)
    prepare(day1, tmp_path / "d1", _config(), progress=False)
    appended = prepare(day2, tmp_path / "d2a", base=tmp_path / "d1", append=True,
                       progress=False)
    both = tmp_path / "both.parquet"
    pl.concat([pl.read_parquet(day1), pl.read_parquet(day2)]).write_parquet(both)
    prepare(both, tmp_path / "d2b", _config(), base=tmp_path / "d1", progress=False)
    old, a, b = (PreparedData(tmp_path / d) for d in ("d1", "d2a", "d2b"))
    assert appended.read_events == pl.read_parquet(day2).height
    assert appended.new_users > 0 and appended.new_items > 0
    # the base's codes are kept; new ids come after them
    assert a.users()["user"][:old.num_users].equals(old.users()["user"])
    assert a.items()["item"][:old.num_items].equals(old.items()["item"])
    assert a.users().drop("shard", "offset").equals(b.users().drop("shard", "offset"))
    assert a.items().equals(b.items())
    for key in ("counts", "split", "fields"):
        assert a.meta[key] == b.meta[key], key
    for user in range(a.num_users):
        ea, eb = a.user_events(user), b.user_events(user)
        for name in eb:
            np.testing.assert_array_equal(ea[name], eb[name], err_msg=f"{user} {name}")
    # the base was not touched
    assert PreparedData(tmp_path / "d1").meta == old.meta


def test_string_ids_end_to_end(log, tmp_path):
    """The end-to-end chain with SKU-like string ids; a moved run serves without its data."""
    day1, day2, day3 = _days(log, "str")
    both = tmp_path / "log.parquet"
    pl.concat([pl.read_parquet(p) for p in (day1, day2, day3)]).write_parquet(both)
    prepare(both, tmp_path / "data", _config(), progress=False)
    data = PreparedData(tmp_path / "data")
    assert data.items()["item"].dtype == pl.String
    pretrain(tmp_path / "data", tmp_path / "run", TrainConfig(max_steps=3, batch_size=4),
             progress=False)
    results = evaluate(tmp_path / "run", progress=False, ks=(10,))
    assert 0 <= results["HR@10"] <= 1
    finetune(tmp_path / "data", tmp_path / "run", tmp_path / "ft",
             FinetuneConfig(max_steps=2, batch_size=4), progress=False)
    pairs = evaluate_pairs(tmp_path / "ft", split="test")
    assert pairs["pairs"] > 0
    # move the run and delete the dataset: export takes --data, serving needs neither
    moved = tmp_path / "elsewhere" / "ft"
    shutil.copytree(tmp_path / "data", tmp_path / "data-copy")
    shutil.move(tmp_path / "ft", moved)
    shutil.rmtree(tmp_path / "data")
    with pytest.raises(Exception, match="not there any more"):
        export(moved, tmp_path / "snaps", progress=False)
    summary = export(moved, tmp_path / "snaps", data=tmp_path / "data-copy", progress=False)
    assert summary.new_items == 0 and summary.new_users == 0
    shutil.rmtree(tmp_path / "data-copy")
    from fastapi.testclient import TestClient

    with TestClient(create_app(tmp_path / "snaps", model_run=moved,
                               reload_interval=None)) as client:
        snap = Snapshot.latest(tmp_path / "snaps")
        user = snap.users.keys()[0]
        assert user.startswith("cust-")
        body = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
        assert len(body["items"]) == 5 and all(x["item_id"].startswith("SKU")
                                               for x in body["items"])
        ids = [x["item_id"] for x in body["items"]]
        scored = client.post("/v1/score", json={"user_id": user, "item_ids": ids}).json()
        assert [x["item_id"] for x in scored["scores"]] == ids
        history = [{"item_id": ids[0], "timestamp": 10}, {"item_id": ids[1], "timestamp": 20}]
        fresh = client.post("/v1/recommendations", json={"history": history, "k": 5})
        assert fresh.status_code == 200, fresh.text
        assert not {ids[0], ids[1]} & {x["item_id"] for x in fresh.json()["items"]}


class _Load:
    """Client threads asking a real server for recommendations until stopped."""

    def __init__(self, port: int, users: list[str], threads: int = 3) -> None:
        self.port, self.users = port, users
        self.stop, self.failures, self.labels = threading.Event(), [], []
        self.threads = [threading.Thread(target=self._loop, args=(n,)) for n in range(threads)]
        for t in self.threads:
            t.start()

    def _loop(self, n: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30) as http:
            i = n
            while not self.stop.is_set():
                try:
                    r = http.get(f"/v1/users/{self.users[i % len(self.users)]}/recommendations",
                                 params={"k": 10})
                    if r.status_code != 200:
                        self.failures.append(r.status_code)
                    else:
                        self.labels.append(r.json()["snapshot"])
                except httpx.HTTPError as e:
                    self.failures.append(repr(e))
                i += 1

    def wait_for(self, label: str, timeout: float = 30) -> None:
        deadline = time.time() + timeout
        while (not self.labels or self.labels[-1] != label) and time.time() < deadline:
            time.sleep(0.05)
        assert self.labels and self.labels[-1] == label

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()


def test_three_days(log, tmp_path):
    day1, day2, day3 = _days(log, "str")
    train = TrainConfig(max_steps=3, batch_size=4)
    # day 1: prepare, train, export, serve
    prepare(day1, tmp_path / "data-1", _config(), progress=False)
    pretrain(tmp_path / "data-1", tmp_path / "model-1", train, progress=False)
    # lag 0: a user's vector includes their last event, so today's new users have one (with
    # the daily lag of one day they would get the popularity fallback until tomorrow)
    export(tmp_path / "model-1", tmp_path / "snaps", label="day1", lag=0, progress=False)
    app = create_app(tmp_path / "snaps", reload_interval=0.05)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    load = _Load(port, Snapshot.latest(tmp_path / "snaps").users.keys()[:20] + ["nobody"])
    try:
        load.wait_for("day1")
        # day 2: append a day with new users and items, export with the day-1 model, swap
        two = prepare(day2, tmp_path / "data-2", base=tmp_path / "data-1", append=True,
                      progress=False)
        assert two.new_users > 0 and two.new_items > 0
        second = export(tmp_path / "model-1", tmp_path / "snaps", data=tmp_path / "data-2",
                        label="day2", lag=0, progress=False)
        assert second.new_items == two.new_items and second.new_users == two.new_users
        # the day-1 model evaluates on the day-2 dataset (its test day is the new one)
        assert evaluate(tmp_path / "model-1", tmp_path / "data-2", ks=(10,),
                        progress=False)["count"] > 0
        load.wait_for("day2")
        data2 = PreparedData(tmp_path / "data-2")
        old_users = set(PreparedData(tmp_path / "data-1").users()["user"].to_list())
        new_user = next(u for u in data2.users()["user"].to_list() if u not in old_users)
        new_item = data2.items()["item"][-1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            body = http.get(f"/v1/users/{new_user}/recommendations", params={"k": 10}).json()
            assert body["fallback"] is None and len(body["items"]) == 10
            everything = http.get(f"/v1/users/{new_user}/recommendations",
                                  params={"k": 1000, "exclude_seen": "false"}).json()
            assert new_item in {x["item_id"] for x in everything["items"]}
            scored = http.post("/v1/score", json={"user_id": new_user, "item_ids": [new_item]})
            assert scored.status_code == 200 and np.isfinite(scored.json()["scores"][0]["score"])
            history = [{"item_id": new_item, "timestamp": 1}]
            fresh = http.post("/v1/recommendations", json={"history": history, "k": 5})
            assert fresh.status_code == 200, fresh.text
        # day 3: append, warm-start training on the appended data, export, swap
        prepare(day3, tmp_path / "data-3", base=tmp_path / "data-2", append=True,
                progress=False)
        pretrain(tmp_path / "data-3", tmp_path / "model-3", train,
                 init_from=tmp_path / "model-1", progress=False)
        export(tmp_path / "model-3", tmp_path / "snaps", label="day3", lag=0, progress=False)
        load.wait_for("day3")
    finally:
        load.close()
        server.should_exit = True
        thread.join(timeout=10)
    assert load.failures == []
    assert {"day1", "day2", "day3"} <= set(load.labels)
    # nothing from the earlier days is lost: every event of the three days is in data-3
    data3 = PreparedData(tmp_path / "data-3")
    total = sum(pl.read_parquet(p).height for p in (day1, day2, day3))
    assert data3.meta["counts"]["input_events"] == total
    assert data3.meta["counts"]["events"] + data3.meta["counts"]["dropped_events"] == total
    assert all((tmp_path / "snaps" / d / "manifest.json").exists()
               for d in ("day1", "day2", "day3"))
    # the warm start kept the day-1 weights for the rows both datasets share
    one = Checkpoint.open(tmp_path / "model-1")
    assert one.vocabulary().num_items < data3.num_items


def test_binary_ids_through_export_and_the_service(log, tmp_path):
    """Parquet binary ids: stored as given, keyed and sent over HTTP in hex."""
    from fastapi.testclient import TestClient

    day1, day2, day3 = _days(log, "int")
    events = pl.concat([pl.read_parquet(p) for p in (day1, day2, day3)]).with_columns(
        pl.col("customer").cast(pl.String).cast(pl.Binary),
        (pl.lit("sku-") + pl.col("sku").cast(pl.String)).cast(pl.Binary).alias("sku"))
    events.write_parquet(tmp_path / "log.parquet")
    prepare(tmp_path / "log.parquet", tmp_path / "data", _config(), progress=False)
    data = PreparedData(tmp_path / "data")
    assert data.items()["item"].dtype == pl.Binary and data.users()["user"].dtype == pl.Binary
    pretrain(tmp_path / "data", tmp_path / "run", TrainConfig(max_steps=2, batch_size=4),
             progress=False)
    export(tmp_path / "run", tmp_path / "snaps", lag=0, progress=False)
    snap = Snapshot.latest(tmp_path / "snaps")
    first = data.users()["user"][0]
    assert snap.user_vector(first) is not None  # bytes in Python
    assert snap.item_ids[0] == data.items()["item"][0]
    with TestClient(create_app(tmp_path / "snaps", reload_interval=None)) as client:
        body = client.get(f"/v1/users/{first.hex()}/recommendations", params={"k": 3}).json()
        assert body["fallback"] is None and len(body["items"]) == 3
        ids = [x["item_id"] for x in body["items"]]
        assert all(bytes.fromhex(i).startswith(b"sku-") for i in ids)
        scored = client.post("/v1/score", json={"user_id": first.hex(), "item_ids": ids})
        assert scored.status_code == 200 and [x["item_id"] for x in
                                              scored.json()["scores"]] == ids


def test_append_with_leave_one_out_equals_prepare_with_base(log, tmp_path):
    """Leave-one-out moves each user's test and validation targets to their newest events."""
    day1, day2, _ = _days(log, "str")
    cfg = _config().model_copy(update={"split": SplitConfig(kind="leave-one-out")})
    prepare(day1, tmp_path / "d1", cfg, progress=False)
    prepare(day2, tmp_path / "d2a", base=tmp_path / "d1", append=True, progress=False)
    both = tmp_path / "both.parquet"
    pl.concat([pl.read_parquet(day1), pl.read_parquet(day2)]).write_parquet(both)
    prepare(both, tmp_path / "d2b", cfg, base=tmp_path / "d1", progress=False)
    a, b = PreparedData(tmp_path / "d2a"), PreparedData(tmp_path / "d2b")
    assert a.meta["counts"] == b.meta["counts"] and a.meta["split"] == b.meta["split"]
    assert a.users().drop("shard", "offset").equals(b.users().drop("shard", "offset"))
    for user in range(a.num_users):
        ea, eb = a.user_events(user), b.user_events(user)
        for name in eb:
            np.testing.assert_array_equal(ea[name], eb[name], err_msg=f"{user} {name}")
