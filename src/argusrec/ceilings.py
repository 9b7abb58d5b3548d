"""Ground-truth ceilings: the simulator's own figure for every metric a model is scored on.

On a log written by ``argus simulate`` the truth is known (argusrec.oracle): the distribution
each listen's item was drawn from, and the probabilities its feedback was drawn with. Scored
on the same events and labels as ``argus evaluate`` scores a model, they give the ceiling of
each metric (the issue: next to every model figure, the oracle's), and :func:`gap_closed` turns
a model figure into the share of the baseline-to-ceiling gap it closes.

- ``entropy/next_item``: mean -log p_true(item) over the split's listens, where p_true is
  p(item | user, session phase, traffic type) of the simulator's mixture (truth/listens.parquet).
  No predictor can beat it in expectation: given that hidden state, listens are independent.
- ``AUC/<signal>``, ``logloss/<signal>``: :class:`argusrec.metrics.FeedbackMetrics` itself,
  fed the truth's probabilities as scores and the prepared dataset's labels, on the events the
  model's feedback head is scored on.

Which events: :func:`split_targets` picks the split's events exactly as
``argusrec.evaluate.evaluate_model`` does (loader.split_history for the history, every event of
the split a target except a user's first usable event, which has nothing before it, and users
with fewer than two usable events left out). Models fed positives only (SASRec) are scored on
other events; these ceilings do not cover them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import torch

from argusrec.errors import DataError
from argusrec.loader import split_history
from argusrec.metrics import FeedbackMetrics
from argusrec.oracle import TRUTH_DIR, Oracle, reaction_event_probabilities
from argusrec.sequences import SPLIT_CODES, PreparedData

# A reaction event's own signal is fixed by its type, which the model sees with the event (the
# Yambda reader: like = 1 on likes, 0 on unlikes; dislike likewise): the truth scores it exactly.
_REACTION_LABEL = {"like": ("like", 1.0), "unlike": ("like", 0.0),
                   "dislike": ("dislike", 1.0), "undislike": ("dislike", 0.0)}
_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before the logit: certain is 16 nats


def split_targets(data: PreparedData, split: str = "test") -> pl.DataFrame:
    """The events of ``split`` that ``evaluate_model`` scores, one row each, in storage order.

    Columns: user, item (original ids), timestamp, event_type (name), is_organic (the stored
    code: 1 organic, 2 recommendation, 0 unknown), occurrence (how many earlier targets of the
    user share its event type, timestamp and item: 0 but for exact repeats), one ``fb_<signal>``
    label column per feedback signal (NaN = absent).
    """
    if split not in SPLIT_CODES or split == "gap":
        raise DataError(f"unknown split '{split}'", fix="use train, val or test")
    code = SPLIT_CODES[split]
    signals = list(data.feedback_fields)
    parts = []
    for shard in data.shards:
        ev = shard.events
        split_of = np.asarray(ev["split"])
        picked, owners = [], []
        for j in range(len(shard)):
            start, stop = int(shard.offsets[j]), int(shard.offsets[j + 1])
            usable = start + np.flatnonzero(split_history(split_of[start:stop], code))
            if usable.size < 2:  # SequenceDataset's min_len
                continue
            targets = usable[1:][split_of[usable[1:]] == code]
            picked.append(targets)
            owners.append(np.full(targets.size, shard.users[j], dtype=np.int64))
        rows = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
        organic = ev.get("ctx_is_organic")
        parts.append(pl.DataFrame({
            "user_index": np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64),
            "item_index": np.asarray(ev["item"])[rows].astype(np.int64),
            "timestamp": np.asarray(ev["timestamp"])[rows].astype(np.int64),
            "event_code": np.asarray(ev["event_type"])[rows].astype(np.int64),
            "is_organic": (np.zeros(rows.size, dtype=np.int64) if organic is None
                           else np.asarray(organic)[rows].astype(np.int64)),
            "position": rows,
            **{f"fb_{s}": np.asarray(ev[f"fb_{s}"])[rows].astype(np.float64) for s in signals},
        }))
    frame = pl.concat(parts)
    users = data.users().select(pl.col("index").cast(pl.Int64).alias("user_index"), "user")
    items = data.items().select(pl.col("index").cast(pl.Int64).alias("item_index"), "item")
    types = pl.DataFrame({"event_code": np.arange(1, len(data.info.fields.event_types) + 1),
                          "event_type": data.info.fields.event_types})
    frame = (frame.join(users, on="user_index", how="left", maintain_order="left")
             .join(items, on="item_index", how="left", maintain_order="left")
             .join(types, on="event_code", how="left", maintain_order="left"))
    # exact repeats (same user, type, time, item) are told apart by their order: the log's
    return frame.with_columns(
        pl.int_range(pl.len()).over(["user", "event_type", "timestamp", "item"])
        .alias("occurrence")
    ).select("user", "item", "timestamp", "event_type", "is_organic", "occurrence",
             *[f"fb_{s}" for s in signals])


def _truth_of(targets: pl.DataFrame, oracle: Oracle, data: PreparedData) -> pl.DataFrame:
    """The truth row of every listen among ``targets``, in their order; a DataError unless
    each one has exactly the listen of the simulated log it came from."""
    listens = targets.filter(pl.col("event_type") == "listen")
    if len(listens) == 0:
        return listens
    lo, hi = int(listens["timestamp"].min()), int(listens["timestamp"].max())
    truth = pl.from_arrow(oracle.listens()).filter(
        pl.col("timestamp").is_between(lo, hi))  # whole groups of repeats: they share a time
    truth = truth.with_columns(
        pl.col("uid").cast(pl.Int64).alias("user"), pl.col("item_id").cast(pl.Int64).alias("item"),
        pl.col("timestamp").cast(pl.Int64),
        pl.int_range(pl.len()).over(["uid", "timestamp", "item_id"]).alias("occurrence"),
        pl.col("is_organic").cast(pl.Int64).alias("truth_organic"),
    ).drop("uid", "item_id", "is_organic")
    keys = ["user", "item", "timestamp", "occurrence"]
    try:
        keyed = listens.with_columns(pl.col("user").cast(pl.Int64, strict=True),
                                     pl.col("item").cast(pl.Int64, strict=True))
    except pl.exceptions.PolarsError:
        keyed = None
    joined = (None if keyed is None else
              keyed.join(truth, on=keys, how="left", maintain_order="left"))
    missing = len(listens) if joined is None else int(joined["logp_true"].is_null().sum())
    context = data.info.fields.context.get("is_organic")
    if missing == 0 and context is not None:  # codes from the vocabulary; 0 = unknown
        stored = joined["is_organic"].to_numpy()
        organic = context.values.index("organic") + 1
        wrong = (stored > 0) & ((stored == organic) != (joined["truth_organic"].to_numpy() == 1))
        missing = int(wrong.sum())
    if missing:
        raise DataError(
            f"{missing:,} of the {len(listens):,} listens scored have no matching listen in the "
            "ground truth (same uid, timestamp, item_id and is_organic)", path=oracle.listens_path,
            fix=f"pass the `argus simulate` output that {data.path} was prepared from")
    return joined


def oracle_ceilings(data: PreparedData, truth_dir: str | Path,
                    split: str = "test") -> dict[str, float]:
    """The truth's figure for each metric ``evaluate_model`` reports, on the same events.

    ``truth_dir``: the directory ``argus simulate`` wrote (or its ``truth/``). Keys:

    - ``entropy/next_item``: mean -log p_true over the split's *listens*; ``/organic`` and
      ``/recommendation``: over each traffic type. evaluate's ``entropy/next_item`` averages over
      every target event, reactions and revocations included (``targets/all`` counts them,
      ``targets/next_item`` the listens here): compare like with like where they differ.
    - ``entropy/next_item_policy``: mean -log p_policy over *recommendation* listens only, the
      logging policy's own figure (the simulator draws them from the policy, so it equals
      ``entropy/next_item/recommendation``); ``entropy/next_item_policy/organic``: the policy as
      a predictor of organic listens.
    - ``AUC/like``, ``logloss/like``, ``AUC/dislike``, ``logloss/dislike``,
      ``AUC/played_ratio``, ``logloss/played_ratio``: FeedbackMetrics over the events and labels
      the model is scored on. A listen's score is the chance of the label it carries: a
      like (dislike) *event* (oracle.reaction_event_probabilities: at most one per user and
      track), or E[played_ratio]; a reaction event's own label follows from its type, which the
      model sees too, so the truth scores it 1 (like, dislike) or 0 (unlike, undislike).

    Raises:
        DataError: the truth has no listens.parquet, or is not that of this dataset's log.
    """
    root = Path(truth_dir)
    oracle = Oracle.load(root.parent if root.name == TRUTH_DIR and not (root / TRUTH_DIR).is_dir()
                         else root)
    targets = split_targets(data, split)
    truth = _truth_of(targets, oracle, data)
    out: dict[str, float] = {"targets/all": float(len(targets)),
                             "targets/next_item": float(len(truth))}
    if len(truth):
        logp = truth["logp_true"].to_numpy().astype(np.float64)
        policy = truth["logp_policy"].to_numpy().astype(np.float64)
        organic = truth["truth_organic"].to_numpy() == 1
        out["entropy/next_item"] = float(-logp.mean())
        for name, mask in (("organic", organic), ("recommendation", ~organic)):
            out[f"entropy/next_item/{name}"] = _mean(-logp[mask])
        out["entropy/next_item_policy"] = _mean(-policy[~organic])
        out["entropy/next_item_policy/organic"] = _mean(-policy[organic])
    out.update(_feedback_ceilings(targets, truth, data))
    return out


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def _feedback_ceilings(targets: pl.DataFrame, truth: pl.DataFrame,
                       data: PreparedData) -> dict[str, float]:
    """FeedbackMetrics of the truth's probabilities against the targets' labels."""
    signals, kinds = list(data.feedback_fields), list(data.feedback_fields.values())
    if not signals:
        return {}
    labels = targets.select([f"fb_{s}" for s in signals]).to_numpy().astype(np.float64)
    scores = np.full_like(labels, np.nan)
    is_listen = (targets["event_type"] == "listen").to_numpy()
    if len(truth):
        p_like, p_dislike = reaction_event_probabilities(
            truth["p_like"].to_numpy(), truth["p_dislike"].to_numpy(),
            truth["like_open"].to_numpy(), truth["dislike_open"].to_numpy())
        per_listen = {"like": p_like, "dislike": p_dislike,
                      "played_ratio": truth["expected_played_ratio_pct"].to_numpy() / 100.0}
        for f, s in enumerate(signals):
            if s in per_listen:
                scores[is_listen, f] = per_listen[s]
    event_type = targets["event_type"].to_numpy()
    for kind, (signal, value) in _REACTION_LABEL.items():
        if signal in signals:
            scores[event_type == kind, signals.index(signal)] = value
    unscored = ~np.isnan(labels) & np.isnan(scores)
    if unscored.any():
        f = int(np.flatnonzero(unscored.any(axis=0))[0])
        raise DataError(
            f"{int(unscored[:, f].sum()):,} {signals[f]} labels on events the truth has no "
            f"figure for (event types {sorted(set(event_type[unscored[:, f]]))})",
            path=data.path, fix="ceilings cover the simulator's signals: played_ratio, like, "
                                "dislike on listens and reaction events")
    p = np.clip(np.nan_to_num(scores, nan=0.5), _EPS, 1.0 - _EPS)
    metrics = FeedbackMetrics()
    metrics.update(torch.from_numpy(np.log(p) - np.log1p(-p)), torch.from_numpy(labels),
                   signals, kinds)
    return metrics.compute()


def popularity_entropy(data: PreparedData, split: str = "test") -> float:
    """Cross-entropy of the training-period popularity (add-one smoothed over the catalogue)
    on the listens :func:`oracle_ceilings` scores: the baseline of ``entropy/next_item``."""
    targets = split_targets(data, split).filter(pl.col("event_type") == "listen")
    counts = data.item_counts().astype(np.float64)[1:] + 1.0
    logp = np.log(counts / counts.sum())
    items = data.items().select(pl.col("index").cast(pl.Int64), "item")
    index = targets.select("item").join(items, on="item", how="left",
                                        maintain_order="left")["index"].to_numpy()
    return _mean(-logp[index - 1])


def gap_closed(model: float, baseline: float, oracle: float, higher_is_better: bool) -> float:
    """The share of the baseline-to-oracle gap that a model figure closes:
    (model - baseline) / (oracle - baseline). 0 = no better than the baseline, 1 = the oracle;
    negative below the baseline, above 1 past the oracle (possible where a ceiling is scored on
    slightly other events). NaN when the oracle is not strictly better than the baseline in
    the direction ``higher_is_better`` says (AUC: True; entropy, log loss: False).
    """
    gap = oracle - baseline
    if not (gap > 0 if higher_is_better else gap < 0):
        return math.nan
    return (model - baseline) / gap
