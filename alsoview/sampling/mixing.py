"""Negative mixing: hard negatives from the positive item's also-viewed list, the rest at random.

Everything here is pure numpy and vectorised over the batch (loops only over a bounded number of
rounds or hard slots), so it can run inside Ray Data ``map_batches`` at millions of negatives per
second per core. Randomness comes only from the ``rng`` argument: seed it per
``(seed, epoch, block)`` with :func:`epoch_rng` and the output does not depend on how many workers
there are or which worker gets which block.

Layout of the output of :func:`mix_negatives` for ``B`` positives and ``k`` negatives per positive:
rows ``0..B-1`` are the positives (label 1) in input order, then ``B * k`` negatives (label 0) grouped
by positive: the negatives of positive ``p`` are rows ``B + p*k .. B + p*k + k - 1``, hard ones
first. The caller shuffles if it wants a mixed order.

The tables it reads (also-view lists, each user's items, the membership set, the weighted
pool) are built once per dataset in :mod:`alsoview.data.tables`.
"""

from __future__ import annotations

import typing
from typing import Literal

import numpy as np

from alsoview.data.relations import UserRelations
from alsoview.data.tables import SamplingTables, _WeightedPool
from alsoview.sampling.stats import MixStats

# `sampling.random_pool`: where the negatives that are not also-view come from
RandomPool = Literal["uniform", "popularity"]
RANDOM_POOLS: tuple[str, ...] = typing.get_args(RandomPool)

# Rejection rounds before switching to an exact draw. Each round redraws only the rejected
# candidates, so the cost of a round shrinks geometrically; the exact draws after the last round
# handle heavy users (most of the catalog interacted with) and short also-view lists.
_HARD_REJECTION_ROUNDS = 3
_RANDOM_REJECTION_ROUNDS = 8
# The exact complement draw is a float binary search; a result that lands on an interacted item
# can only come from rounding, and is redrawn at most this many times.
_EXACT_DRAW_RETRIES = 4


def mix_negatives(
    users: np.ndarray,
    items: np.ndarray,
    tables: SamplingTables,
    *,
    negatives_per_positive: int,
    also_view_fraction: float,
    rng: np.random.Generator,
    random_pool: str = "uniform",
    popularity_exponent: float = 0.75,
    related: UserRelations | None = None,
) -> tuple[dict[str, np.ndarray], MixStats]:
    """Positives followed by ``k`` negatives each; see the module docstring for the row layout.

    Returns columns ``user`` (int64), ``item`` (int64), ``label`` (float32) and ``is_hard`` (bool,
    True for negatives drawn from the also-view list), plus the batch's :class:`MixStats`.

    Per positive, ``floor(k*f)`` hard negatives are requested plus one more with probability
    ``frac(k*f)``, so the expected requested share is exactly ``f``. Hard negatives are uniform
    WITHOUT replacement over the positive item's also-view list minus everything the user
    interacted with; whatever that list cannot supply comes from the random pool (``hard_shortfall``).
    Random negatives are drawn independently (with replacement) from items ``1..n_items-1`` minus
    the user's items, uniformly or with weights ``(popularity + 1) ** popularity_exponent``.
    With ``related`` (`sampling.exclude_related`), neither kind may be an also-view neighbour of
    one of the user's training items other than the positive (likely false negatives: related to
    what the user chose); the positive's own neighbours stay hard candidates. Random draws reject
    such items for the rejection rounds; the exact draw after them does not, and what it keeps is
    counted (``related_kept``).
    Raises ``ValueError`` for bad arguments, ids out of range, a positive missing from
    ``tables.user_items`` (stale tables), or a user who interacted with every item.
    """
    k = _check_k(negatives_per_positive)
    f = float(also_view_fraction)
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"also_view_fraction must be in [0, 1], got {also_view_fraction}")
    if random_pool not in RANDOM_POOLS:
        raise ValueError(f"random_pool must be one of {RANDOM_POOLS}, got {random_pool!r}")
    users = np.asarray(users).astype(np.int64, copy=False).ravel()
    items = np.asarray(items).astype(np.int64, copy=False).ravel()
    _check_batch(users, items, tables)
    n_pos = users.size

    n_hard = _hard_counts(n_pos, k, f, rng)
    excluded = _Excluded(tables, related)
    hard_items, n_drawn = _draw_hard(users, items, n_hard, excluded, rng)
    is_hard = np.arange(k) < n_drawn[:, None]  # [B, k]; hard slots come first within a positive

    neg_users = np.repeat(users, k)
    neg_items = np.empty(n_pos * k, dtype=np.int64)
    hard_flat = is_hard.ravel()
    neg_items[hard_flat] = hard_items[np.arange(hard_items.shape[1]) < n_drawn[:, None]]
    random_users = neg_users[~hard_flat]
    random_positives = np.repeat(items, k)[~hard_flat]
    pool = None if random_pool == "uniform" else tables.weighted_pool(popularity_exponent)
    random_items, redraws = _draw_random(random_users, random_positives, excluded, pool, rng)
    neg_items[~hard_flat] = random_items

    columns = {
        "user": np.concatenate([users, neg_users]),
        "item": np.concatenate([items, neg_items]),
        "label": np.concatenate([np.ones(n_pos, np.float32), np.zeros(n_pos * k, np.float32)]),
        "is_hard": np.concatenate([np.zeros(n_pos, dtype=bool), hard_flat]),
    }
    requested = int(n_hard.sum())
    drawn = int(n_drawn.sum())
    stats = MixStats(
        positives=n_pos,
        negatives=n_pos * k,
        hard_requested=requested,
        hard_drawn=drawn,
        hard_shortfall=requested - drawn,
        random_redraws=redraws,
        related_left_out=excluded.related_left_out,
        related_kept=excluded.related_kept,
    )
    return columns, stats


# --------------------------------------------------------------------------- argument checks


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"negatives_per_positive must be an integer >= 1, got {k!r}")
    return int(k)


def _check_batch(users: np.ndarray, items: np.ndarray, tables: SamplingTables) -> None:
    """Range, positive-membership and saturated-user checks: O(B), and they turn silent garbage into errors."""
    if users.shape != items.shape:
        raise ValueError(f"users and items must have the same length, got {users.size} and {items.size}")
    if users.size == 0:
        return
    if users.min() < 0 or users.max() >= tables.n_users:
        raise ValueError(f"user ids must be in [0, {tables.n_users}); the sampling tables may be stale")
    if items.min() < 1 or items.max() >= tables.n_items:
        raise ValueError(f"positive item ids must be in [1, {tables.n_items}); the sampling tables may be stale")
    unseen = ~tables.interacted(users, items)
    if np.any(unseen):
        at = int(np.argmax(unseen))
        raise ValueError(
            f"positive (user {int(users[at])}, item {int(items[at])}) is not in tables.user_items: build the tables "
            "from the interactions of every split, or negatives could include the user's own items"
        )
    degree = tables.user_items_indptr[users + 1] - tables.user_items_indptr[users]
    full = degree >= tables.n_items - 1
    if np.any(full):
        raise ValueError(
            f"user {int(users[np.argmax(full)])} interacted with every item, so it has no negatives to sample"
        )


# --------------------------------------------------------------------------- hard negatives


def _hard_counts(n_pos: int, k: int, f: float, rng: np.random.Generator) -> np.ndarray:
    """Hard negatives requested per positive: floor(k*f), +1 with probability frac(k*f)."""
    kf = round(k * f, 9)  # 10 * 0.7 = 7.000000000000001 must not become "7, plus 1 with p=1e-15"
    base = int(np.floor(kf))
    counts = np.full(n_pos, base, dtype=np.int64)
    extra = kf - base
    if extra > 0:
        counts += rng.random(n_pos) < extra
    return counts


class _Excluded:
    """What a negative may not be: an item of the user's, and with `related` a neighbour of the
    user's other training items; counts what the relation check left out."""

    def __init__(self, tables: SamplingTables, related: UserRelations | None) -> None:
        self.tables, self.related = tables, related
        self.related_left_out = self.related_kept = 0

    def rejects(
        self, users: np.ndarray, positives: np.ndarray, candidates: np.ndarray, count: bool = True
    ) -> np.ndarray:
        """Which candidates may not be negatives; `count` the related ones as drawn and left out."""
        out = self.tables.interacted(users, candidates)
        if self.related is not None:
            near = ~out & (self.related.count(users, candidates, leave_out=positives) > 0)
            self.related_left_out += int(near.sum()) if count else 0
            out |= near
        return out


def _draw_hard(
    users: np.ndarray, items: np.ndarray, n_hard: np.ndarray, excluded: _Excluded, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hard negatives per positive, uniform without replacement over the usable also-view items.

    Slot ``j`` is filled for every positive at once: rejection rounds over random list positions
    (reject interacted items and items already taken by slots < j), then an exact draw for the few
    still empty. Sequential uniform draws without replacement give a uniform random subset.
    Returns ``(hard_items [B, max_h], n_drawn [B])``; row ``p`` holds its items in columns ``< n_drawn[p]``.
    """
    n_pos = users.size
    max_h = int(n_hard.max()) if n_pos else 0
    chosen = np.full((n_pos, max_h), -1, dtype=np.int64)
    n_drawn = np.zeros(n_pos, dtype=np.int64)
    if max_h == 0:
        return chosen, n_drawn
    tables = excluded.tables
    lo = tables.also_view_indptr[items]
    length = tables.also_view_indptr[items + 1] - lo
    alive = length > 0  # a row stops at its first slot that cannot be filled
    for j in range(max_h):
        alive &= length > j  # j items already taken: a list of length <= j is exhausted
        rows = np.flatnonzero(alive & (n_hard > j))
        for _ in range(_HARD_REJECTION_ROUNDS):
            if rows.size == 0:
                break
            cand = tables.also_view_indices[lo[rows] + rng.integers(0, length[rows])].astype(np.int64)
            ok = _usable(cand, users[rows], items[rows], chosen[rows, :j], excluded)
            chosen[rows[ok], j] = cand[ok]
            rows = rows[~ok]
        if rows.size:
            found = _exact_hard_slot(rows, j, users, items, lo, length, chosen, excluded, rng)
            alive[rows[~found]] = False
        n_drawn += chosen[:, j] >= 0
    return chosen, n_drawn


def _usable(
    cand: np.ndarray,
    users: np.ndarray,
    positives: np.ndarray,
    taken: np.ndarray,
    excluded: _Excluded,
    count: bool = True,
) -> np.ndarray:
    """Candidate is not excluded (`_Excluded`) nor already taken by an earlier hard slot of its positive."""
    ok = ~excluded.rejects(users, positives, cand, count)
    for col in range(taken.shape[1]):
        ok &= cand != taken[:, col]
    return ok


def _exact_hard_slot(
    rows: np.ndarray,
    j: int,
    users: np.ndarray,
    items: np.ndarray,
    lo: np.ndarray,
    length: np.ndarray,
    chosen: np.ndarray,
    excluded: _Excluded,
    rng: np.random.Generator,
) -> np.ndarray:
    """Fill slot ``j`` of ``rows`` uniformly from ALL usable list entries (expanded); returns found mask."""
    seg_len = length[rows]
    seg = np.repeat(np.arange(rows.size), seg_len)
    seg_start = np.cumsum(seg_len) - seg_len
    flat_pos = np.repeat(lo[rows], seg_len) + (np.arange(seg.size) - seg_start[seg])
    cand = excluded.tables.also_view_indices[flat_pos].astype(np.int64)
    ok = _usable(cand, users[rows][seg], items[rows][seg], chosen[rows, :j][seg], excluded, count=False)
    count = np.bincount(seg, weights=ok, minlength=rows.size).astype(np.int64)
    found = count > 0
    pick = np.full(rows.size, -1, dtype=np.int64)
    pick[found] = rng.integers(0, count[found])
    rank = np.cumsum(ok) - 1 - (np.cumsum(count) - count)[seg]  # rank among usable entries of the segment
    hit = ok & (rank == pick[seg])
    chosen[rows[seg[hit]], j] = cand[hit]
    return found


# --------------------------------------------------------------------------- random negatives


def _draw_random(
    users: np.ndarray, positives: np.ndarray, excluded: _Excluded, pool: _WeightedPool | None, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """One negative per entry of ``users`` from the pool (``None`` = uniform over 1..n_items-1)
    minus the user's items (and, with relations, their neighbours), by rejection rounds then an
    exact draw that leaves out the user's items only; returns (items, redraws)."""
    tables = excluded.tables
    n_items = tables.n_items

    def draw(size: int) -> np.ndarray:
        return rng.integers(1, n_items, size=size) if pool is None else pool.draw(rng, size)

    out = draw(users.size)
    todo = np.flatnonzero(excluded.rejects(users, positives, out))
    redraws = todo.size
    for _ in range(_RANDOM_REJECTION_ROUNDS - 1):
        if todo.size == 0:
            break
        out[todo] = draw(todo.size)
        todo = todo[excluded.rejects(users[todo], positives[todo], out[todo])]
        redraws += todo.size
    if todo.size:
        weights = np.ones(n_items) if pool is None else pool.weights
        if excluded.related is not None:
            drawn, none_left = _exact_unrelated_draw(users[todo], positives[todo], excluded, weights, rng, todo)
            out[todo] = drawn
            todo = none_left  # nothing unrelated is left for these: the plain exact draw below
        out[todo] = _exact_complement_draw(users[todo], tables, weights, rng)
    return out, int(redraws)


def _exact_unrelated_draw(
    users: np.ndarray,
    positives: np.ndarray,
    excluded: _Excluded,
    weights: np.ndarray,
    rng: np.random.Generator,
    rows: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A weighted draw over each user's items that are neither theirs nor related elsewhere, one
    user at a time (the few rows the rejection rounds left: heavy users in small catalogs);
    returns (items, the `rows` with no such item left), the latter counted as ``related_kept``."""
    every = np.arange(1, excluded.tables.n_items)
    out = np.zeros(len(users), dtype=np.int64)
    none_left = np.zeros(len(users), dtype=bool)
    for row, (user, positive) in enumerate(zip(users.tolist(), positives.tolist())):
        free = every[~excluded.rejects(np.full(len(every), user), np.full(len(every), positive), every, count=False)]
        w = weights[free]
        if w.sum() <= 0:
            none_left[row] = True
            continue
        out[row] = free[np.searchsorted(np.cumsum(w), rng.random() * w.sum(), side="right").clip(max=len(free) - 1)]
    excluded.related_kept += int(none_left.sum())
    return out, rows[none_left]


def _exact_complement_draw(
    users: np.ndarray, tables: SamplingTables, weights: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Exact weighted draw from items 1..n_items-1 the user has NOT interacted with.

    Inverse CDF of the complement: ``C_u(x) = W(1..x) - W(user's items <= x)`` with the user's
    part read from prefix sums over the CSR row, then a vectorised binary search over x
    (``ceil(log2 n_items)`` rounds). Terminates for any user with at least one free item.
    """
    n_items = tables.n_items
    w = weights.astype(np.float64, copy=True)
    w[0] = 0.0
    cdf_all = np.cumsum(w)  # cdf_all[x] = W(1..x)
    row_prefix = np.concatenate([[0.0], np.cumsum(w[tables.user_items_indices])])
    keys = tables.user_item_keys
    lo_row = tables.user_items_indptr[users]
    hi_row = tables.user_items_indptr[users + 1]

    total = cdf_all[n_items - 1] - (row_prefix[hi_row] - row_prefix[lo_row])
    result = np.empty(users.size, dtype=np.int64)
    todo = np.arange(users.size)
    for _ in range(_EXACT_DRAW_RETRIES):
        v = rng.random(todo.size) * total[todo]
        lo = np.ones(todo.size, dtype=np.int64)
        hi = np.full(todo.size, n_items - 1, dtype=np.int64)
        row_start, key_base = row_prefix[lo_row[todo]], users[todo] * n_items
        while np.any(lo < hi):
            mid = (lo + hi) // 2
            user_part = row_prefix[np.searchsorted(keys, key_base + mid, side="right")] - row_start
            above = cdf_all[mid] - user_part > v  # C_u(mid) > v: the answer is <= mid
            hi = np.where(above, mid, hi)
            lo = np.where(above, lo, mid + 1)
        result[todo] = lo
        todo = todo[tables.interacted(users[todo], lo)]
        if todo.size == 0:
            return result
    raise RuntimeError("exact complement draw kept landing on interacted items (floating point trouble)")
