"""Feedback labels end to end: a Yambda like lands on the listen it follows, and the FP head
predicts event t's feedback from h_{t-1}, context_t and item_t, never from event t's own
feedback (the issue "the FP head barely learns likes")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from argusrec.loader import SequenceDataset, collate
from argusrec.model import ArgusModel, DataSpec, model_config
from argusrec.objective import target_positions
from argusrec.prepare import PrepareConfig, SplitConfig, prepare
from argusrec.sequences import PreparedData


def _multi_event(path: Path, rows: list[tuple[int, int, str]]) -> Path:
    """A one-user multi_event.parquet from (timestamp, item_id, event_type) rows, in order."""
    listen = [kind == "listen" for _, _, kind in rows]
    table = pa.table({
        "uid": pa.array([1] * len(rows), pa.uint32()),
        "timestamp": pa.array([t for t, _, _ in rows], pa.uint32()),
        "item_id": pa.array([i for _, i, _ in rows], pa.uint32()),
        "is_organic": pa.array([1] * len(rows), pa.uint8()),
        "played_ratio_pct": pa.array([100 if x else None for x in listen], pa.uint16()),
        "track_length_seconds": pa.array([200 if x else None for x in listen], pa.uint32()),
        "event_type": pa.array([kind for _, _, kind in rows], pa.string()),
    })
    path.mkdir()
    pq.write_table(table, path / "multi_event.parquet")
    return path


def _merged(tmp_path: Path, rows: list[tuple[int, int, str]]) -> dict[str, np.ndarray]:
    """The prepared events of ``rows`` (all before t=50), without the one test listen that the
    temporal split needs after them."""
    log = _multi_event(tmp_path / "log", [*rows, (100, 9, "listen")])
    prepare(log, tmp_path / "data", PrepareConfig(merge_reactions=True,
                                                  split=SplitConfig(cutoff=50)),
            progress=False)
    return {k: v[:-1] for k, v in PreparedData(tmp_path / "data").user_events(0).items()}


def test_like_goes_to_the_listen_it_follows_not_a_replay_in_the_same_second(tmp_path):
    # Yambda's timestamps come in 5-second steps: a like near the end of a track and a replay
    # of that track can share one. The like follows the first listen in the log; matched by
    # time alone it went to the replay.
    ev = _merged(tmp_path, [(10, 5, "listen"), (15, 5, "like"), (15, 5, "listen"),
                            (40, 6, "listen")])
    assert ev["timestamp"].tolist() == [10, 15, 40]
    assert ev["fb_like"].tolist() == [1.0, 0.0, 0.0]
    assert ev["fb_dislike"].tolist() == [0.0, 0.0, 0.0]  # no reaction: 0, not missing


def test_a_same_second_listen_after_the_like_is_matched_when_it_is_the_only_one(tmp_path):
    # a table that orders one second's rows by type puts "like" before "listen"
    ev = _merged(tmp_path, [(10, 6, "listen"), (15, 5, "like"), (15, 5, "listen"),
                            (40, 5, "listen")])
    assert ev["timestamp"].tolist() == [10, 15, 40]
    assert ev["fb_like"].tolist() == [0.0, 1.0, 0.0]


def test_each_like_of_a_replayed_track_stays_on_its_own_listen(tmp_path):
    ev = _merged(tmp_path, [(10, 5, "listen"), (12, 5, "like"), (20, 5, "listen"),
                            (30, 5, "listen"), (31, 5, "dislike"), (40, 7, "listen")])
    assert ev["fb_like"].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert ev["fb_dislike"].tolist() == [0.0, 0.0, 1.0, 0.0]


# -- what the FP head reads -----------------------------------------------------------------

def _model_and_batch(sim_data: Path, **overrides) -> tuple[ArgusModel, object]:
    data = PreparedData(sim_data)
    torch.manual_seed(0)
    model = ArgusModel(model_config("debug", dropout=0.0, **overrides),
                       DataSpec.from_prepared(data)).eval()
    dataset = SequenceDataset(data, split="train", max_len=16)
    return model, collate([dataset[i] for i in range(4)])


@pytest.mark.parametrize("interaction", [False, True])
def test_fp_logits_of_event_t_ignore_its_own_feedback_and_read_its_item(sim_data,
                                                                          interaction):
    model, batch = _model_and_batch(sim_data, feedback_interaction=interaction)
    t = 5
    with torch.no_grad():
        before = model(batch).feedback
        batch.feedback[:, t] = torch.nan_to_num(batch.feedback[:, t], nan=0.0) + 1.0
        changed_feedback = model(batch).feedback
        batch.item[:, t] = batch.item[:, t] % model.spec.num_items + 1
        changed_item = model(batch).feedback
    # event t's own feedback (the label) reaches the head only from t + 1 on
    torch.testing.assert_close(changed_feedback[:, : t + 1], before[:, : t + 1])
    assert not torch.allclose(changed_feedback[:, t + 1], before[:, t + 1])
    assert not torch.allclose(changed_item[:, t], changed_feedback[:, t])  # item_t is read


def test_fp_targets_are_every_target_after_the_first_event_of_a_window(sim_data):
    # the objective and `argus evaluate` both score out.feedback[target_positions(batch)]
    _, batch = _model_and_batch(sim_data)
    sel = target_positions(batch)
    assert not sel[:, 0].any() and (sel[:, 1:] == (batch.target & batch.mask)[:, 1:]).all()


def test_feedback_interaction_gives_the_head_the_product_of_state_and_item(sim_data):
    model, batch = _model_and_batch(sim_data, feedback_interaction=True)
    D = model.cfg.d_model
    assert model.feedback_head[0].in_features == 4 * D
    seen = {}
    model.feedback_head.register_forward_hook(lambda m, x, y: seen.update(x=x[0]))
    with torch.no_grad():
        model(batch)
    x = seen["x"]  # (B, L, 4D): [h_{t-1}; context_t; item_t; h_{t-1} * item_t]
    torch.testing.assert_close(x[..., 3 * D:], x[..., :D] * x[..., 2 * D: 3 * D])


def test_feedback_interaction_is_refused_for_full_argus():
    with pytest.raises(ValueError, match="feedback_interaction needs the simplified"):
        model_config("debug", variant="full", feedback_interaction=True)
