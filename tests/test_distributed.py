"""Distributed pretraining and fine-tuning: 2 CPU processes with gloo against 1 process with the same global
batch, and checkpoints that move between 2 ranks and 1.

1 process with grad_accum=2 computes exactly what 2 ranks with grad_accum=1 compute (each rank's
mean loss over its micro-batch, averaged), so the trajectories agree up to float reduction
order. Dropout is off and the loss is the full softmax, so no per-rank randomness enters.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

WORKER = str(Path(__file__).with_name("dist_worker.py"))
TOL = 2e-4  # relative; float sums in another order over 6 steps


def base(**extra) -> dict:
    return {"preset": "debug", "model": {"dropout": 0.0, "max_len": 32},
            "objective": {"next_item_loss": "full"}, "batch_size": 4, "max_steps": 6,
            "threads": 1, "group_by_length": False, "optim": {"warmup_steps": 2}, **extra}


def run(data, out, cfg: dict, result: Path, ranks: int) -> list[float]:
    argv = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
             str(ranks), WORKER] if ranks > 1 else [sys.executable, WORKER])
    proc = subprocess.run(argv + [str(data), str(out), json.dumps(cfg), str(result)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(result.read_text())["losses"]


def one_process(**extra) -> dict:
    cfg = base(**extra)
    cfg["optim"] = {**cfg["optim"], "grad_accum": 2}
    return cfg


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_follow_one_process_with_the_same_global_batch(sim_data, tmp_path, parallel):
    single = run(sim_data, tmp_path / "one", one_process(), tmp_path / "one.json", 1)
    double = run(sim_data, tmp_path / "two", base(parallel=parallel), tmp_path / "two.json", 2)
    assert len(single) == len(double) == 6
    np.testing.assert_allclose(double, single, rtol=TOL)


def test_checkpoints_move_between_two_ranks_and_one(sim_data, tmp_path):
    reference = run(sim_data, tmp_path / "ref", one_process(), tmp_path / "ref.json", 1)
    # saved from 2 ranks (FSDP shards), resumed on 1
    run(sim_data, tmp_path / "a", {**base(parallel="fsdp"), "_stop_after": 3},
        tmp_path / "a1.json", 2)
    rest = run(sim_data, tmp_path / "a", {**one_process(), "_resume": True}, tmp_path / "a2.json",
               1)
    np.testing.assert_allclose(rest, reference[3:], rtol=TOL)
    # saved from 1 process, resumed on 2 ranks
    run(sim_data, tmp_path / "b", {**one_process(), "_stop_after": 3}, tmp_path / "b1.json", 1)
    rest = run(sim_data, tmp_path / "b", {**base(parallel="ddp"), "_resume": True},
               tmp_path / "b2.json", 2)
    np.testing.assert_allclose(rest, reference[3:], rtol=TOL)


def finetune_base(pretrained: Path, **extra) -> dict:
    return {"_finetune_from": str(pretrained), "batch_size": 2, "max_steps": 4, "lag": 0,
            "threads": 1, "group_by_length": False, "optim": {"warmup_steps": 2}, **extra}


@pytest.fixture(scope="module")
def pretrained(sim_data, tmp_path_factory):
    """A run without dropout, so that fine-tuning has no per-rank randomness either."""
    out = tmp_path_factory.mktemp("pre") / "run"
    run(sim_data, out, {**base(), "max_steps": 2}, out.parent / "pre.json", 1)
    return out


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_finetuning_on_two_ranks_follows_one_process(sim_data, pretrained, tmp_path,
                                                     parallel):
    one = finetune_base(pretrained)
    one["optim"] = {**one["optim"], "grad_accum": 2}
    single = run(sim_data, tmp_path / "one", one, tmp_path / "one.json", 1)
    double = run(sim_data, tmp_path / "two", finetune_base(pretrained, parallel=parallel),
                 tmp_path / "two.json", 2)
    assert len(single) == len(double) == 4
    np.testing.assert_allclose(double, single, rtol=TOL)
