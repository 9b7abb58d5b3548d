"""pretrain: exact resume, checkpoints on SIGTERM, every loss, SASRec, logs."""

from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch

from argusrec.errors import DataError

from argusrec.objective import PretrainObjective
from argusrec.checkpoint import find_checkpoint, load_model
from argusrec.configs import apply_overrides
from argusrec.train import (TrainConfig, pretrain,
                            sasrec_overrides)


def tiny(**fields) -> TrainConfig:
    base = dict(preset="debug", model={"max_len": 32}, batch_size=4, max_steps=8,
                checkpoint_every=100, objective={"num_uniform": 64})
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return TrainConfig(**base)


@pytest.mark.parametrize("loss", ["corrected", "full"])
def test_resume_continues_the_same_loss_curve(sim_data, tmp_path, loss):
    cfg = tiny(objective={"next_item_loss": loss})
    straight = pretrain(sim_data, tmp_path / "a", cfg, progress=False)
    first = pretrain(sim_data, tmp_path / "b", cfg, progress=False, stop_after=3)
    assert first.stopped_early and first.steps == 3
    rest = pretrain(sim_data, tmp_path / "b", cfg, progress=False, resume=True)
    assert rest.steps == 8
    assert np.allclose(straight.losses, first.losses + rest.losses, rtol=0, atol=1e-6)


def test_checkpoint_contents_and_reload(sim_data, tmp_path):
    summary = pretrain(sim_data, tmp_path / "run", tiny(), progress=False)
    ckpt = find_checkpoint(tmp_path / "run")
    assert ckpt.name == "step-00000008"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "state.json",
                                               "state.safetensors", "config.json", "vocab"}
    config = json.loads((ckpt / "config.json").read_text())
    assert config["model"]["max_len"] == 32 and config["data"]["meta"]["counts"]["items"] > 0
    assert not list((tmp_path / "run" / "checkpoints").glob(".*tmp*"))
    assert list((tmp_path / "run" / "tensorboard").iterdir())
    model, _, _ = load_model(tmp_path / "run")
    assert model.parameter_counts() == summary.parameters
    with pytest.raises(Exception, match="already has checkpoints"):
        pretrain(sim_data, tmp_path / "run", tiny(), progress=False)


def test_sigterm_saves_a_checkpoint_and_stops(sim_data, tmp_path, monkeypatch):
    calls = {"n": 0}
    forward = PretrainObjective.forward

    def forward_then_signal(self, model, batch, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler would
        return forward(self, model, batch, **kwargs)

    monkeypatch.setattr(PretrainObjective, "forward", forward_then_signal)
    summary = pretrain(sim_data, tmp_path / "run", tiny(max_steps=50), progress=False)
    assert summary.stopped_early and summary.steps == 3
    assert find_checkpoint(tmp_path / "run").name == "step-00000003"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(
        signal.getsignal(signal.SIGTERM))


@pytest.mark.parametrize("loss", ["full", "sampled", "logq", "corrected"])
@pytest.mark.parametrize("variant", ["simplified", "full"])
def test_every_loss_and_variant_trains(sim_data, tmp_path, loss, variant):
    cfg = tiny(objective={"next_item_loss": loss}, model={"variant": variant}, max_steps=4)
    summary = pretrain(sim_data, tmp_path / "run", cfg, progress=False)
    assert summary.steps == 4 and np.isfinite(summary.losses).all()


def test_sasrec_is_a_configuration(sim_data, tmp_path):
    fields = apply_overrides(tiny().model_dump(), sasrec_overrides())
    cfg = TrainConfig(**fields)
    pretrain(sim_data, tmp_path / "run", cfg, progress=False)
    model, config, _ = load_model(tmp_path / "run")
    assert model.feedback_head is None and model.feedback is None and model.context is None
    assert config["train"]["positives_only"]


def test_loss_goes_down(sim_data, tmp_path):
    cfg = tiny(max_steps=60, optim={"lr": 3e-3, "warmup_steps": 5},
               objective={"next_item_loss": "full"}, model={"dropout": 0.0})
    losses = pretrain(sim_data, tmp_path / "run", cfg, progress=False).losses
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.5


def test_validation_keeps_the_best_and_stops_early(sim_data, tmp_path):
    cfg = tiny(max_steps=40, eval_every=2, patience=2, keep_checkpoints=1,
               optim={"lr": 1e-6, "warmup_steps": 0})  # a flat run: no improvement after a while
    summary = pretrain(sim_data, tmp_path / "run", cfg, progress=False)
    assert summary.stopped_early and summary.steps < 40 and summary.best_step is not None
    best = find_checkpoint(tmp_path / "run", "best")
    assert best.name == f"step-{summary.best_step:08d}" and best.exists()
    assert (tmp_path / "run" / "checkpoints" / "best").read_text().split()[1] == "NDCG@10"


@pytest.mark.parametrize("damage", ["truncate", "empty", "state", "dangling"])
def test_a_damaged_latest_checkpoint_falls_back_and_finishes_the_same(sim_data, tmp_path,
                                                                      damage, caplog):
    """Golden test: the newest checkpoint is damaged; resume takes the one before and ends
    on exactly the uninterrupted run's final loss."""
    cfg = tiny(checkpoint_every=2, keep_checkpoints=2)
    straight = pretrain(sim_data, tmp_path / "a", cfg, progress=False)
    pretrain(sim_data, tmp_path / "b", cfg, progress=False, stop_after=6)
    root = tmp_path / "b" / "checkpoints"
    newest = root / "step-00000006"
    weights = newest / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "state":
        (newest / "state.safetensors").write_bytes(b"\0" * 10)
    else:
        shutil.rmtree(newest)
    rest = pretrain(sim_data, tmp_path / "b", cfg, progress=False, resume=True)
    assert rest.steps == 8 and "resuming from step-00000004" in caplog.text
    assert rest.losses[-1] == pytest.approx(straight.losses[-1], abs=1e-6)
    np.testing.assert_allclose(rest.losses, straight.losses[4:], rtol=0, atol=1e-6)


def test_non_finite_training_stops_and_keeps_the_good_checkpoint(sim_data, tmp_path, caplog):
    """A learning rate of 1e6 drives the weights to inf/NaN: the run stops with a clear error,
    the bad steps are skipped, and the last good checkpoint is neither replaced nor pruned."""
    from argusrec.checkpoint import Checkpoint

    pretrain(sim_data, tmp_path / "run", tiny(max_steps=2, checkpoint_every=1,
                                             keep_checkpoints=1), progress=False)
    good = Checkpoint.open(tmp_path / "run")
    wild = tiny(max_steps=30, checkpoint_every=1, keep_checkpoints=1,
                optim={"lr": 1e6, "warmup_steps": 0, "grad_clip": 0.0})
    with pytest.raises(DataError, match="not finite|diverged"):
        pretrain(sim_data, tmp_path / "wild", wild, init_from=tmp_path / "run",
                 progress=False)
    kept = [p.name for p in (tmp_path / "wild" / "checkpoints").glob("step-*")] \
        if (tmp_path / "wild" / "checkpoints").exists() else []
    for name in kept:  # whatever was written is finite
        ckpt = Checkpoint.open(tmp_path / "wild" / "checkpoints" / name)
        assert all(torch.isfinite(v).all() for v in ckpt.weights().values())
    assert Checkpoint.open(tmp_path / "run").path == good.path and not good.problems()


def test_a_nan_weight_skips_steps_then_stops(sim_data, tmp_path, caplog):
    from safetensors.torch import load_file, save_file

    from argusrec.checkpoint import find_checkpoint

    pretrain(sim_data, tmp_path / "run", tiny(max_steps=2), progress=False)
    weights = find_checkpoint(tmp_path / "run") / "model.safetensors"
    state = load_file(str(weights))
    state["start"] = state["start"] * float("nan")
    poisoned = tmp_path / "poisoned"
    shutil.copytree(tmp_path / "run", poisoned)
    save_file(state, str(find_checkpoint(poisoned) / "model.safetensors"))
    with pytest.raises(DataError, match="diverged: 3 steps in a row"):
        pretrain(sim_data, tmp_path / "warm", tiny(max_steps=20, nonfinite_patience=3),
                 init_from=poisoned, progress=False)
    assert "skipped" in caplog.text
    assert not (tmp_path / "warm" / "checkpoints").exists()


def test_organic_targets_count_and_select_the_organic_training_events(sim_data, tmp_path):
    from argusrec.sequences import PreparedData
    from argusrec.train import target_counts
    data = PreparedData(sim_data)
    cfg = tiny(objective={"nip_targets": "organic"})
    counts, (column, code) = target_counts(cfg, data)
    expected = np.zeros(data.num_items + 1, dtype=np.int64)  # the plain reference: user by user
    organic = data.info.fields.context["is_organic"].values.index("organic") + 1
    for user in range(len(data.users())):
        ev = data.user_events(user)
        for item, split, flag in zip(ev["item"], ev["split"], ev["ctx_is_organic"]):
            expected[item] += int(split == 0 and flag == organic)
    assert counts.sum() > 0 and counts.sum() < data.item_counts().sum()
    np.testing.assert_array_equal(counts, expected)
    assert code == organic
    summary = pretrain(sim_data, tmp_path / "run", cfg.model_copy(update={"max_steps": 3}),
                       progress=False)
    assert np.isfinite(summary.losses).all()
    with pytest.raises(DataError, match="positives_only"):
        target_counts(tiny(objective={"nip_targets": "organic"}, positives_only=True), data)
