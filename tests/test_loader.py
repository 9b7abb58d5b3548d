"""loader: chunking, evaluation windows, padding, several worker processes."""

from __future__ import annotations

import pytest
import torch

from argusrec.loader import SequenceDataset, collate, make_loader
from argusrec.prepare import PrepareConfig, SplitConfig, prepare

from conftest import TABLE_COLUMNS, random_log, write_table


@pytest.fixture
def one_user(tmp_path):
    # 10 training events (t 0..9), 2 gap events (t 10, 11), 3 test events (t 12..14)
    n = 15
    rows = {"user": [1] * n, "item": list(range(100, 100 + n)), "timestamp": list(range(n)),
            "like": [1.0, 0.0] * 7 + [1.0]}
    cfg = PrepareConfig(format="table", columns={**TABLE_COLUMNS, "like": "like"},
                        split=SplitConfig(cutoff=10, gap=2))
    prepare(write_table(tmp_path / "log.csv", rows), tmp_path / "data", cfg, progress=False)
    return tmp_path / "data"


def test_training_chunks_are_non_overlapping_from_the_end(one_user):
    ds = SequenceDataset(one_user, split="train", max_len=4)
    windows = [ds[i]["item"].tolist() for i in range(len(ds))]
    # items are indexed 1..15 in time order; training = the first 10
    assert windows == [[7, 8, 9, 10], [3, 4, 5, 6], [1, 2]]
    assert all(ds[i]["target"].all() for i in range(len(ds)))
    assert sorted(i for w in windows for i in w) == list(range(1, 11))


def test_windows_per_user_keeps_the_most_recent(one_user):
    ds = SequenceDataset(one_user, split="train", max_len=4, windows_per_user=2)
    assert [ds[i]["item"].tolist() for i in range(len(ds))] == [[7, 8, 9, 10], [3, 4, 5, 6]]
    assert len(SequenceDataset(one_user, split="train", max_len=4, windows_per_user=1)) == 1
    with pytest.raises(Exception, match="windows_per_user"):
        SequenceDataset(one_user, split="train", max_len=4, windows_per_user=0)


def test_min_len_and_positives_only(one_user):
    assert len(SequenceDataset(one_user, split="train", max_len=4, min_len=3)) == 2
    pos = SequenceDataset(one_user, split="train", max_len=100, positives_only=True)
    assert pos[0]["item"].tolist() == [1, 3, 5, 7, 9] and pos[0]["positive"].all()


def test_test_windows_skip_the_gap_and_target_each_test_event_once(one_user):
    ds = SequenceDataset(one_user, split="test", max_len=6, stride=2)
    seen = []
    for i in range(len(ds)):
        w = ds[i]
        assert 11 not in w["item"] and 12 not in w["item"]  # gap events (t 10, 11)
        seen += w["item"][w["target"]].tolist()
    assert sorted(seen) == [13, 14, 15]
    last = ds[0]
    assert last["item"].tolist() == [8, 9, 10, 13, 14, 15] and last["target"].sum() == 2


def test_collate_pads_right_and_masks(one_user):
    ds = SequenceDataset(one_user, split="train", max_len=4)
    batch = collate([ds[0], ds[2]])
    assert batch.item.shape == (2, 4) and batch.item[1].tolist() == [1, 2, 0, 0]
    assert batch.mask[1].tolist() == [True, True, False, False]
    assert batch.feedback.shape == (2, 4, 1) and batch.feedback_mask[1, 2:].sum() == 0
    assert batch.context.shape == (2, 4, 0)
    padded = collate([ds[2]], pad_to=8)
    assert padded.item.shape == (1, 8)


def test_every_training_event_is_a_target_once(tmp_path):
    rows = random_log(n_events=4000)
    cfg = PrepareConfig(format="table", columns={**TABLE_COLUMNS, "like": "like"},
                        split=SplitConfig(cutoff=800), shard_events=1000,
                        on_duplicate="keep")
    s = prepare(write_table(tmp_path / "log.parquet", rows), tmp_path / "data", cfg,
                progress=False)
    ds = SequenceDataset(tmp_path / "data", split="train", max_len=16, min_len=1)
    assert sum(int(ds[i]["target"].sum()) for i in range(len(ds))) == s.split_events["train"]
    assert max(len(ds[i]["item"]) for i in range(len(ds))) == 16


def test_worker_processes_give_the_same_batches(tmp_path):
    rows = random_log(n_events=3000)
    cfg = PrepareConfig(format="table", columns={**TABLE_COLUMNS, "like": "like"},
                        split=SplitConfig(cutoff=800), shard_events=1000,
                        on_duplicate="keep")
    prepare(write_table(tmp_path / "log.parquet", rows), tmp_path / "data", cfg,
            progress=False)
    ds = SequenceDataset(tmp_path / "data", split="train", max_len=32)
    single = list(make_loader(ds, batch_size=8, seed=3, num_workers=0))
    multi = list(make_loader(ds, batch_size=8, seed=3, num_workers=2))
    assert len(single) == len(multi)
    for a, b in zip(single, multi):
        assert torch.equal(a.item, b.item) and torch.equal(a.target, b.target)
        assert torch.equal(a.feedback_mask, b.feedback_mask)


def test_bad_arguments(one_user):
    from argusrec.errors import DataError

    with pytest.raises(DataError, match="split"):
        SequenceDataset(one_user, split="holdout")
    with pytest.raises(DataError, match="stride"):
        SequenceDataset(one_user, max_len=4, stride=8)
