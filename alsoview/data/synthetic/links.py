"""The also-view lists: per meta item, asins of similar items plus strays, catalog-only and ghost asins.

Similar items come from noisy latent similarity within a genre, so a list mixes both styles of
the genre: the hard negatives that teach the style preference. Kept apart from the review draws
because it is an independent step with its own vectorised table building.
"""

from __future__ import annotations

import numpy as np

from alsoview.data.synthetic.pairs import asin_lists, keep_first, pick_by_group
from alsoview.data.synthetic.vocabulary import GENRES, PLATFORMS
from alsoview.data.synthetic.world import ItemKinds

_ALSO_VIEW_PAIR_NOISE_SD = 0.45
ALSO_VIEW_MAX = 20
# Candidates scored per block of queries: a genre's whole pool up to this size, else a fresh
# sample of it per block, so the neighbour search grows linearly with the catalog, not with its
# square (at 16x the Video Games scale a genre holds about 23,000 reviewable items).
NEIGHBOUR_CANDIDATES = 4096
_QUERY_BLOCK = 2048


def similar_reviewable(
    rng: np.random.Generator, latent: np.ndarray, genre: np.ndarray, n_reviewable: int
) -> np.ndarray:
    """Top-20 reviewable neighbours of every item (same genre, by noisy latent similarity among
    at most NEIGHBOUR_CANDIDATES of the genre's items).

    Returns int (items, 20), -1 padded; never the item itself.
    """
    n = len(latent)
    top = np.full((n, ALSO_VIEW_MAX), -1, dtype=np.int64)
    for g in range(len(GENRES)):
        queries = np.flatnonzero(genre == g)
        genre_pool = np.flatnonzero(genre[:n_reviewable] == g)
        if len(genre_pool) < 2 * ALSO_VIEW_MAX:
            genre_pool = np.arange(n_reviewable)
        for lo in range(0, len(queries), _QUERY_BLOCK):
            block = queries[lo : lo + _QUERY_BLOCK]
            pool = genre_pool
            if len(pool) > NEIGHBOUR_CANDIDATES:
                pool = np.sort(rng.choice(genre_pool, NEIGHBOUR_CANDIDATES, replace=False))
            k = min(ALSO_VIEW_MAX, len(pool))
            score = latent[block] @ latent[pool].T
            score += rng.standard_normal(score.shape, dtype=np.float32) * np.float32(_ALSO_VIEW_PAIR_NOISE_SD)
            pos = np.minimum(np.searchsorted(pool, block), len(pool) - 1)
            self_hit = np.flatnonzero(pool[pos] == block)
            score[self_hit, pos[self_hit]] = -np.inf
            if k < len(pool):
                part = np.argpartition(-score, k - 1, axis=1)[:, :k]
            else:
                part = np.tile(np.arange(len(pool)), (len(block), 1))
            part_score = np.take_along_axis(score, part, axis=1)
            order = np.argsort(-part_score, axis=1, kind="stable")
            chosen = pool[np.take_along_axis(part, order, axis=1)]
            chosen[np.take_along_axis(part_score, order, axis=1) == -np.inf] = -1
            top[block, :k] = chosen
    return top


def also_view_lists(
    rng: np.random.Generator,
    neighbours: np.ndarray,
    kinds: ItemKinds,
    popularity: np.ndarray,
    n_reviewable: int,
    asins: list[str],
    ghosts: list[str],
) -> list[list[str]]:
    """Also-view lists of 5-20 asins for most items, mostly same platform and genre.

    Slots: ~72% similar reviewable items (both styles, by noisy latent similarity),
    ~10% popular strays, ~15% catalog-only items, ~3% asins in no file; ~8% of items
    have an empty list.  Vectorised as one table of (item, sort key, asin index) rows.
    """
    n = len(neighbours)
    length = rng.integers(5, ALSO_VIEW_MAX + 1, n)
    length[rng.random(n) < 0.08] = 0
    counts = rng.multinomial(length, [0.72, 0.10, 0.15, 0.03])
    # similar: the first counts[:, 0] neighbours, keys ordered by rank
    n_similar = counts[:, 0]
    rank = np.arange(ALSO_VIEW_MAX)[None, :]
    similar_mask = (rank < n_similar[:, None]) & (neighbours >= 0)
    similar_item, similar_rank = np.nonzero(similar_mask)
    similar_ref = neighbours[similar_mask]
    similar_key = (similar_rank + 0.5) / np.maximum(n_similar[similar_item], 1)
    # strays: popular reviewable items from anywhere
    stray_item = np.repeat(np.arange(n), counts[:, 1])
    cum = np.cumsum(popularity[:n_reviewable])
    stray_ref = np.minimum(np.searchsorted(cum, rng.random(len(stray_item)) * cum[-1], side="right"), n_reviewable - 1)
    # catalog-only items of the same platform and genre (else same genre, else any)
    catalog_item = np.repeat(np.arange(n), counts[:, 2])
    catalog_members = np.arange(n_reviewable, n)
    platform_genre = kinds.platform.astype(np.int64) * len(GENRES) + kinds.genre
    catalog_ref = pick_by_group(
        rng, catalog_members, platform_genre[n_reviewable:], platform_genre[catalog_item], len(PLATFORMS) * len(GENRES)
    )
    missing = catalog_ref < 0
    genre = kinds.genre.astype(np.int64)
    catalog_ref[missing] = pick_by_group(
        rng, catalog_members, genre[n_reviewable:], genre[catalog_item[missing]], len(GENRES)
    )
    missing = catalog_ref < 0
    catalog_ref[missing] = n_reviewable + rng.integers(0, n - n_reviewable, int(missing.sum()))
    # ghosts: asins that are in no file
    ghost_item = np.repeat(np.arange(n), counts[:, 3])
    ghost_ref = n + rng.integers(0, len(ghosts), len(ghost_item))
    extra_item = np.concatenate([stray_item, catalog_item, ghost_item])
    item = np.concatenate([similar_item, extra_item])
    ref = np.concatenate([similar_ref, stray_ref, catalog_ref, ghost_ref])
    key = np.concatenate([similar_key, rng.random(len(extra_item))])
    order = np.lexsort((key, item))
    item, ref = item[order], ref[order]
    not_itself = ref != item
    item, ref = keep_first(item[not_itself], ref[not_itself], n + len(ghosts), None)
    return asin_lists(item, ref, n, asins, ghosts)
