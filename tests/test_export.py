"""`argus export`: the snapshot round trip against a plain per-user reference, the manifest's
checksums, the atomic `latest` switch, HNSW recall against exact search, and the Redis store."""

import json
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

from argusrec.errors import DataError
from argusrec.sequences import GAP, PreparedData
from argusrec.export import export, item_vectors, user_vector_reference
from argusrec.snapshot import DAY, Snapshot, latest_label, verify, write_snapshot
from argusrec.train import TrainConfig, load_model, pretrain


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
    assert {"item_vectors.npy", "item_ids.npy", "items.hnsw", "popular.npy",
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
