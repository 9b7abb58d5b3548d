"""Evaluation metrics: full-catalogue ranking quality of next-item scores, and feedback prediction.

This is the "Evaluation" part of DESIGN.md. :class:`RankingMetrics` scores one target per row
(next-item prediction, leave-one-out or temporal split): HR/NDCG/MRR@K over the whole catalogue,
with already-seen items optionally filtered out, plus Coverage@K. :class:`SetRankingMetrics`
scores a set of targets per row (the Yambda protocol: one row per user, every item of the test
period is relevant): Recall/NDCG/Coverage@K. Both consume score matrices batch by batch with torch
(CPU or GPU) and keep only what the final numbers need, never the score matrices.
:class:`FeedbackMetrics` scores the feedback head (AUC, log loss, RMSE per signal), on top of
:func:`binary_auc`. :func:`format_table` prints a result dict. Every fast path has a plain
loop-based reference in ``tests/test_metrics.py`` that it is tested against.

Shapes: T rows (events or users) in a batch, V items in the catalogue, item index 0 is padding so
score matrices are (T, V+1); F feedback signals.

Ties. A model that gives every item the same score must not look perfect, so ties are never
resolved in the target's favour. With one target, its rank is
``1 + #(higher) + floor(#(tied others) / 2)`` (the middle of its tie group, rounded towards the
top). With a target set, Recall and NDCG are their exact expected values when tied items are put in
a uniformly random order. Coverage uses the item ids that ``torch.topk`` returns.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "RankingMetrics",
    "SetRankingMetrics",
    "FeedbackMetrics",
    "binary_auc",
    "format_table",
]


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1:
        raise ValueError(f"cutoffs ks must be positive integers, got {ks!r}")
    return ks


def _candidates(scores: Tensor, num_items: int, exclude: Tensor | None, keep: Tensor) -> Tensor:
    """Which items may be ranked in each row: (T, V+1) bool.

    Padding (column 0) never; ``exclude`` items never, unless ``keep`` (the targets) says so.
    """
    if scores.dim() != 2 or scores.shape[1] != num_items + 1:
        raise ValueError(f"scores must be (T, num_items + 1) = (T, {num_items + 1}) with column 0 "
                         f"for padding, got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point, got {scores.dtype}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN; check the model output (or mask NaNs to -inf)")
    if exclude is None:
        cand = torch.ones_like(scores, dtype=torch.bool)
    else:
        if exclude.shape != scores.shape or exclude.dtype != torch.bool:
            raise ValueError(f"exclude must be a bool mask shaped like scores {tuple(scores.shape)}, "
                             f"got {exclude.dtype} {tuple(exclude.shape)}")
        cand = ~exclude.to(scores.device)
    cand = cand | keep
    cand[:, 0] = False
    return cand


def _coverage_update(seen: Tensor, ids: Tensor, valid: Tensor, ks: tuple[int, ...]) -> None:
    """Mark the items in each row's top-k as recommended, for every k; ``seen`` is (len(ks), V+1)."""
    for i, k in enumerate(ks):
        top = ids[:, :k][valid[:, :k]]
        seen[i, top] = True


class _CatalogueMetrics:
    """Shared set-up of the ranking accumulators: catalogue size V and the cutoffs K."""

    def __init__(self, num_items: int, ks: Sequence[int] = (10, 20, 50, 100)) -> None:
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1, got {num_items}")
        self.num_items = int(num_items)
        self.ks = _check_ks(ks)
        self.reset()

    def reset(self) -> None:
        raise NotImplementedError


class RankingMetrics(_CatalogueMetrics):
    """HR, NDCG, MRR and Coverage at several cutoffs, with one target item per row.

    Args:
        num_items: V, the number of real items; scores have V+1 columns (0 is padding).
        ks: cutoffs K.

    Example:
        >>> m = RankingMetrics(num_items=4, ks=(1, 2))
        >>> m.update(torch.tensor([[9., 0.1, 0.4, 0.3, 0.2]]), torch.tensor([2]))
        >>> m.compute()["HR@1"]
        1.0
    """

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._ranks: list[Tensor] = []
        self._seen: Tensor | None = None  # (len(ks), V+1) bool: items in some row's top-k

    @torch.no_grad()
    def update(self, scores: Tensor, target: Tensor, exclude: Tensor | None = None) -> None:
        """Add a batch of rows.

        Args:
            scores: (T, V+1) float; column 0 (padding) is never ranked.
            target: (T,) int64 item indices in 1..V.
            exclude: optional (T, V+1) bool, True for items to drop from that row's ranking
                (e.g. already seen); the row's target is never dropped.
        """
        target = target.to(scores.device).long()
        if target.shape != (scores.shape[0],):
            raise ValueError(f"target must be (T,) = ({scores.shape[0]},), got {tuple(target.shape)}")
        if target.numel() and (target.min() < 1 or target.max() > self.num_items):
            raise ValueError(f"target items must lie in 1..{self.num_items} (0 is padding)")
        rows = torch.arange(scores.shape[0], device=scores.device)
        keep = torch.zeros_like(scores, dtype=torch.bool)
        keep[rows, target] = True
        cand = _candidates(scores, self.num_items, exclude, keep)
        masked = scores.masked_fill(~cand, float("-inf"))  # (T, V+1)
        s_t = masked[rows, target].unsqueeze(1)  # (T, 1)
        higher = (masked > s_t).sum(1)  # non-candidates are -inf, never higher
        tied = ((masked == s_t) & cand).sum(1) - 1  # other candidates with the target's score
        self._ranks.append((1 + higher + tied // 2).cpu())

        k = min(self.ks[-1], self.num_items)
        _, ids = masked.topk(k, dim=1)  # (T, k)
        if self._seen is None:
            self._seen = torch.zeros(len(self.ks), self.num_items + 1, dtype=torch.bool,
                                     device=scores.device)
        _coverage_update(self._seen, ids, cand.gather(1, ids), self.ks)

    @property
    def ranks(self) -> Tensor:
        """(N,) int64: the target's rank in every row seen so far (1 = best)."""
        return torch.cat(self._ranks) if self._ranks else torch.zeros(0, dtype=torch.long)

    def compute(self) -> dict[str, float]:
        """``HR@k``, ``NDCG@k``, ``MRR@k``, ``Coverage@k`` for each k, ``MRR`` and ``count``.

        HR@k equals Recall@k with one target per row. Means over rows; NaN when no rows.
        """
        rank = self.ranks.double()
        n = rank.numel()
        out: dict[str, float] = {"count": float(n)}
        mean = (lambda x: float(x.mean())) if n else (lambda x: math.nan)
        for i, k in enumerate(self.ks):
            hit = rank <= k
            out[f"HR@{k}"] = mean(hit.double())
            out[f"NDCG@{k}"] = mean(torch.where(hit, 1.0 / torch.log2(rank + 1), 0.0))
            out[f"MRR@{k}"] = mean(torch.where(hit, 1.0 / rank, 0.0))
            seen = 0 if self._seen is None else int(self._seen[i, 1:].sum())
            out[f"Coverage@{k}"] = seen / self.num_items
        out["MRR"] = mean(1.0 / rank)
        return out


class SetRankingMetrics(_CatalogueMetrics):
    """Recall, NDCG and Coverage at several cutoffs, with a set of target items per row.

    Recall@k = |top-k ∩ targets| / min(|targets|, k); NDCG@k has binary relevance and an ideal
    DCG over min(|targets|, k) items. Tied scores are in random order and the metrics are their
    exact expectations over that order. Rows without targets are skipped.

    Args:
        num_items: V, the number of real items; scores have V+1 columns (0 is padding).
        ks: cutoffs K.
    """

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._recall = [0.0] * len(self.ks)
        self._ndcg = [0.0] * len(self.ks)
        self._count = 0
        self._seen: Tensor | None = None

    def _target_mask(self, targets: Tensor | Sequence[Tensor], scores: Tensor) -> Tensor:
        if isinstance(targets, Tensor) and targets.dtype == torch.bool:
            if targets.shape != scores.shape:
                raise ValueError(f"a target mask must be shaped like scores {tuple(scores.shape)}, "
                                 f"got {tuple(targets.shape)}")
            mask = targets.to(scores.device).clone()
        else:
            if len(targets) != scores.shape[0]:
                raise ValueError(f"need one target tensor per row: {scores.shape[0]} rows, "
                                 f"{len(targets)} target tensors")
            mask = torch.zeros_like(scores, dtype=torch.bool)
            ids = [torch.as_tensor(t).long().reshape(-1) for t in targets]
            rows = torch.cat([torch.full((len(t),), i, dtype=torch.long) for i, t in enumerate(ids)])
            cols = torch.cat(ids) if ids else torch.zeros(0, dtype=torch.long)
            if cols.numel() and (cols.min() < 0 or cols.max() > self.num_items):
                raise ValueError(f"target items must lie in 1..{self.num_items} (0 is padding, "
                                 "ignored)")
            mask[rows.to(scores.device), cols.to(scores.device)] = True
        mask[:, 0] = False
        return mask

    @torch.no_grad()
    def update(self, scores: Tensor, targets: Tensor | Sequence[Tensor],
               exclude: Tensor | None = None) -> None:
        """Add a batch of rows.

        Args:
            scores: (T, V+1) float; column 0 (padding) is never ranked.
            targets: the relevant items of each row: a list of T int tensors of item indices in
                1..V (0 is ignored as padding), or a (T, V+1) bool mask.
            exclude: optional (T, V+1) bool, True for items to drop from that row's ranking;
                targets are never dropped.
        """
        tmask = self._target_mask(targets, scores)  # (T, V+1)
        cand = _candidates(scores, self.num_items, exclude, tmask)
        n_targets = tmask.sum(1)
        keep = n_targets > 0
        scores, tmask, cand, n_targets = scores[keep], tmask[keep], cand[keep], n_targets[keep]
        T = scores.shape[0]
        if T == 0:
            return
        masked = scores.masked_fill(~cand, float("-inf"))
        K = min(self.ks[-1], self.num_items)
        vals, ids = masked.topk(K, dim=1)  # (T, K), sorted descending
        is_t = tmask.gather(1, ids)
        is_c = cand.gather(1, ids)

        # Equal values are contiguous runs in vals. Every member of a run lies in the top-K list,
        # except for the last run, which may go on beyond it: count that one over the full row.
        pos = torch.arange(K, device=scores.device).expand(T, K)
        new = torch.ones_like(is_t)
        new[:, 1:] = vals[:, 1:] != vals[:, :-1]
        group = new.long().cumsum(1) - 1  # (T, K) run index
        start = torch.where(new, pos, 0).cummax(1).values  # (T, K) first position of the run
        n_t = torch.zeros(T, K, device=scores.device, dtype=torch.long).scatter_add_(
            1, group, is_t.long()).gather(1, group)
        n_c = torch.zeros(T, K, device=scores.device, dtype=torch.long).scatter_add_(
            1, group, is_c.long()).gather(1, group)
        v_last = vals[:, -1:]
        at_last = (masked == v_last) & cand  # (T, V+1)
        is_last = vals == v_last
        n_t = torch.where(is_last, (at_last & tmask).sum(1, keepdim=True), n_t)
        n_c = torch.where(is_last, at_last.sum(1, keepdim=True), n_c)
        # A run's first n_c positions hold its candidates in random order, each position a target
        # with probability n_t / n_c; positions after them hold non-candidates (-inf padding).
        p = torch.where(pos - start < n_c, n_t.double() / n_c.clamp(min=1).double(), 0.0)

        discount = 1.0 / torch.log2(torch.arange(K, device=scores.device, dtype=torch.float64) + 2)
        ideal = discount.cumsum(0)  # (K,) ideal DCG with 1..K relevant items
        for i, k in enumerate(self.ks):
            kk = min(k, K)
            denom = n_targets.clamp(max=k)  # min(|T|, k) >= 1
            self._recall[i] += float((p[:, :kk].sum(1) / denom).sum())
            idcg = ideal[denom.clamp(max=K) - 1]
            self._ndcg[i] += float(((p[:, :kk] * discount[:kk]).sum(1) / idcg).sum())
        self._count += T
        if self._seen is None:
            self._seen = torch.zeros(len(self.ks), self.num_items + 1, dtype=torch.bool,
                                     device=scores.device)
        _coverage_update(self._seen, ids, is_c, self.ks)

    def compute(self) -> dict[str, float]:
        """``Recall@k``, ``NDCG@k``, ``Coverage@k`` for each k, and ``count`` (rows with targets)."""
        n = self._count
        out: dict[str, float] = {"count": float(n)}
        for i, k in enumerate(self.ks):
            out[f"Recall@{k}"] = self._recall[i] / n if n else math.nan
            out[f"NDCG@{k}"] = self._ndcg[i] / n if n else math.nan
            seen = 0 if self._seen is None else int(self._seen[i, 1:].sum())
            out[f"Coverage@{k}"] = seen / self.num_items
        return out


def binary_auc(scores: np.ndarray | Tensor, labels: np.ndarray | Tensor) -> float:
    """ROC AUC: the chance that a random positive scores above a random negative, ties counting 1/2.

    The Mann–Whitney statistic computed in O(n log n) by grouping equal scores.

    Args:
        scores: (n,) real scores (higher = more likely positive).
        labels: (n,) 0/1 or bool.

    Returns:
        The AUC, or NaN when only one class (or nothing) is present.
    """
    if isinstance(scores, Tensor):
        scores = scores.detach().cpu().double().numpy()
    if isinstance(labels, Tensor):
        labels = labels.detach().cpu().numpy()
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if y.dtype != bool:
        if not np.isin(y, (0, 1)).all():
            raise ValueError("labels must be 0/1 or bool; threshold soft labels first")
        y = y.astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    _, group = np.unique(s, return_inverse=True)  # group ids ascending in score
    n_groups = int(group.max()) + 1
    pos = np.bincount(group[y], minlength=n_groups).astype(np.int64)
    neg = np.bincount(group[~y], minlength=n_groups).astype(np.int64)
    neg_below = np.cumsum(neg) - neg
    wins = int((pos * neg_below).sum()) + 0.5 * int((pos * neg).sum())
    return wins / (n_pos * n_neg)


_KINDS = ("binary", "ratio", "value")


class FeedbackMetrics:
    """Per-signal quality of feedback predictions, accumulated over batches.

    For a ``binary`` signal: ``AUC/<name>`` and ``logloss/<name>`` (BCE of sigmoid(logit), nats).
    For a ``ratio`` signal (a fraction in [0, 1]): ``AUC/<name>`` with label ``value >= 0.5`` and
    ``logloss/<name>``, the BCE against the soft target (its minimum is the target's entropy, not 0).
    For a ``value`` signal: ``RMSE/<name>`` of the raw output. Absent labels (NaN) are skipped, and
    signals with no labels at all are left out of the result.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self.names: list[str] | None = None
        self.kinds: list[str] | None = None
        self._pred: list[list[Tensor]] = []
        self._label: list[list[Tensor]] = []

    @torch.no_grad()
    def update(self, logits: Tensor, values: Tensor, names: Sequence[str],
               kinds: Sequence[str]) -> None:
        """Add a batch.

        Args:
            logits: (T, F) head outputs (logits for binary/ratio signals, raw values otherwise).
            values: (T, F) labels, NaN where a signal is absent.
            names: F signal names; the same in every call.
            kinds: F kinds, each "binary", "ratio" or "value".
        """
        names, kinds = list(names), list(kinds)
        if logits.shape != values.shape or logits.dim() != 2 or logits.shape[1] != len(names):
            raise ValueError(f"logits and values must both be (T, F) with F = {len(names)} names, "
                             f"got {tuple(logits.shape)} and {tuple(values.shape)}")
        if len(kinds) != len(names) or any(k not in _KINDS for k in kinds):
            raise ValueError(f"need one kind per name, each one of {_KINDS}, got {kinds!r}")
        if self.names is None:
            self.names, self.kinds = names, kinds
            self._pred = [[] for _ in names]
            self._label = [[] for _ in names]
        elif (names, kinds) != (self.names, self.kinds):
            raise ValueError(f"signals changed between batches: {self.names}/{self.kinds} "
                             f"then {names}/{kinds}; use one FeedbackMetrics per signal set")
        logits = logits.detach().double().cpu()
        values = values.detach().double().cpu()
        for f in range(len(names)):
            has = ~torch.isnan(values[:, f])
            self._pred[f].append(logits[has, f])
            self._label[f].append(values[has, f])

    def compute(self) -> dict[str, float]:
        """``AUC/<name>``, ``logloss/<name>`` or ``RMSE/<name>`` per signal with labels."""
        out: dict[str, float] = {}
        for f, (name, kind) in enumerate(zip(self.names or [], self.kinds or [])):
            x = torch.cat(self._pred[f])
            y = torch.cat(self._label[f])
            if y.numel() == 0:
                continue
            if kind == "value":
                out[f"RMSE/{name}"] = float(((x - y) ** 2).mean().sqrt())
                continue
            out[f"AUC/{name}"] = binary_auc(x, (y >= 0.5) if kind == "ratio" else y)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(x, y)
            out[f"logloss/{name}"] = float(bce)
        return out


_ORDER = ("HR", "Recall", "NDCG", "MRR", "Coverage", "AUC", "logloss", "RMSE")


def _sort_key(key: str) -> tuple:
    m = re.fullmatch(r"(.*?)(?:@(\d+))?", key)
    name, k = m.group(1), int(m.group(2)) if m.group(2) else -1
    head, _, rest = name.partition("/")
    rank = _ORDER.index(head) if head in _ORDER else len(_ORDER)
    return (key == "count", rank, head, rest, k)


def format_table(results: dict[str, float], title: str | None = None) -> str:
    """A fixed-width text table of ``metric  value`` lines, 4 decimals, ``count`` as an integer.

    Rows are grouped by metric name (HR, Recall, NDCG, MRR, Coverage, AUC, logloss, RMSE, then
    the rest alphabetically), cutoffs in numeric order within a group, ``count`` last.
    """
    keys = sorted(results, key=_sort_key)
    width = max([len(k) for k in keys] + [len("metric")])
    lines = [] if title is None else [title]
    lines += [f"{'metric':<{width}}  {'value':>10}", f"{'-' * width}  {'-' * 10}"]
    for key in keys:
        v = results[key]
        text = f"{int(v):d}" if key == "count" and v == v and float(v).is_integer() else f"{v:.4f}"
        lines.append(f"{key:<{width}}  {text:>10}")
    return "\n".join(lines)


def pair_accuracy(score: np.ndarray, better: np.ndarray, worse: np.ndarray,
                  weight: np.ndarray) -> dict[str, float]:
    """Share of pairs ordered correctly (ties count half), unweighted and weighted."""
    if len(better) == 0:
        return {"PairAccuracy": float("nan"), "PairAccuracy/weighted": float("nan"), "pairs": 0}
    s_b, s_w = np.asarray(score)[better], np.asarray(score)[worse]
    correct = (s_b > s_w) + 0.5 * (s_b == s_w)
    return {"PairAccuracy": float(correct.mean()),
            "PairAccuracy/weighted": float((correct * weight).sum() / weight.sum()),
            "pairs": int(len(better))}
