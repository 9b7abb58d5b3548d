"""Golden losses: the first losses of pretraining and of fine-tuning on a fixed tiny config,
seed and data, recorded once. A refactor of the training loops (issue: one `fit` for both)
must leave them unchanged to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from argusrec.finetune import FinetuneConfig, finetune
from argusrec.train import TrainConfig, pretrain

# recorded on 2026-12-02 (torch 2.13.0+cpu, one thread), before any move of the loops
PRETRAIN = [13.03050422668457, 13.080803871154785, 12.54736328125, 13.412744522094727,
            11.660478591918945, 13.162227630615234]
FINETUNE = [0.7596217393875122, 0.6370120644569397, 0.6810694932937622, 0.7092006802558899]


@pytest.fixture()
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # reduction order, and so the last bits, depend on threads
    yield
    torch.set_num_threads(before)


def _runs(sim_data, tmp_path):
    cfg = TrainConfig(preset="debug", max_steps=6, batch_size=4, model={"max_len": 32},
                      objective={"num_uniform": 64}, seed=0, checkpoint_every=100)
    pre = pretrain(sim_data, tmp_path / "pre", cfg, progress=False)
    ft = finetune(sim_data, tmp_path / "pre", tmp_path / "ft",
                  FinetuneConfig(max_steps=4, batch_size=4, seed=0), progress=False)
    return pre.losses, ft.losses


def test_losses_are_the_recorded_ones(sim_data, tmp_path, one_thread):
    pre, ft = _runs(sim_data, tmp_path)
    np.testing.assert_allclose(pre, PRETRAIN, rtol=1e-6, atol=0)
    np.testing.assert_allclose(ft, FINETUNE, rtol=1e-6, atol=0)
