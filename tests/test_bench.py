"""The benchmark harness on a tiny SASRec-format file: every run, mean and spread, files."""

import json

import numpy as np

from argusrec.bench import run_suite, size_class, window_length


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
    assert saved["suite"] == "v1"
    assert "± " in (tmp_path / "bench" / "results.md").read_text()


def test_defaults_depend_on_size_class_only():
    assert size_class(200_000) == "small" and size_class(1_000_000) == "medium"
    assert size_class(10**8) == "large"
    assert window_length(np.array([5] * 95 + [500] * 5)) == 32
    assert window_length(np.array([300] * 100)) == 200
