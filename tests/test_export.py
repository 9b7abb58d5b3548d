"""`argus export`: the snapshot round trip against a plain per-user reference, the manifest's
checksums, the atomic `latest` switch, HNSW recall against exact search, the Redis store, pruning
old snapshots (and their Redis keys) and `--overwrite`."""

import json
import os
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

from argusrec.errors import DataError
from argusrec.sequences import GAP, PreparedData
from argusrec.export import export, item_vectors, user_vector_reference
from argusrec.retention import prune_snapshots
from argusrec.snapshot import (DAY, Snapshot, latest_label, switch_latest, verify,
                                write_snapshot)
from argusrec.checkpoint import load_model
from argusrec.train import TrainConfig, pretrain


@pytest.fixture(scope="module")
def run_dir(sim_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "run"
    pretrain(sim_data, out, TrainConfig(preset="debug", max_steps=2), progress=False)
    return out


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("snapshots")
    summary = export(run_dir, root, progress=False)
    return root, summary


def test_round_trip_matches_the_plain_reference(run_dir, exported):
    root, summary = exported
    model, _, data = load_model(run_dir)
    snap = Snapshot.latest(root)
    assert snap.label == summary.label == latest_label(root)
    assert summary.lag == DAY  # a pretrained-only model: the one-day default
    as_of = snap.manifest["data"]["as_of"]
    assert as_of == data.meta["split"]["time_max"] + 1
    np.testing.assert_allclose(snap.vectors, item_vectors(model), rtol=1e-5, atol=1e-6)
    items = data.items().sort("index")["item"].to_numpy()
    np.testing.assert_array_equal(snap.item_ids, items)
    users = data.users().sort("index")
    stored = 0
    for index, user in zip(users["index"].to_list(), users["user"].to_list()):
        expected = user_vector_reference(model, data, index, as_of, summary.lag)
        got = snap.user_vector(str(user))
        if expected is None:
            assert got is None
            continue
        stored += 1
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
        ev = data.user_events(index)
        ok = (ev["split"] != GAP) & (ev["timestamp"] <= as_of - summary.lag)
        np.testing.assert_array_equal(snap.seen(str(user)), np.unique(ev["item"][ok]) - 1)
    assert stored == summary.users == snap.manifest["counts"]["users"] > 0
    assert summary.users + summary.users_without_history == data.num_users
    assert snap.user_vector("no-such-user") is None
    top = snap.popular
    assert len(top) and np.all(np.diff(top[:, 1]) <= 0)


def test_lag_moves_the_cut_off(run_dir, exported, tmp_path):
    root, summary = exported
    model, _, data = load_model(run_dir)
    as_of = Snapshot.latest(root).manifest["data"]["as_of"]
    late = export(run_dir, tmp_path, lag=0, label="nolag", progress=False)
    snap = Snapshot.open(late.out)
    assert snap.manifest["data"]["cutoff"] == as_of and late.lag == 0
    users = data.users().sort("index")
    for index, user in zip(users["index"].to_list()[:8], users["user"].to_list()[:8]):
        expected = user_vector_reference(model, data, index, as_of, 0)
        if expected is not None:
            np.testing.assert_allclose(snap.user_vector(str(user)), expected, rtol=1e-4,
                                       atol=1e-5)


def test_manifest_checksums_catch_damage(exported, tmp_path):
    root, summary = exported
    path = root / summary.label
    manifest = json.loads((path / "manifest.json").read_text())
    assert {"item_vectors.npy", "vocab/items.parquet", "vocab/fields.json", "items.hnsw",
            "popular.npy",
            "users.lmdb/data.mdb"} <= set(manifest["files"])
    assert manifest["model"]["step"] == 2 and len(manifest["model"]["config_sha256"]) == 64
    assert manifest["counts"]["items"] == summary.items
    assert verify(path) == []
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    raw = bytearray((copy / "item_vectors.npy").read_bytes())
    raw[-1] ^= 0xFF
    (copy / "item_vectors.npy").write_bytes(bytes(raw))
    assert verify(copy) == ["item_vectors.npy: checksum mismatch"]
    with pytest.raises(DataError, match="damaged"):
        Snapshot.open(copy, check=True)


def _tiny(n=50, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return dict(item_ids=np.arange(n) + 100, vectors=rng.standard_normal((n, dim)).astype(
        np.float32), popular=np.array([[0, 5], [1, 3]]), manifest={"model": None})


def test_latest_switches_atomically_and_failures_leave_nothing(tmp_path):
    users = [(["a"], np.ones((1, 8), np.float32), [np.array([1], np.int32)])]
    write_snapshot(tmp_path, "day1", users=users, **_tiny())
    assert latest_label(tmp_path) == "day1"

    def broken():
        yield users[0]
        raise RuntimeError("the job died")

    with pytest.raises(RuntimeError):
        write_snapshot(tmp_path, "day2", users=broken(), **_tiny())
    assert latest_label(tmp_path) == "day1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day1", "latest"]
    write_snapshot(tmp_path, "day2", users=users, **_tiny(seed=1))
    assert latest_label(tmp_path) == "day2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["day1", "day2", "latest"]
    with pytest.raises(DataError, match="exists"):
        write_snapshot(tmp_path, "day2", users=users, **_tiny())
    with pytest.raises(DataError, match="backend"):
        write_snapshot(tmp_path, "day3", users=users, backend="rocks", **_tiny())
    with pytest.raises(DataError, match="redis-url"):
        write_snapshot(tmp_path, "day3", users=users, backend="redis", **_tiny())


# -- pruning and --overwrite ------------------------------------------------------------------
_USERS = [(["a"], np.ones((1, 8), np.float32), [np.array([1], np.int32)])]


def _entries(root):
    return sorted(p.name for p in root.iterdir())


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_prune_keeps_the_newest_by_export_time(tmp_path):
    # labels in the reverse of their export order: the order of names must not matter
    for n, label in enumerate(["d", "c", "b", "a"]):
        write_snapshot(tmp_path, label, users=_USERS, keep=2, **_tiny(seed=n))
    assert _entries(tmp_path) == ["a", "b", "latest"]
    assert latest_label(tmp_path) == "a" and verify(tmp_path / "a") == []
    with pytest.raises(DataError, match="at least 1"):
        write_snapshot(tmp_path, "e", users=_USERS, keep=0, **_tiny())
    assert _entries(tmp_path) == ["a", "b", "latest"]  # refused before anything was written


def test_prune_never_removes_what_latest_names_nor_what_is_not_a_snapshot(tmp_path):
    for label in ["old", "mid", "new"]:
        write_snapshot(tmp_path, label, users=_USERS, keep=None, **_tiny())
    switch_latest(tmp_path, "old")  # rolled back by hand
    (tmp_path / "notes").mkdir()  # no manifest.json: not ours
    (tmp_path / "README").write_text("hands off")
    assert prune_snapshots(tmp_path, 1) == ["mid"]
    assert _entries(tmp_path) == ["README", "latest", "new", "notes", "old"]
    assert Snapshot.latest(tmp_path).label == "old"
    assert prune_snapshots(tmp_path, None) == []


def test_prune_sweeps_the_temporaries_of_dead_processes_only(tmp_path):
    write_snapshot(tmp_path, "s", users=_USERS, **_tiny())
    dead, mine = _dead_pid(), os.getpid()
    for name in [f".s.tmp-{dead}", f".t.old-{dead}", f".s.tmp-{mine}", f".u.old-{mine}"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "item_vectors.npy").write_bytes(b"partial")
    (tmp_path / f".latest.tmp-{dead}").write_text("s\n")
    assert prune_snapshots(tmp_path, None) == []
    assert _entries(tmp_path) == [f".s.tmp-{mine}", f".u.old-{mine}", "latest", "s"]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_overwrite_replaces_in_place_and_leaves_no_old_dir(tmp_path, monkeypatch, exchange):
    import argusrec.snapshot as snapshot

    if not exchange:  # the portable path: the old snapshot is renamed aside first
        monkeypatch.setattr(snapshot, "_exchange", lambda a, b: False)
    write_snapshot(tmp_path, "day", users=_USERS, **_tiny(seed=0))
    write_snapshot(tmp_path, "other", users=_USERS, **_tiny(seed=2))
    write_snapshot(tmp_path, "day", users=_USERS, overwrite=True, **_tiny(seed=1))
    assert _entries(tmp_path) == ["day", "latest", "other"]  # no .old- or .tmp- left
    snap = Snapshot.latest(tmp_path, check=True)
    assert snap.label == "day"
    np.testing.assert_array_equal(snap.vectors, _tiny(seed=1)["vectors"])


def test_hnsw_recall_at_100_against_exact(tmp_path):
    # 5,000 items in clusters with norms spread over 10x, as model vectors are (a plain
    # inner-product graph misses many of their top items); recall must hold with exclusions
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32)).astype(np.float32)
    vectors = centres[rng.integers(0, 50, 5000)] + 0.5 * rng.standard_normal((5000, 32))
    vectors *= np.exp(rng.uniform(-1.2, 1.2, (5000, 1)))
    write_snapshot(tmp_path, "r", item_ids=np.arange(5000), vectors=vectors.astype(np.float32),
                   users=[], popular=np.zeros((0, 2)), manifest={})  # the export defaults
    snap = Snapshot.open(tmp_path / "r")
    assert snap.manifest["index"]["metric"] == "l2_augmented"
    hits = 0
    queries = rng.standard_normal((40, 32)).astype(np.float32)
    for n, q in enumerate(queries):
        exclude = rng.choice(5000, 30, replace=False) if n % 2 else None
        rows, scores = snap.recommend(q, 100, exclude=exclude)
        exact, exact_scores = snap.recommend_exact(q, 100, exclude=exclude)
        assert len(rows) == 100 and np.all(np.diff(scores) <= 1e-5)
        np.testing.assert_allclose(scores, snap.vectors[rows] @ q, rtol=1e-4, atol=1e-4)
        if exclude is not None:
            assert not set(rows.tolist()) & set(exclude.tolist())
        hits += len(set(rows.tolist()) & set(exact.tolist()))
    assert hits / (100 * len(queries)) >= 0.95


def test_exported_index_recall(exported):
    root, summary = exported
    snap = Snapshot.latest(root)
    users = snap.users.keys()
    hits = 0
    for user in users:
        vector = snap.user_vector(user)
        rows, _ = snap.recommend(vector, 100, exclude=snap.seen(user))
        exact, _ = snap.recommend_exact(vector, 100, exclude=snap.seen(user))
        hits += len(set(rows.tolist()) & set(exact.tolist()))
    assert hits / (100 * len(users)) >= 0.95


def test_item_ids_lookup(tmp_path):
    write_snapshot(tmp_path, "s", users=[], item_ids=np.array(["x", "y", "z"]),
                   vectors=np.eye(3, dtype=np.float32), popular=np.zeros((0, 2)), manifest={})
    snap = Snapshot.open(tmp_path / "s")
    rows, missing = snap.rows_of(["z", "x", "nope"])
    assert rows.tolist() == [2, 0] and missing == ["nope"]
    write_snapshot(tmp_path, "n", users=[], item_ids=np.array([30, 10, 20]),
                   vectors=np.eye(3, dtype=np.float32), popular=np.zeros((0, 2)), manifest={})
    snap = Snapshot.open(tmp_path / "n")
    rows, missing = snap.rows_of([20, "10", 99, "abc"])
    assert rows.tolist() == [2, 1] and missing == [99, "abc"]


# -- Redis ------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    """A private redis-server on a free port in a temporary directory, or a skip."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    redis = pytest.importorskip("redis")
    directory = tmp_path_factory.mktemp("redis")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                             str(directory), "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if proc.poll() is not None:
                    pytest.skip("redis-server exited at start-up")
                time.sleep(0.05)
        else:
            pytest.skip("redis-server did not answer within 5 s")
        yield url
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=10)


def test_redis_backend_matches_lmdb(run_dir, exported, redis_url, tmp_path):
    root, summary = exported
    lmdb_snap = Snapshot.latest(root)
    result = export(run_dir, tmp_path, backend="redis", redis_url=redis_url, progress=False)
    snap = Snapshot.open(result.out, check=True)
    assert snap.manifest["users"]["backend"] == "redis"
    assert not (tmp_path / result.label / "users.lmdb").exists()
    for user in lmdb_snap.users.keys():
        np.testing.assert_array_equal(snap.user_vector(user), lmdb_snap.user_vector(user))
        np.testing.assert_array_equal(snap.seen(user), lmdb_snap.seen(user))
    assert snap.user_vector("no-such-user") is None
    with pytest.raises(DataError, match="not in Redis"):
        Snapshot.open(result.out, redis_url=redis_url.rsplit("/", 1)[0] + "/1")


def _count_keys(url, prefix) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        return sum(1 for _ in client.scan_iter(match=prefix + "*"))
    finally:
        client.close()


def _prefix(snapshot_dir) -> str:
    return json.loads((snapshot_dir / "manifest.json").read_text())["users"]["prefix"]


def test_pruning_a_redis_snapshot_deletes_its_keys(run_dir, redis_url, tmp_path):
    first = export(run_dir, tmp_path, backend="redis", redis_url=redis_url, label="one",
                   keep=1, progress=False)
    prefix = _prefix(tmp_path / "one")
    assert _count_keys(redis_url, prefix) == 2 * first.users + 1 and first.pruned == []
    second = export(run_dir, tmp_path, backend="redis", redis_url=redis_url, label="two",
                    keep=1, progress=False)
    assert second.pruned == ["one"] and _entries(tmp_path) == ["latest", "two"]
    assert _count_keys(redis_url, prefix) == 0
    assert _count_keys(redis_url, _prefix(tmp_path / "two")) == 2 * second.users + 1


def test_redis_overwrite_and_an_unreachable_server(redis_url, tmp_path, caplog):
    write_snapshot(tmp_path, "day", users=_USERS, backend="redis", redis_url=redis_url,
                   **_tiny())
    old = _prefix(tmp_path / "day")
    write_snapshot(tmp_path, "day", users=_USERS, backend="redis", redis_url=redis_url,
                   overwrite=True, **_tiny(seed=1))
    new = _prefix(tmp_path / "day")
    assert _count_keys(redis_url, old) == 0 and _count_keys(redis_url, new) == 3
    assert _entries(tmp_path) == ["day", "latest"]
    # a server that is gone: a warning, and the directory stays as the record of its keys
    write_snapshot(tmp_path, "next", users=_USERS, keep=None, **_tiny())
    with caplog.at_level("WARNING", logger="argusrec.retention"):
        gone = f"redis://127.0.0.1:{_free_port()}/0"
        assert prune_snapshots(tmp_path, 1, redis_url=gone) == []
    assert "could not delete the Redis keys" in caplog.text
    assert _entries(tmp_path) == ["day", "latest", "next"]
    assert _count_keys(redis_url, new) == 3
    assert prune_snapshots(tmp_path, 1) == ["day"]  # the manifest's server answers
    assert _count_keys(redis_url, new) == 0 and _entries(tmp_path) == ["latest", "next"]


def test_batched_encoding_matches_one_at_a_time(sim_data):
    # a model with time-gap embeddings; histories of every length from 1 event up, batched
    # together (padded) against each encoded alone
    import torch

    from argusrec.loader import collate
    from argusrec.export import ServingContext, encode_histories, history_sample
    from argusrec.train import build_model

    data = PreparedData(sim_data)
    model = build_model(TrainConfig(preset="debug", model={"time_buckets": 8}), data).eval()
    events = data.user_events(int(data.users().sort("n_events")["index"][-1]))
    names = sorted(data.context_fields), list(data.feedback_fields)
    samples = [history_sample(events, np.arange(n), *names) for n in range(1, 12)]
    gaps = np.arange(len(samples)) * 1000
    serving = ServingContext.of(data)
    batched = encode_histories(model, samples, gaps, serving, max_tokens=40)
    for s, gap, got in zip(samples, gaps, batched):
        with torch.no_grad():
            n = len(s["item"])
            state = model.event_states(collate([s], pad_to=2))[:, n - 1]
            want = model.user_vectors_at(state, torch.as_tensor(serving.context)[None],
                                         torch.tensor([serving.event_type]),
                                         torch.tensor([int(gap)]))[0].numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
