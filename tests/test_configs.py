"""Every shipped config file parses into its config class (STYLE.md: shipped configs are
tested): ablation-*.yaml into AblationConfig, study-*.yaml into StudyConfig, the others into
TrainConfig. They are read from the installed package, as `--config NAME` reads them."""

from __future__ import annotations

import pytest
import yaml

from argusrec import configs
from argusrec.ablation import AblationConfig
from argusrec.study import StudyConfig
from argusrec.train import TrainConfig

CONFIGS = configs.names()


@pytest.mark.parametrize("name", CONFIGS)
def test_config_parses(name):
    fields = yaml.safe_load(configs.find(name).read_text())
    if name.startswith("ablation"):
        cfg = AblationConfig(**fields).pretrain
    elif name.startswith("study"):
        cfg = StudyConfig(**fields).pretrain
    else:
        cfg = TrainConfig(**fields)
    assert cfg.resolved_model().d_model > 0


def test_there_are_configs():
    assert len(CONFIGS) >= 2 and "sasrec-ml1m" in CONFIGS


def test_a_name_with_or_without_yaml_finds_the_same_file():
    assert configs.find("sasrec-ml1m.yaml") == configs.find("sasrec-ml1m") is not None
    assert configs.find("no-such-config") is None
