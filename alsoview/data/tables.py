"""The tables negative mixing reads, built once per dataset and shared read-only through Ray's
object store: each item's also-view list and each user's items as CSR arrays, item popularity,
a membership set of (user, item) pairs, and the popularity-weighted pool.

Membership ("did user u interact with item i") is a vectorised lookup of the int64 key
``u * n_items + i`` in an open-addressing hash set (multiplicative hashing, linear probing, load
<= 0.5) built once per :class:`SamplingTables`: one cache miss per query, where
``np.searchsorted`` over the sorted key array takes about 20 binary-search steps. The sorted keys
are kept too: the exact complement draw needs row ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# Multiplier of the Fibonacci hash used by the membership hash set (2**64 / golden ratio).
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)
# Guide-table buckets per pool item for the weighted draw (more buckets, fewer scan steps).
_GUIDE_BUCKETS_PER_ITEM = 2


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
