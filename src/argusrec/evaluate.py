"""`argus evaluate`: next-item and feedback metrics on the test period only.

Each test (or validation) event is predicted from the user's history before it, never from
anything after (DESIGN.md, "Evaluation"):

- full-catalogue ranking of the next *positive* item: HR / NDCG / MRR / Coverage @ K, with the
  user's already-seen items optionally filtered out (the published ML-1M and Beauty tables
  differ on this, so it is a switch and the report states it);
- next-item cross-entropy ("entropy") over the full catalogue, on every target event;
- feedback prediction: log loss and AUC per signal, RMSE for values.

Legend: T targets in a batch, U user-vector width, V catalogue size.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from argusrec.ceilings import gap_closed, oracle_ceilings, popularity_entropy
from argusrec.checkpoint import load_model, need_data
from argusrec.device import resolve_device
from argusrec.errors import DataError
from argusrec.loader import SequenceDataset, collate
from argusrec.metrics import FeedbackMetrics, RankingMetrics, format_table
from argusrec.model import ArgusModel
from argusrec.objective import target_positions
from argusrec.sequences import PreparedData


@torch.no_grad()
def evaluate_model(model: ArgusModel, data: PreparedData, *, split: str = "test",
                   ks: Sequence[int] = (10, 20, 50, 100), exclude_seen: bool = False,
                   positives_only: bool = False, batch_size: int = 64,
                   max_users: int | None = None, progress: bool = False) -> dict[str, float]:
    """Metrics of ``model`` on the ``split`` events of ``data``.

    ``positives_only`` feeds the model positive events only (how a SASRec model was trained).
    ``max_users`` evaluates on the first users only (a quick validation during training).
    """
    model.eval()
    device = next(model.parameters()).device
    max_len = model.cfg.max_len
    dataset = SequenceDataset(data, split=split, max_len=max_len,
                              stride=max(1, max_len // 4), min_len=2,
                              positives_only=positives_only)
    indices = np.arange(len(dataset))
    if max_users is not None:
        users = dataset.owners
        first = np.unique(users[:, 0] * 10**9 + users[:, 1])[:max_users]
        indices = indices[np.isin(users[:, 0] * 10**9 + users[:, 1], first)]
    V = data.num_items
    ranking = RankingMetrics(V, ks)
    feedback = FeedbackMetrics()
    names, kinds = model.spec.feedback_names, model.spec.feedback_kinds
    entropy_sum, entropy_count = 0.0, 0
    started = time.perf_counter()
    # the item tower is deterministic in eval mode: every batch scores against the same vectors
    item_vecs = model.item_vectors(torch.arange(1, V + 1, device=device))  # (V, U)
    for lo in tqdm(range(0, len(indices), batch_size), desc=f"evaluate {split}",
                   disable=not progress):
        rows = indices[lo:lo + batch_size]
        samples = [dataset[int(i)] for i in rows]
        batch = collate(samples).to(device)
        out = model(batch)
        sel = target_positions(batch)
        user = out.user[sel]  # (T, U)
        target = batch.item[sel]
        scores = (user @ item_vecs.T) / model.temperature  # (T, V)
        logp = F.log_softmax(scores.float(), dim=-1)
        entropy_sum += float(-logp.gather(1, (target - 1).unsqueeze(1)).sum())
        entropy_count += int(target.numel())
        positive = batch.positive[sel]
        if positive.any():
            padded = torch.cat([scores.new_full((scores.shape[0], 1), float("-inf")), scores],
                               dim=1)  # (T, V+1): column 0 is padding
            exclude = (_seen_mask(dataset, rows, samples, sel, V, device) if exclude_seen
                       else None)
            ranking.update(padded[positive], target[positive],
                           None if exclude is None else exclude[positive])
        if out.feedback is not None:
            feedback.update(out.feedback[sel].float(), batch.feedback[sel], names, kinds)
    results = {**ranking.compute(), **feedback.compute()}
    results["entropy/next_item"] = entropy_sum / max(entropy_count, 1)
    results["targets"] = entropy_count
    results["seconds"] = time.perf_counter() - started
    return results


def _seen_mask(dataset: SequenceDataset, rows, samples, sel: torch.Tensor, num_items: int,
               device) -> torch.Tensor:
    """(T, V+1) bool: items of the user's whole history before each target (not just the
    window), for the ``exclude_seen`` protocol."""
    masks = []
    for b, i in enumerate(rows):
        s, j, start, _, _ = (int(v) for v in dataset.windows[int(i)])
        shard = dataset.data.shards[s]
        history = np.asarray(shard.events["item"][dataset._events_of(shard, j)])
        for t in torch.nonzero(sel[b]).flatten().tolist():
            m = np.zeros(num_items + 1, dtype=bool)
            m[history[: start + t]] = True
            masks.append(m)
    return torch.from_numpy(np.stack(masks)).to(device)


def evaluate(checkpoint: str | Path, data: str | Path | None = None, *, split: str = "test",
             ks: Sequence[int] = (10, 20, 50, 100), exclude_seen: bool = False,
             batch_size: int = 64, device: str = "cpu", out_json: str | Path | None = None,
             progress: bool = True, which: str = "latest",
             oracle: str | Path | None = None) -> dict[str, float]:
    """Evaluate a checkpoint; print-ready results (and JSON at ``out_json``). With the
    simulator's output directory as ``oracle``, the truth's figures on the same events come
    too, as ``oracle/<metric>`` (and the popularity baseline's next-item entropy)."""
    ks = check_cutoffs(ks)
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}",
                        fix="pass --batch-size 1 or more")
    model, config, prepared = load_model(checkpoint, PreparedData(data) if data else None,
                                         device=resolve_device(device), which=which)
    prepared = need_data(prepared, config, "evaluate")
    positives_only = bool(config["train"].get("positives_only"))
    results = evaluate_model(model, prepared, split=split, ks=ks, exclude_seen=exclude_seen,
                             positives_only=positives_only, batch_size=batch_size,
                             progress=progress)
    results["exclude_seen"] = float(exclude_seen)
    if oracle is not None:
        truth = oracle_ceilings(prepared, oracle, split=split)
        truth["entropy/popularity"] = popularity_entropy(prepared, split)
        results.update({f"oracle/{k}": v for k, v in truth.items()})
    if out_json is not None:
        path = Path(out_json)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps({"checkpoint": str(checkpoint), "split": split,
                                   "step": config["step"], "results": results}, indent=2))
        tmp.replace(path)
    return results


def check_cutoffs(ks: Sequence[int]) -> list[int]:
    """The cut-offs K as a list; a DataError unless there is at least one and each is >= 1."""
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1
                     for k in ks):
        raise DataError(f"cut-offs K must be integers of at least 1, got {ks}",
                        fix="pass --k like 10,20,50,100")
    return [int(k) for k in ks]


# Metrics with a ceiling: (the figure's key, its baseline, higher is better); the baseline is
# a number or the key of a baseline figure among the results.
CEILINGS = [("entropy/next_item", "oracle/entropy/popularity", False),
            ("AUC/like", 0.5, True), ("AUC/dislike", 0.5, True),
            ("AUC/played_ratio", 0.5, True)]


def report(results: dict[str, float], title: str) -> str:
    """The metrics table; with oracle figures, a second one: model, truth, the gap closed."""
    plain = {k: v for k, v in results.items()
             if k != "seconds" and not k.startswith("oracle/")}
    text = format_table(plain, title)
    rows = [(key, results[key], results[f"oracle/{key}"],
             results.get(base, math.nan) if isinstance(base, str) else base, higher)
            for key, base, higher in CEILINGS
            if key in results and f"oracle/{key}" in results]
    if rows:
        lines = ["", "against the simulator's truth (gap closed: from the baseline, popularity "
                 "for entropy and chance for AUC, to the truth)",
                 f"{'metric':<18} {'model':>8} {'truth':>8} {'baseline':>8} {'gap closed':>10}"]
        for key, model, truth, base, higher in rows:
            share = gap_closed(model, base, truth, higher)
            lines.append(f"{key:<18} {model:>8.4f} {truth:>8.4f} {base:>8.4f} "
                         f"{100 * share:>9.1f}%")
        text += "\n" + "\n".join(lines)
    return text
