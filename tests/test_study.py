"""`argus study` end to end with tiny settings: every arm and seed runs once, arms shared
between groups train once, the table calls ties, the plots are written, a rerun is free."""

from __future__ import annotations

import json

import pytest

from argusrec.study import REFERENCE, StudyConfig, _verdict, arms, hstu_width, study
from argusrec.model import encoder_parameter_count, model_config
from argusrec.sequences import PreparedData

TINY = dict(seeds=[0, 1], groups=["objectives", "sizes", "history", "lag"],
            pretrain={"preset": "debug", "max_steps": 2, "batch_size": 4,
                      "model": {"max_len": 32}},
            finetune={"max_steps": 3, "batch_size": 4, "lag": 0, "eval_every": 2,
                      "patience": 1},
            rank={"iterations": 10, "threads": 1},
            sizes=[(16, 1), (32, 2)], history_lengths=[16, 32])


def test_hstu_width_matches_the_transformer_parameters():
    base = model_config("debug", d_model=64, n_layers=2, max_len=512)
    width = hstu_width(base.model_copy(update={"encoder": "hstu"}),
                       encoder_parameter_count(base))
    hstu = encoder_parameter_count(base.model_copy(update={"encoder": "hstu", "d_model": width}))
    assert abs(hstu - encoder_parameter_count(base)) / encoder_parameter_count(base) < 0.1


@pytest.mark.parametrize("stat,ref,higher,expected", [
    ({"mean": 0.70, "std": 0.01, "n": 3}, {"mean": 0.705, "std": 0.002, "n": 3}, True, "tie"),
    ({"mean": 0.72, "std": 0.01, "n": 3}, {"mean": 0.70, "std": 0.002, "n": 3}, True, "better"),
    ({"mean": 8.0, "std": 0.01, "n": 3}, {"mean": 8.5, "std": 0.02, "n": 3}, False, "better"),
    ({"mean": 0.60, "std": 0.01, "n": 3}, {"mean": 0.70, "std": 0.002, "n": 3}, True, "worse"),
])
def test_a_difference_inside_the_spread_is_a_tie(stat, ref, higher, expected):
    assert _verdict(stat, ref, higher) == expected


def test_study_end_to_end(sim_data, tmp_path):
    cfg = StudyConfig(**TINY)
    names = [a.name for a in arms(cfg, PreparedData(sim_data))]
    assert names[0] == REFERENCE and "sasrec" in names and "no-pretraining" in names
    assert "history-16-equal-steps" in names and "history-16-equal-tokens" in names
    oracle = sim_data.parent / "events"
    result = study(sim_data, tmp_path, cfg, oracle=oracle, progress=False)
    runs = result["runs"]
    assert {(r["arm"], r["seed"]) for r in runs} == {(n, s) for n in set(names) for s in (0, 1)}
    assert len(runs) == len(set(names)) * 2  # the reference, in four groups, runs once a seed
    pretrained = sorted(p.name for p in (tmp_path / "pretrain").iterdir())
    assert "no-pretraining-s0" not in pretrained and "lag-0-s0" not in pretrained
    for run in (r for r in runs if r["arm"] != "full-argus"):
        assert 0 <= run["argus_alone"] <= 1 and run["eval_pairs"] > 0
        assert run["oracle_pair_accuracy"] > 0.5
    assert "argus_alone" not in next(r for r in runs if r["arm"] == "full-argus")
    sasrec = next(r for r in runs if r["arm"] == "sasrec")
    assert "AUC/like" not in sasrec  # no feedback head
    assert result["ceilings"]["AUC/like"] > 0.5
    md = (tmp_path / "study.md").read_text()
    assert "**objectives**" in md and "sasrec" in md and "± " in md
    assert (tmp_path / "study-sizes.png").stat().st_size > 0
    assert (tmp_path / "study-history.png").stat().st_size > 0
    again = study(sim_data, tmp_path, cfg, oracle=oracle, progress=False)  # all reused
    assert again["runs"] == runs
    assert json.loads((tmp_path / "study.json").read_text())["runs"] == runs


def test_a_finished_run_is_reused_with_other_threads(tmp_path):
    from argusrec.study import _reused, _write

    spec = {"pretrain": {"seed": 0, "threads": 1, "optim": {"lr": 1e-3}}}
    _write(tmp_path / "study.json", {"spec": spec, "result": {"x": 1}})
    moved = {"pretrain": {"seed": 0, "threads": None, "optim": {"lr": 1e-3}}}
    assert _reused(tmp_path / "study.json", moved) == {"x": 1}
    other = {"pretrain": {"seed": 1, "threads": 1, "optim": {"lr": 1e-3}}}
    assert _reused(tmp_path / "study.json", other) is None


def test_a_finished_finetune_is_reused_whichever_way_its_paths_are_typed(tmp_path,
                                                                         monkeypatch):
    from argusrec.study import _reused, _write

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pre").mkdir()
    spec = {"pretrained": "pre", "finetune": {"seed": 0}, "rank": {}, "oracle": "sim"}
    _write(tmp_path / "study.json", {"spec": spec, "result": {"x": 1}})
    typed = {**spec, "pretrained": str(tmp_path / "pre"), "oracle": str(tmp_path / "sim")}
    assert _reused(tmp_path / "study.json", typed) == {"x": 1}
    assert _reused(tmp_path / "study.json", {**spec, "oracle": None}) is None
    assert _reused(tmp_path / "study.json", {**spec, "pretrained": "other"}) is None


def test_another_ranker_ranks_the_finished_finetuning_again_without_training(tmp_path,
                                                                            monkeypatch):
    import argusrec.study as study_module
    from argusrec.finetune import FinetuneConfig
    from argusrec.rank import RankConfig, RankSummary
    from argusrec.study import _write, run_finetune

    fields = json.loads(json.dumps(FinetuneConfig(epochs=2).model_dump(), default=str))
    old_rank = RankConfig(iterations=400).model_dump()
    run = tmp_path / "ft"
    run.mkdir()
    _write(run / "study.json", {"spec": {"pretrained": "pre", "finetune": fields,
                                         "rank": old_rank, "oracle": None},
                                "result": {"finetune_seconds": 9.0, "finetune_steps": 70,
                                           "finetune_best_step": 60, "uplift": 0.5}})
    ranked = []

    def fake_rank(path, cfg, which, oracle, cache=None):
        ranked.append(cfg)
        return RankSummary(rows=[{"model": m, "PairAccuracy": a} for m, a in (
            ("ARGUS score alone", 0.7), ("ranker, ordinary features", 0.6),
            ("ranker + ARGUS score", 0.66))],
            uplift={"ranker + ARGUS score: PairAccuracy": 0.1}, eval_pairs=3)

    monkeypatch.setattr(study_module, "finetune", lambda *a, **k: pytest.fail("retrained"))
    monkeypatch.setattr(study_module, "rank", fake_rank)
    new_rank = RankConfig(iterations=1000, choose_iterations=True).model_dump()
    result = run_finetune("data", "pre", str(run), fields, new_rank, None)
    assert ranked[0].choose_iterations and result["uplift"] == 0.1
    assert (result["finetune_steps"], result["finetune_best_step"]) == (70, 60)
    assert run_finetune("data", "pre", str(run), fields, new_rank, None) == result  # reused
    assert len(ranked) == 1


def test_a_run_from_before_a_new_config_field_is_reused(tmp_path):
    from argusrec.study import _reused
    from argusrec.train import TrainConfig

    fields = json.loads(json.dumps(TrainConfig(preset="debug").model_dump(), default=str))
    old = {k: v for k, v in fields.items() if k != "checkpoint_format"}
    path = tmp_path / "study.json"
    path.write_text(json.dumps({"spec": {"pretrain": old}, "result": {"x": 1}}))
    assert _reused(path, {"pretrain": fields}) == {"x": 1}
    assert _reused(path, {"pretrain": {**fields, "checkpoint_format": "sharded"}}) is None
    assert _reused(path, {"pretrain": {**fields, "seed": 7}}) is None


def _paths(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for key, value in tree.items():
        out.add(prefix + key)
        if isinstance(value, dict):
            out |= _paths(value, f"{prefix}{key}.")
    return out


def test_every_config_field_has_its_value_from_before_it_existed():
    from argusrec.finetune import FinetuneConfig
    from argusrec.rank import RankConfig
    from argusrec.study import _BEFORE
    from argusrec.train import TrainConfig

    for name, config in (("pretrain", TrainConfig()), ("finetune", FinetuneConfig()),
                         ("rank", RankConfig())):
        current = json.loads(json.dumps(config.model_dump(), default=str))
        missing = sorted(_paths(current) - _paths(_BEFORE[name]))
        assert not missing, (
            f"src/argusrec/fields_before.json lacks {name} fields {missing}: add each with the "
            "value that reproduces runs recorded before it existed (its default now)")


def test_a_flipped_default_does_not_match_runs_recorded_before_the_field():
    from argusrec.study import _missing_as_before

    old_record = {"rank": {"iterations": 400}}  # recorded before choose_iterations existed
    before = {"rank": {"iterations": 400, "choose_iterations": False}}
    as_before = {"rank": {"iterations": 400, "choose_iterations": False}}
    flipped = {"rank": {"iterations": 400, "choose_iterations": True}}
    assert _missing_as_before(old_record, as_before, before) == old_record
    assert _missing_as_before(old_record, flipped, before) != old_record
