"""The benchmark harness on a tiny SASRec-format file: every run, mean and spread, files."""

import json

import numpy as np
import pytest

from argusrec import bench
from argusrec.bench import resolve_dataset, run_suite, size_class, window_length
from argusrec.errors import DataError


def test_suite_runs_each_encoder_loss_and_seed(tmp_path):
    rng = np.random.default_rng(0)
    lines = [f"{u} {i}" for u in range(1, 41) for i in rng.integers(1, 60, rng.integers(6, 14))]
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    result = run_suite(str(path), tmp_path / "bench", fmt="sasrec", encoders=("sasrec", "hstu"),
                       losses=("corrected",), seeds=(0, 1), max_steps=3, progress=False)
    assert len(result["runs"]) == 4
    assert result["protocol"] == "leave-one-out" and result["exclude_seen"]
    rows = {(r["encoder"], r["loss"]): r for r in result["summary"]}
    assert set(rows) == {("sasrec", "corrected"), ("hstu", "corrected")}
    for r in rows.values():
        assert r["seeds"] == 2 and 0 <= r["HR@10"] <= 1 and r["HR@10_std"] >= 0
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert saved["suite"] == "v2"
    assert "± " in (tmp_path / "bench" / "results.md").read_text()


def test_defaults_depend_on_size_class_only():
    assert size_class(200_000) == "small" and size_class(1_000_000) == "medium"
    assert size_class(10**8) == "large"
    assert window_length(np.array([5] * 95 + [500] * 5)) == 32
    assert window_length(np.array([300] * 100)) == 200


def _tiny(tmp_path):
    rng = np.random.default_rng(1)
    lines = [f"{u} {i}" for u in range(1, 41) for i in rng.integers(1, 60, rng.integers(6, 14))]
    path = tmp_path / "tiny.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_rerun_reuses_finished_runs_and_retrains_changed_ones(tmp_path):
    path, out = _tiny(tmp_path), tmp_path / "bench"
    kw = dict(fmt="sasrec", encoders=("sasrec",), losses=("full",), seeds=(0,), threads=1,
              progress=False)
    first = run_suite(path, out, max_steps=3, **kw)
    record = out / "runs" / "sasrec-full-s0" / "result.json"
    stamp = record.stat().st_mtime_ns
    again = run_suite(path, out, max_steps=3, **kw)
    assert record.stat().st_mtime_ns == stamp  # not trained again
    assert again["runs"] == first["runs"]
    changed = run_suite(path, out, max_steps=4, **kw)
    assert record.stat().st_mtime_ns != stamp and changed["runs"][0]["steps"] == 4


def test_auto_losses_choose_each_encoders_loss_on_validation(tmp_path):
    path, out = _tiny(tmp_path), tmp_path / "bench"
    result = run_suite(path, out, fmt="sasrec", encoders=("sasrec",), seeds=(0, 1),
                       max_steps=3, budget=0, threads=1, progress=False)
    runs = {(r["loss"], r["seed"]): r for r in result["runs"]}
    assert set(runs) == {("full", 0), ("logq", 0), ("corrected", 0),
                         (result["chosen_losses"]["sasrec"], 1)}
    best = max(("full", "logq", "corrected"), key=lambda x: runs[x, 0]["val_NDCG@10"])
    assert result["chosen_losses"] == {"sasrec": best}
    assert [(r["loss"], r["seeds"]) for r in result["summary"]] == [(best, 2)]
    assert len(result["losses_tried"]) == 2 and result["budget_minutes"] is None
    assert "not chosen" in (out / "results.md").read_text()


def test_the_size_class_budget_reaches_every_run(tmp_path):
    path, out = _tiny(tmp_path), tmp_path / "bench"
    data = bench.PreparedData(resolve_dataset(path, out, "sasrec")[0])
    assert bench.default_config(data, "sasrec", "full", 0)["max_minutes"] == 20.0
    assert bench.default_config(data, "sasrec", "full", 0, budget=5)["max_minutes"] == 5
    assert bench.default_config(data, "sasrec", "full", 0, budget=0)["max_minutes"] is None


@pytest.mark.slow
def test_parallel_jobs_give_the_serial_results(tmp_path):
    path = _tiny(tmp_path)
    kw = dict(fmt="sasrec", encoders=("sasrec",), losses=("full",), seeds=(0, 1), max_steps=3,
              threads=1, progress=False)
    serial = run_suite(path, tmp_path / "serial", **kw)
    parallel = run_suite(path, tmp_path / "parallel", jobs=2, **kw)
    for a, b in zip(serial["runs"], parallel["runs"]):
        assert (a["seed"], a["HR@10"], a["NDCG@10"]) == (b["seed"], b["HR@10"], b["NDCG@10"])


def test_named_datasets_print_the_published_numbers():
    from argusrec.bench import PUBLISHED, markdown

    result = {"suite": "v1", "dataset": "ml-1m", "protocol": "leave-one-out",
              "exclude_seen": True, "size_class": "medium", "summary": [],
              "published": PUBLISHED["ml-1m"]}
    text = markdown(result)
    assert "| SASRec+ full CE (Klenitskiy & Vasilev 2023) | 0.3152 | 0.1821 |" in text


def test_named_dataset_is_read_from_the_data_dir(tmp_path, monkeypatch):
    root = tmp_path / "datasets"
    (root / "ml-1m").mkdir(parents=True)
    (root / "ml-1m" / "ml-1m.txt").write_text(open(_tiny(tmp_path)).read())
    monkeypatch.setenv("ARGUS_DATA_DIR", str(root))
    prepared, label = resolve_dataset("ml-1m", tmp_path / "work")
    assert label == "ml-1m" and (prepared / "meta.json").exists()
    again, _ = resolve_dataset("ml-1m", tmp_path / "other", data_dir=root)  # explicit wins
    assert (again / "meta.json").exists()


def test_absent_named_dataset_names_the_expected_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ARGUS_DATA_DIR", raising=False)
    monkeypatch.setattr(bench, "CHECKOUT_DATA", tmp_path / "no-checkout")
    with pytest.raises(DataError, match="ml-1m/ml-1m.txt") as e:
        resolve_dataset("ml-1m", tmp_path / "work")
    assert "--data-dir" in e.value.message()
    with pytest.raises(DataError, match="not here") as e:
        resolve_dataset("beauty", tmp_path / "work", data_dir=tmp_path / "empty")
    assert str(tmp_path / "empty" / "amazon-beauty" / "Beauty.txt") in e.value.message()


def test_bench_cli_data_dir_option(tmp_path):
    from typer.testing import CliRunner

    from argusrec.cli import app

    result = CliRunner().invoke(app, ["bench", "ml-100k", "--data-dir", str(tmp_path / "none"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "ml-100k/ml-100k.inter" in result.output


def test_bench_cli_refuses_auto_mixed_with_named_losses(tmp_path):
    from typer.testing import CliRunner

    from argusrec.cli import app

    result = CliRunner().invoke(app, ["bench", _tiny(tmp_path), "--format", "sasrec",
                                      "--losses", "auto,full", "--out", str(tmp_path / "b")])
    assert result.exit_code != 0 and "auto" in result.output and "alone" in result.output
    assert "Traceback" not in result.output
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert "--budget" in result.output


def test_the_medium_class_gives_sasrec_the_modern_recipe_and_the_others_not(tmp_path,
                                                                            monkeypatch):
    from argusrec.train import TrainConfig

    path, out = _tiny(tmp_path), tmp_path / "bench"
    data = bench.PreparedData(resolve_dataset(path, out, "sasrec")[0])
    assert TrainConfig(**bench.default_config(data, "sasrec", "full", 0)).optim.optimizer \
        == "adamw"  # the tiny file is the small class
    monkeypatch.setattr(bench, "size_class", lambda events: "medium")
    modern = TrainConfig(**bench.default_config(data, "sasrec", "full", 0))
    m = modern.resolved_model()
    assert (modern.optim.optimizer, m.norm, m.qk_norm, m.activation, m.zero_init_out,
            m.positions) == ("normuon", "rms", True, "relu2", True, "rotary")
    assert not modern.model.use_feedback  # still SASRec
    for encoder in ("argus", "hstu"):
        other = TrainConfig(**bench.default_config(data, encoder, "full", 0))
        assert other.optim.optimizer == "adamw" and other.resolved_model().norm == "layer"
