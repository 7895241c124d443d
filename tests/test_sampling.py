"""Property tests for negative mixing on small seeded random catalogs."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import numpy as np
import pytest

from alsoview.data.relations import UserRelations
from alsoview.data.tables import (
    SamplingTables,
    _hash_slots,  # noqa: PLC2701  (the filter's hash, to count what passes it)
    _KeySet,  # noqa: PLC2701  (the membership structure is worth testing directly)
)
from alsoview.sampling.mixing import mix_negatives
from alsoview.sampling.stats import MixStats
from alsoview.seeds import epoch_rng


@dataclass
class Catalog:
    tables: SamplingTables
    also_view: list[list[int]]
    user_items: list[set[int]]
    users: np.ndarray  # positives
    items: np.ndarray


def random_catalog(seed: int, n_items: int = 60, n_users: int = 25, max_list: int = 15, n_pos: int = 300) -> Catalog:
    """Random also-view lists (some empty) and users of mixed activity, incl. one very heavy user."""
    rng = np.random.default_rng(seed)
    also_view = [[]] + [
        [int(j) for j in rng.choice(np.arange(1, n_items), size=rng.integers(0, max_list + 1), replace=False) if j != i]
        for i in range(1, n_items)
    ]
    user_items: list[set[int]] = [set()]
    for u in range(1, n_users):
        degree = n_items - 6 if u == 1 else int(rng.integers(1, 20))
        user_items.append({int(j) for j in rng.choice(np.arange(1, n_items), size=degree, replace=False)})
    popularity = np.concatenate([[0.0], rng.integers(0, 50, n_items - 1)])
    tables = SamplingTables.from_lists(n_items, also_view, [sorted(s) for s in user_items], popularity)
    pairs = [(u, i) for u in range(1, n_users) for i in sorted(user_items[u])]
    pick = rng.choice(len(pairs), size=n_pos)
    users = np.array([pairs[p][0] for p in pick], dtype=np.int64)
    items = np.array([pairs[p][1] for p in pick], dtype=np.int64)
    return Catalog(tables, also_view, user_items, users, items)


def long_list_catalog(seed: int, n_items: int = 200, list_len: int = 30, n_users: int = 40) -> SamplingTables:
    """Every item has a long also-view list and users are light, so hard requests are never short."""
    rng = np.random.default_rng(seed)
    also_view = [[]] + [
        [int(j) for j in rng.choice(np.setdiff1d(np.arange(1, n_items), [i]), size=list_len, replace=False)]
        for i in range(1, n_items)
    ]
    user_items = [[]] + [
        sorted(rng.choice(np.arange(1, n_items), size=5, replace=False).tolist()) for _ in range(1, n_users)
    ]
    return SamplingTables.from_lists(n_items, also_view, user_items)


def mix(users, items, tables, k, f, seed=0, **kw):
    return mix_negatives(
        np.asarray(users),
        np.asarray(items),
        tables,
        negatives_per_positive=k,
        also_view_fraction=f,
        rng=np.random.default_rng(seed),
        **kw,
    )


def negatives_of(cols: dict[str, np.ndarray], n_pos: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users [B,k], items [B,k], is_hard [B,k]) of the negatives."""
    return tuple(cols[c][n_pos:].reshape(n_pos, k) for c in ("user", "item", "is_hard"))


# --------------------------------------------------------------------------- invariants


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("pool", ["uniform", "popularity"])
def test_invariants_on_random_catalogs(seed: int, pool: str) -> None:
    cat = random_catalog(seed)
    n_pos = cat.users.size
    for k, f in [(4, 0.5), (3, 0.4), (1, 1.0), (5, 0.0), (6, 1.0)]:
        cols, stats = mix(cat.users, cat.items, cat.tables, k, f, seed=seed, random_pool=pool)
        assert {c: cols[c].dtype for c in cols} == {
            "user": np.int64,
            "item": np.int64,
            "label": np.float32,
            "is_hard": np.bool_,
        }
        assert all(cols[c].shape == (n_pos * (k + 1),) for c in cols)
        np.testing.assert_array_equal(cols["label"], np.r_[np.ones(n_pos), np.zeros(n_pos * k)])
        np.testing.assert_array_equal(cols["user"][:n_pos], cat.users)
        np.testing.assert_array_equal(cols["item"][:n_pos], cat.items)
        assert not cols["is_hard"][:n_pos].any()

        neg_users, neg_items, is_hard = negatives_of(cols, n_pos, k)
        np.testing.assert_array_equal(neg_users, np.repeat(cat.users[:, None], k, axis=1))
        assert neg_items.min() >= 1 and neg_items.max() < cat.tables.n_items
        for p in range(n_pos):
            seen = cat.user_items[cat.users[p]]
            assert not seen.intersection(neg_items[p].tolist()), "negative the user interacted with"
            hard = neg_items[p][is_hard[p]].tolist()
            assert set(hard) <= set(cat.also_view[cat.items[p]])
            assert len(set(hard)) == len(hard), "hard negatives repeat within a positive"
            assert len(hard) <= int(np.ceil(k * f))
            assert not is_hard[p][len(hard) :].any(), "hard slots come first"

        assert stats.positives == n_pos and stats.negatives == n_pos * k
        assert stats.hard_drawn == is_hard.sum()
        assert stats.hard_shortfall == stats.hard_requested - stats.hard_drawn >= 0
        assert stats.random_redraws >= 0


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    ("k", "f", "per_positive"), [(4, 0.5, 2), (4, 0.75, 3), (6, 1 / 3, 2), (3, 1.0, 3), (4, 0.0, 0)]
)
def test_hard_share_exact_when_lists_are_long(seed: int, k: int, f: float, per_positive: int) -> None:
    tables = long_list_catalog(seed)
    users = np.repeat(np.arange(1, tables.n_users), 10)
    items = np.array([tables.user_items_indices[tables.user_items_indptr[u] + (r % 5)] for r, u in enumerate(users)])
    cols, stats = mix(users, items, tables, k, f, seed=seed)
    _, _, is_hard = negatives_of(cols, users.size, k)
    np.testing.assert_array_equal(is_hard.sum(axis=1), per_positive)
    assert stats.hard_shortfall == 0
    assert stats.hard_share == pytest.approx(per_positive / k)


def test_hard_share_matches_fraction_in_expectation() -> None:
    tables = long_list_catalog(7)
    n_pos, k, f = 20_000, 3, 0.5
    rng = np.random.default_rng(0)
    users = rng.integers(1, tables.n_users, n_pos)
    items = tables.user_items_indices[tables.user_items_indptr[users]].astype(np.int64)
    cols, stats = mix(users, items, tables, k, f)
    per_positive = negatives_of(cols, n_pos, k)[2].sum(axis=1)
    assert set(np.unique(per_positive)) == {1, 2}
    assert stats.hard_shortfall == 0
    sigma = np.sqrt(n_pos * 0.25) / (n_pos * k)  # share = (n_pos + Binomial(n_pos, 0.5)) / (n_pos * k)
    assert abs(stats.hard_share - f) < 5 * sigma


# --------------------------------------------------------------------------- shortfall


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("pool", ["uniform", "popularity"])
def test_shortfall_is_filled_from_random_and_counted_exactly(seed: int, pool: str) -> None:
    also_view = [[], [], [3], [4, 5, 6, 7, 8], [5, 6], [], [], [], [], []]
    user_items = [[], [1, 2, 3, 4, 5]]
    tables = SamplingTables.from_lists(10, also_view, user_items, np.arange(10.0))
    users, items = np.ones(4, dtype=np.int64), np.array([1, 2, 3, 4])
    cols, stats = mix(users, items, tables, 4, 1.0, seed=seed, random_pool=pool)
    _, neg_items, is_hard = negatives_of(cols, 4, 4)
    # usable hard candidates: item 1 -> none (empty list), 2 -> none (3 was seen), 3 -> {6,7,8}, 4 -> {6}
    np.testing.assert_array_equal(is_hard.sum(axis=1), [0, 0, 3, 1])
    assert set(neg_items[2][is_hard[2]].tolist()) == {6, 7, 8}
    assert neg_items[3][is_hard[3]].tolist() == [6]
    assert stats.hard_requested == 16 and stats.hard_drawn == 4 and stats.hard_shortfall == 12
    assert set(neg_items.ravel().tolist()) <= {6, 7, 8, 9}


def test_hard_draw_is_uniform_without_replacement_over_usable_items() -> None:
    """Most of the list was seen by the user, so rejection rounds often fail and the exact draw runs."""
    n_items = 40
    also_view = [[] for _ in range(n_items)]
    also_view[1] = list(range(2, 22))  # 20 entries
    usable = [18, 19, 20, 21]
    seen = [1] + list(range(2, 18)) + [30]
    tables = SamplingTables.from_lists(n_items, also_view, [[], seen])
    n_pos = 6000
    cols, stats = mix(np.ones(n_pos, dtype=np.int64), np.ones(n_pos, dtype=np.int64), tables, 2, 1.0, seed=3)
    _, neg_items, is_hard = negatives_of(cols, n_pos, 2)
    assert is_hard.all() and stats.hard_shortfall == 0
    assert np.isin(neg_items, usable).all()
    assert (neg_items[:, 0] != neg_items[:, 1]).all()
    pairs = np.sort(neg_items, axis=1)
    _, counts = np.unique(pairs[:, 0] * 100 + pairs[:, 1], return_counts=True)
    assert counts.size == 6  # all C(4, 2) pairs occur
    expected = n_pos / 6
    assert ((counts - expected) ** 2 / expected).sum() < 5 + 6 * np.sqrt(10)  # chi-square, 5 dof


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_output_and_different_seed_differs() -> None:
    cat = random_catalog(11)
    a, sa = mix(cat.users, cat.items, cat.tables, 4, 0.3, seed=5, random_pool="popularity")
    b, sb = mix(cat.users, cat.items, cat.tables, 4, 0.3, seed=5, random_pool="popularity")
    c, _ = mix(cat.users, cat.items, cat.tables, 4, 0.3, seed=6, random_pool="popularity")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert sa == sb
    assert not np.array_equal(a["item"], c["item"])


def test_blocks_do_not_depend_on_worker_assignment() -> None:
    cat = random_catalog(12, n_pos=600)
    blocks = np.array_split(np.arange(cat.users.size), 7)

    def run(assignment: list[list[int]], epoch: int) -> tuple[dict[int, dict[str, np.ndarray]], MixStats]:
        """Each simulated worker samples its blocks in its own order; results are keyed by block."""
        out, total = {}, MixStats()
        for worker_blocks in assignment:
            for key in worker_blocks:
                idx = blocks[key]
                out[key], stats = mix_negatives(
                    cat.users[idx],
                    cat.items[idx],
                    cat.tables,
                    negatives_per_positive=3,
                    also_view_fraction=0.5,
                    rng=epoch_rng(42, epoch, key),
                )
                total = total.merge(stats)
        return out, total

    one_worker = [list(range(7))]
    three_workers = [[6, 0, 3], [1, 4], [5, 2]]
    seven_workers = [[k] for k in reversed(range(7))]
    ref, ref_stats = run(one_worker, epoch=0)
    for assignment in (three_workers, seven_workers):
        got, stats = run(assignment, epoch=0)
        assert stats == ref_stats
        for key in range(7):
            for name in ref[key]:
                np.testing.assert_array_equal(got[key][name], ref[key][name])
    next_epoch, _ = run(one_worker, epoch=1)
    assert not np.array_equal(next_epoch[0]["item"], ref[0]["item"])


def test_tables_survive_pickling() -> None:
    """Ray ships the tables through its object store (pickle): same tables, same draws."""
    cat = random_catalog(13)
    clone = pickle.loads(pickle.dumps(cat.tables))
    a, _ = mix(cat.users, cat.items, cat.tables, 4, 0.5, random_pool="popularity")
    b, _ = mix(cat.users, cat.items, clone, 4, 0.5, random_pool="popularity")
    np.testing.assert_array_equal(a["item"], b["item"])


# --------------------------------------------------------------------------- random pools


def chi_square(observed: np.ndarray, probs: np.ndarray) -> float:
    expected = probs * observed.sum()
    return float(((observed - expected) ** 2 / expected).sum())


def pool_probs(n_items: int, popularity: np.ndarray, seen: list[int], pool: str, exponent: float = 0.75) -> np.ndarray:
    weights = np.ones(n_items) if pool == "uniform" else (popularity + 1.0) ** exponent
    weights[[0, *seen]] = 0.0
    return weights / weights.sum()


@pytest.mark.parametrize("pool", ["uniform", "popularity"])
@pytest.mark.parametrize("heavy", [False, True], ids=["light-user", "heavy-user-exact-fallback"])
def test_random_pool_frequencies_follow_weights(pool: str, heavy: bool) -> None:
    n_items = 40
    rng = np.random.default_rng(21)
    popularity = np.concatenate([[0.0], rng.integers(0, 200, n_items - 1)])
    # A heavy user has seen 34 of 39 items: most draws fail all rejection rounds and go exact.
    seen = list(range(1, 35)) if heavy else [1]
    tables = SamplingTables.from_lists(n_items, [[] for _ in range(n_items)], [[], seen], popularity)
    n_pos, k = 8000, 10
    cols, stats = mix(
        np.ones(n_pos, dtype=np.int64),
        np.ones(n_pos, dtype=np.int64),
        tables,
        k,
        0.0,
        seed=4,
        random_pool=pool,
        popularity_exponent=0.75,
    )
    neg = cols["item"][n_pos:]
    probs = pool_probs(n_items, popularity, seen, pool)
    assert set(np.unique(neg).tolist()) == set(np.flatnonzero(probs).tolist())
    observed = np.bincount(neg, minlength=n_items)[probs > 0]
    dof = observed.size - 1
    assert chi_square(observed, probs[probs > 0]) < dof + 6 * np.sqrt(2 * dof)
    if heavy:
        assert stats.random_redraws > 0


def test_random_redraws_count_rejections() -> None:
    n_items = 10
    tables = SamplingTables.from_lists(n_items, [[] for _ in range(n_items)], [[], [1, 2, 3, 4, 5]])
    _, stats = mix(np.ones(2000, dtype=np.int64), np.ones(2000, dtype=np.int64), tables, 1, 0.0)
    # P(reject) = 5/9 per candidate: ~2000 * (5/9) / (4/9) = 2500 redraws expected
    assert 2000 < stats.random_redraws < 3000


@pytest.mark.parametrize("pool", ["uniform", "popularity"])
def test_near_saturated_user_gets_the_only_free_item(pool: str) -> None:
    n_items = 20
    seen = [i for i in range(1, n_items) if i != 7]
    also_view = [[] for _ in range(n_items)]
    also_view[3] = [7, 8, 9]
    also_view[4] = [8, 9]
    tables = SamplingTables.from_lists(n_items, also_view, [[], seen, [2]], np.arange(n_items, dtype=float))
    cols, stats = mix([1, 1, 1, 2], [3, 4, 5, 2], tables, 4, 0.5, random_pool=pool)
    neg_users, neg_items, is_hard = negatives_of(cols, 4, 4)
    assert (neg_items[:3] == 7).all()
    assert is_hard[0].tolist() == [True, False, False, False]  # without replacement: 7 once, rest random
    assert not is_hard[1:3].any()
    assert not np.isin(neg_items[3], [0, 2]).any()
    # requested 2 each; usable lists: item 3 -> {7}, items 4, 5 and 2 -> nothing
    assert (stats.hard_requested, stats.hard_drawn, stats.hard_shortfall) == (8, 1, 7)


def test_fully_saturated_user_raises() -> None:
    n_items = 6
    tables = SamplingTables.from_lists(n_items, [[] for _ in range(n_items)], [[], [1, 2, 3, 4, 5], [1]])
    with pytest.raises(ValueError, match="interacted with every item"):
        mix([2, 1], [1, 1], tables, 2, 0.5)


# --------------------------------------------------------------------------- API edges


def test_empty_batch() -> None:
    cat = random_catalog(0)
    cols, stats = mix(np.array([], dtype=np.int64), np.array([], dtype=np.int64), cat.tables, 4, 0.5)
    assert all(v.size == 0 for v in cols.values())
    assert stats == MixStats() and stats.hard_share == 0.0


@pytest.mark.parametrize(
    ("kwargs", "users", "items"),
    [
        ({"k": 0}, [1], [1]),
        ({"f": 1.5}, [1], [1]),
        ({"random_pool": "zipf"}, [1], [1]),
        ({}, [99], [1]),  # unknown user row
        ({}, [1], [0]),  # item 0 is never a positive
        ({}, [1], [60]),  # beyond the vocabulary
        ({}, [1, 2], [1]),
    ],
)
def test_bad_arguments_raise(kwargs: dict, users: list[int], items: list[int]) -> None:
    cat = random_catalog(0)
    k, f = kwargs.pop("k", 2), kwargs.pop("f", 0.5)
    with pytest.raises(ValueError):
        mix(users, items, cat.tables, k, f, **kwargs)


def test_positive_missing_from_user_items_raises() -> None:
    """Tables built from one split only would let other splits' items become negatives."""
    tables = SamplingTables.from_lists(6, [[] for _ in range(6)], [[], [1, 2]])
    with pytest.raises(ValueError, match="not in tables.user_items"):
        mix([1, 1], [2, 3], tables, 2, 0.5)


def test_from_lists_normalises_and_validates() -> None:
    tables = SamplingTables.from_lists(5, [[], [1, 2, 2], [], [], []], [[], [3, 1, 3]])
    assert tables.also_view_indices.tolist() == [2]  # self loop and duplicate dropped
    assert tables.user_items_indices.tolist() == [1, 3]  # sorted, deduplicated
    assert tables.n_users == 2
    assert tables.also_view_indices.dtype == np.int32 and tables.user_items_indptr.dtype == np.int64
    with pytest.raises(ValueError):
        SamplingTables.from_lists(5, [[], [7], [], [], []], [[]])  # item id out of range
    with pytest.raises(ValueError):
        SamplingTables.from_lists(5, [[], [], []], [[]])  # one list per item id
    with pytest.raises(ValueError, match="sorted"):
        SamplingTables(
            5, np.zeros(6), np.array([], np.int32), np.array([0, 2]), np.array([3, 1], np.int32), np.zeros(5)
        )


def test_mixstats_merge_and_dict() -> None:
    a = MixStats(positives=2, negatives=8, hard_requested=4, hard_drawn=3, hard_shortfall=1, random_redraws=5)
    b = MixStats(positives=1, negatives=4, hard_requested=2, hard_drawn=2, hard_shortfall=0, random_redraws=0)
    merged = a.merge(b)
    assert merged == MixStats(3, 12, 6, 5, 1, 5)
    assert a == MixStats(2, 8, 4, 3, 1, 5)  # inputs unchanged
    assert merged.to_dict() == {
        "positives": 3,
        "negatives": 12,
        "hard_requested": 6,
        "hard_drawn": 5,
        "hard_shortfall": 1,
        "random_redraws": 5,
        "related_left_out": 0,
        "related_kept": 0,
        "hard_share": 5 / 12,
    }


@pytest.mark.parametrize("n_keys", [0, 1, 50, 5000])
def test_key_set_matches_python_set(n_keys: int) -> None:
    rng = np.random.default_rng(n_keys)
    keys = np.unique(rng.integers(0, 20_000, n_keys)).astype(np.int64)
    key_set = _KeySet.build(keys)
    query = np.concatenate([keys, rng.integers(0, 20_000, 3000)])
    query = np.concatenate([query, [-1, -5]])  # negative keys (bad ids) are never members
    expected = np.isin(query, keys)
    np.testing.assert_array_equal(key_set.contains(query), expected)
    # a filter of 1 bit per key passes most misses on: the table alone must then get them right
    np.testing.assert_array_equal(_KeySet.build(keys, filter_bits_per_key=1).contains(query), expected)


def test_key_set_filter_sends_few_misses_to_the_table() -> None:
    """The filter is why lookups are cheap: with 32 bits per key, at most a few % of the
    queries that are not keys get past it (about 3% expected)."""
    rng = np.random.default_rng(7)
    keys = np.unique(rng.integers(0, 10**9, 50_000)).astype(np.int64)
    key_set = _KeySet.build(keys)
    misses = np.setdiff1d(rng.integers(0, 10**9, 100_000), keys)
    where = _hash_slots(misses, key_set.filter_bits)
    passed = (key_set.filter[where >> 3] >> (where & 7).astype(np.uint8)) & 1
    assert passed.mean() < 0.06
    assert not key_set.contains(misses).any()


def user_relations_of(catalog: Catalog) -> UserRelations:
    """Every item of a user counts as a training item here."""
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in catalog.user_items])])
    items = np.array([i for s in catalog.user_items for i in sorted(s)], dtype=np.int64)
    tables = catalog.tables
    return UserRelations.build((indptr, items), tables.n_items, tables.also_view_indptr, tables.also_view_indices)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_excluding_related_leaves_out_neighbours_of_the_users_other_items(seed: int) -> None:
    catalog = random_catalog(seed, n_items=80, max_list=6)
    k = 4
    kwargs = dict(negatives_per_positive=k, also_view_fraction=0.5, rng=np.random.default_rng(seed))
    out, stats = mix_negatives(
        catalog.users, catalog.items, catalog.tables, related=user_relations_of(catalog), **kwargs
    )
    plain, plain_stats = mix_negatives(catalog.users, catalog.items, catalog.tables, **kwargs)
    neighbours = [set() for _ in catalog.also_view]
    for a, row in enumerate(catalog.also_view):
        for b in row:
            neighbours[a].add(b)
            neighbours[b].add(a)
    n_pos = len(catalog.users)
    related_kept = 0
    for row in range(n_pos, len(out["item"])):
        user, item = int(out["user"][row]), int(out["item"][row])
        positive = int(catalog.items[(row - n_pos) // k])
        assert item not in catalog.user_items[user]

        def related(candidate: int, user: int = user, positive: int = positive) -> bool:
            return any(candidate in neighbours[other] for other in catalog.user_items[user] if other != positive)

        if out["is_hard"][row]:
            assert item in catalog.also_view[positive] and not related(item)  # never related elsewhere
        if related(item):  # only where nothing unrelated was left to draw
            free = set(range(1, 80)) - catalog.user_items[user]
            assert all(related(other) for other in free), (user, positive)
            related_kept += 1
    assert related_kept == stats.related_kept
    assert stats.related_left_out > 0 and plain_stats.related_left_out == 0
    assert stats.hard_drawn <= plain_stats.hard_drawn


def test_user_relations_count_leaves_the_positive_out() -> None:
    # items 1-2 and 2-3 are neighbours; user 1 had items 1 and 3
    tables = SamplingTables.from_lists(5, [[], [2], [3], [], []], [[], [1, 3]])
    relations = UserRelations.build(
        (np.array([0, 0, 2]), np.array([1, 3])), 5, tables.also_view_indptr, tables.also_view_indices
    )
    users = np.array([1, 1, 1, 1])
    assert relations.count(users, np.array([2, 4, 1, 3])).tolist() == [2, 0, 0, 0]
    assert relations.count(users, np.array([2, 2, 4, 2]), leave_out=np.array([1, 3, 1, 4])).tolist() == [1, 1, 0, 2]
