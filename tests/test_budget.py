"""A wall-clock budget (max_minutes): the schedule is planned to end inside it, the run stops
at it, and a budget that does not bind changes nothing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from argusrec import fit as fit_module
from argusrec.checkpoint import Checkpoint, find_checkpoint
from argusrec.optim import lr_factor
from argusrec.train import TrainConfig, pretrain


class _Clock:
    """A perf_counter that advances a fixed amount per call: a steady, known step rate."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 1000.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def tiny(**fields) -> TrainConfig:
    return TrainConfig(**{**dict(preset="debug", model={"max_len": 32}, batch_size=4,
                                 checkpoint_every=10**6, objective={"num_uniform": 64},
                                 optim={"warmup_steps": 5}), **fields})


def test_a_budget_that_does_not_bind_changes_nothing(sim_data, tmp_path):
    plain = pretrain(sim_data, tmp_path / "a", tiny(max_steps=40), progress=False)
    budget = pretrain(sim_data, tmp_path / "b", tiny(max_steps=40, max_minutes=600),
                      progress=False)
    assert budget.steps == 40 and budget.budget_steps == 40 and plain.budget_steps is None
    assert np.array_equal(plain.losses, budget.losses)


def test_the_schedule_ends_inside_the_budget(sim_data, tmp_path, monkeypatch):
    clock = _Clock(0.2)
    monkeypatch.setattr(fit_module, "clock", clock.perf_counter)
    cfg = tiny(max_steps=100_000, max_minutes=0.5, eval_every=20)
    summary = pretrain(sim_data, tmp_path / "run", cfg, progress=False)
    # stopped long before the cap, on the step the plan ended on, which was validated
    assert 40 < summary.steps < 400
    assert summary.budget_steps == summary.steps
    assert find_checkpoint(tmp_path / "run").name == f"step-{summary.steps:08d}"
    # the last step's lr is (about) the cosine's floor: the decay was planned to the budget
    factor = lr_factor(summary.steps - 1, summary.steps, cfg.optim)
    assert factor == pytest.approx(cfg.optim.min_lr_ratio, abs=0.01)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    lrs = [e.value for e in events.Scalars("train/lr")]
    assert lrs[-1] < 0.2 * max(lrs)


def test_a_resumed_run_counts_the_time_already_spent(sim_data, tmp_path, monkeypatch):
    clock = _Clock(0.2)
    monkeypatch.setattr(fit_module, "clock", clock.perf_counter)
    cfg = tiny(max_steps=100_000, max_minutes=0.5, eval_every=20)
    first = pretrain(sim_data, tmp_path / "run", cfg, progress=False, stop_after=60)
    state = Checkpoint.open(tmp_path / "run").resume_state()
    assert state["elapsed"] > 0 and 60 < state["total"] < 100_000
    rest = pretrain(sim_data, tmp_path / "run", cfg, progress=False, resume=True)
    straight = pretrain(sim_data, tmp_path / "other", cfg, progress=False)
    assert first.steps == 60
    # the same budget in two parts ends near where one part ends
    assert math.isclose(rest.steps, straight.steps, rel_tol=0.15)


def test_a_budget_alone_ends_the_run_and_epochs_given_still_cap_it(sim_data, tmp_path,
                                                                    monkeypatch):
    # `--max-minutes` without --max-steps or --epochs trains for the budget, not for the one
    # pass that epochs defaults to without a budget
    one_pass = pretrain(sim_data, tmp_path / "pass", tiny(), progress=False)
    clock = _Clock(0.2)
    monkeypatch.setattr(fit_module, "clock", clock.perf_counter)
    alone = pretrain(sim_data, tmp_path / "alone", tiny(max_minutes=0.5, eval_every=20),
                     progress=True)  # the bar starts without a total
    assert alone.steps > 2 * one_pass.steps and alone.budget_steps == alone.steps
    capped = pretrain(sim_data, tmp_path / "capped",
                      tiny(max_minutes=0.5, eval_every=20, epochs=1), progress=False)
    assert capped.steps == one_pass.steps
