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

Membership ("did user u interact with item i") is a vectorised lookup of the int64 key
``u * n_items + i`` in an open-addressing hash set (multiplicative hashing, linear probing, load
<= 0.5) built once per :class:`SamplingTables`. Measured on 560k interactions it is ~10x faster
than ``np.searchsorted`` over the sorted key array (one cache miss per query instead of ~20
binary-search steps). The sorted keys are kept too: the exact complement draw needs row ranks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from alsoview.config import RANDOM_POOLS

__all__ = ["SamplingTables", "MixStats", "mix_negatives", "epoch_rng", "RANDOM_POOLS"]


# Rejection rounds before switching to an exact draw. Each round redraws only the rejected
# candidates, so the cost of a round shrinks geometrically; the exact draws after the last round
# handle heavy users (most of the catalog interacted with) and short also-view lists.
_HARD_REJECTION_ROUNDS = 3
_RANDOM_REJECTION_ROUNDS = 8
# Multiplier of the Fibonacci hash used by the membership hash set (2**64 / golden ratio).
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)
# Guide-table buckets per pool item for the weighted draw (more buckets, fewer scan steps).
_GUIDE_BUCKETS_PER_ITEM = 2
# The exact complement draw is a float binary search; a result that lands on an interacted item
# can only come from rounding, and is redrawn at most this many times.
_EXACT_DRAW_RETRIES = 4


@dataclass(frozen=True, eq=False)
class SamplingTables:
    """Everything negative mixing needs, as compact arrays (shared read-only through Ray's object store)."""

    n_items: int  # vocabulary size incl. reserved 0
    also_view_indptr: np.ndarray  # int64 [n_items + 1], CSR over items
    also_view_indices: np.ndarray  # int32, item ids (1..n_items-1), no self loops, no duplicates within a row
    user_items_indptr: np.ndarray  # int64 [n_users + 1], CSR over users
    user_items_indices: (
        np.ndarray
    )  # int32, every item the user interacted with in ANY split, sorted ascending within a row
    item_popularity: np.ndarray  # float64 [n_items], train interaction counts (0 for item 0)
    # Derived once at construction; pickling keeps them, so Ray workers do not rebuild them.
    user_item_keys: np.ndarray = field(init=False, repr=False)  # sorted int64 ``user * n_items + item``
    _key_set: "_KeySet" = field(init=False, repr=False)
    # Weighted pools per popularity exponent, built on first use (per process).
    _pools: dict = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        n_items = int(self.n_items)
        if n_items < 2:
            raise ValueError(f"n_items must be >= 2 (item 0 is reserved), got {n_items}")
        object.__setattr__(self, "n_items", n_items)
        av_indptr = _as_indptr(self.also_view_indptr, n_items, "also_view_indptr")
        av_indices = _as_item_ids(self.also_view_indices, n_items, "also_view_indices", av_indptr)
        ui_indptr = _as_indptr(self.user_items_indptr, None, "user_items_indptr")
        ui_indices = _as_item_ids(self.user_items_indices, n_items, "user_items_indices", ui_indptr)
        popularity = np.ascontiguousarray(self.item_popularity, dtype=np.float64)
        if popularity.shape != (n_items,):
            raise ValueError(f"item_popularity must have shape ({n_items},), got {popularity.shape}")
        if not np.all(np.isfinite(popularity)) or np.any(popularity < 0):
            raise ValueError("item_popularity must be finite and >= 0")

        n_users = len(ui_indptr) - 1
        row_users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(ui_indptr))
        keys = row_users * n_items + ui_indices
        if keys.size > 1 and not np.all(keys[1:] > keys[:-1]):
            raise ValueError("user_items_indices must be sorted ascending and unique within each user's row")
        av_rows = np.repeat(np.arange(n_items, dtype=np.int64), np.diff(av_indptr))
        if np.any(av_rows == av_indices):
            raise ValueError("also_view lists must not contain the item itself (self loop)")
        if np.unique(av_rows * n_items + av_indices).size != av_indices.size:
            raise ValueError("also_view lists must not contain duplicates within a row")

        # Normalised dtypes may share memory with the caller's arrays: treat them as read-only.
        for name, value in (
            ("also_view_indptr", av_indptr),
            ("also_view_indices", av_indices),
            ("user_items_indptr", ui_indptr),
            ("user_items_indices", ui_indices),
            ("item_popularity", popularity),
        ):
            object.__setattr__(self, name, value)
        keys.setflags(write=False)
        object.__setattr__(self, "user_item_keys", keys)
        object.__setattr__(self, "_key_set", _KeySet.build(keys))

    @property
    def n_users(self) -> int:
        """Number of user rows (incl. reserved user 0)."""
        return len(self.user_items_indptr) - 1

    @classmethod
    def from_lists(
        cls,
        n_items: int,
        also_view: Sequence[Sequence[int]],
        user_items: Sequence[Sequence[int]],
        item_popularity: Sequence[float] | np.ndarray | None = None,
    ) -> "SamplingTables":
        """Build tables from Python lists (tests, small data): one also-view list per item id
        (``len(also_view) == n_items``) and one interaction list per user id.

        Self loops and duplicates in also-view lists are dropped; user rows are sorted and deduplicated.
        """
        if len(also_view) != n_items:
            raise ValueError(f"also_view needs one list per item id 0..{n_items - 1}, got {len(also_view)}")
        av_rows = [sorted({int(j) for j in row if int(j) != i}) for i, row in enumerate(also_view)]
        ui_rows = [sorted({int(j) for j in row}) for row in user_items]
        popularity = np.zeros(n_items) if item_popularity is None else np.asarray(item_popularity, dtype=np.float64)
        return cls(
            n_items=n_items,
            also_view_indptr=_indptr_from_rows(av_rows),
            also_view_indices=np.fromiter((j for row in av_rows for j in row), dtype=np.int32),
            user_items_indptr=_indptr_from_rows(ui_rows),
            user_items_indices=np.fromiter((j for row in ui_rows for j in row), dtype=np.int32),
            item_popularity=popularity,
        )

    def interacted(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Vectorised membership: bool array, True where ``users[i]`` interacted with ``items[i]``."""
        return self._key_set.contains(users.astype(np.int64, copy=False) * self.n_items + items)

    def weighted_pool(self, exponent: float) -> "_WeightedPool":
        """Popularity pool for ``exponent``, cached on this object (cheap to rebuild if lost)."""
        exponent = float(exponent)
        pool = self._pools.get(exponent)
        if pool is None:
            if not np.isfinite(exponent):
                raise ValueError(f"popularity_exponent must be finite, got {exponent}")
            weights = (self.item_popularity + 1.0) ** exponent
            weights[0] = 0.0
            pool = self._pools[exponent] = _WeightedPool.build(weights)
        return pool


@dataclass(frozen=True)
class _KeySet:
    """Open-addressing hash set of non-negative int64 keys with a vectorised lookup, behind a
    one-hash bit filter.

    Nearly every query of the sampler misses (a random or also-view item the user has not seen).
    The table is several MB and each probe a cache miss (about 20 ns a query here); the filter
    has 32 bits per key, so it stays small, answers most misses from cache, and sends only its
    hits (the keys and about 3% false positives) to the table. The table is kept a quarter full
    (16 MB for the 486k keys at Video Games scale), so those hits probe short chains.
    """

    table: np.ndarray  # int64 [2**bits], -1 = empty
    bits: int
    filter: np.ndarray  # uint8 [2**filter_bits / 8]: bit h set for every key's filter hash h
    filter_bits: int

    @classmethod
    def build(cls, keys: np.ndarray, max_load: float = 0.25, filter_bits_per_key: int = 32) -> "_KeySet":
        """Insert all keys in vectorised rounds: each round places one key per free target slot."""
        bits = max(4, int(np.ceil(np.log2(max(keys.size, 1) / max_load))))
        table = np.full(1 << bits, -1, dtype=np.int64)
        slot = _hash_slots(keys, bits)
        pending = np.arange(keys.size)
        while pending.size:
            free = np.flatnonzero(table[slot[pending]] == -1)
            _, first = np.unique(slot[pending[free]], return_index=True)
            winners = pending[free[first]]
            table[slot[winners]] = keys[winners]
            placed = np.zeros(pending.size, dtype=bool)
            placed[free[first]] = True
            pending = pending[~placed]
            slot[pending] = (slot[pending] + 1) & (table.size - 1)
        table.setflags(write=False)
        filter_bits = max(6, int(np.ceil(np.log2(max(keys.size, 1) * filter_bits_per_key))))
        bit_filter = np.zeros(1 << (filter_bits - 3), dtype=np.uint8)
        where = _hash_slots(keys, filter_bits)
        np.bitwise_or.at(bit_filter, where >> 3, np.left_shift(1, where & 7).astype(np.uint8))
        bit_filter.setflags(write=False)
        return cls(table, bits, bit_filter, filter_bits)

    def contains(self, query: np.ndarray) -> np.ndarray:
        """The filter first; its hits go to the table."""
        where = _hash_slots(query, self.filter_bits)
        maybe = np.flatnonzero((self.filter[where >> 3] >> (where & 7).astype(np.uint8)) & 1)
        found = np.zeros(query.size, dtype=bool)
        if maybe.size:
            found[maybe] = self._probe(query[maybe])
        return found

    def _probe(self, query: np.ndarray) -> np.ndarray:
        """Linear probing, one vectorised round per probe step (only unresolved queries continue)."""
        table, mask = self.table, self.table.size - 1
        slot = _hash_slots(query, self.bits)
        seen = table[slot]
        found = (seen == query) & (seen != -1)  # -1 marks empty slots, never a stored key
        todo = np.flatnonzero(~found & (seen != -1))
        while todo.size:
            slot[todo] = (slot[todo] + 1) & mask
            seen = table[slot[todo]]
            hit = seen == query[todo]
            found[todo[hit]] = True
            todo = todo[~hit & (seen != -1)]
        return found


def _hash_slots(keys: np.ndarray, bits: int) -> np.ndarray:
    """Fibonacci hashing: the top ``bits`` bits of ``key * 2**64/phi`` (wrapping uint64 multiply)."""
    return ((keys.astype(np.uint64) * _HASH_MULT) >> np.uint64(64 - bits)).astype(np.int64)


@dataclass(frozen=True)
class _WeightedPool:
    """Weighted draw over item ids by inverse CDF with a guide table.

    ``np.searchsorted`` on a float64 CDF costs ~300 ns per draw; the guide table jumps to the right
    neighbourhood and a short vectorised forward scan finishes (~10 ns per draw).
    """

    weights: np.ndarray  # float64 [n_items], weights[0] == 0
    cdf: np.ndarray  # float64 [n_items], cumsum(weights)
    guide: np.ndarray  # int64 [n_buckets]: first id with cdf > bucket start

    @classmethod
    def build(cls, weights: np.ndarray) -> "_WeightedPool":
        if not np.all(np.isfinite(weights)) or weights[1:].min() <= 0:
            raise ValueError("popularity weights must be finite and > 0")
        cdf = np.cumsum(weights)
        n_buckets = _GUIDE_BUCKETS_PER_ITEM * weights.size
        guide = np.searchsorted(cdf, np.arange(n_buckets) * (cdf[-1] / n_buckets), side="right")
        return cls(weights, cdf, guide)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` ids with P(i) = weights[i] / sum(weights)."""
        cdf, total = self.cdf, self.cdf[-1]
        v = rng.random(size) * total
        bucket = np.minimum((v * (self.guide.size / total)).astype(np.int64), self.guide.size - 1)
        idx = np.minimum(self.guide[bucket], cdf.size - 1)
        todo = np.flatnonzero((cdf[idx] <= v) & (idx < cdf.size - 1))
        while todo.size:
            idx[todo] += 1
            todo = todo[(cdf[idx[todo]] <= v[todo]) & (idx[todo] < cdf.size - 1)]
        return idx


@dataclass
class MixStats:
    """Counts to report per epoch; merge across batches and shards with :meth:`merge`."""

    positives: int = 0
    negatives: int = 0
    hard_requested: int = 0
    hard_drawn: int = 0
    hard_shortfall: int = 0  # requested but filled from random: the usable also-view list was too short
    random_redraws: int = 0  # random candidates rejected because the user had interacted with them

    def merge(self, other: "MixStats") -> "MixStats":
        """Field-wise sum (a new object; neither input changes)."""
        return MixStats(**{k: v + getattr(other, k) for k, v in asdict(self).items()})

    @property
    def hard_share(self) -> float:
        """Realised share of hard negatives among all negatives (0.0 when there are none)."""
        return self.hard_drawn / self.negatives if self.negatives else 0.0

    def to_dict(self) -> dict:
        """Plain dict for metrics reporting, incl. the derived ``hard_share``."""
        return {**asdict(self), "hard_share": self.hard_share}


def epoch_rng(seed: int, epoch: int, block_key: int) -> np.random.Generator:
    """Generator for one block of one epoch: independent of worker count and block placement."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch, block_key]))


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
    hard_items, n_drawn = _draw_hard(users, items, n_hard, tables, rng)
    is_hard = np.arange(k) < n_drawn[:, None]  # [B, k]; hard slots come first within a positive

    neg_users = np.repeat(users, k)
    neg_items = np.empty(n_pos * k, dtype=np.int64)
    hard_flat = is_hard.ravel()
    neg_items[hard_flat] = hard_items[np.arange(hard_items.shape[1]) < n_drawn[:, None]]
    random_users = neg_users[~hard_flat]
    pool = None if random_pool == "uniform" else tables.weighted_pool(popularity_exponent)
    random_items, redraws = _draw_random(random_users, tables, pool, rng)
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


def _as_indptr(value: np.ndarray, n_rows: int | None, name: str) -> np.ndarray:
    indptr = np.ascontiguousarray(value, dtype=np.int64)
    if indptr.ndim != 1 or indptr.size < 1 or (n_rows is not None and indptr.size != n_rows + 1):
        expected = "n_rows + 1" if n_rows is None else str(n_rows + 1)
        raise ValueError(f"{name} must be 1-D with {expected} entries, got shape {indptr.shape}")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError(f"{name} must start at 0 and be non-decreasing")
    return indptr


def _as_item_ids(value: np.ndarray, n_items: int, name: str, indptr: np.ndarray) -> np.ndarray:
    ids = np.ascontiguousarray(value)
    if ids.ndim != 1 or ids.size != indptr[-1]:
        raise ValueError(f"{name} must be 1-D with indptr[-1] = {indptr[-1]} entries, got shape {ids.shape}")
    if ids.size and (ids.min() < 1 or ids.max() >= n_items):
        raise ValueError(f"{name} must hold item ids in [1, {n_items})")
    return ids.astype(np.int32, copy=False)


def _indptr_from_rows(rows: Sequence[Sequence[int]]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum([len(r) for r in rows], dtype=np.int64)]).astype(np.int64)


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


def _draw_hard(
    users: np.ndarray, items: np.ndarray, n_hard: np.ndarray, tables: SamplingTables, rng: np.random.Generator
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
            ok = _usable(cand, users[rows], chosen[rows, :j], tables)
            chosen[rows[ok], j] = cand[ok]
            rows = rows[~ok]
        if rows.size:
            found = _exact_hard_slot(rows, j, users, lo, length, chosen, tables, rng)
            alive[rows[~found]] = False
        n_drawn += chosen[:, j] >= 0
    return chosen, n_drawn


def _usable(cand: np.ndarray, users: np.ndarray, taken: np.ndarray, tables: SamplingTables) -> np.ndarray:
    """Candidate is neither interacted with nor already taken by an earlier hard slot of its positive."""
    ok = ~tables.interacted(users, cand)
    for col in range(taken.shape[1]):
        ok &= cand != taken[:, col]
    return ok


def _exact_hard_slot(
    rows: np.ndarray,
    j: int,
    users: np.ndarray,
    lo: np.ndarray,
    length: np.ndarray,
    chosen: np.ndarray,
    tables: SamplingTables,
    rng: np.random.Generator,
) -> np.ndarray:
    """Fill slot ``j`` of ``rows`` uniformly from ALL usable list entries (expanded); returns found mask."""
    seg_len = length[rows]
    seg = np.repeat(np.arange(rows.size), seg_len)
    seg_start = np.cumsum(seg_len) - seg_len
    flat_pos = np.repeat(lo[rows], seg_len) + (np.arange(seg.size) - seg_start[seg])
    cand = tables.also_view_indices[flat_pos].astype(np.int64)
    ok = _usable(cand, users[rows][seg], chosen[rows, :j][seg], tables)
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
    users: np.ndarray, tables: SamplingTables, pool: _WeightedPool | None, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """One negative per entry of ``users`` from the pool (``None`` = uniform over 1..n_items-1)
    minus the user's items, by rejection rounds then an exact draw; returns (items, redraws)."""
    n_items = tables.n_items

    def draw(size: int) -> np.ndarray:
        return rng.integers(1, n_items, size=size) if pool is None else pool.draw(rng, size)

    out = draw(users.size)
    todo = np.flatnonzero(tables.interacted(users, out))
    redraws = todo.size
    for _ in range(_RANDOM_REJECTION_ROUNDS - 1):
        if todo.size == 0:
            break
        out[todo] = draw(todo.size)
        todo = todo[tables.interacted(users[todo], out[todo])]
        redraws += todo.size
    if todo.size:
        weights = np.ones(n_items) if pool is None else pool.weights
        out[todo] = _exact_complement_draw(users[todo], tables, weights, rng)
    return out, int(redraws)


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
