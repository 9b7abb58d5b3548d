"""Ranking, AUC and feedback metrics against plain loop-based references."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from argusrec.metrics import (
    FeedbackMetrics,
    RankingMetrics,
    SetRankingMetrics,
    binary_auc,
    format_table,
)

# ---------------------------------------------------------------- references (slow, obvious)


def ref_candidates(excl_row, keep, num_items):
    return [j for j in range(1, num_items + 1) if j in keep or not excl_row[j]]


def ref_rank(s, t, cands):
    """1 + #higher + floor(#tied others / 2), straight from the definition."""
    higher = sum(1 for j in cands if s[j] > s[t])
    tied = sum(1 for j in cands if j != t and s[j] == s[t])
    return 1 + higher + tied // 2


def ref_ranking(batches, num_items, ks, coverage=True):
    ranks, tops = [], {k: set() for k in ks}
    for scores, target, exclude in batches:
        for r in range(scores.shape[0]):
            s, t = scores[r].tolist(), int(target[r])
            excl = exclude[r].tolist() if exclude is not None else [False] * (num_items + 1)
            cands = ref_candidates(excl, {t}, num_items)
            ranks.append(ref_rank(s, t, cands))
            order = sorted(cands, key=lambda j: -s[j])
            for k in ks:
                tops[k].update(order[:k])
    out = {"count": float(len(ranks)), "MRR": sum(1 / r for r in ranks) / len(ranks)}
    for k in ks:
        out[f"HR@{k}"] = sum(r <= k for r in ranks) / len(ranks)
        out[f"NDCG@{k}"] = sum(1 / math.log2(r + 1) for r in ranks if r <= k) / len(ranks)
        out[f"MRR@{k}"] = sum(1 / r for r in ranks if r <= k) / len(ranks)
        if coverage:
            out[f"Coverage@{k}"] = len(tops[k]) / num_items
    return out


def ref_set_row(order, targets, ks):
    """Recall@k and NDCG@k of one ranked list (no ties) against a target set."""
    out = {}
    for k in ks:
        rel = [j in targets for j in order[:k]]
        m = min(len(targets), k)
        out[f"Recall@{k}"] = sum(rel) / m
        dcg = sum(1 / math.log2(i + 2) for i, x in enumerate(rel) if x)
        out[f"NDCG@{k}"] = dcg / sum(1 / math.log2(i + 2) for i in range(m))
    return out


def ref_set(batches, num_items, ks, enumerate_ties=False):
    """Mean over rows with targets; with ties, the average over every tie order (brute force)."""
    rows, tops = [], {k: set() for k in ks}
    for scores, targets, exclude in batches:
        for r in range(scores.shape[0]):
            s, tset = scores[r].tolist(), {int(j) for j in targets[r] if int(j) != 0}
            if not tset:
                continue
            excl = exclude[r].tolist() if exclude is not None else [False] * (num_items + 1)
            cands = ref_candidates(excl, tset, num_items)
            if enumerate_ties:
                orders = [o for o in itertools.permutations(cands)
                          if all(s[a] >= s[b] for a, b in zip(o, o[1:]))]
            else:
                orders = [sorted(cands, key=lambda j: -s[j])]
                for k in ks:
                    tops[k].update(orders[0][:k])
            per = [ref_set_row(o, tset, ks) for o in orders]
            rows.append({key: sum(p[key] for p in per) / len(per) for key in per[0]})
    out = {"count": float(len(rows))}
    for key in rows[0]:
        out[key] = sum(r[key] for r in rows) / len(rows)
    if not enumerate_ties:
        for k in ks:
            out[f"Coverage@{k}"] = len(tops[k]) / num_items
    return out


def brute_auc(scores, labels):
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def assert_close_dict(got, want, tol=1e-9):
    for key, value in want.items():
        assert key in got, key
        assert got[key] == pytest.approx(value, abs=tol), key


# ---------------------------------------------------------------- RankingMetrics


def random_batches(num_items, sizes, seed, ties):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for t in sizes:
        if ties:  # few distinct values: many ties, including with the target
            scores = torch.randint(0, 4, (t, num_items + 1), generator=g).float()
        else:
            scores = torch.randn(t, num_items + 1, generator=g)
        target = torch.randint(1, num_items + 1, (t,), generator=g)
        exclude = torch.rand(t, num_items + 1, generator=g) < 0.3
        exclude[:3, target[:3]] = True  # the target itself marked: must be ignored
        batches.append((scores, target, exclude))
    return batches


@pytest.mark.parametrize("ties", [False, True])
def test_ranking_matches_reference(ties):
    num_items, ks = 30, (1, 3, 5, 10, 50)
    batches = random_batches(num_items, (7, 13, 1, 20), seed=int(ties), ties=ties)
    m = RankingMetrics(num_items, ks)
    for b in batches:
        m.update(*b)
    got = m.compute()
    want = ref_ranking(batches, num_items, ks, coverage=not ties)
    assert_close_dict(got, want)
    assert set(got) == {"count", "MRR"} | {f"{n}@{k}" for n in ("HR", "NDCG", "MRR", "Coverage")
                                            for k in ks}


def test_ranking_without_exclude_matches_reference():
    num_items, ks = 12, (2, 4)
    batches = [(s, t, None) for s, t, _ in random_batches(num_items, (9, 5), seed=3, ties=False)]
    m = RankingMetrics(num_items, ks)
    for b in batches:
        m.update(*b)
    assert_close_dict(m.compute(), ref_ranking(batches, num_items, ks))


def test_perfect_model_scores_one():
    num_items = 20
    target = torch.arange(1, num_items + 1)
    scores = torch.rand(num_items, num_items + 1)
    scores[torch.arange(num_items), target] = 10.0
    m = RankingMetrics(num_items, (1, 5))
    m.update(scores, target)
    got = m.compute()
    for key in ("HR@1", "NDCG@1", "MRR@1", "HR@5", "NDCG@5", "MRR@5", "MRR"):
        assert got[key] == 1.0
    assert got["Coverage@1"] == 1.0


def test_constant_scores_are_not_perfect():
    num_items = 10
    m = RankingMetrics(num_items, (1, 10))
    m.update(torch.zeros(4, num_items + 1), torch.tensor([1, 4, 7, 10]))
    got = m.compute()
    assert m.ranks.tolist() == [5, 5, 5, 5]  # 1 + floor(9 tied others / 2)
    assert got["HR@1"] == 0.0 and got["MRR"] == pytest.approx(0.2)
    assert got["HR@10"] == 1.0 and got["NDCG@10"] == pytest.approx(1 / math.log2(6))


def test_padding_column_is_never_ranked():
    scores = torch.tensor([[1e9, 0.1, 0.5, 0.2]])
    m = RankingMetrics(3, (1,))
    m.update(scores, torch.tensor([2]))
    assert m.ranks.tolist() == [1]
    assert m.compute()["Coverage@1"] == pytest.approx(1 / 3)
    m.update(torch.zeros(1, 4), torch.tensor([1]))  # ties with padding do not count either
    assert m.ranks.tolist() == [1, 2]  # 1 + floor(2 tied real items / 2)


def test_excluded_items_do_not_count_and_target_is_kept():
    scores = torch.tensor([[0.0, 0.9, 0.5, 0.8, 0.1]])
    target = torch.tensor([2])
    m = RankingMetrics(4, (1,))
    m.update(scores, target)
    m.update(scores, target, exclude=torch.tensor([[False, True, False, True, False]]))
    m.update(scores, target, exclude=torch.ones(1, 5, dtype=torch.bool))
    assert m.ranks.tolist() == [3, 1, 1]
    # only the target can be recommended once everything else is excluded
    assert m.compute()["Coverage@1"] == pytest.approx(2 / 4)  # items 1 then 2


def test_coverage_hand_made():
    # row 0 ranks 3 > 1 > 2..., row 1 ranks 5 > 3 > 4...
    scores = torch.tensor([[0.0, 0.8, 0.5, 0.9, 0.1, 0.2],
                           [0.0, 0.1, 0.2, 0.8, 0.3, 0.9]])
    m = RankingMetrics(5, (1, 2, 3))
    m.update(scores, torch.tensor([1, 2]))
    got = m.compute()
    assert got["Coverage@1"] == pytest.approx(2 / 5)  # {3, 5}
    assert got["Coverage@2"] == pytest.approx(3 / 5)  # {3, 1, 5}
    assert got["Coverage@3"] == pytest.approx(5 / 5)  # {3, 1, 2, 5, 4}


def test_ranking_rejects_bad_input():
    m = RankingMetrics(4, (1,))
    with pytest.raises(ValueError, match="num_items"):
        m.update(torch.zeros(2, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="1..4"):
        m.update(torch.zeros(2, 5), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="NaN"):
        m.update(torch.full((1, 5), math.nan), torch.tensor([1]))
    with pytest.raises(ValueError, match="positive"):
        RankingMetrics(4, (0,))


def test_empty_ranking_is_nan():
    got = RankingMetrics(4, (1,)).compute()
    assert got["count"] == 0 and math.isnan(got["HR@1"]) and got["Coverage@1"] == 0


# ---------------------------------------------------------------- SetRankingMetrics


def random_set_batches(num_items, sizes, seed, ties):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for t in sizes:
        if ties:
            scores = torch.randint(0, 3, (t, num_items + 1), generator=g).float()
        else:
            scores = torch.randn(t, num_items + 1, generator=g)
        targets = []
        for r in range(t):
            n = int(torch.randint(0, 5, (1,), generator=g))
            targets.append(torch.randint(1, num_items + 1, (n,), generator=g))  # may repeat
        exclude = torch.rand(t, num_items + 1, generator=g) < 0.3
        batches.append((scores, targets, exclude))
    return batches


def test_set_ranking_matches_reference():
    num_items, ks = 25, (1, 2, 5, 10, 40)
    batches = random_set_batches(num_items, (8, 15, 3), seed=0, ties=False)
    m = SetRankingMetrics(num_items, ks)
    for b in batches:
        m.update(*b)
    want = ref_set(batches, num_items, ks)
    assert want["count"] < sum(len(b[1]) for b in batches)  # some rows had no targets
    assert_close_dict(m.compute(), want)


def test_set_ranking_accepts_a_mask():
    num_items, ks = 25, (3, 10)
    batches = random_set_batches(num_items, (10,), seed=1, ties=False)
    a, b = SetRankingMetrics(num_items, ks), SetRankingMetrics(num_items, ks)
    for scores, targets, exclude in batches:
        a.update(scores, targets, exclude)
        mask = torch.zeros_like(scores, dtype=torch.bool)
        for r, t in enumerate(targets):
            mask[r, t] = True
        b.update(scores, mask, exclude)
    assert a.compute() == pytest.approx(b.compute())


@pytest.mark.parametrize("num_items,ks", [(6, (1, 2, 3, 7)), (7, (1, 2, 3))])
def test_set_ranking_ties_are_the_expectation_over_tie_orders(num_items, ks):
    # with max(ks) < num_items the last tie group runs past the top-K list
    batches = random_set_batches(num_items, (12, 6), seed=num_items, ties=True)
    batches[0][0][:4, 1:3] = -math.inf  # candidates the model rules out tie with excluded items
    m = SetRankingMetrics(num_items, ks)
    for b in batches:
        m.update(*b)
    got = m.compute()
    assert_close_dict(got, ref_set(batches, num_items, ks, enumerate_ties=True))


def test_set_ranking_constant_scores_are_not_perfect():
    num_items = 10
    m = SetRankingMetrics(num_items, (1, 5))
    m.update(torch.zeros(1, num_items + 1), [torch.tensor([1, 2])])
    got = m.compute()
    assert got["Recall@1"] == pytest.approx(2 / 10)  # a target at position 1 with chance 2/10
    assert got["Recall@5"] == pytest.approx(5 * (2 / 10) / 2)


def test_set_ranking_perfect_model():
    scores = torch.tensor([[0.0, 0.9, 0.1, 0.8, 0.2, 0.7]])
    m = SetRankingMetrics(5, (2, 3))
    m.update(scores, [torch.tensor([1, 3, 5])])
    got = m.compute()
    assert got["Recall@2"] == got["NDCG@2"] == got["Recall@3"] == got["NDCG@3"] == 1.0


# ---------------------------------------------------------------- binary_auc


def test_auc_known_values():
    assert binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75
    assert binary_auc([1.0, 2.0, 3.0], [0, 1, 1]) == 1.0
    assert binary_auc([3.0, 2.0, 1.0], [0, 1, 1]) == 0.0
    assert binary_auc([5.0] * 6, [0, 1, 0, 1, 1, 0]) == 0.5
    assert binary_auc(torch.tensor([0.2, 0.2, 0.9]), torch.tensor([False, True, True])) == 0.75


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, 300).astype(float)  # heavy ties
    labels = rng.random(300) < 0.3
    assert binary_auc(scores, labels) == pytest.approx(brute_auc(scores, labels), abs=1e-12)
    cont = rng.normal(size=200)
    assert binary_auc(cont, labels[:200].astype(int)) == pytest.approx(
        brute_auc(cont, labels[:200]), abs=1e-12)


def test_auc_one_class_is_nan_and_bad_labels_raise():
    assert math.isnan(binary_auc([0.1, 0.2], [1, 1]))
    assert math.isnan(binary_auc([0.1, 0.2], [0, 0]))
    assert math.isnan(binary_auc([], []))
    with pytest.raises(ValueError, match="0/1"):
        binary_auc([0.1, 0.2], [0.3, 0.9])


# ---------------------------------------------------------------- FeedbackMetrics


def test_feedback_metrics_per_kind():
    nan = math.nan
    names, kinds = ["like", "played_ratio", "rating", "dislike"], ["binary", "ratio", "value",
                                                                   "binary"]
    logits = [torch.tensor([[2.0, 1.0, 3.0, 0.0], [-1.0, -2.0, 4.0, 0.0]]),
              torch.tensor([[0.5, 0.0, 1.0, 0.0], [-3.0, 2.0, 0.0, 0.0]])]
    values = [torch.tensor([[1.0, 0.9, 3.5, nan], [0.0, 0.1, nan, nan]]),
              torch.tensor([[nan, 0.4, 2.0, nan], [1.0, 0.7, 1.0, nan]])]
    m = FeedbackMetrics()
    for x, y in zip(logits, values):
        m.update(x, y, names, kinds)
    got = m.compute()
    assert set(got) == {"AUC/like", "logloss/like", "AUC/played_ratio", "logloss/played_ratio",
                        "RMSE/rating"}  # dislike has no labels

    def bce(x, y):
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    like = [(2.0, 1.0), (-1.0, 0.0), (-3.0, 1.0)]
    assert got["AUC/like"] == pytest.approx(brute_auc([x for x, _ in like], [y for _, y in like]))
    assert got["logloss/like"] == pytest.approx(sum(bce(x, y) for x, y in like) / 3)
    ratio = [(1.0, 0.9), (-2.0, 0.1), (0.0, 0.4), (2.0, 0.7)]
    assert got["AUC/played_ratio"] == pytest.approx(1.0)  # labels >= 0.5: the two highest logits
    assert got["logloss/played_ratio"] == pytest.approx(sum(bce(x, y) for x, y in ratio) / 4)
    rating = [(3.0, 3.5), (1.0, 2.0), (0.0, 1.0)]
    assert got["RMSE/rating"] == pytest.approx(math.sqrt(sum((x - y) ** 2 for x, y in rating) / 3))


def test_feedback_metrics_reject_changed_signals():
    m = FeedbackMetrics()
    m.update(torch.zeros(2, 1), torch.ones(2, 1), ["like"], ["binary"])
    with pytest.raises(ValueError, match="changed"):
        m.update(torch.zeros(2, 1), torch.ones(2, 1), ["skip"], ["binary"])
    with pytest.raises(ValueError, match="kind"):
        FeedbackMetrics().update(torch.zeros(2, 1), torch.ones(2, 1), ["like"], ["bool"])


# ---------------------------------------------------------------- format_table


def test_format_table_contains_keys_in_order():
    results = {"NDCG@10": 0.25, "HR@100": 0.9, "HR@10": 0.5, "count": 120.0, "MRR": 0.125,
               "MRR@10": 0.1, "Coverage@10": 0.05, "AUC/like": 0.7}
    text = format_table(results, title="test split")
    lines = text.splitlines()
    assert lines[0] == "test split"
    for key in results:
        assert key in text
    order = [line.split()[0] for line in lines[3:]]
    assert order == ["HR@10", "HR@100", "NDCG@10", "MRR", "MRR@10", "Coverage@10", "AUC/like",
                     "count"]
    assert "0.5000" in text and "120" in text and "120.0000" not in text
