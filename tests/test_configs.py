"""Every shipped config file parses into a TrainConfig (STYLE.md: shipped configs are tested)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from argusrec.train import TrainConfig

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_parses(path):
    cfg = TrainConfig(**yaml.safe_load(path.read_text()))
    assert cfg.resolved_model().d_model > 0


def test_there_are_configs():
    assert len(CONFIGS) >= 2
