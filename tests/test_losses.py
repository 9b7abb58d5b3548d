"""Losses against plainly written references, and the statistics the logQ corrections promise.

The references loop over rows and candidates and sum exp/log terms written straight from the
formulas in argusrec.losses (and DESIGN.md, "The losses"); they share no code with the fast paths.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from argusrec.losses import (
    FeedbackLoss,
    FullSoftmaxLoss,
    LossOutput,
    SampledSoftmaxLoss,
    make_next_item_loss,
)

DT = torch.float64


def _world(num_items: int, dim: int, seed: int, zipf: float = 1.0, scale: float = 1.0):
    """Item vectors (V+1, D) (row 0 = padding), Zipf item probabilities p (V,), integer counts."""
    g = torch.Generator().manual_seed(seed)
    items = torch.randn(num_items + 1, dim, generator=g, dtype=DT) * scale / dim ** 0.25
    p = torch.arange(1, num_items + 1, dtype=DT) ** -zipf
    p = p / p.sum()
    counts = torch.zeros(num_items + 1, dtype=torch.int64)
    counts[1:] = (p * 10_000).floor().long()  # the tail gets zeros: exercises the smoothing
    return items, p, counts, g


def _grad(loss_fn, user, target, items, temperature, **kwargs):
    u = user.clone().requires_grad_(True)
    out = loss_fn(u, target, lambda ids: items[ids], temperature, **kwargs)
    out.loss.backward()
    return u.grad, out


# ----------------------------------------------------------------------------- references


def ref_full(user, target, items, temperature):
    """Mean over rows of log sum_k e^{s_k} - s_y, one row at a time."""
    num_items = items.shape[0] - 1
    losses = []
    for i in range(user.shape[0]):
        s = [torch.dot(user[i], items[k]) / temperature for k in range(1, num_items + 1)]
        z = sum(torch.exp(x) for x in s)
        losses.append(torch.log(z) - s[int(target[i]) - 1])
    return sum(losses) / len(losses)


def ref_sampled(user, target, items, temperature, uniform_ids, *, in_batch, counts, correction):
    """Returns (loss, weights): the sampled softmax written from its formulas, row by row.

    counts: raw (V+1,) counts; smoothed here as c_j + 1 over items 1..V. For "corrected" the
    weights w_i are plain floats, so autograd through the result is w_i * grad(unweighted_i).
    """
    num_items = items.shape[0] - 1
    t, k = len(target), len(uniform_ids)
    batch = [int(j) for j in target] if in_batch else []
    uniform = [int(j) for j in uniform_ids]
    c = {j: float(counts[j]) + 1.0 for j in range(1, num_items + 1)} if counts is not None else None
    total = sum(c.values()) if c is not None else None
    losses, weights = [], []
    for i in range(t):
        y = int(target[i])

        def s(j):
            return torch.dot(user[i], items[j]) / temperature

        if correction == "none":
            terms = [torch.exp(s(y))] + [torch.exp(s(j)) for j in batch + uniform if j != y]
            losses.append(-torch.log(terms[0] / sum(terms)))
        elif correction == "logq":
            def expected(j):  # expected count of j among the negatives, both sources
                e = 0.0
                if in_batch:
                    e += t * c[j] / total
                if k:
                    e += k / num_items
                return e
            terms = [torch.exp(s(y) - math.log(expected(y)))]
            terms += [torch.exp(s(j) - math.log(expected(j))) for j in batch + uniform if j != y]
            losses.append(-torch.log(terms[0] / sum(terms)))
        else:  # corrected
            n_b = sum(1 for j in batch if j != y)
            n_u = sum(1 for j in uniform if j != y)
            n = n_b + n_u
            if n == 0:
                losses.append(torch.zeros((), dtype=DT))
                weights.append(0.0)
                continue

            def q_prime(j):  # the mixture proposal of one non-hit negative, positive removed
                e = 0.0
                if in_batch:
                    e += n_b * c[j] / (total - c[y])
                if k:
                    e += n_u / (num_items - 1)
                return e / n
            negs = [j for j in batch + uniform if j != y]
            denominator = sum(torch.exp(s(j) - math.log(q_prime(j))) for j in negs)
            unweighted = -(s(y) - torch.log(denominator))
            p = torch.exp(s(y)) / (torch.exp(s(y)) + sum(
                torch.exp(s(j) - math.log(q_prime(j)) - math.log(n)) for j in negs))
            w = 1.0 - float(p.detach())
            weights.append(w)
            losses.append(w * unweighted)
    return sum(losses) / t, weights


# ----------------------------------------------------------------------------- exactness


def test_full_softmax_matches_reference():
    items, p, _, g = _world(30, 8, seed=0)
    user = torch.randn(10, 8, generator=g, dtype=DT)
    target = torch.multinomial(p, 10, replacement=True, generator=g) + 1
    temperature = torch.tensor(0.7, dtype=DT, requires_grad=True)
    calls = []

    def item_vectors(ids):
        calls.append(ids.shape)
        return items[ids]

    out = FullSoftmaxLoss(30)(user, target, item_vectors, temperature)
    assert isinstance(out, LossOutput)
    assert calls == [torch.Size([30])]
    ref = ref_full(user, target, items, temperature.detach())
    torch.testing.assert_close(out.loss, ref)
    assert out.metrics["nip_loss"] == pytest.approx(float(ref))
    out.loss.backward()
    assert temperature.grad is not None and torch.isfinite(temperature.grad)


def _sampled_case(seed=1):
    num_items, t = 30, 12
    items, p, counts, g = _world(num_items, 8, seed=seed)
    user = torch.randn(t, 8, generator=g, dtype=DT) / 8 ** 0.25
    target = torch.multinomial(p, t, replacement=True, generator=g) + 1  # popular ids repeat
    uniform = torch.randint(1, num_items + 1, (15,), generator=g)
    uniform = torch.cat([uniform, target[:3], target[:1]])  # accidental hits, one twice
    return num_items, items, counts, user, target, uniform


@pytest.mark.parametrize("correction", ["none", "logq", "corrected"])
@pytest.mark.parametrize("in_batch,use_uniform", [(True, True), (True, False), (False, True)])
def test_sampled_matches_reference(correction, in_batch, use_uniform):
    num_items, items, counts, user, target, uniform = _sampled_case()
    if not use_uniform:
        uniform = uniform[:0]
    temperature = torch.tensor(0.8, dtype=DT)
    loss_fn = SampledSoftmaxLoss(num_items, counts, in_batch=in_batch, num_uniform=len(uniform),
                                 correction=correction)
    grad, out = _grad(loss_fn, user, target, items, temperature, uniform_ids=uniform)
    u = user.clone().requires_grad_(True)
    ref, weights = ref_sampled(u, target, items, temperature, uniform, in_batch=in_batch,
                               counts=counts, correction=correction)
    ref.backward()
    torch.testing.assert_close(out.loss, ref.detach(), rtol=1e-5, atol=1e-6)
    # For "corrected" the reference weights are constants, so this checks that the gradient is
    # w * grad(unweighted), i.e. that the weight is stop-gradient.
    torch.testing.assert_close(grad, u.grad, rtol=1e-5, atol=1e-7)
    negs = (list(target) if in_batch else []) + list(uniform)
    hits = sum(int(j == y) for y in target for j in negs)
    assert hits > 0 and out.metrics["accidental_hits"] == hits
    if correction == "corrected":
        assert out.metrics["weight_mean"] == pytest.approx(sum(weights) / len(weights), rel=1e-5)


def test_corrected_weight_is_stop_gradient():
    """Differentiating through w would give a different gradient: the detach is doing something."""
    num_items, items, counts, user, target, uniform = _sampled_case(seed=2)
    loss_fn = SampledSoftmaxLoss(num_items, counts, num_uniform=len(uniform),
                                 correction="corrected")
    temperature = torch.tensor(1.0, dtype=DT)
    grad, _ = _grad(loss_fn, user, target, items, temperature, uniform_ids=uniform)
    u = user.clone().requires_grad_(True)
    out = loss_fn.sampled_logits(u, target, lambda ids: items[ids], temperature,
                                 uniform_ids=uniform)
    lse = torch.logsumexp(out.negatives, 1)
    w = torch.sigmoid(lse - out.score)  # not detached
    (w * (lse + torch.log(out.num_negatives) - out.score)).mean().backward()
    assert not torch.allclose(grad, u.grad, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("correction", ["none", "corrected"])
def test_accidental_hit_changes_nothing(correction):
    """Negatives equal to the row's target are masked: adding them equals leaving them out."""
    items, _, counts, g = _world(40, 8, seed=3)
    user = torch.randn(6, 8, generator=g, dtype=DT)
    target = torch.full((6,), 5)
    base = torch.tensor([1, 2, 3, 7, 9, 11, 20, 33])
    with_hits = torch.tensor([5, 1, 2, 3, 5, 7, 9, 11, 20, 5, 33])
    temperature = torch.tensor(1.0, dtype=DT)

    def run(in_batch, uniform):
        loss_fn = SampledSoftmaxLoss(40, counts, in_batch=in_batch, num_uniform=len(uniform),
                                     correction=correction)
        return _grad(loss_fn, user, target, items, temperature, uniform_ids=uniform)

    grad0, out0 = run(False, base)
    for in_batch, uniform, hits in [(False, with_hits, 6 * 3), (True, base, 6 * 6),
                                    (True, with_hits, 6 * 9)]:
        grad1, out1 = run(in_batch, uniform)  # in-batch: every batch entry is 5, all hits
        torch.testing.assert_close(out1.loss, out0.loss)
        torch.testing.assert_close(grad1, grad0)
        assert out1.metrics["accidental_hits"] == hits
        assert out1.metrics["negatives_per_row"] == len(base)


def test_hits_are_minus_inf_in_logits():
    num_items, items, counts, user, target, uniform = _sampled_case()
    for correction in ["none", "logq", "corrected"]:
        loss_fn = SampledSoftmaxLoss(num_items, counts, num_uniform=len(uniform),
                                     correction=correction)
        out = loss_fn.sampled_logits(user, target, lambda ids: items[ids], 1.0, uniform_ids=uniform)
        assert out.negatives.shape == (len(target), len(target) + len(uniform))
        assert torch.equal(out.hits, out.negative_ids[None, :] == target[:, None])
        assert torch.isneginf(out.negatives[out.hits]).all()
        assert torch.isfinite(out.negatives[~out.hits]).all()


@pytest.mark.parametrize("correction", ["none", "logq", "corrected"])
def test_row_with_only_hits_is_finite(correction):
    items, _, counts, g = _world(20, 4, seed=4)
    user = torch.randn(3, 4, generator=g, dtype=DT)
    target = torch.tensor([7, 7, 7])  # in-batch only: every negative is a hit
    loss_fn = SampledSoftmaxLoss(20, counts, in_batch=True, num_uniform=0, correction=correction)
    grad, out = _grad(loss_fn, user, target, items, torch.tensor(1.0, dtype=DT))
    assert out.loss.item() == 0.0
    assert torch.isfinite(grad).all() and (grad == 0).all()


def test_sampled_single_item_tower_call_and_reproducible_sampling():
    items, p, counts, g = _world(50, 8, seed=5)
    user = torch.randn(16, 8, generator=g, dtype=DT)
    target = torch.multinomial(p, 16, replacement=True, generator=g) + 1
    calls = []

    def item_vectors(ids):
        calls.append(tuple(ids.shape))
        return items[ids]

    losses = []
    for _ in range(2):
        loss_fn = make_next_item_loss("corrected", 50, counts, num_uniform=32,
                                      generator=torch.Generator().manual_seed(7))
        losses.append(loss_fn(user, target, item_vectors, torch.tensor(1.0, dtype=DT)).loss)
    assert calls == [(16 + 32,), (16 + 32,)]
    torch.testing.assert_close(losses[0], losses[1])
    ids = loss_fn.sample_uniform("cpu")
    assert ids.shape == (32,) and ids.min() >= 1 and ids.max() <= 50


def test_half_precision_scores_are_upcast():
    items, p, counts, g = _world(50, 8, seed=6)
    user = torch.randn(16, 8, generator=g).bfloat16()
    target = torch.multinomial(p, 16, replacement=True, generator=g) + 1
    items16 = items.bfloat16()
    for loss_fn in [FullSoftmaxLoss(50), SampledSoftmaxLoss(50, counts, num_uniform=20,
                                                            correction="corrected")]:
        out = loss_fn(user, target, lambda ids: items16[ids], torch.tensor(1.0))
        assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_empty_batch_gives_zero():
    items, _, counts, _ = _world(10, 4, seed=0)
    user = torch.zeros(0, 4, dtype=DT, requires_grad=True)
    for loss_fn in [FullSoftmaxLoss(10), SampledSoftmaxLoss(10, counts, correction="corrected")]:
        out = loss_fn(user, torch.zeros(0, dtype=torch.int64), lambda ids: items[ids], 1.0)
        assert out.loss.item() == 0.0
        out.loss.backward()


# ----------------------------------------------------------------------------- statistics


def _log_partition_error(correction, num_uniform, seeds=6):
    """Mean |sampled estimate of log sum_k e^{s_k} - exact| over rows and draws, uniform only."""
    items, p, counts, g = _world(200, 16, seed=10)
    user = torch.randn(64, 16, generator=g, dtype=DT) / 16 ** 0.25
    target = torch.multinomial(p, 64, replacement=True, generator=g) + 1
    exact = torch.logsumexp(user @ items[1:].T, dim=1)
    errors = []
    for seed in range(seeds):
        loss_fn = SampledSoftmaxLoss(200, counts, in_batch=False, num_uniform=num_uniform,
                                     correction=correction,
                                     generator=torch.Generator().manual_seed(seed))
        out = loss_fn.sampled_logits(user, target, lambda ids: items[ids], 1.0)
        estimate = torch.logaddexp(out.score, torch.logsumexp(out.negatives, dim=1))
        errors.append((estimate - exact).abs().mean().item())
    return sum(errors) / len(errors)


@pytest.mark.parametrize("correction", ["logq", "corrected"])
def test_uniform_log_partition_converges(correction):
    coarse, fine = _log_partition_error(correction, 20), _log_partition_error(correction, 2000)
    assert fine < 0.25 * coarse
    assert fine < 0.04


def test_uncorrected_log_partition_does_not_converge():
    # Without a correction the sum over K samples is about K / V times the partition sum.
    assert _log_partition_error("none", 2000) > 0.8 * math.log(2000 / 200)


def _gradient_error(correction, num_uniform, user, target, items, counts, temperature, seeds=8):
    """Mean relative error of the sampled gradient w.r.t. user vectors vs the full softmax's."""
    full, _ = _grad(FullSoftmaxLoss(items.shape[0] - 1), user, target, items, temperature)
    errors = []
    for seed in range(seeds):
        loss_fn = SampledSoftmaxLoss(items.shape[0] - 1, counts, in_batch=True,
                                     num_uniform=num_uniform, correction=correction,
                                     generator=torch.Generator().manual_seed(seed))
        grad, _ = _grad(loss_fn, user, target, items, temperature)
        errors.append(((grad - full).norm() / full.norm()).item())
    return sum(errors) / len(errors)


@pytest.mark.parametrize("correction", ["logq", "corrected"])
def test_mixed_sampling_gradient_converges_to_full_softmax(correction):
    """In-batch (Zipf) + uniform negatives: more uniform samples -> the full softmax gradient."""
    items, p, counts, g = _world(200, 16, seed=11)
    user = torch.randn(64, 16, generator=g, dtype=DT) / 16 ** 0.25
    target = torch.multinomial(p, 64, replacement=True, generator=g) + 1
    temperature = torch.tensor(1.0, dtype=DT)
    coarse = _gradient_error(correction, 20, user, target, items, counts, temperature)
    fine = _gradient_error(correction, 2000, user, target, items, counts, temperature)
    assert fine < 0.4 * coarse
    assert fine < 0.2


def test_corrected_removes_the_bias_logq_keeps_when_the_positive_is_likely():
    """The RecSys'25 claim: with a likely positive, logQ's gradient misses the (1 - p_y) factor.

    Users sit near their targets, so p_y is ~0.4; with 2000 uniform samples the corrected
    gradient is close to the full one and its weights match 1 - p_y, while logQ stays off.
    """
    items, p, counts, g = _world(200, 16, seed=12)
    target = torch.multinomial(p, 64, replacement=True, generator=g) + 1
    user = items[target] + 0.5 * torch.randn(64, 16, generator=g, dtype=DT) / 16 ** 0.25
    temperature = torch.tensor(0.5, dtype=DT)
    p_y = torch.softmax(user @ items[1:].T / temperature, 1)[torch.arange(64), target - 1]
    assert 0.2 < p_y.mean() < 0.8
    corrected = _gradient_error("corrected", 2000, user, target, items, counts, temperature)
    logq = _gradient_error("logq", 2000, user, target, items, counts, temperature)
    assert corrected < 0.2
    assert logq > 0.4
    loss_fn = SampledSoftmaxLoss(200, counts, num_uniform=2000, correction="corrected",
                                 generator=torch.Generator().manual_seed(0))
    _, out = _grad(loss_fn, user, target, items, temperature)
    assert out.metrics["weight_mean"] == pytest.approx((1 - p_y).mean().item(), abs=0.02)


def test_in_batch_popularity_bias():
    """In-batch negatives are popularity-sampled: uncorrected softmax is biased, logQ fixes most.

    A few probe rows ride along in batches of Zipf-distributed targets; their gradient averaged
    over many batches is compared with the full softmax gradient of the same rows.
    """
    items, p, counts, g = _world(200, 16, seed=13)
    probes, t, draws = 8, 128, 200
    probe_user = torch.randn(probes, 16, generator=g, dtype=DT) / 16 ** 0.25
    probe_target = torch.tensor([1, 3, 10, 30, 60, 100, 150, 199])
    temperature = torch.tensor(1.0, dtype=DT)
    full, _ = _grad(FullSoftmaxLoss(200), probe_user, probe_target, items, temperature)
    full = full * probes  # per-row gradient
    batches = []
    for _ in range(draws):
        batches.append((torch.randn(t - probes, 16, generator=g, dtype=DT) / 16 ** 0.25,
                        torch.multinomial(p, t - probes, replacement=True, generator=g) + 1))
    bias = {}
    for correction in ["none", "logq", "corrected"]:
        loss_fn = SampledSoftmaxLoss(200, counts, in_batch=True, num_uniform=0,
                                     correction=correction)
        mean = torch.zeros_like(full)
        for other_user, other_target in batches:
            grad, _ = _grad(loss_fn, torch.cat([probe_user, other_user]),
                            torch.cat([probe_target, other_target]), items, temperature)
            mean += grad[:probes] * t / draws
        bias[correction] = ((mean - full).norm() / full.norm()).item()
    assert bias["none"] > 0.2
    assert bias["logq"] < bias["none"] / 3
    assert bias["corrected"] < bias["none"] / 3


# ----------------------------------------------------------------------------- feedback


def _bce(logit, label):
    s = 1 / (1 + math.exp(-logit))
    return -(label * math.log(s) + (1 - label) * math.log(1 - s))


def test_feedback_loss_matches_reference_with_masks_and_weights():
    g = torch.Generator().manual_seed(0)
    kinds = {"like": "binary", "played": "ratio", "dwell": "value"}
    weights = {"like": 2.0, "dwell": 0.5}
    logits = torch.randn(20, 3, generator=g, dtype=DT)
    values = torch.stack([torch.randint(0, 2, (20,), generator=g).to(DT),
                          torch.rand(20, generator=g, dtype=DT) * 1.4 - 0.2,  # outside [0, 1] too
                          torch.randn(20, generator=g, dtype=DT) * 3], dim=1)
    values[torch.rand(20, 3, generator=g) < 0.4] = float("nan")
    out = FeedbackLoss(kinds, weights)(logits, values)
    expected = {}
    for f, (name, kind) in enumerate(kinds.items()):
        terms = []
        for i in range(20):
            v = float(values[i, f])
            if math.isnan(v):
                continue
            x = float(logits[i, f])
            terms.append((x - v) ** 2 if kind == "value" else _bce(x, min(max(v, 0.0), 1.0)))
        expected[name] = sum(terms) / len(terms)
        assert out.metrics[f"fp_{name}"] == pytest.approx(expected[name], rel=1e-9)
    total = 2.0 * expected["like"] + expected["played"] + 0.5 * expected["dwell"]
    assert out.loss.item() == pytest.approx(total, rel=1e-9)
    assert out.metrics["fp_loss"] == pytest.approx(total, rel=1e-9)


def test_feedback_absent_labels_get_no_gradient_and_all_absent_gives_zero():
    logits = torch.randn(6, 2, dtype=DT, requires_grad=True)
    values = torch.tensor([[1.0, float("nan")], [float("nan"), float("nan")], [0.0, float("nan")],
                           [float("nan"), float("nan")], [1.0, float("nan")], [0.0, float("nan")]],
                          dtype=DT)
    out = FeedbackLoss({"like": "binary", "skip": "binary"})(logits, values)
    assert out.metrics["fp_skip"] == 0.0
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert torch.isfinite(logits.grad).all()
    assert (logits.grad[:, 1] == 0).all()
    assert (logits.grad[[1, 3], 0] == 0).all() and (logits.grad[[0, 2, 4, 5], 0] != 0).all()


def test_feedback_ratio_is_a_soft_target():
    logits = torch.tensor([[0.3], [-1.2], [2.0]], dtype=DT)
    values = torch.tensor([[0.25], [1.7], [-0.5]], dtype=DT)
    out = FeedbackLoss({"played": "ratio"})(logits, values)
    expected = (_bce(0.3, 0.25) + _bce(-1.2, 1.0) + _bce(2.0, 0.0)) / 3
    assert out.loss.item() == pytest.approx(expected, rel=1e-12)
    # The soft target's optimum is the ratio itself: zero gradient at logit = log(r / (1 - r)).
    at_optimum = torch.tensor([[math.log(0.25 / 0.75)]], dtype=DT, requires_grad=True)
    FeedbackLoss({"played": "ratio"})(at_optimum, torch.tensor([[0.25]], dtype=DT)).loss.backward()
    assert abs(at_optimum.grad.item()) < 1e-12


def test_feedback_rejects_bad_configuration_and_shapes():
    with pytest.raises(ValueError, match="binary"):
        FeedbackLoss({"like": "bernoulli"})
    with pytest.raises(ValueError, match="unknown signals"):
        FeedbackLoss({"like": "binary"}, {"skip": 1.0})
    with pytest.raises(ValueError, match="at least one"):
        FeedbackLoss({})
    with pytest.raises(ValueError, match=r"\(T, 2\)"):
        FeedbackLoss({"like": "binary", "skip": "binary"})(torch.zeros(4, 3), torch.zeros(4, 3))


# ----------------------------------------------------------------------------- construction


def test_make_next_item_loss_kinds():
    counts = torch.arange(11)
    assert type(make_next_item_loss("full", 10)) is FullSoftmaxLoss
    for kind, correction in [("sampled", "none"), ("logq", "logq"), ("corrected", "corrected")]:
        loss_fn = make_next_item_loss(kind, 10, counts, num_uniform=8)
        assert isinstance(loss_fn, SampledSoftmaxLoss) and loss_fn.correction == correction
        assert loss_fn.num_uniform == 8 and loss_fn.in_batch
    with pytest.raises(ValueError, match=r"'full', 'sampled', 'logq', 'corrected'"):
        make_next_item_loss("bpr", 10)
    with pytest.raises(ValueError, match="takes no options"):
        make_next_item_loss("full", 10, num_uniform=5)
    with pytest.raises(ValueError, match="already sets the correction"):
        make_next_item_loss("logq", 10, counts, correction="none")


def test_sampled_loss_validates_its_arguments():
    with pytest.raises(ValueError, match="item_counts"):
        SampledSoftmaxLoss(10, None, correction="logq")
    SampledSoftmaxLoss(10, None, in_batch=False, correction="logq")  # uniform only: no counts
    with pytest.raises(ValueError, match="V\\+1 = 11"):
        SampledSoftmaxLoss(10, torch.ones(10), correction="corrected")
    with pytest.raises(ValueError, match="no negatives"):
        SampledSoftmaxLoss(10, None, in_batch=False, num_uniform=0)
    with pytest.raises(ValueError, match="unknown correction"):
        SampledSoftmaxLoss(10, None, correction="logQ")
    loss_fn = SampledSoftmaxLoss(10, torch.ones(11), correction="corrected")
    with pytest.raises(ValueError, match="target positions"):
        loss_fn(torch.zeros(2, 3, 4), torch.ones(2, dtype=torch.int64), lambda ids: ids, 1.0)


@pytest.mark.parametrize("chunk", [5, 1024])
def test_fused_cross_entropy_matches_plain(chunk):
    from argusrec.losses import softmax_cross_entropy

    g = torch.Generator().manual_seed(0)
    user = torch.randn(37, 8, generator=g, dtype=torch.float64, requires_grad=True)
    items = torch.randn(23, 8, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 23, (37,), generator=g)
    fast = softmax_cross_entropy(user, items, target, chunk) * 3.0  # a non-unit upstream grad
    gu, gi = torch.autograd.grad(fast, (user, items))
    plain = F.cross_entropy(user @ items.T, target) * 3.0
    pu, pi = torch.autograd.grad(plain, (user, items))
    assert torch.allclose(fast, plain) and torch.allclose(gu, pu) and torch.allclose(gi, pi)
    assert torch.autograd.gradcheck(
        lambda u, i: softmax_cross_entropy(u, i, target, chunk), (user, items))
    with torch.no_grad():  # inference: no gradients are computed or kept
        assert torch.allclose(softmax_cross_entropy(user, items, target, chunk), plain / 3.0)


def test_capped_in_batch_negatives():
    """max_in_batch >= T changes nothing; a smaller cap subsamples the batch's positives, and the
    corrected estimate of the log-partition stays close to the one from all T positives."""
    torch.manual_seed(0)
    V, D, T = 300, 16, 400
    items = torch.randn(V + 1, D, dtype=torch.float64) * 0.7
    weights = 1.0 / torch.arange(1, V + 1, dtype=torch.float64) ** 1.1
    counts = torch.cat([torch.zeros(1), weights / weights.sum() * 1e6]).round()
    target = torch.multinomial(weights, T, replacement=True) + 1
    user = torch.randn(T, D, dtype=torch.float64) * 0.7
    vec = lambda ids: items[ids]  # noqa: E731
    for correction in ("logq", "corrected"):
        base = SampledSoftmaxLoss(V, counts, num_uniform=0, correction=correction)
        same = SampledSoftmaxLoss(V, counts, num_uniform=0, correction=correction,
                                  max_in_batch=T)
        assert torch.equal(base(user, target, vec, 1.0).loss, same(user, target, vec, 1.0).loss)
        capped = SampledSoftmaxLoss(V, counts, num_uniform=0, correction=correction,
                                    max_in_batch=100)
        out = capped.sampled_logits(user, target, vec, 1.0)
        assert out.negatives.shape == (T, 100)
        def estimate(o):
            return torch.logaddexp(o.score, torch.logsumexp(o.negatives, 1)).mean()

        uncapped = float(estimate(base.sampled_logits(user, target, vec, 1.0)))
        capped_mean = float(torch.stack([estimate(capped.sampled_logits(user, target, vec, 1.0))
                                         for _ in range(30)]).mean())
        # Fewer draws add some of the usual downward (log-of-a-mean) bias (~0.1-0.2 here); a
        # correction that counted all T positives instead of the m drawn would be off by
        # log(T / m) = log 4 = 1.39.
        assert abs(capped_mean - uncapped) < 0.5, (correction, capped_mean, uncapped)


@pytest.mark.parametrize("correction", ["none", "logq", "corrected"])
@pytest.mark.parametrize("in_batch,num_uniform,max_in_batch", [(True, 30, None), (True, 30, 9),
                                                               (False, 40, None), (True, 0, None)])
def test_fused_sampled_softmax_equals_unfused(correction, in_batch, num_uniform, max_in_batch):
    torch.manual_seed(0)
    V, T, D = 25, 17, 8
    counts = torch.randint(0, 50, (V + 1,)).float()
    items = torch.randn(V + 1, D, dtype=torch.float64, requires_grad=True)
    user = torch.randn(T, D, dtype=torch.float64, requires_grad=True)
    target = torch.randint(1, V + 1, (T,))
    target[:4] = 3  # repeated targets: accidental hits in-batch
    uniform = torch.randint(1, V + 1, (num_uniform,))
    results = []
    for fused in (True, False):
        loss_fn = SampledSoftmaxLoss(V, counts, in_batch=in_batch, num_uniform=num_uniform,
                                     correction=correction, max_in_batch=max_in_batch,
                                     generator=torch.Generator().manual_seed(5), fused=fused,
                                     chunk=4)
        out = loss_fn(user, target, lambda ids: items[ids], 0.7, uniform_ids=uniform)
        gu, gi = torch.autograd.grad(out.loss, [user, items])
        results.append((out.loss.detach(), gu, gi, out.metrics))
    (l1, gu1, gi1, m1), (l2, gu2, gi2, m2) = results
    torch.testing.assert_close(l1, l2)
    torch.testing.assert_close(gu1, gu2)
    torch.testing.assert_close(gi1, gi2)
    for key in m2:
        assert m1[key] == pytest.approx(m2[key], rel=1e-6), key
