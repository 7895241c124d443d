"""Metrics against sklearn and against brute-force enumeration of tie orders."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from alsoview.evaluation.metrics import auc, expected_rank_metrics, gauc, pairwise_auc, rank_counts, summarize_ranks

# --- auc ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_auc_matches_sklearn_with_many_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = rng.integers(0, 4, n).astype(float) + 0.3 * labels * rng.integers(0, 2, n)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_matches_sklearn_on_continuous_scores() -> None:
    rng = np.random.default_rng(42)
    labels = rng.random(5000) < 0.1
    scores = rng.normal(size=5000) + labels
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_separated_inverted_constant() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    assert auc(labels, np.array([1.0, 2, 3, 4, 5])) == 1.0
    assert auc(labels, np.array([5.0, 4, 3, 2, 1])) == 0.0
    assert auc(labels, np.zeros(5)) == 0.5
    assert auc(labels.astype(bool), np.array([1.0, 2, 3, 4, 5])) == 1.0


def test_auc_nan_with_one_class_and_errors() -> None:
    assert math.isnan(auc(np.ones(4), np.arange(4.0)))
    assert math.isnan(auc(np.zeros(4), np.arange(4.0)))
    assert math.isnan(auc(np.zeros(0), np.zeros(0)))
    with pytest.raises(ValueError, match="binary"):
        auc(np.array([0, 2]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="NaN"):
        auc(np.array([0, 1]), np.array([0.0, np.nan]))
    with pytest.raises(ValueError, match="align"):
        auc(np.array([0, 1, 1]), np.array([0.0, 1.0]))


def test_auc_agrees_with_pairwise_auc_on_one_pair() -> None:
    # with a single pair, the pooled AUC and the matched-pair AUC are the same number
    for pos, neg in [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)]:
        assert auc(np.array([1, 0]), np.array([pos, neg])) == pairwise_auc(np.array([pos]), np.array([neg]))


# --- gauc --------------------------------------------------------------------------------------


def _gauc_loop(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    values = []
    for g in np.unique(groups):
        m = groups == g
        if len(np.unique(labels[m])) == 2:
            values.append(roc_auc_score(labels[m], scores[m]))
    return (float(np.mean(values)) if values else math.nan), len(values)


@pytest.mark.parametrize("seed", range(5))
def test_gauc_matches_per_group_sklearn_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    groups, labels, scores = [], [], []
    for user in rng.permutation(60) + 1000:  # non-contiguous, unsorted group ids
        kind = rng.integers(0, 4)
        n = int(rng.integers(1, 12))
        if kind == 0:
            y = np.zeros(n, int)  # negatives only: skipped
        elif kind == 1:
            y = np.ones(n, int)  # positives only: skipped
        elif kind == 2:
            y = np.r_[1, np.zeros(n, int)]  # one positive among negatives (the leave-one-out case)
        else:
            y = rng.integers(0, 2, n + 2)
        groups.append(np.full(y.size, user))
        labels.append(y)
        scores.append(rng.integers(0, 3, y.size).astype(float))  # many ties within groups
    g, y, s = np.concatenate(groups), np.concatenate(labels), np.concatenate(scores)
    shuffle = rng.permutation(g.size)
    g, y, s = g[shuffle], y[shuffle], s[shuffle]
    value, used = gauc(g, y, s)
    ref_value, ref_used = _gauc_loop(g, y, s)
    assert used == ref_used
    assert value == pytest.approx(ref_value, abs=1e-12)


def test_gauc_ties_across_groups_do_not_leak() -> None:
    # equal scores in different groups must not share ranks
    groups = np.array([1, 1, 2, 2, 3])
    labels = np.array([1, 0, 0, 1, 1])
    scores = np.array([1.0, 1.0, 1.0, 2.0, 7.0])
    assert gauc(groups, labels, scores) == (pytest.approx(0.75), 2)


def test_gauc_no_usable_group() -> None:
    value, used = gauc(np.array([1, 2]), np.array([1, 0]), np.array([0.1, 0.2]))
    assert math.isnan(value) and used == 0
    value, used = gauc(np.zeros(0), np.zeros(0), np.zeros(0))
    assert math.isnan(value) and used == 0


# --- expected_rank_metrics ---------------------------------------------------------------------


def _metrics(greater: int, ties: int, ks=(3, 5), n_negatives: int | None = None) -> dict[str, float]:
    n = None if n_negatives is None else np.array([n_negatives])
    out = expected_rank_metrics(np.array([greater]), np.array([ties]), ks=ks, n_negatives=n)
    return {k: float(v[0]) for k, v in out.items()}


def test_expected_rank_hand_cases() -> None:
    top = _metrics(0, 0, n_negatives=4)
    assert top == {"hr@3": 1.0, "ndcg@3": 1.0, "hr@5": 1.0, "ndcg@5": 1.0, "mrr": 1.0, "auc": 1.0}
    fourth = _metrics(3, 0, n_negatives=3)
    assert fourth["ndcg@5"] == pytest.approx(1 / math.log2(5))
    assert fourth["mrr"] == pytest.approx(1 / 4)
    assert fourth["hr@3"] == 0.0 and fourth["ndcg@3"] == 0.0 and fourth["hr@5"] == 1.0
    assert fourth["auc"] == 0.0
    tied = _metrics(2, 2, n_negatives=6)  # rank uniform on {2, 3, 4}
    assert tied["hr@3"] == pytest.approx(1 / 3)
    assert tied["hr@5"] == 1.0
    assert tied["ndcg@3"] == pytest.approx((1 / math.log2(4)) / 3)
    assert tied["mrr"] == pytest.approx((1 / 3 + 1 / 4 + 1 / 5) / 3)
    assert tied["auc"] == pytest.approx((6 - 2 - 1) / 6)


def test_expected_rank_auc_is_nan_without_negatives_and_absent_without_counts() -> None:
    assert math.isnan(_metrics(0, 0, n_negatives=0)["auc"])
    assert "auc" not in _metrics(0, 0)
    with pytest.raises(ValueError, match="exceeds"):
        _metrics(3, 2, n_negatives=4)
    with pytest.raises(ValueError, match="non-negative"):
        _metrics(-1, 0)


def _brute_force(greater: int, ties: int, ks: tuple[int, ...]) -> dict[str, float]:
    """Enumerate every order of the positive among its tied negatives (all equally likely)."""
    ranks = []
    for perm in itertools.permutations(range(ties + 1)):
        ranks.append(greater + perm.index(0))  # item 0 of the tie group is the positive
    ranks = np.array(ranks)
    out = {}
    for k in ks:
        out[f"hr@{k}"] = float(np.mean(ranks < k))
        out[f"ndcg@{k}"] = float(np.mean(np.where(ranks < k, 1 / np.log2(ranks + 2), 0.0)))
    out["mrr"] = float(np.mean(1 / (ranks + 1)))
    return out


@pytest.mark.parametrize("greater,ties", [(g, t) for g in range(0, 8) for t in range(0, 6)])
def test_expected_rank_matches_enumeration(greater: int, ties: int) -> None:
    ks = (1, 3, 5, 10)
    got = _metrics(greater, ties, ks=ks)
    want = _brute_force(greater, ties, ks)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


def test_expected_rank_matches_random_tie_breaking_simulation() -> None:
    rng = np.random.default_rng(7)
    n_users, n_neg = 200, 15
    pos = rng.integers(0, 4, n_users).astype(float)
    neg = rng.integers(0, 4, (n_users, n_neg)).astype(float)
    greater, ties, n = rank_counts(pos, neg)
    expected = expected_rank_metrics(greater, ties, ks=(5,), n_negatives=n)
    # sample tie orders: rank = greater + (number of tied negatives placed before the positive)
    draws = 4000
    before = (rng.random((draws, n_users)) * (ties + 1)).astype(int)  # uniform on 0..ties
    ranks = greater + before
    assert np.abs(np.mean(ranks < 5, axis=0) - expected["hr@5"]).max() < 0.05
    assert np.abs(np.mean(1 / (ranks + 1), axis=0) - expected["mrr"]).max() < 0.03


def test_expected_rank_auc_matches_sklearn_per_user() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        n_neg = int(rng.integers(1, 30))
        pos = float(rng.integers(0, 5))
        neg = rng.integers(0, 5, n_neg).astype(float)
        greater, ties, n = rank_counts(np.array([pos]), neg[None, :])
        got = expected_rank_metrics(greater, ties, ks=(5,), n_negatives=n)["auc"][0]
        want = roc_auc_score(np.r_[1, np.zeros(n_neg)], np.r_[pos, neg])
        assert got == pytest.approx(want, abs=1e-12)


def test_rank_counts_respects_padding_mask() -> None:
    pos = np.array([1.0, 2.0])
    neg = np.array([[2.0, 1.0, 9.0], [0.0, 2.0, 9.0]])
    valid = np.array([[True, True, False], [True, True, True]])
    greater, ties, n = rank_counts(pos, neg, valid)
    assert greater.tolist() == [1, 1] and ties.tolist() == [1, 1] and n.tolist() == [2, 3]


def test_summarize_ranks_ignores_nan() -> None:
    summary = summarize_ranks({"mrr": np.array([1.0, 0.5, 0.0]), "auc": np.array([1.0, np.nan, 0.0])})
    assert summary == {"mrr": pytest.approx(0.5), "auc": pytest.approx(0.5), "users": 3}
    assert math.isnan(summarize_ranks({"auc": np.array([np.nan])})["auc"])
    with pytest.raises(ValueError, match="length"):
        summarize_ranks({"a": np.zeros(2), "b": np.zeros(3)})


def test_metrics_scale_to_large_inputs() -> None:
    rng = np.random.default_rng(0)
    n = 1_000_000
    labels = rng.random(n) < 0.3
    scores = rng.integers(0, 1000, n).astype(float)
    assert auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    groups = rng.integers(0, 50_000, n)
    value, used = gauc(groups, labels, scores)
    assert 0.45 < value < 0.55 and used > 40_000
