"""Scoring impressions in one causal pass, PairAccuracy over them, and the oracle's ceiling.

DESIGN.md, "Fine-tuning in one pass": a window of a user's history goes through the encoder
once, and every impression whose state lies in it is scored from the state after the last
event at or before its time minus the lag:

    u_i = user_head([h_j; context_i]),  v_i = item_tower(item_i),  s_i = <u_i, v_i> / T

:func:`score_reference` re-runs the encoder for every impression; a test holds the one-pass
scores to it. Fine-tuning (argusrec.finetune) trains on these scores; the final ranker
(argusrec.rank) takes them as a feature; the simulator's true affinity gives the ceiling.

Legend: B windows, L events, N impressions, D width, U user-vector width.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from argusrec.impressions import (ImpressionBatch, ImpressionDataset, PairConfig,
                                  collate_impressions, make_pairs)
from argusrec.loader import collate
from argusrec.metrics import pair_accuracy
from argusrec.model import ArgusModel
from argusrec.oracle import Oracle
from argusrec.sequences import PreparedData


def score_batch(model: ArgusModel, batch: ImpressionBatch, parts: bool = False, *,
                forward=None):
    """(N,) two-tower scores of a batch's impressions from one encoder pass per window; with
    ``parts``, (scores, user vectors (N, U), item vectors (N, U)). ``forward`` is the parallel
    wrapper of ``model`` in training (DDP and FSDP need the pass to go through it)."""
    states = (forward or model)(batch.events, states_only=True).hidden  # (B, L, D)
    h = states[batch.window, batch.state]  # (N, D)
    user = model.user_vectors_at(h, batch.context, batch.event_type, batch.gap)  # (N, U)
    item = model.item_vectors(batch.item)  # (N, U)
    score = (user * item).sum(-1) / model.temperature
    return (score, user, item) if parts else score


@torch.no_grad()
def score_reference(model: ArgusModel, dataset: ImpressionDataset, index: int) -> np.ndarray:
    """Scores of one example's impressions, re-running the encoder for each impression over the
    window up to its state: the plain method that one-pass scoring must match."""
    sample = dataset[index]
    out = np.zeros(len(sample["imp_item"]))
    window_keys = ("item", "timestamp", "event_type", "context", "feedback", "positive",
                   "target")
    for n, p in enumerate(sample["imp_state"]):
        prefix = {k: sample[k][: p + 1] for k in window_keys}
        prefix["user"] = sample["user"]
        states = model.event_states(collate([prefix]).to(_device(model)))  # (1, p+1, D)
        one = {k: torch.as_tensor(sample[f"imp_{k}"][n:n + 1]).to(_device(model))
               for k in ("item", "context", "event_type", "gap")}
        user = model.user_vectors_at(states[:, -1], one["context"], one["event_type"],
                                     one["gap"])
        out[n] = float((user * model.item_vectors(one["item"])).sum() / model.temperature)
    return out


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def score_impressions(model: ArgusModel, dataset: ImpressionDataset, *, batch_size: int = 16,
                      progress: bool = False, vectors: bool = False):
    """Every impression of ``dataset`` with its one-pass score, as a polars DataFrame:
    event (global event number), user (index), item (index), timestamp, session, grade,
    score; with ``vectors`` also
    (table, user vectors (N, U), item vectors (N, U))."""
    import polars as pl

    model.eval()
    device = _device(model)
    U = model.cfg.user_dim
    user_vecs = np.zeros((dataset.num_impressions, U), dtype=np.float32) if vectors else None
    item_vecs = np.zeros((dataset.num_impressions, U), dtype=np.float32) if vectors else None
    scores = np.zeros(dataset.num_impressions)
    users = np.zeros(dataset.num_impressions, dtype=np.int64)
    items = np.zeros(dataset.num_impressions, dtype=np.int64)
    times = np.zeros(dataset.num_impressions, dtype=np.int64)
    events = np.zeros(dataset.num_impressions, dtype=np.int64)
    for lo in tqdm(range(0, len(dataset), batch_size), desc=f"score {dataset.split}",
                   disable=not progress):
        samples = [dataset[i] for i in range(lo, min(lo + batch_size, len(dataset)))]
        batch = collate_impressions(samples, dataset.pairs).to(device)
        ids = batch.id.cpu().numpy()
        if vectors:
            scored = score_batch(model, batch, parts=True)
            scores[ids] = scored[0].float().cpu().numpy()
            user_vecs[ids] = scored[1].float().cpu().numpy()
            item_vecs[ids] = scored[2].float().cpu().numpy()
        else:
            scores[ids] = score_batch(model, batch).float().cpu().numpy()
        items[ids] = batch.item.cpu().numpy()
        users[ids] = batch.events.user[batch.window].cpu().numpy()
        times[ids] = np.concatenate([s["imp_time"] for s in samples])
        events[ids] = np.concatenate([s["imp_event"] for s in samples])
    table = pl.DataFrame({"event": events, "user": users, "item": items, "timestamp": times,
                          "session": dataset.impressions[:, 2].astype(np.int64),
                          "grade": dataset.impressions[:, 3], "score": scores})
    return (table, user_vecs, item_vecs) if vectors else table


def impression_pairs(table, pairs: PairConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                         np.ndarray]:
    """(order, better, worse, weight): pairs of a scored impression table, indices into the
    table sorted by ``order`` (by user, session, time)."""
    order = np.lexsort((table["timestamp"].to_numpy(), table["session"].to_numpy(),
                        table["user"].to_numpy()))
    user = table["user"].to_numpy()[order]
    group = (user if pairs.pair_within == "window"
             else user * (1 << 32) + table["session"].to_numpy()[order])
    better, worse, weight = make_pairs(group, table["timestamp"].to_numpy()[order],
                                       table["grade"].to_numpy()[order], pairs)
    return order, better, worse, weight


def oracle_scores(table, data: PreparedData, oracle_dir: str | Path) -> np.ndarray:
    """The simulator's true affinity of every impression of a scored table: the ceiling."""
    oracle = Oracle.load(oracle_dir)
    users = data.users().sort("index")["user"].to_numpy()
    items = data.items().sort("index")
    item_ids = np.zeros(data.num_items + 1, dtype=np.int64)
    item_ids[items["index"].to_numpy()] = items["item"].to_numpy()
    return oracle.affinity(users[table["user"].to_numpy()], item_ids[table["item"].to_numpy()],
                           table["timestamp"].to_numpy())


def pair_accuracy_on(model: ArgusModel, dataset: ImpressionDataset) -> dict[str, Any]:
    """PairAccuracy of ``model`` on ``dataset``'s impressions (it goes back to training)."""
    table = score_impressions(model, dataset)
    order, better, worse, weight = impression_pairs(table, dataset.pairs)
    results = pair_accuracy(table["score"].to_numpy()[order], better, worse, weight)
    model.train()
    return results
