"""`argus scaling` end to end on the tiny simulator, the log-linear fit, and FLOPs per token."""

import json

import pytest

from argusrec.model import ModelConfig, encoder_parameter_count
from argusrec.scaling import ScalingConfig, fit_log_linear, flops_per_token, run_scaling


def test_fit_recovers_a_log_linear_trend():
    fit = fit_log_linear([1e5, 1e6, 1e7], [9.0, 8.5, 8.0])
    assert fit["a"] == pytest.approx(11.5) and fit["b"] == pytest.approx(-0.5)
    assert fit["r2"] == pytest.approx(1.0)


def test_encoder_flops_are_six_per_parameter_plus_attention():
    cfg = ModelConfig(d_model=256, n_layers=4, n_heads=4, max_len=512, positions="rotary")
    flops = flops_per_token(cfg, negatives=0)
    block_weights = encoder_parameter_count(cfg) - 4 * (13 * 256) - 3 * 256  # minus biases, norms
    attention = 3 * 4 * 2 * 2 * 256 * 256  # 3x forward, 4 layers, QK and AV over S/2 = 256
    assert flops["encoder"] == pytest.approx(6 * block_weights + attention, rel=1e-3)


def test_scaling_writes_fit_and_plot(sim_data, tmp_path):
    cfg = ScalingConfig(sizes=[dict(d_model=16, n_layers=1), dict(d_model=32, n_layers=2)],
                        tokens=2000, batch_size=4, max_len=32)
    result = run_scaling(sim_data, tmp_path, cfg, progress=False)
    assert [r["size"] for r in result["rows"]] == ["d16-l1", "d32-l2"]
    assert result["rows"][0]["encoder_parameters"] < result["rows"][1]["encoder_parameters"]
    assert (tmp_path / "scaling.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "scaling.json").read_text())
    assert set(saved["fit"]) == {"entropy_next_item", "entropy_feedback"}
