"""`argus ablate` end to end with tiny settings, and re-running it reuses finished runs."""

from argusrec.ablation import AblationConfig, ablate, ablation_report


def test_ablation_table_has_every_variant_and_reruns_cheaply(sim_data, tmp_path):
    cfg = AblationConfig(pretrain={"preset": "debug", "max_steps": 2},
                         finetune={"max_steps": 4, "batch_size": 4, "lag": 0},
                         rank={"iterations": 10, "threads": 1},
                         history_lengths=[16, 32], base_history=32, tokens_per_batch=128)
    result = ablate(sim_data, tmp_path, cfg, progress=False)
    names = [r["variant"] for r in result["rows"]]
    assert names == ["history-16", "history-32", "no-pretraining", "short-finetune"]
    short = result["rows"][-1]
    assert short["finetune_steps"] == 1  # a tenth of 4, rounded, at least 1
    for row in result["rows"]:
        assert 0 <= row["ranker_with_argus"] <= 1 and row["eval_pairs"] > 0
    assert (tmp_path / "ablation.json").exists()
    assert "no-pretraining" in ablation_report(result)
    again = ablate(sim_data, tmp_path, cfg, progress=False)  # reuses the finished runs
    assert [r["ranker"] for r in again["rows"]] == [r["ranker"] for r in result["rows"]]
