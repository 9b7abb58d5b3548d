"""Fine-tuning in one pass: impressions, grades, pairs, PairAccuracy, and the one-pass scores
against a per-impression reference."""

import itertools

import numpy as np
import pytest
import torch

from argusrec.errors import DataError
from argusrec.finetune import FinetuneConfig, evaluate_pairs, finetune
from argusrec.impressions import (ImpressionDataset, PairConfig, collate_impressions,
                                  grade_events, make_pairs, sessions)
from argusrec.losses import pairwise_loss
from argusrec.metrics import pair_accuracy
from argusrec.scoring import score_batch, score_reference
from argusrec.sequences import PreparedData
from argusrec.train import TrainConfig, build_model, pretrain

MUSIC = {"played_ratio": "ratio", "like": "binary", "dislike": "binary"}


def test_grades_music_feedback():
    nan = np.nan
    fb = {"played_ratio": np.array([0.1, 0.9, 0.9, 0.2, nan]),
          "like": np.array([nan, nan, 1.0, nan, nan]),
          "dislike": np.array([nan, nan, nan, 1.0, nan])}
    grade = grade_events(fb, MUSIC, PairConfig())
    np.testing.assert_array_equal(grade[:4], [1.0, 2.0, 4.0, 0.0])
    assert np.isnan(grade[4])


def test_grades_rating_is_the_value():
    grade = grade_events({"rating": np.array([1.0, 5.0, 3.0])}, {"rating": "value"},
                         PairConfig())
    np.testing.assert_array_equal(grade, [1.0, 5.0, 3.0])


def test_sessions_split_on_silence():
    np.testing.assert_array_equal(sessions(np.array([0, 10, 5000, 5010, 9000]), 1800),
                                  [0, 0, 1, 1, 2])


def _plain_pairs(group, time, grade, cfg):
    out = set()
    for a, b in itertools.combinations(range(len(group)), 2):
        if group[a] != group[b] or grade[a] == grade[b]:
            continue
        if cfg.pair_within == "window" and abs(time[a] - time[b]) > cfg.pair_window:
            continue
        hi, lo = (a, b) if grade[a] > grade[b] else (b, a)
        w = grade[hi] - grade[lo] if cfg.weighting == "grade" else 1.0
        out.add((hi, lo, float(w)))
    return out


@pytest.mark.parametrize("cfg", [PairConfig(), PairConfig(pair_within="window", pair_window=50),
                                 PairConfig(weighting="uniform")])
def test_make_pairs_matches_plain_loops(cfg):
    rng = np.random.default_rng(0)
    group = np.sort(rng.integers(0, 12, 80))
    time = np.concatenate([np.sort(rng.integers(0, 200, (group == g).sum())) for g in
                           np.unique(group)])
    grade = rng.choice([0.0, 1.0, 2.0, 4.0], 80)
    better, worse, weight = make_pairs(group, time, grade, cfg)
    got = {(int(a), int(b), float(w)) for a, b, w in zip(better, worse, weight)}
    assert len(got) == len(better)
    assert got == _plain_pairs(group, time, grade, cfg)


def test_pair_accuracy_counts_ties_half_and_weights():
    score = np.array([3.0, 1.0, 1.0, 0.0])
    better, worse, weight = np.array([0, 1, 3]), np.array([1, 2, 0]), np.array([1.0, 1.0, 2.0])
    acc = pair_accuracy(score, better, worse, weight)
    assert acc["PairAccuracy"] == pytest.approx(1.5 / 3)
    assert acc["PairAccuracy/weighted"] == pytest.approx(1.5 / 4)


def test_pairwise_loss_reference():
    score = torch.tensor([2.0, -1.0, 0.5], requires_grad=True)
    better, worse, weight = torch.tensor([0, 2]), torch.tensor([1, 1]), torch.tensor([3.0, 1.0])
    loss = pairwise_loss(score, better, worse, weight)
    plain = (3 * torch.log1p(torch.exp(-(score[0] - score[1])))
             + torch.log1p(torch.exp(-(score[2] - score[1])))) / 4
    torch.testing.assert_close(loss, plain)


@pytest.mark.parametrize("lag", [0, 86_400])
def test_every_impression_once_with_state_before_it(sim_data, lag):
    data = PreparedData(sim_data)
    ds = ImpressionDataset(data, split="train", max_len=32, lag=lag, max_impressions=40)
    assert len(ds) > 0
    ids = np.concatenate([ds[i]["imp_id"] for i in range(len(ds))])
    np.testing.assert_array_equal(np.sort(ids), np.arange(ds.num_impressions))
    for i in range(0, len(ds), 7):
        s = ds[i]
        assert len(s["imp_item"]) <= 40 and len(s["item"]) <= 32
        assert (s["imp_state"] >= 0).all() and (s["imp_state"] < len(s["item"])).all()
        # the state's event is at least `lag` before the impression
        assert (s["imp_gap"] >= lag).all()
        assert (s["imp_time"] - s["timestamp"][s["imp_state"]] == s["imp_gap"]).all()


def test_lag_moves_states_back(sim_data):
    data = PreparedData(sim_data)
    runtime = ImpressionDataset(data, split="test", max_len=64, lag=0)
    daily = ImpressionDataset(data, split="test", max_len=64, lag=86_400)
    assert runtime.num_impressions >= daily.num_impressions > 0
    gaps0 = np.concatenate([runtime[i]["imp_gap"] for i in range(len(runtime))])
    gaps1 = np.concatenate([daily[i]["imp_gap"] for i in range(len(daily))])
    assert np.median(gaps1) > np.median(gaps0)


def test_session_states_come_from_before_the_session(sim_data):
    data = PreparedData(sim_data)
    ds = ImpressionDataset(data, split="test", max_len=64, lag=0, state_from="session")
    assert ds.num_impressions > 0
    checked = 0
    for s, j, start, _, lo, hi in ds.examples:
        shard = data.shards[int(s)]
        kept = ds._kept(shard, int(j))
        ts = np.asarray(shard.events["timestamp"][kept], dtype=np.int64)
        session = sessions(ts, ds.pairs.session_gap)
        for imp, state, sess, _ in ds.impressions[lo:hi].astype(np.int64):
            first = int(np.flatnonzero(session == session[imp])[0])  # plain: scan the user
            assert sess == session[imp] and state == first - 1
            checked += 1
    assert checked == ds.num_impressions
    with pytest.raises(DataError, match="state_from"):
        ImpressionDataset(data, split="test", state_from="day")


@pytest.mark.parametrize("time_buckets", [0, 8])
def test_one_pass_scores_equal_per_impression_reference(sim_data, time_buckets):
    data = PreparedData(sim_data)
    model = build_model(TrainConfig(preset="debug", model={"time_buckets": time_buckets}),
                        data).eval()
    ds = ImpressionDataset(data, split="train", max_len=48, lag=3600, max_impressions=30)
    samples = [ds[i] for i in range(3)]
    batch = collate_impressions(samples, ds.pairs)
    with torch.no_grad():
        fast = score_batch(model, batch).numpy()
    plain = np.concatenate([score_reference(model, ds, i) for i in range(3)])
    np.testing.assert_allclose(fast, plain, atol=1e-5)


def test_finetune_learns_and_reports_pair_accuracy(sim_data, tmp_path):
    cfg = FinetuneConfig(max_steps=30, batch_size=4, lr=3e-3, lag=0, warmup_steps=5)
    summary = finetune(sim_data, None, tmp_path / "ft", cfg, progress=False,
                       model_fields={"preset": "debug"})
    assert summary.steps == 30 and summary.pairs_seen > 0
    assert np.mean(summary.losses[-5:]) < np.mean(summary.losses[:5])
    results = evaluate_pairs(tmp_path / "ft", split="test")
    assert results["pairs"] > 0 and 0 <= results["PairAccuracy"] <= 1
    assert results["lag"] == 0  # the fine-tuning settings come back from the checkpoint


def test_finetune_rejects_used_directory_and_missing_model(sim_data, tmp_path):
    (tmp_path / "ft" / "checkpoints").mkdir(parents=True)
    with pytest.raises(DataError, match="already has checkpoints"):
        finetune(sim_data, None, tmp_path / "ft", FinetuneConfig(max_steps=1), progress=False)
    with pytest.raises(DataError, match="no pretrained model"):
        finetune(sim_data, None, tmp_path / "other", FinetuneConfig(max_steps=1), progress=False)


def test_finetuning_resumes_bit_exactly_after_kill_9(sim_data, tmp_path):
    """The fine-tuning loop is pretraining's: a run killed with SIGKILL resumes from its
    newest checkpoint and continues on exactly the uninterrupted run's losses."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    pretrain(sim_data, tmp_path / "pre", TrainConfig(preset="debug", max_steps=2,
                                                     batch_size=4), progress=False)
    cfg = FinetuneConfig(max_steps=120, batch_size=4, lag=0, checkpoint_every=5,
                         keep_checkpoints=2, threads=1)
    straight = finetune(sim_data, tmp_path / "pre", tmp_path / "a", cfg, progress=False)
    (tmp_path / "ft.yaml").write_text("checkpoint_every: 5\nkeep_checkpoints: 2\n")
    argus = str(Path(sys.executable).with_name("argus"))
    proc = subprocess.Popen([argus, "finetune", str(sim_data), str(tmp_path / "pre"),
                             str(tmp_path / "b"), "--max-steps", "120", "--batch-size", "4",
                             "--lag", "0", "--threads", "1", "--config",
                             str(tmp_path / "ft.yaml"), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "b" / "checkpoints" /
                                          "step-00000010").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rest = finetune(sim_data, None, tmp_path / "b", cfg, resume=True, progress=False)
    assert rest.steps == 120 and 0 < len(rest.losses) < 120
    np.testing.assert_allclose(rest.losses, straight.losses[-len(rest.losses):], rtol=0,
                               atol=1e-6)


def test_finetuning_validates_and_keeps_the_best(sim_data, tmp_path):
    pretrain(sim_data, tmp_path / "pre", TrainConfig(preset="debug", max_steps=2,
                                                     batch_size=4), progress=False)
    summary = finetune(sim_data, tmp_path / "pre", tmp_path / "ft",
                       FinetuneConfig(max_steps=6, batch_size=4, eval_every=2, patience=5),
                       progress=False)
    assert 0 < summary.best_value <= 1 and summary.best_step in (2, 4, 6)
    best = (tmp_path / "ft" / "checkpoints" / "best").read_text().split()
    assert best[0] == f"step-{summary.best_step:08d}" and best[1] == "PairAccuracy"


def test_finetune_optimizer_defaults_survive_a_partial_override():
    """`--lr` alone must keep fine-tuning's own warmup (50), not the optimizer's (100); and
    an old config's top-level lr still reads."""
    assert FinetuneConfig(optim={"lr": 1e-3}).optim.warmup_steps == 50
    assert FinetuneConfig().optim.lr == 3e-4
    old = FinetuneConfig(lr=1e-3, warmup_steps=5)
    assert old.optim.lr == 1e-3 and old.optim.warmup_steps == 5
