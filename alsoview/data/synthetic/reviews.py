"""Who reviews what, when and with how many stars: the review table of the planted world.

Users draw items by the choice model (a cell by taste, then an item by popularity), rarely
drawn items get extra reviewers so the data is a 5-core, and days, repeats and star ratings
follow; ``order_reviews`` puts the table in the line order of the real 5-core files. Kept apart
from ``world`` (the data model and catalog) because it is the bulk of the sampling code.
"""

from __future__ import annotations

import numpy as np

from alsoview.data.synthetic.pairs import keep_first
from alsoview.data.synthetic.vocabulary import GENRES, PLATFORMS
from alsoview.data.synthetic.world import (
    FIRST_DAY,
    LAST_DAY,
    POPULARITY_EXPONENT,
    REVIEW_DTYPE,
    TEMPERATURE,
    ItemKinds,
    UserTastes,
)

_MIN_USER_REVIEWS = 5
_MIN_ITEM_REVIEWS = 5
_REPEAT_SHARE = 0.003
_SAME_DAY_SHARE = 0.05


def _row_cdf(weights: np.ndarray) -> np.ndarray:
    """Flattened per-row CDFs offset by the row index, for one vectorised searchsorted."""
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    cdf += np.arange(len(weights))[:, None]
    return cdf.ravel()


def _sample_rows(rng: np.random.Generator, cdf_flat: np.ndarray, rows: np.ndarray, n_cols: int) -> np.ndarray:
    """Draw one column per entry of ``rows`` from that row's distribution."""
    u = rng.random(len(rows)) * (1.0 - 1e-9)
    pos = np.searchsorted(cdf_flat, rows + u, side="right")
    return np.minimum(pos - rows * n_cols, n_cols - 1)


class _ItemSampler:
    """Draws reviewable items for users: cell by user taste, then item by popularity."""

    def __init__(self, kinds: ItemKinds, popularity: np.ndarray, tastes: UserTastes) -> None:
        cells = kinds.cells()
        n_cells = len(PLATFORMS) * len(GENRES) * 2
        weight = popularity**POPULARITY_EXPONENT
        self.order = np.argsort(cells, kind="stable")
        sorted_cells = cells[self.order]
        mass = np.bincount(cells, weights=weight, minlength=n_cells)
        cum = np.cumsum(weight[self.order])
        start = np.searchsorted(sorted_cells, np.arange(n_cells))
        before = np.concatenate([[0.0], cum])[start]
        within = (cum - before[sorted_cells]) / mass[sorted_cells]
        within[np.r_[sorted_cells[1:] != sorted_cells[:-1], True]] = 1.0
        self.item_cdf = sorted_cells + within
        self.n_cells = n_cells
        self.user_cdf = _row_cdf(np.exp(tastes.cell_affinity() / TEMPERATURE) * mass[None, :])

    def draw(self, rng: np.random.Generator, user_rows: np.ndarray) -> np.ndarray:
        """One item per entry of user_rows."""
        cell = _sample_rows(rng, self.user_cdf, user_rows.astype(np.int64), self.n_cells)
        pos = np.searchsorted(self.item_cdf, cell + rng.random(len(cell)) * (1.0 - 1e-9), side="right")
        return self.order[np.minimum(pos, len(self.order) - 1)]


def _review_counts(rng: np.random.Generator, n_users: int, n_items: int) -> np.ndarray:
    """Heavy-tailed reviews per user: at least 5, mean about 9 (a 5-core)."""
    extra = np.floor(rng.lognormal(0.82, 1.15, n_users))
    cap = max(_MIN_USER_REVIEWS, min(400, n_items // 3))
    return np.minimum(_MIN_USER_REVIEWS + extra, cap).astype(np.int64)


def sample_reviews(
    rng: np.random.Generator, kinds: ItemKinds, popularity: np.ndarray, tastes: UserTastes
) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs; each user gets a heavy-tailed count of at least 5.

    Draws with replacement in bulk, drops repeats, and redraws only for users still short.
    """
    n_users, n_items = len(tastes.platforms), len(popularity)
    sampler = _ItemSampler(kinds, popularity, tastes)
    target = _review_counts(rng, n_users, n_items)
    users = np.empty(0, dtype=np.int64)
    items = np.empty(0, dtype=np.int64)
    need = target.copy()
    for _ in range(200):
        short = np.flatnonzero(need > 0)
        if len(short) == 0:
            break
        draws = np.ceil(need[short] * 1.3).astype(np.int64) + 3
        new_users = np.repeat(short, draws)
        new_items = sampler.draw(rng, new_users)
        users, items = keep_first(
            np.concatenate([users, new_users]), np.concatenate([items, new_items]), n_items, target
        )
        need = target - np.bincount(users, minlength=n_users)
    else:
        users, items = _fill_uniformly(rng, users, items, need, n_items)
    return users, items


def _fill_uniformly(
    rng: np.random.Generator, users: np.ndarray, items: np.ndarray, need: np.ndarray, n_items: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rest of each still-short user's items, uniform over the items they lack: in a small
    catalog a narrow taste reaches too few distinct items by the choice model alone."""
    extra_users, extra_items = [], []
    for user in np.flatnonzero(need > 0):
        lacking = np.setdiff1d(np.arange(n_items), items[users == user])
        extra_items.append(rng.choice(lacking, size=min(int(need[user]), len(lacking)), replace=False))
        extra_users.append(np.full(len(extra_items[-1]), user, dtype=users.dtype))
    return np.concatenate([users, *extra_users]), np.concatenate([items, *extra_items]).astype(items.dtype)


def ensure_item_minimum(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    kinds: ItemKinds,
    tastes: UserTastes,
) -> tuple[np.ndarray, np.ndarray]:
    """Best effort item 5-core: rarely drawn items get reviews from users who like their cell.

    Real 5-core files have >= 5 reviews per item too; the extra reviewers are drawn
    proportional to exp(affinity), so they follow the planted preferences.
    """
    n_users, n_items = len(tastes.platforms), len(kinds.platform)
    minimum = min(_MIN_ITEM_REVIEWS, n_users)
    cell_of_item = kinds.cells()
    user_cdf = _row_cdf(np.exp(tastes.cell_affinity().T / TEMPERATURE))
    for _ in range(8):
        deficit = np.maximum(0, minimum - np.bincount(items, minlength=n_items))
        short = np.flatnonzero(deficit)
        if len(short) == 0:
            break
        new_items = np.repeat(short, deficit[short] * 2 + 2)
        new_users = _sample_rows(rng, user_cdf, cell_of_item[new_items], n_users)
        existing = np.unique(users.astype(np.int64) * n_items + items)
        fresh = ~np.isin(new_users * n_items + new_items, existing)
        new_items, new_users = keep_first(new_items[fresh], new_users[fresh], n_users, deficit)
        users = np.concatenate([users, new_users])
        items = np.concatenate([items, new_items])
    return users, items


def draw_days(rng: np.random.Generator, users: np.ndarray, n_users: int) -> np.ndarray:
    """Review day (days since epoch): each user is active over their own span of days.

    Spreading a user's reviews in time makes a leave-last-out split meaningful; some
    reviews share a day with another review of the same user, as in real data.
    """
    span = np.clip(rng.lognormal(np.log(500.0), 0.9, n_users), 20, LAST_DAY - FIRST_DAY).astype(np.int64)
    start = FIRST_DAY + (rng.random(n_users) * (LAST_DAY - FIRST_DAY - span + 1)).astype(np.int64)
    days = start[users] + (rng.random(len(users)) * (span[users] + 1)).astype(np.int64)
    days = np.minimum(days, LAST_DAY)
    order = np.lexsort((days, users))
    same_user_as_previous = np.r_[False, users[order][1:] == users[order][:-1]]
    tie = same_user_as_previous & (rng.random(len(order)) < _SAME_DAY_SHARE)
    sorted_days = days[order]
    sorted_days[tie] = sorted_days[np.flatnonzero(tie) - 1]
    days[order] = sorted_days
    return days


def add_repeats(
    rng: np.random.Generator, users: np.ndarray, items: np.ndarray, days: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """About 0.3% of reviews are repeated by the same user on another day (as in real files)."""
    n_repeats = int(round(_REPEAT_SHARE * len(users)))
    if n_repeats == 0:
        return users, items, days
    source = np.sort(rng.choice(len(users), size=n_repeats, replace=False))
    shift = rng.integers(7, 700, n_repeats)
    later = days[source] + shift
    new_days = np.where(later <= LAST_DAY, later, np.maximum(FIRST_DAY, days[source] - shift))
    new_days = np.where(new_days == days[source], days[source] + 1, new_days)
    return (
        np.concatenate([users, users[source]]),
        np.concatenate([items, items[source]]),
        np.concatenate([days, new_days]),
    )


def draw_ratings(
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    kinds: ItemKinds,
    popularity: np.ndarray,
    tastes: UserTastes,
) -> np.ndarray:
    """Star ratings skewed to 5 (like real data); higher when the user likes the item more."""
    affinity = tastes.cell_affinity()[users, kinds.cells()[items]]
    quality = 0.25 * np.log(popularity) + rng.normal(0.0, 0.4, len(popularity))
    z = 0.8 * affinity + quality[items] + rng.logistic(0.0, 1.0, len(users))
    share = np.array([0.065, 0.045, 0.085, 0.175])  # 1..4 stars; 5 stars get the rest (~63%)
    cuts = np.quantile(z, np.cumsum(share))
    return (1 + np.searchsorted(cuts, z, side="right")).astype(np.float32)


def order_reviews(
    users: np.ndarray, items: np.ndarray, days: np.ndarray, rating: np.ndarray, item_asin: list[str]
) -> np.ndarray:
    """Reviews in file order: by asin, newest first (the layout of the real 5-core files)."""
    asin_rank = np.argsort(np.argsort(np.array(item_asin)))
    order = np.lexsort((users, -days, asin_rank[items]))
    out = np.empty(len(order), dtype=REVIEW_DTYPE)
    out["user"], out["item"] = users[order], items[order]
    out["time"], out["rating"] = days[order] * 86400, rating[order]
    return out
