"""Array helpers over (owner, member) pair tables: dedupe and cap, pick per group, list asins.

The review draws, the also-view lists and the meta file's also_buy lists all build such tables;
the helpers live here so those modules depend on this one rather than on each other.
"""

from __future__ import annotations

import numpy as np


def keep_first(
    owners: np.ndarray, members: np.ndarray, n_members: int, limit: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated (owner, member) pairs (first wins) and keep at most limit[owner] per owner."""
    key = owners.astype(np.int64) * n_members + members
    _, first = np.unique(key, return_index=True)
    first.sort()
    owners, members = owners[first], members[first]
    if limit is None:
        return owners, members
    order = np.argsort(owners, kind="stable")
    owners, members = owners[order], members[order]
    rank = np.arange(len(owners)) - np.searchsorted(owners, owners, side="left")
    keep = rank < limit[owners]
    return owners[keep], members[keep]


def pick_by_group(
    rng: np.random.Generator, members: np.ndarray, member_group: np.ndarray, want_group: np.ndarray, n_groups: int
) -> np.ndarray:
    """For each wanted group, a uniformly random member of it (-1 where the group is empty)."""
    order = np.argsort(member_group, kind="stable")
    members, member_group = members[order], member_group[order]
    start = np.searchsorted(member_group, np.arange(n_groups))
    size = np.bincount(member_group, minlength=n_groups)[want_group]
    pick = start[want_group] + (rng.random(len(want_group)) * size).astype(np.int64)
    return np.where(size > 0, members[np.minimum(pick, len(members) - 1)], -1)


def asin_lists(
    owners: np.ndarray, refs: np.ndarray, n_owners: int, asins: list[str], ghosts: list[str]
) -> list[list[str]]:
    """Per owner item, the asins of its refs in order (owners sorted; refs index asins + ghosts)."""
    names = np.array(asins + ghosts, dtype=object)
    bounds = np.searchsorted(owners, np.arange(n_owners + 1))
    return [names[refs[bounds[i] : bounds[i + 1]]].tolist() for i in range(n_owners)]
