"""Sharded checkpoints (torch.distributed.checkpoint): every rank writes its own shards, a run
resumes from them on another world size with the same loss curve, one process loads the whole
model from them, a damaged or unfinished one is passed over, a crafted index runs no code, and
``auto`` keeps the consolidated format where the state fits one host."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from argusrec.checkpoint import Checkpoint, checkpoint_format, load_model
from argusrec.errors import DataError
from argusrec.train import pretrain
from test_distributed import TOL, base, one_process, run
from test_train import tiny


def test_auto_keeps_the_consolidated_format_where_the_state_fits():
    assert checkpoint_format("auto", fsdp=True, state_bytes=10**6) == "consolidated"
    assert checkpoint_format("auto", fsdp=True, state_bytes=6, memory=10) == "sharded"
    assert checkpoint_format("auto", fsdp=False, state_bytes=6, memory=10) == "consolidated"
    assert checkpoint_format("sharded", fsdp=False, state_bytes=1) == "sharded"
    assert checkpoint_format("consolidated", fsdp=True, state_bytes=6, memory=10) == (
        "consolidated")


def test_a_small_run_saves_consolidated(sim_data, tmp_path):
    pretrain(sim_data, tmp_path / "run", tiny(max_steps=2), progress=False)
    ckpt = Checkpoint.open(tmp_path / "run")
    assert not ckpt.sharded and (ckpt.path / "model.safetensors").exists()
    assert ckpt.config["format_version"] == 2


def test_sharded_weights_load_in_one_process_equal_the_trained_ones(sim_data, tmp_path):
    pretrain(sim_data, tmp_path / "sharded", tiny(max_steps=3, checkpoint_format="sharded"),
             progress=False)
    pretrain(sim_data, tmp_path / "whole", tiny(max_steps=3), progress=False)
    ckpt = Checkpoint.open(tmp_path / "sharded")
    assert ckpt.sharded and ckpt.config["format_version"] == 3 and not ckpt.problems()
    assert {p.name for p in ckpt.path.iterdir()} == {"shards", "state.json",
                                                    "state.safetensors", "config.json", "vocab"}
    assert not list((tmp_path / "sharded" / "checkpoints").glob(".*tmp*"))
    expected = Checkpoint.open(tmp_path / "whole").weights()
    weights = ckpt.weights()
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    model, _, _ = load_model(tmp_path / "sharded")
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def straight(sim_data, tmp_path_factory):
    """An uninterrupted 8-step run (consolidated: the formats must not change the numbers)."""
    return pretrain(sim_data, tmp_path_factory.mktemp("straight") / "run",
                    tiny(checkpoint_every=2), progress=False).losses


@pytest.mark.parametrize("damage", ["truncated shard", "no index", "unfinished"])
def test_a_damaged_sharded_checkpoint_falls_back_and_finishes_the_same(
        sim_data, tmp_path, straight, damage, caplog):
    cfg = tiny(checkpoint_every=2, keep_checkpoints=2, checkpoint_format="sharded")
    pretrain(sim_data, tmp_path / "run", cfg, progress=False, stop_after=6)
    root = tmp_path / "run" / "checkpoints"
    newest = root / "step-00000006"
    shard = newest / "shards" / "__0_0.distcp"
    if damage == "truncated shard":
        shard.write_bytes(shard.read_bytes()[:1000])
    elif damage == "no index":
        (newest / "shards" / ".metadata").unlink()
    else:  # killed while writing: the shards are in the temporary directory, never renamed
        newest.rename(root / ".step-00000006.tmp-shards")
    rest = pretrain(sim_data, tmp_path / "run", cfg, progress=False, resume=True)
    assert rest.steps == 8 and "resuming from step-00000004" in caplog.text
    np.testing.assert_allclose(rest.losses, straight[4:], rtol=0, atol=1e-6)


class _Payload:
    def __reduce__(self):
        return (shutil.rmtree, ("/nonexistent-argusrec-test",))


def test_a_crafted_shard_index_runs_no_code(sim_data, tmp_path):
    pretrain(sim_data, tmp_path / "run", tiny(max_steps=1, checkpoint_format="sharded"),
             progress=False)
    ckpt = Checkpoint.open(tmp_path / "run")
    (ckpt.path / "shards" / ".metadata").write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(DataError, match="index .* cannot be read.*shutil.rmtree"):
        ckpt.weights()


@pytest.fixture(scope="module")
def reference(sim_data, tmp_path_factory) -> list[float]:
    """6 steps in one process with the global batch of 2 ranks (test_distributed)."""
    out = tmp_path_factory.mktemp("reference")
    return run(sim_data, out / "run", one_process(), out / "losses.json", 1)


def sharded(**extra) -> dict:
    return {**base(parallel="fsdp", **extra), "checkpoint_format": "sharded"}


@pytest.mark.slow
@pytest.mark.distributed
def test_two_ranks_save_shards_that_resume_on_one_rank_and_on_two(sim_data, tmp_path,
                                                                  reference):
    first = run(sim_data, tmp_path / "two", {**sharded(), "_stop_after": 3},
                tmp_path / "first.json", 2)
    np.testing.assert_allclose(first, reference[:3], rtol=TOL)
    shards = Checkpoint.open(tmp_path / "two").path / "shards"
    assert {p.name for p in shards.iterdir()} == {".metadata", "__0_0.distcp", "__1_0.distcp"}
    shutil.copytree(tmp_path / "two", tmp_path / "one")
    on_two = run(sim_data, tmp_path / "two", {**sharded(), "_resume": True},
                 tmp_path / "on_two.json", 2)
    np.testing.assert_allclose(on_two, reference[3:], rtol=TOL)
    on_one = run(sim_data, tmp_path / "one", {**one_process(), "_resume": True},
                 tmp_path / "on_one.json", 1)
    np.testing.assert_allclose(on_one, reference[3:], rtol=TOL)
    two, one = Checkpoint.open(tmp_path / "two"), Checkpoint.open(tmp_path / "one")
    assert two.sharded and not one.sharded  # the single process saved in the auto format
    # read whole from 2 ranks' shards in this process; Adam's steps carry the float noise of
    # another reduction order to ~3e-5 after 6 steps (a misplaced shard is off by ~0.1)
    whole = one.weights()
    for key, value in two.weights().items():
        np.testing.assert_allclose(value.numpy(), whole[key].numpy(), rtol=0, atol=1e-4)


@pytest.mark.slow
@pytest.mark.distributed
def test_one_process_saves_shards_that_resume_on_two_ranks(sim_data, tmp_path, reference):
    cfg = {**one_process(), "checkpoint_format": "sharded"}
    run(sim_data, tmp_path / "run", {**cfg, "_stop_after": 3}, tmp_path / "first.json", 1)
    rest = run(sim_data, tmp_path / "run", {**sharded(), "_resume": True},
               tmp_path / "rest.json", 2)
    np.testing.assert_allclose(rest, reference[3:], rtol=TOL)
    assert json.loads((Checkpoint.open(tmp_path / "run").path / "config.json").read_text())[
        "weights"] == "sharded"
