"""The planted world's data model and its catalog and users, as arrays.

Holds the choice-model constants, ``SyntheticWorld`` (what tests and evaluation read), the
``ItemKinds`` and ``UserTastes`` the later steps work on, and the draws of items (kinds,
popularity, latent vectors, asins, brands) and users (tastes, reviewer ids). The review draws
(``reviews``) and the also-view lists (``links``) build on these; ``synthesis`` runs all steps.

Each step draws from its own named stream (``draws.Streams``), so changing one step leaves the
draws of every other step as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alsoview.data.synthetic.draws import random_codes, rows_to_str
from alsoview.data.synthetic.vocabulary import (
    ALNUM,
    GENRE_SHARE,
    GENRES,
    PLATFORM_SHARE,
    PLATFORMS,
    PUBLISHERS,
)

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

CATALOG_FACTOR = 4  # catalog-only meta items per reviewable item

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


# ------------------------------------------------------------------------------------------ items


def draw_item_kinds(rng: np.random.Generator, n: int) -> ItemKinds:
    """Platform, genre and style per item; style shares differ a little per genre."""
    platform = rng.choice(len(PLATFORMS), size=n, p=PLATFORM_SHARE).astype(np.int16)
    genre = rng.choice(len(GENRES), size=n, p=GENRE_SHARE).astype(np.int16)
    second_style_share = rng.uniform(0.35, 0.65, len(GENRES))
    style = (rng.random(n) < second_style_share[genre]).astype(np.int8)
    return ItemKinds(platform, genre, style)


def draw_popularity(rng: np.random.Generator, n: int, n_reviewable: int) -> np.ndarray:
    """Heavy-tailed (Pareto) popularity; catalog-only items are viewed less."""
    popularity = rng.pareto(_PARETO_SHAPE, n) + 1.0
    popularity[n_reviewable:] *= _CATALOG_ONLY_VIEWS
    return popularity


def item_latent(rng: np.random.Generator, kinds: ItemKinds) -> np.ndarray:
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


def draw_asins(rng: np.random.Generator, n_items: int, n_ghost: int) -> tuple[list[str], list[str]]:
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


def draw_brands(rng: np.random.Generator, kinds: ItemKinds) -> tuple[np.ndarray, list[str]]:
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


# ------------------------------------------------------------------------------------------ users


def _top_k_mask(rng: np.random.Generator, n: int, share: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row, k[row] distinct columns drawn without replacement proportional to share."""
    keys = np.log(share)[None, :] + rng.gumbel(size=(n, len(share)))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    return rank < k[:, None]


def draw_users(rng: np.random.Generator, n: int) -> UserTastes:
    """Preferred platforms (1-2), genres (1-3) and, per genre, the preferred style."""
    n_platforms = rng.choice([1, 2], size=n, p=[0.6, 0.4])
    n_genres = rng.choice([1, 2, 3], size=n, p=[0.3, 0.45, 0.25])
    platforms = _top_k_mask(rng, n, PLATFORM_SHARE, n_platforms)
    genres = _top_k_mask(rng, n, GENRE_SHARE, n_genres)
    style = rng.integers(0, 2, size=(n, len(GENRES)), dtype=np.int8)
    return UserTastes(platforms, genres, style)


def draw_reviewer_ids(rng: np.random.Generator, n: int) -> list[str]:
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
