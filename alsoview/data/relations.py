"""Also-view as a positive relation: how many of a user's training items are also-view
neighbours (in either direction) of a candidate item; and the item co-occurrence counts of the
users' items (`cooccurrence_counts`, `sequence_cooccurrence_counts`: the co-occurrence head's table).

Chorus and KDA (the top of the public Grocery leaderboard) score a candidate up when it is
related to the user's items through exactly this metadata; on Grocery_2014 this count alone,
with popularity to break ties, beat co-occurrence
(experiments/results/sweeps/real_quality-grocery-relation.json). `evaluation.baselines.RelatedItemsScorer`
reports it beside the other peers, and `model/parts/relation.py` learns how much to trust it.
Pure numpy: built once per dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Neighbours:
    """The also-view graph made undirected, as sorted keys ``a * n_items + b`` (both directions)."""

    n_items: int
    keys: np.ndarray  # int64, sorted, unique
    indptr: np.ndarray  # int64 [n_items + 1], CSR over `a`

    @classmethod
    def from_also_view(cls, n_items: int, indptr: np.ndarray, indices: np.ndarray) -> "Neighbours":
        src = np.repeat(np.arange(n_items, dtype=np.int64), np.diff(indptr))
        dst = np.asarray(indices, dtype=np.int64)
        keys = np.unique(np.concatenate([src * n_items + dst, dst * n_items + src]))
        return cls(n_items, keys, np.searchsorted(keys // n_items, np.arange(n_items + 1)).astype(np.int64))

    def of(self, item: int) -> np.ndarray:
        return self.keys[self.indptr[item] : self.indptr[item + 1]] % self.n_items


def user_item_csr(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """Each user's distinct items, as CSR (indptr over users 0..n_users-1, item ids)."""
    keys = np.unique(np.asarray(users, dtype=np.int64) * n_items + np.asarray(items, dtype=np.int64))
    return np.searchsorted(keys // n_items, np.arange(n_users + 1)).astype(np.int64), keys % n_items


def user_items_in_time_order(
    users: np.ndarray, items: np.ndarray, times: np.ndarray, n_users: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's items in time order (equal times in item-id order), as CSR over users."""
    order = np.lexsort((items, times, users))
    counts = np.bincount(users, minlength=n_users)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), np.asarray(items)[order]


def csr_positions(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owner, position) of every entry of the CSR rows `rows`: `owner` is the index into `rows`
    of the row an entry belongs to, `position` its index into the CSR's values, in row order."""
    indptr = np.asarray(indptr, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    starts = indptr[rows]
    lengths = indptr[rows + 1] - starts
    owners = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    return owners, np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))


# (history item, neighbour) pairs `relation_counts` holds at once: its int64 arrays and their sort
# are sized by this, not by the data (a block of users at a time; their keys do not overlap).
RELATION_BLOCK_PAIRS = 1 << 22


def relation_counts(
    history_indptr: np.ndarray, history_items: np.ndarray, neighbours: Neighbours
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys ``user * n_items + item``, counts): for every item that is a neighbour of at
    least one of a user's training items, how many of them. Built a block of users at a time,
    each block at most about `RELATION_BLOCK_PAIRS` pairs (one user's pairs are never split)."""
    indptr = np.asarray(history_indptr, dtype=np.int64)
    items = np.asarray(history_items, dtype=np.int64)
    per_item = neighbours.indptr[items + 1] - neighbours.indptr[items]
    pairs_before = np.concatenate([[0], np.cumsum(per_item)])[indptr]  # per user boundary
    bounds = np.searchsorted(pairs_before, np.arange(0, pairs_before[-1], RELATION_BLOCK_PAIRS), side="right") - 1
    bounds = np.unique(np.concatenate([[0], bounds, [len(indptr) - 1]]))
    blocks = [_relation_block(indptr, items, neighbours, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    if not blocks:
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    return np.concatenate([b[0] for b in blocks]), np.concatenate([b[1] for b in blocks])


def _relation_block(
    indptr: np.ndarray, items: np.ndarray, neighbours: Neighbours, lo: int, hi: int
) -> tuple[np.ndarray, np.ndarray]:
    """`relation_counts` of users lo..hi-1."""
    owners, positions = csr_positions(indptr, np.arange(lo, hi))
    mine = items[positions]
    pair_owner, pair_position = csr_positions(neighbours.indptr, mine)
    related = neighbours.keys[pair_position] % neighbours.n_items
    keys, counts = np.unique((owners[pair_owner] + lo) * neighbours.n_items + related, return_counts=True)
    return keys, counts.astype(np.int32)


def cooccurrence_counts(indptr: np.ndarray, items: np.ndarray, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys ``a * n_items + b``, counts) over a ≠ b: how many users had both a and b,
    from each user's distinct items as CSR (`user_item_csr`): X^T X off its diagonal, as
    `baselines.CooccurrenceScorer` builds it. Memory: one int64 per ordered pair of a user's
    items while it is built (a user with L items adds L * (L - 1))."""
    a, b, _ = _ordered_pairs(indptr, items)
    keys, counts = np.unique(a * n_items + b, return_counts=True)
    return keys, counts.astype(np.int32)


def sequence_cooccurrence_counts(
    indptr: np.ndarray, items_in_time_order: np.ndarray, n_items: int, proximity: float, forward: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted keys ``a * n_items + b``, weights) over a ≠ b from each user's items in time order
    (CSR, each item once): a user whose b came g places after a adds proximity^(g - 1), and with
    `forward` false one whose b came g places before a adds it too. At proximity 1 and forward
    false this is `cooccurrence_counts`. Under next-item protocols the next item follows the
    user's last ones: what other users had soon after an item says more than what they had at
    any time (`model.heads.cooccurrence.proximity`, `model.heads.cooccurrence.forward`). Memory as
    `cooccurrence_counts`."""
    if proximity == 1.0 and not forward:  # every pair counts 1: the plain counts, without the weights' passes
        keys, counts = cooccurrence_counts(indptr, items_in_time_order, n_items)
        return keys, counts.astype(np.float64)
    a, b, gap = _ordered_pairs(indptr, items_in_time_order)
    keep = gap > 0 if forward else np.ones(len(gap), dtype=bool)
    keys, where = np.unique(a[keep] * n_items + b[keep], return_inverse=True)
    weights = np.bincount(where, weights=proximity ** (np.abs(gap[keep]) - 1.0), minlength=len(keys))
    return keys, weights


def _ordered_pairs(indptr: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, b's place minus a's) of every ordered pair of two different places in a user's CSR
    items (items distinct per user: a ≠ b)."""
    items = np.asarray(items, dtype=np.int64)
    lengths = np.diff(np.asarray(indptr, dtype=np.int64))
    per_item = np.repeat(lengths, lengths)  # each occurrence pairs with every item of its user
    firsts = np.repeat(np.asarray(indptr[:-1], dtype=np.int64), lengths)
    place = np.arange(len(items)) - firsts  # each item's place in its user's list
    offsets = np.arange(int(per_item.sum())) - np.repeat(np.cumsum(per_item) - per_item, per_item)
    a = np.repeat(items, per_item)
    b = items[np.repeat(firsts, per_item) + offsets]
    gap = offsets - np.repeat(place, per_item)
    return a[gap != 0], b[gap != 0], gap[gap != 0]


def relation_rows(
    history_indptr: np.ndarray, history_items: np.ndarray, neighbours: Neighbours, users: np.ndarray
) -> np.ndarray:
    """Dense [len(users), n_items] float32 rows of `relation_counts` for these users, counted from
    their own histories: scoring a sample of users needs no table of every user's relations."""
    n = neighbours.n_items
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    owners, positions = csr_positions(history_indptr, users)
    pair_owner, pair_position = csr_positions(neighbours.indptr, np.asarray(history_items, dtype=np.int64)[positions])
    flat = owners[pair_owner] * n + neighbours.keys[pair_position] % n
    return np.bincount(flat, minlength=len(users) * n).astype(np.float32).reshape(len(users), n)


@dataclass(frozen=True)
class UserRelations:
    """Each user's relation counts (`relation_counts` over their training items) and the graph's
    keys, to take one item (a training pair's positive) out of a user's relations."""

    n_items: int
    keys: np.ndarray  # sorted user * n_items + item
    counts: np.ndarray  # int32, aligned with keys
    neighbour_keys: np.ndarray  # Neighbours.keys

    @classmethod
    def build(
        cls,
        history: tuple[np.ndarray, np.ndarray],
        n_items: int,
        also_view_indptr: np.ndarray,
        also_view_indices: np.ndarray,
    ) -> "UserRelations":
        """From the users' training items as CSR (`user_item_csr`) and the also-view lists."""
        neighbours = Neighbours.from_also_view(n_items, also_view_indptr, also_view_indices)
        return cls(n_items, *relation_counts(*history, neighbours), neighbours.keys)

    def count(self, users: np.ndarray, items: np.ndarray, leave_out: np.ndarray | None = None) -> np.ndarray:
        """How many of each user's training items are neighbours of the item [N], the `leave_out`
        item not counted."""
        keys = users * self.n_items + items
        count = _sorted_lookup(self.keys, keys, self.counts)
        if leave_out is not None:
            count = count - _sorted_lookup(self.neighbour_keys, leave_out * self.n_items + items, None)
        return np.maximum(count, 0)


def _sorted_lookup(sorted_keys: np.ndarray, keys: np.ndarray, values: np.ndarray | None) -> np.ndarray:
    """values at `keys` in `sorted_keys` (1 for membership when `values` is None), 0 where absent."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), np.int64)
    index = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    found = sorted_keys[index] == keys
    return np.where(found, 1 if values is None else values[index], 0).astype(np.int64)
