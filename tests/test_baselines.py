"""Baseline scorers: hand-computed scores on a tiny dataset, reproducibility, pickling."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from alsoview.evaluation.baselines import CooccurrenceScorer, PopularityScorer, RandomScorer, Scorer, build_baselines

try:
    import scipy  # noqa: F401

    BACKENDS = ["sparse", "dense"]
except ImportError:  # pragma: no cover
    BACKENDS = ["dense"]

# users 1..4, items 1..5; user 3 saw item 3 twice; user 4 has no history; item 5 was never seen
TRAIN_USERS = np.array([1, 1, 2, 2, 2, 3, 3, 3])
TRAIN_ITEMS = np.array([1, 2, 1, 2, 3, 3, 4, 3])
N_USERS, N_ITEMS = 5, 6
ALL_ITEMS = np.arange(1, N_ITEMS)
S2 = 1 / math.sqrt(2)
# cosine C: C12 = 2/sqrt(2*2) = 1, C13 = C23 = 1/sqrt(2*2) = 1/2, C34 = 1/sqrt(2*1)
COSINE = {
    0: [0, 0, 0, 0, 0],
    1: [1, 1, 1, 0, 0],  # history {1, 2}
    2: [1.5, 1.5, 1, S2, 0],  # history {1, 2, 3}
    3: [0.5, 0.5, S2, S2, 0],  # history {3, 4}
    4: [0, 0, 0, 0, 0],  # no history
}
RAW = {1: [2, 2, 2, 0, 0], 2: [3, 3, 2, 1, 0], 3: [1, 1, 1, 1, 0]}


def _all_items(users: np.ndarray) -> np.ndarray:
    return np.tile(ALL_ITEMS, (users.size, 1))


def test_popularity_counts_interactions_and_ranks_most_trained_first() -> None:
    scorer = PopularityScorer(TRAIN_USERS, TRAIN_ITEMS, N_ITEMS)
    scores = scorer.score(np.array([4]), _all_items(np.array([4])))
    assert scores.tolist() == [[2, 2, 3, 1, 0]]  # repeats count: item 3 three times
    assert ALL_ITEMS[np.argmax(scores[0])] == 3


def test_random_is_reproducible_batch_independent_and_uniform() -> None:
    scorer = RandomScorer(N_ITEMS, seed=11)
    users = np.array([1, 2, 3, 2])
    items = np.array([[1, 2, 3], [3, 1, 0], [5, 5, 4], [1, 2, 3]])
    scores = scorer.score(users, items)
    assert np.array_equal(scores, RandomScorer(N_ITEMS, seed=11).score(users, items))
    for row in range(users.size):  # one user at a time, and item by item, give the same numbers
        assert np.array_equal(scorer.score(users[row : row + 1], items[row : row + 1]), scores[row : row + 1])
        for col in range(items.shape[1]):
            single = scorer.score(users[row : row + 1], items[row : row + 1, col : col + 1])
            assert single[0, 0] == scores[row, col]
    assert scores[1, 0] == scores[3, 2]  # same (user 2, item 3) in different positions
    assert not np.array_equal(scores, RandomScorer(N_ITEMS, seed=12).score(users, items))

    big = RandomScorer(100_001, seed=0).score(np.arange(20), np.tile(np.arange(1, 5001), (20, 1))).ravel()
    assert big.min() >= 0.0 and big.max() < 1.0
    counts = np.histogram(big, bins=10, range=(0, 1))[0]
    assert np.abs(counts / big.size - 0.1).max() < 0.01
    assert abs(np.corrcoef(big[:-1], big[1:])[0, 1]) < 0.02


@pytest.mark.parametrize("backend", BACKENDS)
def test_cooccurrence_cosine_hand_computed(backend: str) -> None:
    scorer = CooccurrenceScorer(TRAIN_USERS, TRAIN_ITEMS, N_USERS, N_ITEMS, backend=backend)
    users = np.array(list(COSINE))
    scores = scorer.score(users, _all_items(users))
    np.testing.assert_allclose(scores, np.array([COSINE[u] for u in users]), atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cooccurrence_raw_counts_hand_computed(backend: str) -> None:
    scorer = CooccurrenceScorer(TRAIN_USERS, TRAIN_ITEMS, N_USERS, N_ITEMS, normalize="none", backend=backend)
    users = np.array(list(RAW))
    np.testing.assert_allclose(scorer.score(users, _all_items(users)), np.array([RAW[u] for u in users]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cooccurrence_is_batch_independent_with_repeats_and_padding(backend: str) -> None:
    scorer = CooccurrenceScorer(TRAIN_USERS, TRAIN_ITEMS, N_USERS, N_ITEMS, backend=backend)
    users = np.array([3, 1, 3, 0, 4])
    items = np.array([[3, 1, 0], [2, 5, 3], [4, 4, 1], [1, 2, 3], [1, 2, 0]])
    scores = scorer.score(users, items)
    np.testing.assert_allclose(scores[0], [S2, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(scores[2], [S2, S2, 0.5], atol=1e-12)
    assert not scores[3:].any()
    for row in range(users.size):
        assert np.array_equal(scorer.score(users[row : row + 1], items[row : row + 1]), scores[row : row + 1])


def test_cooccurrence_sparse_and_dense_agree_on_random_data() -> None:
    if "sparse" not in BACKENDS:
        pytest.skip("scipy not installed")
    rng = np.random.default_rng(5)
    n_users, n_items = 300, 120
    users = rng.integers(1, n_users, 3000)
    items = rng.integers(1, n_items, 3000)
    sparse = CooccurrenceScorer(users, items, n_users, n_items, backend="sparse")
    dense = CooccurrenceScorer(users, items, n_users, n_items, backend="dense")
    batch = np.arange(n_users)
    np.testing.assert_allclose(
        sparse.score(batch, np.tile(np.arange(n_items), (n_users, 1))),
        dense.score(batch, np.tile(np.arange(n_items), (n_users, 1))),
        atol=1e-10,
    )


def test_cooccurrence_dense_limit_and_bad_ids() -> None:
    with pytest.raises(ValueError, match="dense co-occurrence is limited"):
        CooccurrenceScorer(TRAIN_USERS, TRAIN_ITEMS, N_USERS, 6000, backend="dense")
    scorer = CooccurrenceScorer(TRAIN_USERS, TRAIN_ITEMS, N_USERS, N_ITEMS)
    with pytest.raises(IndexError):
        scorer.score(np.array([N_USERS]), np.array([[1]]))
    with pytest.raises(IndexError):
        scorer.score(np.array([1]), np.array([[N_ITEMS]]))
    with pytest.raises(IndexError):
        CooccurrenceScorer(TRAIN_USERS, TRAIN_ITEMS + 10, N_USERS, N_ITEMS)


def test_build_baselines_and_pickling_round_trip() -> None:
    scorers = build_baselines(TRAIN_USERS, TRAIN_ITEMS, N_USERS, N_ITEMS, seed=3)
    assert sorted(scorers) == ["cooccurrence", "popularity", "random"]
    users = np.array([0, 1, 2, 3, 4])
    items = _all_items(users)
    for name, scorer in scorers.items():
        assert isinstance(scorer, Scorer) and scorer.name == name
        clone = pickle.loads(pickle.dumps(scorer))
        assert np.array_equal(clone.score(users, items), scorer.score(users, items))
    if "dense" in BACKENDS:
        dense = CooccurrenceScorer(TRAIN_USERS, TRAIN_ITEMS, N_USERS, N_ITEMS, backend="dense")
        assert np.array_equal(pickle.loads(pickle.dumps(dense)).score(users, items), dense.score(users, items))


def test_without_scipy_auto_falls_back_to_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    import alsoview.evaluation.baselines as baselines

    monkeypatch.setattr(baselines, "_sparse", None)
    scorer = CooccurrenceScorer(TRAIN_USERS, TRAIN_ITEMS, N_USERS, N_ITEMS)
    assert scorer.backend == "dense"
    users = np.array(list(COSINE))
    np.testing.assert_allclose(scorer.score(users, _all_items(users)), np.array([COSINE[u] for u in users]), atol=1e-12)
    with pytest.raises(ValueError, match="install scipy"):
        CooccurrenceScorer(TRAIN_USERS, TRAIN_ITEMS, N_USERS, 6000)
    with pytest.raises(ImportError):
        CooccurrenceScorer(TRAIN_USERS, TRAIN_ITEMS, N_USERS, N_ITEMS, backend="sparse")


def test_score_all_equals_score_on_every_item() -> None:
    users = np.array([1, 2, 3, 4])
    every = np.tile(np.arange(N_ITEMS), (len(users), 1))
    for scorer in build_baselines(TRAIN_USERS, TRAIN_ITEMS, N_USERS, N_ITEMS, seed=0).values():
        if hasattr(scorer, "score_all"):
            np.testing.assert_allclose(scorer.score_all(users), scorer.score(users, every))


def test_matrix_factorisation_peers_fit_score_and_pickle() -> None:
    pytest.importorskip("implicit")
    from alsoview.evaluation.baselines import matrix_factorisation_peers

    rng = np.random.default_rng(0)
    # two taste groups over 40 items: users 1..30 take items 1..20, users 31..60 items 21..40
    users = np.repeat(np.arange(1, 61), 8)
    items = np.where(users <= 30, rng.integers(1, 21, users.size), rng.integers(21, 41, users.size))
    peers, skipped = matrix_factorisation_peers(users, items, 61, 41, seed=0)
    assert set(peers) == {"als", "bpr"} and skipped == {}
    for scorer in peers.values():
        assert scorer.fit_seconds > 0  # measured, for the time-to-quality benchmark
        every = scorer.score_all(np.array([1, 45]))
        assert every.shape == (2, 41)
        np.testing.assert_allclose(
            scorer.score(np.array([1, 45]), np.tile(np.arange(41), (2, 1))), every, rtol=1e-5, atol=1e-6
        )
        # each user's own group scores higher on average: the peers learned the planted tastes
        assert every[0, 1:21].mean() > every[0, 21:41].mean() and every[1, 21:41].mean() > every[1, 1:21].mean()
        pickle.loads(pickle.dumps(scorer))


def test_missing_implicit_skips_the_peers_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from alsoview.evaluation.baselines import matrix_factorisation_peers

    real_import = builtins.__import__

    def no_implicit(name, *args, **kwargs):
        if name == "implicit":
            raise ImportError("No module named 'implicit'", name="implicit")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_implicit)
    peers, skipped = matrix_factorisation_peers(TRAIN_USERS, TRAIN_ITEMS, N_USERS, N_ITEMS, seed=0)
    assert peers == {} and set(skipped) == {"als", "bpr"} and "pip install implicit" in skipped["als"]
