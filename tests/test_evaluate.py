"""evaluate: test events only, history from before, against a plain per-event reference."""

from __future__ import annotations

import math

import numpy as np
import torch

from argusrec.evaluate import evaluate, evaluate_model, report
from argusrec.loader import collate
from argusrec.model import ArgusModel, DataSpec, model_config
from argusrec.sequences import GAP, TEST, PreparedData
from argusrec.train import TrainConfig, pretrain


def reference_ranks(model: ArgusModel, data: PreparedData) -> list[int]:
    """Re-run the model once per positive test event, on that user's history before it."""
    fields = sorted(data.context_fields)
    feedback = list(data.feedback_fields)
    ranks = []
    for user in range(data.num_users):
        ev = data.user_events(user)
        keep = ev["split"] != GAP
        ev = {k: v[keep] for k, v in ev.items()}
        for t in np.flatnonzero((ev["split"] == TEST) & ev["positive"]):
            if t == 0:
                continue
            sample = {"user": np.int64(user), "item": ev["item"][: t + 1].astype(np.int64),
                      "timestamp": ev["timestamp"][: t + 1],
                      "event_type": ev["event_type"][: t + 1].astype(np.int64),
                      "context": np.stack([ev[f"ctx_{c}"][: t + 1] for c in fields], -1)
                      .astype(np.int64),
                      "feedback": np.stack([ev[f"fb_{f}"][: t + 1] for f in feedback], -1),
                      "positive": ev["positive"][: t + 1],
                      "target": np.zeros(t + 1, dtype=bool)}
            with torch.no_grad():
                out = model(collate([sample]))
                scores = model.item_vectors(torch.arange(1, data.num_items + 1)) @ out.user[0, t]
            target = int(ev["item"][t]) - 1
            higher = int((scores > scores[target]).sum())
            ties = int((scores == scores[target]).sum()) - 1
            ranks.append(1 + higher + ties // 2)
    return ranks


def test_matches_a_per_event_reference(sim_data):
    data = PreparedData(sim_data)
    torch.manual_seed(0)
    # a window longer than any history, so the reference and the windows see the same events
    model = ArgusModel(model_config("debug", max_len=2048, dropout=0.0),
                       DataSpec.from_prepared(data)).eval()
    ranks = np.asarray(reference_ranks(model, data))
    results = evaluate_model(model, data, split="test", ks=(10, 50))
    assert results["count"] == len(ranks) > 20
    assert math.isclose(results["HR@10"], float((ranks <= 10).mean()), abs_tol=1e-9)
    ndcg = np.where(ranks <= 50, 1 / np.log2(ranks + 1), 0).mean()
    assert math.isclose(results["NDCG@50"], float(ndcg), rel_tol=1e-5)


def test_evaluate_checkpoint_with_and_without_seen_items(sim_data, tmp_path):
    cfg = TrainConfig(preset="debug", model={"max_len": 32}, batch_size=4, max_steps=3,
                      objective={"num_uniform": 32})
    pretrain(sim_data, tmp_path / "run", cfg, progress=False)
    kept = evaluate(tmp_path / "run", progress=False, out_json=tmp_path / "r.json")
    filtered = evaluate(tmp_path / "run", progress=False, exclude_seen=True)
    for r in (kept, filtered):
        assert 0 <= r["HR@10"] <= r["HR@100"] <= 1 and r["entropy/next_item"] > 0
        assert "AUC/like" in r or "logloss/played_ratio" in r
    assert filtered["count"] == kept["count"]
    assert (tmp_path / "r.json").exists()


def test_evaluate_with_the_oracle_reports_the_truth_beside_the_model(sim_data, tmp_path):
    cfg = TrainConfig(preset="debug", model={"max_len": 32}, batch_size=4, max_steps=2,
                      objective={"num_uniform": 32})
    pretrain(sim_data, tmp_path / "run", cfg, progress=False)
    results = evaluate(tmp_path / "run", progress=False, oracle=sim_data.parent / "events")
    assert results["oracle/entropy/next_item"] < results["oracle/entropy/popularity"]
    assert 0.5 < results["oracle/AUC/played_ratio"] <= 1
    text = report(results, "run")
    assert "against the simulator's truth" in text and "gap closed" in text
    assert "oracle/" not in text.split("against")[0]  # the model's table stays the model's
