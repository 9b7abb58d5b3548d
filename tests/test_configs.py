"""Every shipped config file parses into its config class (STYLE.md: shipped configs are
tested): ablation-*.yaml into AblationConfig, the others into TrainConfig."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from argusrec.ablation import AblationConfig
from argusrec.train import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses(path):
    fields = yaml.safe_load(path.read_text())
    if path.name.startswith("ablation"):
        cfg = AblationConfig(**fields)
        fields = cfg.pretrain
    cfg = TrainConfig(**fields)
    assert cfg.resolved_model().d_model > 0


def test_there_are_configs():
    assert len(CONFIGS) >= 2
