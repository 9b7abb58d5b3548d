"""Every config field is a command-line flag (`--optim.lr 3e-4`), the named flags are
shortcuts for named fields, and `argus config VERB` prints a config that reads back."""

from __future__ import annotations

import inspect

import pytest
import yaml
from typer.testing import CliRunner

from argusrec import cli
from argusrec.ablation import AblationConfig
from argusrec.cli import app
from argusrec.cli_fields import field_paths
from argusrec.finetune import FinetuneConfig
from argusrec.prepare import PrepareConfig
from argusrec.rank import RankConfig
from argusrec.scaling import ScalingConfig
from argusrec.simulate import SimulatorConfig
from argusrec.study import StudyConfig
from argusrec.train import TrainConfig

runner = CliRunner()

SHORTCUTS = [("pretrain", cli.PRETRAIN_FLAGS, TrainConfig),
             ("finetune", cli.FINETUNE_FLAGS, FinetuneConfig),
             ("prepare", cli.PREPARE_FLAGS, PrepareConfig),
             ("rank", cli.RANK_FLAGS, RankConfig),
             ("simulate", cli.SIMULATE_FLAGS, SimulatorConfig)]
CONFIGS = {"simulate": SimulatorConfig, "prepare": PrepareConfig, "pretrain": TrainConfig,
           "finetune": FinetuneConfig, "rank": RankConfig, "ablate": AblationConfig,
           "scaling": ScalingConfig, "study": StudyConfig}


@pytest.mark.parametrize("verb,shortcuts,config", SHORTCUTS)
def test_every_named_flag_sets_a_real_field(verb, shortcuts, config):
    params = inspect.signature(getattr(cli, verb)).parameters
    paths = field_paths(config)
    for name, field in shortcuts.items():
        assert name in params, f"{verb} has no parameter {name}"
        assert field in paths, f"{verb} --{name} names no field {field}"
    help_text = runner.invoke(app, [verb, "--help"], terminal_width=400).output
    assert "optim.lr" in help_text  # the epilog: every field is a flag


def test_nested_and_model_fields_are_paths():
    paths = field_paths(TrainConfig)
    assert {"optim.lr", "objective.num_uniform", "model.d_model", "model.max_len",
            "checkpoint_every"} <= set(paths)
    assert "model" not in paths and "optim" not in paths


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("fields")
    assert runner.invoke(app, ["simulate", str(root / "sim"), "--users", "20", "--days", "3",
                               "--quiet"]).exit_code == 0
    ok = runner.invoke(app, ["prepare", str(root / "sim"), str(root / "data"), "--quiet",
                             "--on-duplicate", "drop"])
    assert ok.exit_code == 0, ok.output
    return root / "data"


def _dry_run(data, *flags, first=True):
    args = [str(data), str(data.parent / "run"), "--dry-run"]
    args = [*flags, *args] if first else [*args, *flags]
    return runner.invoke(app, ["pretrain", *args])


def test_a_field_flag_stands_anywhere_and_changes_the_model(data):
    base = _dry_run(data)
    wide = _dry_run(data, "--model.d_model", "48", "--model.n_heads=4")
    assert base.exit_code == 0 and wide.exit_code == 0, wide.output
    assert base.output != wide.output  # 48 wide, not the preset's 32
    dashed = runner.invoke(app, ["pretrain", str(data), str(data.parent / "run"), "--dry-run",
                                 "--model.d-model", "48", "--model.n-heads", "4"])
    assert dashed.output == wide.output


@pytest.mark.parametrize("flags,expected", [
    (["--model.d_modle", "48"], "did you mean --model.d_model"),
    (["--max-stesp", "3"], "--max-steps"),
    (["--model.d_model"], "needs a value"),
    (["--lr", "1e-3", "--optim.lr", "2e-3"], "set twice"),
    (["--model.n_heads", "5"], "not divisible by n_heads 5"),
    (["--model.variant", "fulll"], "model.variant"),
])
def test_bad_field_flags_are_usage_errors(data, flags, expected):
    result = _dry_run(data, *flags, first=False)
    assert result.exit_code == 2
    assert expected in " ".join(result.output.replace("│", " ").split()), result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("verb", sorted(CONFIGS))
def test_printed_config_reads_back_as_the_default(verb):
    result = runner.invoke(app, ["config", verb])
    assert result.exit_code == 0, result.output
    fields = yaml.safe_load(result.output)
    config = CONFIGS[verb]
    assert config(**fields).model_dump() == config().model_dump()


def test_printed_config_is_a_valid_config_file(data, tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(runner.invoke(app, ["config", "pretrain", "--preset", "3m"]).output)
    from_file = _dry_run(data, "--config", str(path))
    assert from_file.exit_code == 0, from_file.output
    assert from_file.output == _dry_run(data, "--preset", "3m").output
