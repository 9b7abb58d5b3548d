"""Export on a named device, with Parquet user vectors, and by two torchrun ranks (gloo): the
snapshot two ranks publish holds what one process's does.

The dataset is prepared into three shards (small ``shard_events``), so that the ranks split
them unevenly and rank 0 must merge two parts back into the order one process writes.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import simulated_data

from argusrec.errors import DataError
from argusrec.export import export
from argusrec.export_parallel import assign_shards, read_user_vectors
from argusrec.sequences import PreparedData
from argusrec.snapshot import Snapshot
from argusrec.train import TrainConfig, pretrain
from argusrec.vocab import id_text

WORKER = str(Path(__file__).with_name("dist_worker.py"))
TOL = 1e-5
# what may differ between two exports of the same model and data
VOLATILE = ("created", "write_seconds", "files", "export")


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    data = simulated_data(tmp_path_factory.mktemp("sharded"), shard_events=1000)
    assert len(PreparedData(data).info.shards) == 3
    return data


@pytest.fixture(scope="module")
def run_dir(sharded, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "run"
    pretrain(sharded, out, TrainConfig(preset="debug", max_steps=2), progress=False)
    return out


@pytest.fixture(scope="module")
def single(run_dir, sharded, tmp_path_factory):
    root = tmp_path_factory.mktemp("one")
    summary = export(run_dir, root, data=sharded, device="cpu", parquet=True, progress=False)
    return root, summary


def test_parquet_vectors_are_the_stored_vectors(single, sharded):
    root, summary = single
    snap = Snapshot.latest(root, check=True)
    table = read_user_vectors(snap.path)
    assert table.columns == ["user", "vector", "as_of"]
    assert table["user"].dtype == PreparedData(sharded).users()["user"].dtype  # original ids
    assert len(table) == summary.users == len(snap.users.keys()) > 0
    assert (table["as_of"] == summary.as_of).all()
    for user, vector in zip(table["user"].to_list(), table["vector"].to_numpy()):
        np.testing.assert_array_equal(vector, snap.user_vector(id_text(user)))
    assert snap.manifest["export"] == {"ranks": 1, "device": "cpu", "parquet": "user_vectors"}
    assert sorted(p.name for p in root.iterdir()) == [summary.label, "latest"]  # no staging


def test_a_device_this_machine_lacks_is_refused_before_any_work(run_dir, tmp_path):
    for device, words in [("tpu:9", "unknown device"), ("cuda:64", "cuda:64")]:
        with pytest.raises(DataError, match=words) as caught:
            export(run_dir, tmp_path / "snaps", device=device, progress=False)
        assert "--device" in str(caught.value)
    assert not (tmp_path / "snaps").exists()


def test_shards_are_balanced_by_events_and_each_goes_to_one_rank():
    assert assign_shards([100, 10, 10, 80, 5], 2) == [[0, 4], [1, 2, 3]]
    assert assign_shards([3, 1], 3) == [[0], [1], []]
    split = assign_shards(list(range(1, 40)), 4)
    assert sorted(s for shards in split for s in shards) == list(range(39))


def _manifest(snapshot: Snapshot) -> dict:
    kept = {k: v for k, v in snapshot.manifest.items() if k not in VOLATILE}
    kept["index"] = {k: v for k, v in kept["index"].items() if k != "build_seconds"}
    return kept


def _items_files(snapshot: Snapshot) -> dict:
    return {name: f for name, f in snapshot.manifest["files"].items()
            if not name.startswith(("users.lmdb", "user_vectors"))}


@pytest.mark.distributed
def test_two_ranks_publish_the_snapshot_one_process_does(single, run_dir, sharded, tmp_path):
    root, summary = single
    cfg = {"_export_from": str(run_dir), "device": "cpu", "parquet": True}
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            "2", WORKER, str(sharded), str(tmp_path / "two"), json.dumps(cfg),
            str(tmp_path / "summary")]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = [json.loads((tmp_path / f"summary.{r}").read_text()) for r in (0, 1)]
    assert summaries[0] == summaries[1]  # every rank returns rank 0's summary
    assert summaries[0]["users"] == summary.users
    assert summaries[0]["users_without_history"] == summary.users_without_history

    one, two = Snapshot.latest(root, check=True), Snapshot.latest(tmp_path / "two", check=True)
    assert two.manifest["export"] == {"ranks": 2, "device": "cpu", "parquet": "user_vectors"}
    assert _manifest(two) == _manifest(one)
    assert _items_files(two) == _items_files(one)  # item vectors, index, popularity, vocabulary
    keys = one.users.keys()
    assert two.users.keys() == keys
    for key in keys:
        np.testing.assert_allclose(two.user_vector(key), one.user_vector(key), rtol=TOL, atol=TOL)
        np.testing.assert_array_equal(two.seen(key), one.seen(key))

    parts = sorted(p.name for p in (two.path / "user_vectors").iterdir())
    assert parts == ["part-00000.parquet", "part-00001.parquet"]
    want, got = (read_user_vectors(s.path).sort("user") for s in (one, two))
    assert got["user"].to_list() == want["user"].to_list()
    assert got["as_of"].to_list() == want["as_of"].to_list()
    np.testing.assert_allclose(got["vector"].to_numpy(), want["vector"].to_numpy(), rtol=TOL,
                               atol=TOL)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [summary.label, "latest"]
