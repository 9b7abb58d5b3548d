"""The training data loader: windows of users' histories, padded into batches.

A prepared dataset (argusrec.sequences) holds each user's whole history. The loader cuts it into
windows of at most ``max_len`` events and marks which positions are *targets*:

- training (``split="train"``, ``stride=max_len``): the training events of each user are chunked
  into non-overlapping windows from the most recent backwards, so the latest window is full and
  every training event is a target exactly once;
- evaluation (``split="test"`` or ``"val"``, ``stride < max_len``): windows end after the last
  event of that split and step back by ``stride``; only that split's events in the last
  ``stride`` positions are targets, so every target sees at least ``max_len - stride`` events of
  history from before it.

Items are shifted by nothing here: position t holds event t, and models predict event t from
the state after t-1 (DESIGN.md, "The model").

Legend: B batch, L window length (<= max_len), C context fields, F feedback fields.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from argusrec.batch import Batch
from argusrec.errors import DataError
from argusrec.sequences import GAP, SPLIT_CODES, TRAIN, PreparedData


def split_history(split: np.ndarray, code: int) -> np.ndarray:
    """(E,) bool: which of a user's events a dataset for split ``code`` may use.

    Training uses training events only. Validation and test use everything up to the split's
    last event except the gap: the gap stands for the delay between the data cut-off and
    serving, so its events are never history.
    """
    if code == TRAIN:
        return split == TRAIN
    keep = split != GAP
    targets = np.flatnonzero(split == code)
    keep[targets[-1] + 1 if len(targets) else 0:] = False
    return keep


# Columns of SequenceDataset.windows.
WINDOW_SHARD, WINDOW_USER, WINDOW_START, WINDOW_STOP, WINDOW_FIRST_TARGET = range(5)


class PreparedDataset(Dataset):
    """A dataset over an opened PreparedData (``self.data``) that worker processes can take:
    memory maps do not cross process boundaries, so a worker reopens them lazily."""

    data: PreparedData

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["data"] = str(self.data.path)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.data = PreparedData(state["data"])


class SequenceDataset(PreparedDataset):
    """Windows over a prepared dataset; item ``i`` is a dict of (L,) numpy arrays.

    Args:
        data: a prepared dataset directory (or an opened PreparedData).
        split: whose events are targets: train, val or test.
        max_len: the longest window, in events.
        stride: how far consecutive windows of one user step back; default ``max_len``
            (non-overlapping chunks).
        min_len: windows shorter than this are skipped (one event has nothing to predict from).
        positives_only: keep only positive events (SASRec-style training data).
        windows_per_user: keep only each user's most recent windows, at most this many
            (SASRec trains on the last ``max_len`` events of each user); None keeps all.
    """

    def __init__(self, data: str | os.PathLike | PreparedData, *, split: str = "train",
                 max_len: int = 512, stride: int | None = None, min_len: int = 2,
                 positives_only: bool = False, windows_per_user: int | None = None) -> None:
        if split not in ("train", "val", "test"):
            raise DataError(f"unknown split '{split}'", fix="use train, val or test")
        if max_len < 1 or (stride is not None and not 1 <= stride <= max_len):
            raise DataError(f"need 1 <= stride <= max_len, got max_len={max_len}, "
                            f"stride={stride}", fix="pick a smaller stride")
        if windows_per_user is not None and windows_per_user < 1:
            raise DataError(f"windows_per_user must be at least 1, got {windows_per_user}",
                            fix="use None (or 0 in a TrainConfig) to keep every window")
        self.data = data if isinstance(data, PreparedData) else PreparedData(data)
        self.split, self.code = split, SPLIT_CODES[split]
        self.max_len, self.stride = max_len, stride or max_len
        self.min_len, self.positives_only = min_len, positives_only
        self.windows_per_user = windows_per_user
        self.context_names = sorted(self.data.context_fields)
        self.feedback_names = list(self.data.feedback_fields)
        self._pid = os.getpid()
        # windows: (shard, user position in shard, start, stop, first target) as an int64 array
        # of rows; "start/stop" index the (possibly positives-only) event list of that user.
        self.windows = np.concatenate(
            [self._windows(s, shard) for s, shard in enumerate(self.data.shards)]
            or [np.zeros((0, 5), dtype=np.int64)])

    @property
    def lengths(self) -> np.ndarray:
        """(N,) events in each window (for length-grouped batches)."""
        return self.windows[:, WINDOW_STOP] - self.windows[:, WINDOW_START]

    @property
    def owners(self) -> np.ndarray:
        """(N, 2) the (shard, user position in shard) of each window."""
        return self.windows[:, [WINDOW_SHARD, WINDOW_USER]]

    # -- index ---------------------------------------------------------------------------------
    def _events_of(self, shard, j: int) -> np.ndarray:
        """Positions (in shard arrays) of user j's events that this dataset uses."""
        start, stop = int(shard.offsets[j]), int(shard.offsets[j + 1])
        keep = split_history(np.asarray(shard.events["split"][start:stop]), self.code)
        if self.positives_only:
            keep &= np.asarray(shard.events["positive"][start:stop])
        return start + np.flatnonzero(keep)

    def _windows(self, s: int, shard) -> np.ndarray:
        rows = []
        split = shard.events["split"]
        for j in range(len(shard)):
            positions = self._events_of(shard, j)
            n = len(positions)
            if n < self.min_len:
                continue
            is_target = np.asarray(split[positions]) == self.code
            first_target = int(np.argmax(is_target)) if is_target.any() else n
            stop, kept = n, 0
            while (stop > first_target and stop >= self.min_len
                   and (self.windows_per_user is None or kept < self.windows_per_user)):
                start = max(0, stop - self.max_len)
                if is_target[max(start, stop - self.stride):stop].any():
                    rows.append((s, j, start, stop, max(start, stop - self.stride)))
                    kept += 1
                stop -= self.stride
        return np.asarray(rows, dtype=np.int64).reshape(-1, 5)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        s, j, start, stop, first_target = (int(v) for v in self.windows[index])
        shard = self.data.shards[s]
        positions = self._events_of(shard, j)[start:stop]
        ev = shard.events
        split = np.asarray(ev["split"][positions])
        target = split == self.code
        target[: first_target - start] = False
        return {
            "user": np.int64(shard.users[j]),
            "item": np.asarray(ev["item"][positions], dtype=np.int64),
            "timestamp": np.asarray(ev["timestamp"][positions], dtype=np.int64),
            "event_type": np.asarray(ev["event_type"][positions], dtype=np.int64),
            "context": np.stack([np.asarray(ev[f"ctx_{c}"][positions], dtype=np.int64)
                                 for c in self.context_names], axis=-1)
            if self.context_names else np.zeros((len(positions), 0), dtype=np.int64),
            "feedback": np.stack([np.asarray(ev[f"fb_{f}"][positions], dtype=np.float32)
                                  for f in self.feedback_names], axis=-1)
            if self.feedback_names else np.zeros((len(positions), 0), dtype=np.float32),
            "positive": np.asarray(ev["positive"][positions], dtype=np.bool_),
            "target": target,
        }


def collate(samples: list[dict[str, np.ndarray]], pad_to: int | None = None) -> Batch:
    """Right-pad windows to the longest one (or ``pad_to``) and stack them into a Batch."""
    B = len(samples)
    L = max(pad_to or 0, max(len(s["item"]) for s in samples))
    C = samples[0]["context"].shape[-1]
    F = samples[0]["feedback"].shape[-1]
    item = np.zeros((B, L), dtype=np.int64)
    timestamp = np.zeros((B, L), dtype=np.int64)
    event_type = np.zeros((B, L), dtype=np.int64)
    context = np.zeros((B, L, C), dtype=np.int64)
    feedback = np.full((B, L, F), np.nan, dtype=np.float32)
    positive = np.zeros((B, L), dtype=np.bool_)
    mask = np.zeros((B, L), dtype=np.bool_)
    target = np.zeros((B, L), dtype=np.bool_)
    for b, s in enumerate(samples):
        n = len(s["item"])
        item[b, :n], timestamp[b, :n], event_type[b, :n] = s["item"], s["timestamp"], s["event_type"]
        context[b, :n], feedback[b, :n] = s["context"], s["feedback"]
        positive[b, :n], target[b, :n], mask[b, :n] = s["positive"], s["target"], True
    feedback_t = torch.from_numpy(feedback)
    return Batch(
        user=torch.tensor([int(s["user"]) for s in samples], dtype=torch.int64),
        item=torch.from_numpy(item), timestamp=torch.from_numpy(timestamp),
        event_type=torch.from_numpy(event_type), context=torch.from_numpy(context),
        feedback=feedback_t, feedback_mask=~torch.isnan(feedback_t),
        positive=torch.from_numpy(positive), mask=torch.from_numpy(mask),
        target=torch.from_numpy(target))


def make_loader(dataset: SequenceDataset, *, batch_size: int = 32, shuffle: bool = True,
                num_workers: int = 0, seed: int = 0, drop_last: bool = False,
                sampler=None) -> DataLoader:
    """A DataLoader over ``dataset`` with :func:`collate`; deterministic order for a seed."""
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle and sampler is None,
                      sampler=sampler, num_workers=num_workers, collate_fn=collate,
                      generator=generator, drop_last=drop_last,
                      persistent_workers=num_workers > 0)
