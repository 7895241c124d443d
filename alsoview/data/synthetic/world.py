"""The planted world behind the files: items, users, reviews and also-view lists, as arrays.

Each step draws from its own named stream (``draws.Streams``), so changing one step leaves the
draws of every other step as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alsoview.data.synthetic.draws import Streams, random_codes, rows_to_str
from alsoview.data.synthetic.vocabulary import (
    ALNUM,
    GENRE_SHARE,
    GENRES,
    PLATFORM_SHARE,
    PLATFORMS,
    PUBLISHERS,
)
from alsoview.errors import UserError

# Affinity of a user for an item = platform match + genre match + (genre match and preferred
# style). Choice probability is proportional to popularity**POPULARITY_EXPONENT * exp(affinity / TEMPERATURE).
WEIGHT_PLATFORM = 1.5
WEIGHT_GENRE = 2.3
WEIGHT_STYLE = 2.5
TEMPERATURE = 1.0
POPULARITY_EXPONENT = 0.7
_PARETO_SHAPE = 1.3
_CATALOG_ONLY_VIEWS = 0.25  # catalog-only items are less viewed

# Latent vector blocks: sqrt weights make the dot product equal to these weights on a match.
_LATENT_PLATFORM = 1.0
_LATENT_GENRE = 2.0
_LATENT_STYLE = 0.08  # small: also-view lists must mix both styles of a genre
_LATENT_NOISE_DIM = 8
_LATENT_NOISE_SD = 0.25
_ALSO_VIEW_PAIR_NOISE_SD = 0.45
ALSO_VIEW_MAX = 20

CATALOG_FACTOR = 4  # catalog-only meta items per reviewable item
_MIN_USER_REVIEWS = 5
_MIN_ITEM_REVIEWS = 5
_REPEAT_SHARE = 0.003
_SAME_DAY_SHARE = 0.05

FIRST_DAY = 14610  # 2010-01-01 as days since the epoch
LAST_DAY = 17805  # 2018-10-01 (the 2018 crawl ends in October)

REVIEW_DTYPE = np.dtype([("user", np.int32), ("item", np.int32), ("time", np.int64), ("rating", np.float32)])


@dataclass(frozen=True)
class ItemKinds:
    """Platform, genre and style of each item (indexes into PLATFORMS, GENRES, a genre's styles)."""

    platform: np.ndarray
    genre: np.ndarray
    style: np.ndarray

    def head(self, n: int) -> ItemKinds:
        """The kinds of the first ``n`` items (the reviewable ones)."""
        return ItemKinds(self.platform[:n], self.genre[:n], self.style[:n])

    def cells(self) -> np.ndarray:
        """Cell id (platform, genre, style) of each item."""
        return (self.platform.astype(np.int64) * len(GENRES) + self.genre) * 2 + self.style


@dataclass(frozen=True)
class UserTastes:
    """Each user's preferred platforms and genres, and per genre the preferred style."""

    platforms: np.ndarray  # bool (users, platforms)
    genres: np.ndarray  # bool (users, genres)
    style: np.ndarray  # int8 (users, genres)

    def cell_affinity(self) -> np.ndarray:
        """Affinity (users, cells) of the choice model; a cell is (platform, genre, style)."""
        cell = np.arange(len(PLATFORMS) * len(GENRES) * 2)
        platform, genre, style = cell // (2 * len(GENRES)), (cell // 2) % len(GENRES), cell % 2
        genre_match = self.genres[:, genre]
        return (
            WEIGHT_PLATFORM * self.platforms[:, platform]
            + WEIGHT_GENRE * genre_match
            + WEIGHT_STYLE * (genre_match & (self.style[:, genre] == style))
        )


@dataclass
class SyntheticWorld:
    """The planted truth behind the files, as arrays (tests and evaluation use it).

    Items ``0 .. n_reviewable-1`` can be reviewed; the rest are catalog-only meta items.
    ``reviews`` is in the order of the lines of ``reviews.json.gz`` (fields user, item,
    time = unixReviewTime, rating = overall).
    """

    seed: int
    item_asin: list[str]
    n_reviewable: int
    item_platform: np.ndarray  # int, index into PLATFORMS
    item_genre: np.ndarray  # int, index into GENRES
    item_style: np.ndarray  # int in {0, 1}: a fine-grained kind within the genre
    item_publisher: np.ndarray  # int index into PUBLISHERS, -1 where the brand is missing
    item_brand: list[str]  # brand as written in meta ("" when missing, odd forms kept)
    item_popularity: np.ndarray  # heavy tailed (Pareto), > 0
    item_latent: np.ndarray  # float32 (items, dim): platform/genre/style blocks plus noise
    user_id: list[str]
    user_platforms: np.ndarray  # bool (users, platforms): 1-2 preferred platforms
    user_genres: np.ndarray  # bool (users, genres): 1-3 preferred genres
    user_style: np.ndarray  # int8 (users, genres): preferred style per genre
    reviews: np.ndarray  # structured, REVIEW_DTYPE
    also_view: list[list[str]]  # per meta item; may hold asins that are in no file
    ghost_asins: list[str]  # asins used in also_view/also_buy that are in no file

    @property
    def n_items(self) -> int:
        """Number of distinct meta items (reviewable + catalog-only)."""
        return len(self.item_asin)

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Planted affinity of each (user, item) pair (the logit part of the choice model)."""
        platform, genre, style = self.item_platform[items], self.item_genre[items], self.item_style[items]
        genre_match = self.user_genres[users, genre]
        return (
            WEIGHT_PLATFORM * self.user_platforms[users, platform]
            + WEIGHT_GENRE * genre_match
            + WEIGHT_STYLE * (genre_match & (self.user_style[users, genre] == style))
        )


def validate(users: int, items: int, seed: int) -> None:
    """Reject sizes too small for a 5-core and non-integer arguments, with a clear message."""
    for name, value in (("users", users), ("items", items), ("seed", seed)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise UserError(f"synthetic data: {name} must be an integer, got {value!r}")
    if users < 10:
        raise UserError(f"synthetic data: users must be >= 10 (every user needs 5 reviews), got {users}")
    if items < 20:
        raise UserError(f"synthetic data: items must be >= 20 reviewable items, got {items}")
    if seed < 0:
        raise UserError(f"synthetic data: seed must be >= 0, got {seed}")


def synthesize(users: int = 2000, items: int = 600, seed: int = 0) -> SyntheticWorld:
    """Draw the planted world: catalog, users, reviews and also-view lists.

    ``items`` is the number of reviewable items; the catalog adds 4x as many
    catalog-only items that appear only in meta (as in real Video Games data).
    """
    validate(users, items, seed)
    streams = Streams(seed, "world")
    n_total = items * (1 + CATALOG_FACTOR)
    kinds = _draw_item_kinds(streams.generator("item_kinds"), n_total)
    popularity = _draw_popularity(streams.generator("popularity"), n_total, items)
    latent = _item_latent(streams.generator("latent"), kinds)
    asins, ghosts = _draw_asins(streams.generator("asins"), n_total, n_ghost=max(10, n_total // 3))
    publisher, brand = _draw_brands(streams.generator("brands"), kinds)
    tastes = _draw_users(streams.generator("users"), users)
    user_ids = _draw_reviewer_ids(streams.generator("reviewer_ids"), users)
    reviewable = kinds.head(items)
    reviewers, reviewed = _sample_reviews(streams.generator("reviews"), reviewable, popularity[:items], tastes)
    reviewers, reviewed = _ensure_item_minimum(
        streams.generator("item_minimum"), reviewers, reviewed, reviewable, tastes
    )
    days = _draw_days(streams.generator("days"), reviewers, users)
    reviewers, reviewed, days = _add_repeats(streams.generator("repeats"), reviewers, reviewed, days)
    rating = _draw_ratings(streams.generator("ratings"), reviewers, reviewed, reviewable, popularity[:items], tastes)
    reviews = _order_reviews(reviewers, reviewed, days, rating, asins[:items])
    neighbours = _similar_reviewable(streams.generator("also_view_neighbours"), latent, kinds.genre, items)
    also_view = _also_view(streams.generator("also_view"), neighbours, kinds, popularity, items, asins, ghosts)
    return SyntheticWorld(
        seed=seed,
        item_asin=asins,
        n_reviewable=items,
        item_platform=kinds.platform,
        item_genre=kinds.genre,
        item_style=kinds.style,
        item_publisher=publisher,
        item_brand=brand,
        item_popularity=popularity,
        item_latent=latent,
        user_id=user_ids,
        user_platforms=tastes.platforms,
        user_genres=tastes.genres,
        user_style=tastes.style,
        reviews=reviews,
        also_view=also_view,
        ghost_asins=ghosts,
    )


# ------------------------------------------------------------------------------------------ items


def _draw_item_kinds(rng: np.random.Generator, n: int) -> ItemKinds:
    """Platform, genre and style per item; style shares differ a little per genre."""
    platform = rng.choice(len(PLATFORMS), size=n, p=PLATFORM_SHARE).astype(np.int16)
    genre = rng.choice(len(GENRES), size=n, p=GENRE_SHARE).astype(np.int16)
    second_style_share = rng.uniform(0.35, 0.65, len(GENRES))
    style = (rng.random(n) < second_style_share[genre]).astype(np.int8)
    return ItemKinds(platform, genre, style)


def _draw_popularity(rng: np.random.Generator, n: int, n_reviewable: int) -> np.ndarray:
    """Heavy-tailed (Pareto) popularity; catalog-only items are viewed less."""
    popularity = rng.pareto(_PARETO_SHAPE, n) + 1.0
    popularity[n_reviewable:] *= _CATALOG_ONLY_VIEWS
    return popularity


def _item_latent(rng: np.random.Generator, kinds: ItemKinds) -> np.ndarray:
    """Latent vector = weighted one-hot blocks (platform, genre, genre-style) plus noise.

    Dot products are then interpretable: 1.0 for a shared platform, 2.0 for a shared
    genre, 0.08 more for the same style, plus noise.
    """
    n, n_platforms, n_genres = len(kinds.platform), len(PLATFORMS), len(GENRES)
    latent = np.zeros((n, n_platforms + 3 * n_genres + _LATENT_NOISE_DIM), dtype=np.float32)
    rows = np.arange(n)
    latent[rows, kinds.platform] = np.sqrt(_LATENT_PLATFORM)
    latent[rows, n_platforms + kinds.genre] = np.sqrt(_LATENT_GENRE)
    latent[rows, n_platforms + n_genres + 2 * kinds.genre + kinds.style] = np.sqrt(_LATENT_STYLE)
    latent[:, n_platforms + 3 * n_genres :] = rng.normal(0.0, _LATENT_NOISE_SD, (n, _LATENT_NOISE_DIM))
    return latent


def _draw_asins(rng: np.random.Generator, n_items: int, n_ghost: int) -> tuple[list[str], list[str]]:
    """Unique 10-char ASINs: mostly "B0" + 8 alphanumerics, ~2% ISBN-like digits."""
    n = n_items + n_ghost
    rows = np.empty((n, 10), dtype=np.uint8)
    rows[:, :2] = np.frombuffer(b"B0", dtype=np.uint8)
    rows[:, 2:] = random_codes(rng, n, 8, ALNUM)
    isbn = rng.random(n) < 0.02
    rows[isbn] = random_codes(rng, int(isbn.sum()), 10, ALNUM[:10])
    while True:  # regenerate collisions (practically never happens)
        _, first = np.unique(rows.view("S10").ravel(), return_index=True)
        repeated = np.setdiff1d(np.arange(n), first)
        if len(repeated) == 0:
            break
        rows[repeated, 2:] = random_codes(rng, len(repeated), 8, ALNUM)
        rows[repeated, :2] = np.frombuffer(b"B0", dtype=np.uint8)
    asins = rows_to_str(rows)
    return asins[:n_items], asins[n_items:]


def _draw_brands(rng: np.random.Generator, kinds: ItemKinds) -> tuple[np.ndarray, list[str]]:
    """Publisher per item (tied to genre and platform) and the brand string as scraped."""
    n, n_publishers = len(kinds.platform), len(PUBLISHERS)
    size = rng.lognormal(0.0, 0.7, n_publishers)
    publisher = np.full(n, -1, dtype=np.int32)
    for p, platform in enumerate(PLATFORMS):
        for g, genre in enumerate(GENRES):
            members = np.flatnonzero((kinds.platform == p) & (kinds.genre == g))
            if len(members) == 0:
                continue
            weight = np.array([_publisher_weight(pub, platform, genre.name) for pub in PUBLISHERS]) * size
            publisher[members] = rng.choice(n_publishers, size=len(members), p=weight / weight.sum())
    publisher[rng.random(n) < 0.10] = -1  # the brand is missing
    oddity = rng.random(n)
    brand = [
        "" if pub < 0 else _odd_brand(PUBLISHERS[pub][0], u) for pub, u in zip(publisher.tolist(), oddity.tolist())
    ]
    return publisher, brand


def _publisher_weight(
    publisher: tuple[str, tuple[str, ...], tuple[str, ...] | None], platform: str, genre: str
) -> float:
    """How likely a publisher publishes a game of this platform and genre."""
    _, main_genres, platforms = publisher
    if platforms is not None and platform not in platforms:
        return 0.0
    return 1.0 if genre in main_genres else 0.02


def _odd_brand(name: str, u: float) -> str:
    """Mostly the clean name; sometimes scraped oddities seen in real meta files."""
    if u < 0.01:
        return f"by\n    \n    {name}"
    if u < 0.02:
        return name + "  "
    if u < 0.025:
        return name.upper()
    if u < 0.03:
        return name.lower()
    return name


# ------------------------------------------------------------------------------ users and reviews


def _top_k_mask(rng: np.random.Generator, n: int, share: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row, k[row] distinct columns drawn without replacement proportional to share."""
    keys = np.log(share)[None, :] + rng.gumbel(size=(n, len(share)))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    return rank < k[:, None]


def _draw_users(rng: np.random.Generator, n: int) -> UserTastes:
    """Preferred platforms (1-2), genres (1-3) and, per genre, the preferred style."""
    n_platforms = rng.choice([1, 2], size=n, p=[0.6, 0.4])
    n_genres = rng.choice([1, 2, 3], size=n, p=[0.3, 0.45, 0.25])
    platforms = _top_k_mask(rng, n, PLATFORM_SHARE, n_platforms)
    genres = _top_k_mask(rng, n, GENRE_SHARE, n_genres)
    style = rng.integers(0, 2, size=(n, len(GENRES)), dtype=np.int8)
    return UserTastes(platforms, genres, style)


def _draw_reviewer_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Unique reviewer ids: "A" + 12 or 13 uppercase alphanumerics."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:  # a second round only on a (practically impossible) collision
        k = n - len(ids)
        rows = np.empty((k, 14), dtype=np.uint8)
        rows[:, 0] = ord("A")
        rows[:, 1:] = random_codes(rng, k, 13, ALNUM)
        short = rng.random(k) < 0.45
        for code, is_short in zip(rows_to_str(rows), short.tolist()):
            code = code[:13] if is_short else code
            if code not in seen:
                seen.add(code)
                ids.append(code)
    return ids


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


def _sample_reviews(
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
        raise RuntimeError("synthetic data: could not give every user enough distinct items")
    return users, items


def _ensure_item_minimum(
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


def _draw_days(rng: np.random.Generator, users: np.ndarray, n_users: int) -> np.ndarray:
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


def _add_repeats(
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


def _draw_ratings(
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


def _order_reviews(
    users: np.ndarray, items: np.ndarray, days: np.ndarray, rating: np.ndarray, item_asin: list[str]
) -> np.ndarray:
    """Reviews in file order: by asin, newest first (the layout of the real 5-core files)."""
    asin_rank = np.argsort(np.argsort(np.array(item_asin)))
    order = np.lexsort((users, -days, asin_rank[items]))
    out = np.empty(len(order), dtype=REVIEW_DTYPE)
    out["user"], out["item"] = users[order], items[order]
    out["time"], out["rating"] = days[order] * 86400, rating[order]
    return out


# ---------------------------------------------------------------------------------- also-view lists


def _similar_reviewable(
    rng: np.random.Generator, latent: np.ndarray, genre: np.ndarray, n_reviewable: int
) -> np.ndarray:
    """Top-20 reviewable neighbours of every item (same genre, by noisy latent similarity).

    Returns int (items, 20), -1 padded; never the item itself.
    """
    n = len(latent)
    top = np.full((n, ALSO_VIEW_MAX), -1, dtype=np.int64)
    for g in range(len(GENRES)):
        queries = np.flatnonzero(genre == g)
        pool = np.flatnonzero(genre[:n_reviewable] == g)
        if len(pool) < 2 * ALSO_VIEW_MAX:
            pool = np.arange(n_reviewable)
        pool_latent = latent[pool].T
        k = min(ALSO_VIEW_MAX, len(pool))
        for lo in range(0, len(queries), 2048):
            block = queries[lo : lo + 2048]
            score = latent[block] @ pool_latent
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


def _also_view(
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
