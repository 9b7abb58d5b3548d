"""The argus command line: help on every verb, option plumbing, clean errors."""

from __future__ import annotations

import json

import pytest
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
    (["prepare", "LOG", "OUT", "--format", "excel"], ["unknown format 'excel'"]),
    (["prepare", "LOG", "OUT", "-f", "table", "-c", "user"], ["CANONICAL=SOURCE"]),
    (["prepare", "LOG", "OUT", "--split", "random"], ["invalid options", "kind"]),
    (["prepare", "LOG", "OUT", "--config", "/no/such.yaml"], ["config file does not exist"]),
    (["info", "OUT"], ["argus prepare"]),
    (["evaluate", "OUT", "--threads", "0"], ["--threads must be at least 1"]),
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
