"""The argus command line: help on every verb, option plumbing, clean errors."""

from __future__ import annotations

import json
from typing import get_args

import pytest
import torch
from typer.testing import CliRunner

from argusrec.cli import app

from conftest import random_log, write_table

runner = CliRunner()
VERBS = ["simulate", "prepare", "info", "demo"]


def test_help_lists_every_verb():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for verb in VERBS:
        assert verb in result.output


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help(verb):
    result = runner.invoke(app, [verb, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_prepare_table_with_mapping_and_info(tmp_path):
    src = write_table(tmp_path / "log.csv", {
        "customer": [1, 1, 1, 2, 2], "sku": ["a", "b", "c", "a", "c"],
        "ts": [1, 2, 3, 1, 5], "page": ["home", "search", "home", None, "home"]})
    out = tmp_path / "data"
    result = runner.invoke(app, ["prepare", str(src), str(out), "-f", "table", "-c",
                                 "user=customer", "-c", "item=sku", "-c", "timestamp=ts",
                                 "-c", "context:surface=page", "--cutoff", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "prepared 5 events" in result.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["fields"]["context"]["surface"] == {"cardinality": 3,
                                                    "values": ["home", "search"]}
    info = runner.invoke(app, ["info", str(out)])
    assert info.exit_code == 0 and "5 events" in info.output and "surface" in info.output


def test_yaml_config_and_flags_override(tmp_path):
    src = write_table(tmp_path / "log.csv", {"user": [1] * 6, "item": list(range(6)),
                                             "timestamp": list(range(6))})
    cfg = tmp_path / "prepare.yaml"
    cfg.write_text("format: table\ncolumns: {user: user, item: item, timestamp: timestamp}\n"
                   "split: {cutoff: 4}\n")
    ok = runner.invoke(app, ["prepare", str(src), str(tmp_path / "a"), "--config", str(cfg),
                             "--quiet"])
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "a" / "meta.json").read_text())["split"]["train_end"] == 4
    flag = runner.invoke(app, ["prepare", str(src), str(tmp_path / "b"), "--config", str(cfg),
                               "--cutoff", "2", "--quiet"])
    assert flag.exit_code == 0, flag.output
    assert json.loads((tmp_path / "b" / "meta.json").read_text())["split"]["train_end"] == 2


@pytest.mark.parametrize("args, words", [
    (["prepare", "/no/such/file.csv", "OUT"], ["does not exist", "/no/such/file.csv"]),
    (["prepare", "LOG", "OUT", "-f", "table", "-c", "user"], ["CANONICAL=SOURCE"]),
    (["prepare", "LOG", "OUT", "--config", "/no/such.yaml"], ["config file does not exist"]),
    (["prepare", "LOG", "OUT", "--test-fraction", "2"], ["invalid options",
                                                          "split.test_fraction"]),
    (["info", "OUT"], ["argus prepare"]),
])
def test_bad_input_is_one_clear_message(tmp_path, args, words):
    src = write_table(tmp_path / "log.csv", {"user": [1, 1], "item": [1, 2],
                                             "timestamp": [1, 2]})
    argv = [str(src) if a == "LOG" else str(tmp_path / "out") if a == "OUT" else a
            for a in args]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output


def test_version():
    from argusrec import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"argusrec {__version__}"


@pytest.mark.parametrize("name", ["sasrec-ml1m", "sasrec-ml1m.yaml"])
def test_config_takes_a_shipped_name(tmp_path, name):
    src = write_table(tmp_path / "log.csv", random_log(n_users=6, n_items=10, n_events=60))
    data = tmp_path / "data"
    prepared = runner.invoke(app, ["prepare", str(src), str(data), "-f", "table", "-c",
                                   "user=user", "-c", "item=item", "-c", "timestamp=timestamp",
                                   "-c", "like=like", "--test-fraction", "0.2", "--quiet"])
    assert prepared.exit_code == 0, prepared.output
    result = runner.invoke(app, ["pretrain", str(data), str(tmp_path / "run"), "--config", name,
                                 "--sasrec", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "encoder" in result.output


def test_unknown_config_name_lists_the_shipped_ones(tmp_path):
    result = runner.invoke(app, ["pretrain", str(tmp_path), str(tmp_path / "run"), "--config",
                                 "sasrec-ml2m", "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "sasrec-ml2m" in result.output and "sasrec-ml1m" in result.output


def test_serve_prints_its_url_first(tmp_path, monkeypatch):
    import argusrec.serve

    calls = []
    monkeypatch.setattr(argusrec.serve, "serve", lambda *a, **kw: calls.append(kw))
    (tmp_path / "latest").write_text("2026-01-02\n")
    result = runner.invoke(app, ["serve", str(tmp_path), "--port", "8123"])
    assert result.exit_code == 0, result.output
    assert "serving snapshot 2026-01-02 on http://127.0.0.1:8123 (Ctrl-C stops)" in result.output
    assert calls and calls[0]["port"] == 8123


def test_cli_shows_the_library_progress_log_once(tmp_path, capsys):
    import logging

    from argusrec.cli import _Stderr

    for _ in range(2):
        runner.invoke(app, ["info", str(tmp_path / "none")])
    handlers = logging.getLogger("argusrec").handlers
    assert sum(isinstance(h, _Stderr) for h in handlers) == 1
    logging.getLogger("argusrec.bench").info("== a run ==")
    assert capsys.readouterr().err == "== a run ==\n"


def test_resume_and_init_from_on_the_command_line(sim_data, tmp_path):
    """--resume takes the saved config (a forgotten --config changes nothing); a flag that
    would change what was trained is refused; --init-from starts from another run."""
    run = str(tmp_path / "run")
    first = runner.invoke(app, ["pretrain", str(sim_data), run, "--max-steps", "2",
                                "--batch-size", "4", "--lr", "0.003", "--quiet"])
    assert first.exit_code == 0, first.output
    done = runner.invoke(app, ["pretrain", str(sim_data), run, "--resume", "--quiet"])
    assert done.exit_code == 2 and "already complete" in done.output
    refused = runner.invoke(app, ["pretrain", str(sim_data), run, "--resume", "--lr", "0.1",
                                  "--max-steps", "3", "--quiet"])
    assert refused.exit_code == 2 and "optim.lr" in refused.output
    assert "Traceback" not in refused.output
    more = runner.invoke(app, ["pretrain", str(sim_data), run, "--resume", "--max-steps", "3",
                               "--quiet"])
    assert more.exit_code == 0 and "step 3" in more.output, more.output
    warm = runner.invoke(app, ["pretrain", str(sim_data), str(tmp_path / "warm"),
                               "--init-from", run, "--max-steps", "1", "--quiet"])
    assert warm.exit_code == 0, warm.output
    saved = json.loads((tmp_path / "warm" / "checkpoints" / "step-00000001" /
                        "config.json").read_text())
    assert saved["train"]["batch_size"] == 4 and saved["train"]["optim"]["lr"] == 0.003


def test_an_unexpected_error_is_one_paragraph_unless_debug(tmp_path, monkeypatch):
    from argusrec import sequences

    def broken(self, path):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(sequences.PreparedData, "__init__", broken)
    result = runner.invoke(app, ["info", str(tmp_path)])
    assert result.exit_code == 1
    assert "unexpected RuntimeError: boom" in result.output and "--debug" in result.output
    assert "Traceback" not in result.output and "second line" not in result.output
    debug = runner.invoke(app, ["--debug", "info", str(tmp_path)])
    assert isinstance(debug.exception, RuntimeError)


# -- every flag is checked at the boundary -----------------------------------------------------
@pytest.fixture(scope="module")
def runs(sim_data, tmp_path_factory) -> dict[str, str]:
    """What the bad-flag invocations run against: the simulated data and a 2-step run on it, a
    log with no feedback (so no impressions) and a 1-step run on that, and YAML files."""
    root = tmp_path_factory.mktemp("cli-runs")
    run = root / "run"
    made = runner.invoke(app, ["pretrain", str(sim_data), str(run), "--max-steps", "2",
                               "--batch-size", "4", "--quiet"])
    assert made.exit_code == 0, made.output
    src = write_table(root / "plain.parquet", random_log(n_users=8, n_items=20, n_events=200))
    plain = root / "plain"
    prepared = runner.invoke(app, ["prepare", str(src), str(plain), "-f", "table", "-c",
                                   "user=user", "-c", "item=item", "-c", "timestamp=timestamp",
                                   "--ignore-extra", "--test-fraction", "0.2", "--quiet"])
    assert prepared.exit_code == 0, prepared.output
    plain_run = root / "plain-run"
    made = runner.invoke(app, ["pretrain", str(plain), str(plain_run), "--max-steps", "1",
                               "--batch-size", "2", "--quiet"])
    assert made.exit_code == 0, made.output
    (root / "heads.yaml").write_text("model: {d_model: 64, n_heads: 3}\n")
    (root / "preset.yaml").write_text("preset: huge\n")
    return {"DATA": str(sim_data), "RUN": str(run), "PLAIN": str(plain),
            "PLAIN_RUN": str(plain_run), "HEADS": str(root / "heads.yaml"),
            "PRESET": str(root / "preset.yaml"), "root": str(root)}


NO_CUDA = [torch.__version__, "--device cpu"]  # the build, and the fix
BAD_FLAGS = [
    (["pretrain", "DATA", "OUT", "--preset", "bogus"], ["--preset", "bogus"]),
    (["pretrain", "DATA", "OUT", "--device", "cuda", "--max-steps", "1"], NO_CUDA),
    (["pretrain", "DATA", "OUT", "--device", "cuda:1", "--max-steps", "1"], NO_CUDA),
    (["pretrain", "DATA", "OUT", "--device", "tpu", "--max-steps", "1"],
     ["unknown device 'tpu'", "--device auto, cpu, cuda"]),
    (["pretrain", "DATA", "OUT", "--config", "HEADS", "--dry-run"],
     ["invalid options", "model:", "not divisible by n_heads 3"]),
    (["pretrain", "DATA", "OUT", "--config", "PRESET", "--dry-run"],
     ["invalid options", "preset:", "unknown preset 'huge'", "debug"]),
    (["pretrain", "DATA", "OUT", "--batch-size", "0"], ["--batch-size"]),
    (["pretrain", "DATA", "OUT", "--max-steps", "0"], ["--max-steps"]),
    (["pretrain", "DATA", "OUT", "--threads", "0"], ["--threads"]),
    (["pretrain", "DATA", "OUT", "--workers", "-1"], ["--workers"]),
    (["pretrain", "DATA", "OUT", "--max-len", "1"], ["--max-len"]),
    (["pretrain", "DATA", "OUT", "--loss", "bogus"], ["--loss", "corrected"]),
    (["pretrain", "DATA", "OUT", "--encoder", "bogus"], ["--encoder", "hstu"]),
    (["pretrain", "DATA", "OUT", "--parallel", "bogus"], ["--parallel", "fsdp"]),
    (["evaluate", "RUN", "--k", "0"], ["--k", "at least 1"]),
    (["evaluate", "RUN", "--k", "-5"], ["--k", "at least 1"]),
    (["evaluate", "RUN", "--k", "ten"], ["--k", "not a list of integers"]),
    (["evaluate", "RUN", "--k", ","], ["--k", "at least 1"]),
    (["evaluate", "RUN", "--batch-size", "0"], ["--batch-size"]),
    (["evaluate", "RUN", "--threads", "0"], ["--threads"]),
    (["evaluate", "RUN", "--split", "bogus"], ["--split", "bogus"]),
    (["evaluate", "RUN", "--which", "bogus"], ["--which", "bogus"]),
    (["evaluate", "RUN", "--device", "cuda"], NO_CUDA),
    (["finetune", "PLAIN", "PLAIN_RUN", "OUT", "--max-steps", "1"],
     ["no training impressions", "recommendation events with feedback"]),
    (["finetune", "DATA", "RUN", "OUT", "--device", "cuda", "--max-steps", "1"], NO_CUDA),
    (["finetune", "DATA", "RUN", "OUT", "--lag", "-1"], ["--lag"]),
    (["finetune", "DATA", "RUN", "OUT", "--batch-size", "0"], ["--batch-size"]),
    (["pairs", "RUN", "--split", "bogus"], ["--split"]),
    (["rank", "RUN", "--loss", "bogus"], ["--loss", "YetiRank"]),
    (["rank", "RUN", "--iterations", "0"], ["--iterations"]),
    (["export", "RUN", "OUT", "--as-of", str(10**30)], ["--as-of"]),
    (["export", "RUN", "OUT", "--as-of", "-1"], ["--as-of"]),
    (["export", "RUN", "OUT", "--as-of", str(10**12)], ["no calendar date", "--label"]),
    (["export", "RUN", "OUT", "--lag", "-1"], ["--lag"]),
    (["export", "RUN", "OUT", "--hnsw-m", "0"], ["--hnsw-m"]),
    (["export", "RUN", "OUT", "--hnsw-m", "-4"], ["--hnsw-m"]),
    (["export", "RUN", "OUT", "--hnsw-m", "513"], ["--hnsw-m"]),
    (["export", "RUN", "OUT", "--ef-construction", "0"], ["--ef-construction"]),
    (["export", "RUN", "OUT", "--ef-search", "0"], ["--ef-search"]),
    (["export", "RUN", "OUT", "--popular", "0"], ["--popular"]),
    (["export", "RUN", "OUT", "--keep", "-1"], ["--keep"]),
    (["export", "RUN", "OUT", "--backend", "bogus"], ["--backend", "redis"]),
    (["simulate", "OUT", "--users", "0"], ["--users"]),
    (["simulate", "OUT", "--days", "0"], ["--days"]),
    (["prepare", "PLAIN", "OUT", "--format", "excel"], ["--format", "excel"]),
    (["prepare", "PLAIN", "OUT", "--split", "random"], ["--split", "random"]),
    (["prepare", "PLAIN", "OUT", "--on-duplicate", "bogus"], ["--on-duplicate"]),
    (["prepare", "PLAIN", "OUT", "--shard-events", "0"], ["--shard-events"]),
    (["ablate", "DATA", "OUT", "--history", "0"], ["--history", "at least 2"]),
    (["bench", "simulator", "--out", "OUT", "--seeds", "0"], ["--seeds"]),
    (["bench", "simulator", "--out", "OUT", "--jobs", "0"], ["--jobs"]),
    (["scaling", "DATA", "OUT", "--tokens", "0"], ["--tokens"]),
    (["demo", "--workdir", "OUT", "--users", "0"], ["--users"]),
    (["serve", "OUT", "--port", "70000"], ["--port"]),
    (["serve", "OUT", "--reload-interval", "-1"], ["--reload-interval"]),
    (["serve", "OUT", "--ef-search", "0"], ["--ef-search"]),
    (["serve", "OUT", "--log-level", "loud"], ["--log-level"]),
    (["prepare", "PLAIN", "OUT", "--timestamp-unit", "days"], ["--timestamp-unit"]),
]


@pytest.mark.parametrize("args, words", BAD_FLAGS, ids=[" ".join(a[0:1] + a[-2:])
                                                        for a, _ in BAD_FLAGS])
def test_a_bad_flag_is_a_usage_error_not_a_traceback(runs, tmp_path, monkeypatch, args, words):
    """Exit code 2, a message that names the option or the fix, and no traceback: typer's own
    usage error for ranges and choices, a DataError for what only the library can judge."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a GPU machine too
    argv = [runs.get(a, str(tmp_path / "out") if a == "OUT" else a) for a in args]
    result = runner.invoke(app, argv)
    text = " ".join(result.output.translate(str.maketrans("│╭╮╰╯─", "      ")).split())
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "unexpected" not in result.output
    for word in words:
        assert word in text, result.output


def test_help_lists_the_choices():
    text = runner.invoke(app, ["pretrain", "--help"]).output
    for choice in ("debug", "126m", "corrected", "hstu", "fsdp"):
        assert choice in text


def test_cli_choices_mirror_the_library():
    """The CLI spells its choices out (so `argus --help` needs no torch); they must stay the
    library's."""
    from argusrec import cli, cli_deploy
    from argusrec.model import PRESETS, ModelConfig
    from argusrec.objective import ObjectiveConfig
    from argusrec.prepare import PrepareConfig, SplitConfig
    from argusrec.rank import RankConfig
    from argusrec.readers import FORMATS
    from argusrec.train import TrainConfig

    def values(enum) -> list[str]:
        return [e.value for e in enum]

    def literal(config, name) -> list[str]:
        return list(get_args(config.model_fields[name].annotation))

    assert values(cli._Preset) == list(PRESETS)
    assert values(cli._Loss) == literal(ObjectiveConfig, "next_item_loss")
    assert values(cli._Encoder) == literal(ModelConfig, "encoder")
    assert sorted(values(cli._Parallel)) == sorted(literal(TrainConfig, "parallel"))
    assert values(cli._Format) == ["auto", *FORMATS]
    assert values(cli._SplitKind) == literal(SplitConfig, "kind")
    assert values(cli._OnDuplicate) == literal(PrepareConfig, "on_duplicate")
    assert values(cli._RankLoss) == literal(RankConfig, "loss")
    assert values(cli._Which) == values(cli_deploy._Which) == ["latest", "best"]


def test_export_ranges_mirror_the_library():
    import typer.main

    from argusrec import export

    command = typer.main.get_command(app).commands["export"]
    ranges = {p.name: (getattr(p, "min", None), getattr(p, "max", None))
              for p in command.params}
    assert ranges["hnsw_m"] == export.HNSW_M
    assert ranges["ef_construction"] == (export.MIN_EF_CONSTRUCTION, None)
    assert ranges["as_of"] == (0, export.MAX_AS_OF)
    assert ranges["ef_search"][0] == ranges["popular"][0] == 1


@pytest.mark.parametrize("field, value", [("hnsw_m", 1), ("hnsw_m", -4), ("hnsw_m", 10_000),
                                          ("ef_construction", 0), ("ef_search", 0),
                                          ("popular", 0), ("as_of", 2**63), ("lag", -1),
                                          ("backend", "bogus")])
def test_export_refuses_bad_arguments_before_any_work(tmp_path, field, value):
    """Python callers get the CLI's protection: a DataError before the checkpoint is opened
    (the run does not even exist here)."""
    from argusrec.errors import DataError
    from argusrec.export import export

    with pytest.raises(DataError, match=field):
        export(tmp_path / "no-run", tmp_path / "snaps", **{field: value}, progress=False)


def test_library_checks_behind_the_cli(monkeypatch):
    from pydantic import ValidationError

    from argusrec.device import resolve_device
    from argusrec.errors import DataError
    from argusrec.evaluate import evaluate
    from argusrec.model import ModelConfig
    from argusrec.train import TrainConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(DataError, match="cuda"):
        resolve_device("cuda:0")
    with pytest.raises(DataError, match="unknown device"):
        resolve_device("gpu")
    with pytest.raises(DataError, match="cut-offs"):
        evaluate("no-run", ks=[10, 0])
    with pytest.raises(ValidationError, match="divisible"):
        ModelConfig(d_model=64, n_heads=3)
    with pytest.raises(ValidationError, match="user_dim == d_model"):
        ModelConfig(d_model=64, user_dim=32, item_tower="tied")
    with pytest.raises(ValidationError, match="unknown preset"):
        TrainConfig(preset="7b")
    with pytest.raises(ValidationError, match="n_heads"):
        TrainConfig(model={"d_model": 64, "n_heads": 3})
