"""Pretraining losses: next-item prediction (full / sampled softmax, logQ corrections), feedback.

Next-item prediction (NIP) scores a user vector u against item vectors v with
s = <u, v> / temperature (DESIGN.md, "The model" and "The losses"; ARGUS, arXiv 2507.15994). A full
softmax over the catalogue is exact but costs O(V) per target, so large catalogues use a sampled
softmax over in-batch and uniformly sampled negatives. Sampling popular items more often biases
the model against them; the standard fix subtracts log Q (Yi et al., "Sampling-Bias-Corrected
Neural Modeling for Large Corpus Item Recommendations", RecSys 2019), and the refined fix of
Khrylchenko et al., "Correcting the LogQ Correction: Revisiting Sampled Softmax for Large-Scale
Retrieval" (RecSys 2025, arXiv 2507.09331) notes that the positive is always in the denominator
(never Monte Carlo-sampled), so it takes no correction, the negatives' proposal is renormalised
without it, and each example is weighted by the model's probability of getting it wrong. Feedback
prediction (FP) is a masked multi-task loss. Every loss is a module handed to the trainer
(STYLE.md, principle 5); tests/test_losses.py holds each fast path against a plain reference.

Legend: T target positions in the batch (rows), D user/item vector width, N negatives per row
(in-batch T plus K uniform samples), K uniform samples, V catalogue size (item indices 1..V,
0 = padding), F feedback signals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ItemVectors = Callable[[Tensor], Tensor]
"""The item tower: item ids of any shape (...,) -> vectors (..., D)."""

CORRECTIONS = ("none", "logq", "corrected")
NEXT_ITEM_KINDS = ("full", "sampled", "logq", "corrected")
FEEDBACK_KINDS = ("binary", "ratio", "value")


def _upcast(x: Tensor) -> Tensor:
    """Half-precision scores (bf16 autocast) go to float32 before exp/log; float64 stays."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


@dataclass
class LossOutput:
    """What a loss returns: the scalar to backpropagate and floats to log."""

    loss: Tensor  # () mean over targets, after any per-example weights
    metrics: dict[str, float] = field(default_factory=dict)


class NextItemLoss(nn.Module):
    """Base class of next-item losses; subclasses implement :meth:`forward`.

    ``forward(user (T, D), target (T,) int64 in 1..V, item_vectors, temperature ()) -> LossOutput``
    where ``item_vectors`` maps ids of any shape (...,) to (..., D) and s = <u, v> / temperature.
    """

    def __init__(self, num_items: int) -> None:
        super().__init__()
        if num_items < 1:
            raise ValueError(f"num_items must be >= 1 (the catalogue size V), got {num_items}")
        self.num_items = int(num_items)

    def forward(self, user: Tensor, target: Tensor, item_vectors: ItemVectors,
                temperature: Tensor | float) -> LossOutput:
        raise NotImplementedError

    @staticmethod
    def _check(user: Tensor, target: Tensor) -> None:
        if user.dim() != 2 or target.dim() != 1 or user.shape[0] != target.shape[0]:
            raise ValueError(f"expected user (T, D) and target (T,), got user {tuple(user.shape)} "
                             f"and target {tuple(target.shape)}; select the target positions first")

    @staticmethod
    def _empty(user: Tensor) -> LossOutput:
        # No targets in this batch: a zero that still depends on the graph, so backward works.
        return LossOutput(loss=user.sum() * 0.0, metrics={"nip_loss": 0.0})


class _FusedSoftmaxCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``user @ items.T`` without materialising the (T, V) logits.

    Rows go in chunks of ``chunk``. Because the output is a mean, the upstream gradient is one
    scalar, so each chunk's gradient (softmax - one-hot) is turned into the gradients of
    ``user`` and ``items`` right away, in the forward pass, and backward only scales them.
    That is three matmuls and one exp per chunk, no recomputation, and no pass over a T x V
    matrix in memory (log_softmax, its backward, the gather, the fills), which dominated the
    full softmax on CPU.
    """

    @staticmethod
    def forward(ctx, user: Tensor, items: Tensor, target: Tensor, chunk: int) -> Tensor:
        acc = torch.promote_types(user.dtype, torch.float32)  # bf16 -> f32, f64 stays
        need = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        T = user.shape[0]
        grad_user = torch.empty_like(user, dtype=acc) if need else None
        grad_items = torch.zeros_like(items, dtype=acc) if need else None
        total = torch.zeros((), dtype=acc, device=user.device)
        for lo in range(0, T, chunk):
            u, t = user[lo:lo + chunk], target[lo:lo + chunk]
            logits = (u @ items.T).to(acc)  # (c, V)
            rows = torch.arange(logits.shape[0], device=logits.device)
            picked = logits[rows, t]
            top = logits.amax(dim=1, keepdim=True)
            p = logits.sub_(top).exp_()  # in place: the logits are not needed again
            norm = p.sum(dim=1, keepdim=True)
            total += (top.squeeze(1) + norm.log().squeeze(1) - picked).sum()
            if need:
                p /= norm  # softmax
                p[rows, t] -= 1.0  # d(loss_row)/d(logits)
                grad_user[lo:lo + chunk] = p @ items.to(acc)
                grad_items += p.T @ u.to(acc)
        if need:
            ctx.save_for_backward(grad_user / T, grad_items / T)
            ctx.dtypes = (user.dtype, items.dtype)
        return total / T  # float32 (or float64), whatever the inputs

    @staticmethod
    def backward(ctx, grad: Tensor):
        grad_user, grad_items = ctx.saved_tensors
        user_dtype, items_dtype = ctx.dtypes
        return ((grad * grad_user).to(user_dtype), (grad * grad_items).to(items_dtype),
                None, None)


def softmax_cross_entropy(user: Tensor, items: Tensor, target: Tensor,
                          chunk: int = 1024) -> Tensor:
    """() mean cross-entropy of ``user @ items.T`` (T, V) against ``target`` (0-based ids).

    A chunked, memory-lean equivalent of ``F.cross_entropy(user @ items.T, target)`` (tested
    against it, gradients included).
    """
    if user.shape[0] == 0:
        return user.sum() * 0.0
    return _FusedSoftmaxCrossEntropy.apply(user, items, target, chunk)


class _FusedSampledSoftmax(torch.autograd.Function):
    """Mean sampled-softmax loss over shared negatives without a (T, N) matrix in memory.

    Row i's corrected negative logits are z_ij = u_i . v_j - o_ij, -inf at accidental hits
    (v_j a negative's id equal to row i's target), with the correction o_ij = log(a_i c_j + b_i)
    ("corrected": the expected count of j among row i's negatives), o_j = ``col`` ("logq"), or 0.
    With lse_i = log sum_j e^{z_ij} and the positive's logit p_i, both losses have the same
    gradient shape, c_i = sigmoid(lse_i - p_i) = 1 - softmax_0:

    - "none"/"logq": loss_i = log(e^{p_i} + e^{lse_i}) - p_i; dloss/dlse = c_i, dloss/dp = -c_i;
    - "corrected": loss_i = w_i (lse_i + log n_i - p_i) with w_i = stopgrad(c_i) (RecSys'25); the
      same derivatives, since w is a constant.

    So, as in :class:`_FusedSoftmaxCrossEntropy`, each chunk of rows turns its softmax over the
    negatives into the gradients of ``user``, ``negatives`` and ``positive`` in the forward pass:
    three matmuls and a few in-cache element-wise passes per chunk, instead of some thirty passes
    over the (T, N) matrix (the unfused path was most of an ARGUS step on CPU).

    Returns (mean loss, c (T,)): c is not differentiable (the corrected loss reports its mean).
    """

    @staticmethod
    def forward(ctx, user, negatives, positive, target, neg_ids, a, b, col, log_n, corrected,
                chunk):
        acc = torch.promote_types(user.dtype, torch.float32)
        need = any(ctx.needs_input_grad[:3])
        T = user.shape[0]
        grad_user = torch.empty_like(user, dtype=acc) if need else None
        grad_neg = torch.zeros_like(negatives, dtype=acc) if need else None
        weight = torch.empty(T, dtype=acc, device=user.device)
        total = torch.zeros((), dtype=acc, device=user.device)
        neg = negatives.to(acc)
        counts_j = None if a is None else col.to(acc)  # corrected: col holds c_j
        for lo in range(0, T, chunk):
            hi = min(lo + chunk, T)
            u = user[lo:hi].to(acc)
            z = u @ neg.T  # (c, N)
            if corrected:
                z.sub_(torch.log(torch.addcmul(b[lo:hi, None].to(acc), a[lo:hi, None].to(acc),
                                               counts_j[None, :])))
            elif col is not None:
                z.sub_(col.to(acc)[None, :])
            z.masked_fill_(neg_ids[None, :] == target[lo:hi, None], float("-inf"))
            top = z.amax(dim=1, keepdim=True)
            empty = torch.isinf(top)  # every negative a hit: nothing to contrast with
            top = top.masked_fill(empty, 0.0)
            z.sub_(top).exp_()  # e^{z - top}; hits give 0
            norm = z.sum(dim=1, keepdim=True)
            lse = (top + norm.log()).squeeze(1)  # (c,), -inf for empty rows
            pos = positive[lo:hi].to(acc)
            c = torch.sigmoid(lse - pos).masked_fill(empty.squeeze(1), 0.0)
            weight[lo:hi] = c
            if corrected:
                row = c * (lse + log_n[lo:hi].to(acc) - pos)
            else:
                row = torch.nn.functional.softplus(lse - pos)
            total += row.masked_fill(empty.squeeze(1), 0.0).sum()
            if need:
                z.div_(norm.clamp(min=torch.finfo(acc).tiny)).mul_(c[:, None] / T)
                grad_user[lo:hi] = z @ neg
                grad_neg += z.T @ u
        if need:
            ctx.save_for_backward(grad_user, grad_neg, -weight / T)
            ctx.dtypes = (user.dtype, negatives.dtype, positive.dtype)
        ctx.mark_non_differentiable(weight)
        return total / T, weight

    @staticmethod
    def backward(ctx, grad, _grad_weight):
        grad_user, grad_neg, grad_pos = ctx.saved_tensors
        du, dn, dp = ctx.dtypes
        return ((grad * grad_user).to(du), (grad * grad_neg).to(dn), (grad * grad_pos).to(dp),
                None, None, None, None, None, None, None, None)


class FullSoftmaxLoss(NextItemLoss):
    """Cross-entropy over the whole catalogue: exact, O(T V D); the reference for the samplers.

    The temperature divides the user vectors (T, D), not the scores (T, V): the same scores at
    a fraction of the cost. ``chunk`` rows at a time go through the fused cross-entropy.
    """

    def __init__(self, num_items: int, *, chunk: int = 1024) -> None:
        super().__init__(num_items)
        self.chunk = chunk

    def forward(self, user: Tensor, target: Tensor, item_vectors: ItemVectors,
                temperature: Tensor | float) -> LossOutput:
        self._check(user, target)
        if target.numel() == 0:
            return self._empty(user)
        items = item_vectors(torch.arange(1, self.num_items + 1, device=target.device))  # (V, D)
        user = user / temperature
        if user.dtype != items.dtype:  # under autocast the towers may disagree
            user, items = user.float(), items.float()
        loss = softmax_cross_entropy(user, items, target - 1, self.chunk)
        return LossOutput(loss=loss, metrics={"nip_loss": loss.item()})


@dataclass
class SampledLogits:
    """The logits a sampled softmax is built from, for one batch (shapes in the field comments).

    ``negatives[i, j]`` is s_ij minus the log of the *expected number of times* item j appears
    among row i's negatives (0 for ``correction="none"``), and -inf at accidental hits, so
    ``logaddexp(score, logsumexp(negatives, 1))`` is the sampled estimate of the full log-partition
    log sum_{k=1..V} e^{s_ik} (for "logq" and "corrected").
    """

    score: Tensor           # (T,) raw positive score s_y
    positive: Tensor        # (T,) positive's softmax logit: s_y - log Q(y) for "logq", else s_y
    negatives: Tensor       # (T, N) corrected negative logits, -inf where id == the row's target
    hits: Tensor            # (T, N) bool accidental hits
    num_negatives: Tensor   # (T,) float, |N_i| = negatives that are not hits
    negative_ids: Tensor    # (N,) int64, shared by all rows


class SampledSoftmaxLoss(NextItemLoss):
    """Sampled softmax over in-batch negatives plus ``num_uniform`` uniform samples, shared by rows.

    Args:
        num_items: V, the catalogue size (item indices 1..V).
        item_counts: (V+1,) training positive counts per item index (index 0 unused), e.g.
            ``PreparedData.item_counts(positives=True)``; needed by "logq" and "corrected" with
            in-batch negatives. Add-one smoothed (c_j + 1) so that no item has proposal 0.
        in_batch: use the batch's T targets as negatives (a popularity-distributed sample).
        num_uniform: K, ids sampled uniformly (with replacement) from 1..V per forward.
        correction: "none" (plain sampled softmax), "logq" (Yi et al. 2019), or "corrected"
            (Khrylchenko et al. 2025); see :meth:`sampled_logits` for the formulas.
        generator: an optional ``torch.Generator`` for reproducible uniform samples.
    """

    def __init__(self, num_items: int, item_counts: Tensor | None = None, *, in_batch: bool = True,
                 num_uniform: int = 1024, correction: str = "none",
                 max_in_batch: int | None = None,
                 generator: torch.Generator | None = None, fused: bool = True,
                 chunk: int = 512) -> None:
        super().__init__(num_items)
        self.fused, self.chunk = fused, chunk
        if correction not in CORRECTIONS:
            raise ValueError(f"unknown correction {correction!r}; expected one of {CORRECTIONS}")
        if num_uniform < 0 or (num_uniform == 0 and not in_batch):
            raise ValueError(f"no negatives: in_batch={in_batch}, num_uniform={num_uniform}; "
                             "enable in_batch or set num_uniform >= 1")
        self.in_batch = bool(in_batch)
        self.num_uniform = int(num_uniform)
        self.max_in_batch = max_in_batch
        self.correction = correction
        self.generator = generator
        counts = None
        if item_counts is not None:
            counts = torch.as_tensor(item_counts, dtype=torch.float32).flatten()
            if counts.shape[0] != self.num_items + 1:
                raise ValueError(f"item_counts has {counts.shape[0]} entries, expected V+1 = "
                                 f"{self.num_items + 1} (index 0 is padding); pass "
                                 "PreparedData.item_counts(positives=True)")
            if bool((counts < 0).any()):
                raise ValueError("item_counts has negative entries; pass counts of positives")
            counts = counts + 1.0  # add-one smoothing: an item unseen in training keeps Q > 0
            counts[0] = 0.0        # padding is never a candidate
        elif correction != "none" and in_batch:
            raise ValueError(f"correction={correction!r} with in-batch negatives needs item_counts "
                             "(the in-batch proposal is each item's share of training positives); "
                             "pass PreparedData.item_counts(positives=True)")
        # Smoothed counts c_j + 1. Not persistent: they come from the data, not from training.
        self.register_buffer("item_counts", counts, persistent=False)

    def sample_uniform(self, device: torch.device | str) -> Tensor:
        """(K,) int64 item ids drawn uniformly from 1..V with replacement, on ``device``."""
        where = self.generator.device if self.generator is not None else device
        ids = torch.randint(1, self.num_items + 1, (self.num_uniform,), generator=self.generator,
                            device=where)
        return ids.to(device)

    def sampled_logits(self, user: Tensor, target: Tensor, item_vectors: ItemVectors,
                       temperature: Tensor | float, *, uniform_ids: Tensor | None = None
                       ) -> SampledLogits:
        """Score the positives and the shared negatives, mask accidental hits, apply the correction.

        Negatives are ``cat([target, uniform_ids])`` with in-batch on (else ``uniform_ids``);
        ``item_vectors`` is called once, on ``cat([target, uniform_ids])``. With p_j = c_j / C
        (smoothed counts, C = sum_j c_j):

        - "logq": every candidate k (positive included) is corrected by log E_k, its expected
          count among the negatives: E_k = T p_k (in-batch) + K / V (uniform).
        - "corrected": the positive is not corrected; row i's negatives are corrected by their
          expected count *given the positive y_i*: E_ij = n_b c_j / (C - c_y) + n_u / (V - 1), with
          n_b, n_u the row's in-batch and uniform negatives that are not hits.

        Args:
            uniform_ids: (K',) ids to use instead of sampling (tests, replays).
        """
        self._check(user, target)
        if uniform_ids is None:
            uniform_ids = self.sample_uniform(target.device)
        t, k = target.shape[0], uniform_ids.shape[0]
        ids = torch.cat([target, uniform_ids])                             # (T+K,)
        vectors = item_vectors(ids)                                        # (T+K, D)
        user = user / temperature  # scale (T, D) once instead of every (T, N) score
        score = _upcast((user * vectors[:t]).sum(-1))                      # (T,) row-wise dot
        if self.in_batch:
            # At most max_in_batch of the batch's positives serve as negatives: all T of them
            # make a (T, T + K) score matrix, quadratic in batch tokens (6K targets made the
            # loss 80% of a CPU step). A uniform subsample of positives is still drawn by
            # popularity, so its expected counts are m p_j: the corrections below use m.
            m = min(t, self.max_in_batch) if self.max_in_batch else t
            batch_ids, batch_vectors = target, vectors[:t]
            if m < t:
                where = self.generator.device if self.generator is not None else target.device
                pick = torch.randperm(t, device=where, generator=self.generator)[:m]
                pick = pick.to(target.device)
                batch_ids, batch_vectors = target[pick], batch_vectors[pick]
            neg_ids = torch.cat([batch_ids, uniform_ids])                  # (N,) = (m + K,)
            neg_vectors = torch.cat([batch_vectors, vectors[t:]])
        else:
            m, neg_ids, neg_vectors = 0, uniform_ids, vectors[t:]
        negatives = _upcast(user @ neg_vectors.T)                          # (T, N) one matmul
        hits = neg_ids[None, :] == target[:, None]                         # (T, N)
        num_negatives = (~hits).sum(1).float()                             # (T,)
        positive = score

        if self.correction == "logq":
            # Standard logQ (Yi et al. 2019): each candidate is divided by how often it is expected
            # among the negatives. With two sources the expected count is the *sum* over sources
            # (multiple importance sampling, balance heuristic): then sum_j e^{s_j} / E_j is an
            # unbiased estimate of the partition sum whichever source drew j. Correcting each draw
            # by its own source alone (T p_j or K / V) estimates it once per source, i.e. 2x with
            # both sources on; for a single source the two rules are the same.
            # The positive is corrected too, as DESIGN.md writes it (e^{s_y - log Q(y)}): in Yi et
            # al. it is just one of the in-batch candidates. This is the step the RecSys'25 paper
            # shows to be wrong -- the positive is in the denominator with probability 1 -- and
            # "corrected" below fixes it. With uniform negatives only every logit moves by the same
            # log(K / V), so "logq" then equals "none", as expected of a constant proposal.
            log_expected = self._log_expected_logq(neg_ids, m, k)          # (N,)
            negatives = negatives - log_expected
            positive = score - self._log_expected_logq(target, m, k)       # (T,)
        elif self.correction == "corrected":
            # RecSys'25: negatives are draws from the proposal with the positive removed,
            # Q'(j|y) = c_j / (C - c_y) for in-batch ones and 1 / (V - 1) for uniform ones. Given
            # the row's n_b + n_u non-hit negatives, item j is expected
            # E_ij = n_b Q'_b(j|y) + n_u Q'_u(j|y) times (one source: E = |N| Q'(j|y), the paper's).
            log_expected = self._log_expected_corrected(target, neg_ids, hits, m, k)  # (T, N)
            negatives = negatives - log_expected
        negatives = negatives.masked_fill(hits, float("-inf"))
        return SampledLogits(score=score, positive=positive, negatives=negatives, hits=hits,
                             num_negatives=num_negatives, negative_ids=neg_ids)

    def forward(self, user: Tensor, target: Tensor, item_vectors: ItemVectors,
                temperature: Tensor | float, *, uniform_ids: Tensor | None = None) -> LossOutput:
        """The sampled loss, mean over the T targets. ``uniform_ids`` (K',) overrides sampling.

        Metrics: ``nip_loss``; ``accidental_hits``, the masked (row, negative) pairs (with in-batch
        negatives each row's own slot is one); ``negatives_per_row``, the mean |N_i|; and for
        "corrected" ``weight_mean``, the mean of w = 1 - p.
        """
        self._check(user, target)
        if target.numel() == 0:
            return self._empty(user)
        if self.fused:
            return self._forward_fused(user, target, item_vectors, temperature, uniform_ids)
        out = self.sampled_logits(user, target, item_vectors, temperature, uniform_ids=uniform_ids)
        metrics = {"accidental_hits": float(out.hits.sum().item()),
                   "negatives_per_row": out.num_negatives.mean().item()}
        if self.correction == "corrected":
            # Khrylchenko et al. 2025: L = -w (s_y - log sum_j e^{s_j - log Q'(j|y)}), where
            # w = stopgrad(1 - p) and p = softmax([s_y, s_j - log Q'(j|y) - log|N|])_0 is the
            # model's probability of the positive, the partition sum over the other items estimated
            # by importance sampling. The gradient of the full softmax is
            # (1 - p_y) (grad s_y - E_{j ~ softmax, j != y} grad s_j); the bracket is what the
            # unweighted sampled term estimates, and w supplies the (1 - p_y) that the standard
            # logQ loses. s_j - log Q'(j|y) - log|N| = negatives (corrected by E_ij = |N| Q').
            empty = out.num_negatives == 0  # every negative was a hit: nothing to contrast with
            lse = torch.logsumexp(out.negatives.masked_fill(empty[:, None], 0.0), dim=1)  # (T,)
            weight = torch.sigmoid(lse - out.score).detach()              # (T,) 1 - p
            unweighted = lse + torch.log(out.num_negatives.clamp(min=1.0)) - out.score
            per_row = torch.where(empty, torch.zeros_like(unweighted), weight * unweighted)
            weight = torch.where(empty, torch.zeros_like(weight), weight)
            metrics["weight_mean"] = weight.mean().item()
        else:
            # Softmax over [positive, negatives] with the positive first (hits are -inf).
            logits = torch.cat([out.positive[:, None], out.negatives], dim=1)  # (T, 1+N)
            per_row = torch.logsumexp(logits, dim=1) - out.positive
        loss = per_row.mean()
        metrics["nip_loss"] = loss.item()
        return LossOutput(loss=loss, metrics=metrics)

    def _forward_fused(self, user: Tensor, target: Tensor, item_vectors: ItemVectors,
                       temperature: Tensor | float, uniform_ids: Tensor | None) -> LossOutput:
        """The same loss as the unfused path (same draws, same formulas), through
        :class:`_FusedSampledSoftmax`; per-row hit counts come from bincounts, not a (T, N)
        mask."""
        if uniform_ids is None:
            uniform_ids = self.sample_uniform(target.device)
        t, k = target.shape[0], uniform_ids.shape[0]
        vectors = item_vectors(torch.cat([target, uniform_ids]))          # (T+K, D)
        user = user / temperature
        score = _upcast((user * vectors[:t]).sum(-1))                      # (T,)
        size = self.num_items + 1
        zeros = torch.zeros(t, dtype=torch.long, device=target.device)
        if self.in_batch:
            m = min(t, self.max_in_batch) if self.max_in_batch else t
            batch_ids, batch_vectors = target, vectors[:t]
            if m < t:  # the same subsample as the unfused path draws
                where = self.generator.device if self.generator is not None else target.device
                pick = torch.randperm(t, device=where, generator=self.generator)[:m]
                pick = pick.to(target.device)
                batch_ids, batch_vectors = target[pick], batch_vectors[pick]
            neg_ids = torch.cat([batch_ids, uniform_ids])                  # (N,)
            neg_vectors = torch.cat([batch_vectors, vectors[t:]])
            hits_b = torch.bincount(batch_ids, minlength=size)[target]     # (T,)
        else:
            m, neg_ids, neg_vectors, hits_b = 0, uniform_ids, vectors[t:], zeros
        hits_u = torch.bincount(uniform_ids, minlength=size)[target] if k else zeros
        n_b, n_u = (m - hits_b).float(), (k - hits_u).float()              # (T,) non-hits
        n = n_b + n_u
        a = b = col = None
        positive = score
        if self.correction == "logq":
            col = self._log_expected_logq(neg_ids, m, k)                   # (N,) log E_j
            positive = score - self._log_expected_logq(target, m, k)
        elif self.correction == "corrected":
            counts = self.item_counts
            # E_ij = a_i c_j + b_i: a_i = n_b / (C - c_y), b_i = n_u / (V - 1)
            a = (n_b / (counts.sum() - counts[target]) if self.in_batch
                 else torch.zeros_like(n_b))
            b = n_u / max(self.num_items - 1, 1)
            col = counts[neg_ids]
        if user.dtype != neg_vectors.dtype:  # under autocast the towers may disagree
            user, neg_vectors = user.float(), neg_vectors.float()
        loss, weight = _FusedSampledSoftmax.apply(
            user, neg_vectors, positive, target, neg_ids, a, b, col,
            torch.log(n.clamp(min=1.0)), self.correction == "corrected", self.chunk)
        metrics = {"accidental_hits": float((hits_b + hits_u).sum().item()),
                   "negatives_per_row": n.mean().item(), "nip_loss": loss.item()}
        if self.correction == "corrected":
            metrics["weight_mean"] = weight.mean().item()
        return LossOutput(loss=loss, metrics=metrics)

    def _log_probs(self, ids: Tensor) -> Tensor:
        """log p_j = log(c_j / C) with smoothed counts, for ids of any shape."""
        counts = self.item_counts
        return torch.log(counts[ids]) - torch.log(counts.sum())

    def _log_expected_logq(self, ids: Tensor, t: int, k: int) -> Tensor:
        """log E_j = log(t p_j [t in-batch draws] + K / V [uniform]) for ids of any shape."""
        terms = []
        if self.in_batch:
            terms.append(self._log_probs(ids) + math.log(t))
        if k > 0:
            terms.append(torch.full(ids.shape, math.log(k / self.num_items), device=ids.device))
        return terms[0] if len(terms) == 1 else torch.logaddexp(terms[0], terms[1])

    def _log_expected_corrected(self, target: Tensor, neg_ids: Tensor, hits: Tensor,
                                t: int, k: int) -> Tensor:
        """(T, N) log E_ij = log(n_b c_j / (C - c_y) + n_u / (V - 1)) for row i with positive y."""
        terms = []
        if self.in_batch:
            n_b = (~hits[:, :t]).sum(1).float()                                 # (T,)
            counts = self.item_counts
            log_rest = torch.log(counts.sum() - counts[target])                # (T,) log(C - c_y)
            log_q_b = torch.log(counts[neg_ids])[None, :] - log_rest[:, None]   # (T, N) log Q'_b
            terms.append(torch.log(n_b)[:, None] + log_q_b)
        if k > 0:
            n_u = (~hits[:, hits.shape[1] - k:]).sum(1).float()                 # (T,)
            log_q_u = -math.log(max(self.num_items - 1, 1))                     # log Q'_u(j|y)
            log_u = torch.log(n_u)[:, None] + log_q_u                           # (T, 1)
            terms.append(log_u.expand(target.shape[0], neg_ids.shape[0]))
        return terms[0] if len(terms) == 1 else torch.logaddexp(terms[0], terms[1])


class FeedbackLoss(nn.Module):
    """Masked multi-signal feedback loss (DESIGN.md, "Feedback prediction").

    Args:
        kinds: signal name -> "binary" (BCE-with-logits on 0/1 labels), "ratio" (BCE-with-logits
            against the value clamped to [0, 1], a soft target, e.g. the listen fraction) or
            "value" (MSE of the raw prediction). The dict's order is the order of the F columns.
        weights: signal name -> weight in the total (default 1.0 for each).

    ``forward(logits (T, F), values (T, F))``: values are NaN where a label is absent. Each signal's
    loss is the mean over its present labels (0 when it has none in the batch); the total is the
    weighted sum. Metrics: ``fp_<name>`` per signal and ``fp_loss``.
    """

    def __init__(self, kinds: dict[str, str], weights: dict[str, float] | None = None) -> None:
        super().__init__()
        if not kinds:
            raise ValueError("FeedbackLoss needs at least one signal, e.g. {'like': 'binary'}")
        bad = {name: kind for name, kind in kinds.items() if kind not in FEEDBACK_KINDS}
        if bad:
            raise ValueError(f"unknown feedback kinds {bad}; expected one of {FEEDBACK_KINDS}")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(kinds))
        if unknown:
            raise ValueError(f"weights for unknown signals {unknown}; signals are {list(kinds)}")
        self.names = list(kinds)
        self.kinds = dict(kinds)
        self.register_buffer("is_value", torch.tensor([kinds[n] == "value" for n in self.names]),
                             persistent=False)
        weight_list = [float(weights.get(name, 1.0)) for name in self.names]
        self.register_buffer("weights", torch.tensor(weight_list), persistent=False)

    def forward(self, logits: Tensor, values: Tensor) -> LossOutput:
        if logits.shape != values.shape or logits.dim() != 2 or logits.shape[1] != len(self.names):
            raise ValueError(f"expected logits and values of shape (T, {len(self.names)}) for "
                             f"signals {self.names}, got {tuple(logits.shape)} and "
                             f"{tuple(values.shape)}")
        logits = _upcast(logits)
        present = ~torch.isnan(values)                                    # (T, F)
        # Absent labels become 0 so every term is finite; ``* present`` below drops them.
        labels = torch.where(present, values.to(logits.dtype), torch.zeros_like(logits))
        bce = F.binary_cross_entropy_with_logits(logits, labels.clamp(0.0, 1.0), reduction="none")
        mse = (logits - labels) ** 2
        per_label = torch.where(self.is_value, mse, bce) * present       # (T, F)
        count = present.sum(0)                                            # (F,)
        per_signal = per_label.sum(0) / count.clamp(min=1)                # (F,) 0 where no label
        loss = (self.weights * per_signal).sum()
        detached = per_signal.detach().tolist()
        metrics = {f"fp_{name}": value for name, value in zip(self.names, detached)}
        metrics["fp_loss"] = loss.item()
        return LossOutput(loss=loss, metrics=metrics)


def make_next_item_loss(kind: str, num_items: int, item_counts: Tensor | None = None,
                        **kwargs) -> NextItemLoss:
    """Build a next-item loss by name, so a config can say ``loss: corrected``.

    kind: "full" (:class:`FullSoftmaxLoss`), "sampled" (:class:`SampledSoftmaxLoss`, no
    correction), "logq" or "corrected" (:class:`SampledSoftmaxLoss` with that correction).
    ``kwargs`` go to :class:`SampledSoftmaxLoss` (in_batch, num_uniform, generator).
    """
    if kind == "full":
        if kwargs:
            raise ValueError(f"the full softmax takes no options, got {sorted(kwargs)}")
        return FullSoftmaxLoss(num_items)
    corrections = {"sampled": "none", "logq": "logq", "corrected": "corrected"}
    if kind not in corrections:
        raise ValueError(f"unknown next-item loss {kind!r}; expected one of {NEXT_ITEM_KINDS}")
    if "correction" in kwargs:
        raise ValueError(f"the kind {kind!r} already sets the correction; drop correction=")
    return SampledSoftmaxLoss(num_items, item_counts, correction=corrections[kind], **kwargs)


def pairwise_loss(score: Tensor, better: Tensor, worse: Tensor, weight: Tensor) -> Tensor:
    """Weighted logistic loss on score differences: sum w * log(1 + e^-(s_b - s_w)) / sum w."""
    if better.numel() == 0:
        return score.sum() * 0.0
    return (weight * F.softplus(score[worse] - score[better])).sum() / weight.sum()
