"""Synthetic dataset in the raw Amazon Review Data (2018) format, with planted structure.

Why it exists: the project needs an embedded default dataset and test data that the
parsing code reads exactly as it reads the real ``Video_Games_5.json.gz`` and
``meta_Video_Games.json.gz`` (same keys, key order, value styles and scraping junk),
and whose preference structure is known.  Users prefer platforms, genres and, inside a
genre, one of two *styles*; also-view lists hold items of the same platform and genre
in both styles.  So a model trained with random negatives (mostly other genres) learns
the genre taste, while also-view hard negatives are what teach the style preference.

Only numpy and the standard library are used, and everything is vectorised except the
final formatting of each JSON line, so Video Games scale (55k users, 17k reviewable
items, ~500k reviews, ~85k meta lines) takes about a minute.
"""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from alsoview import storage
from alsoview.errors import UserError

# --------------------------------------------------------------------------------------
# Vocabulary and planted-structure parameters
# --------------------------------------------------------------------------------------

PLATFORMS: tuple[str, ...] = (
    "PlayStation 4", "Xbox One", "Nintendo Switch", "PC", "Nintendo 3DS", "PlayStation 3",
)
_PLATFORM_SHARE = np.array([0.24, 0.18, 0.14, 0.20, 0.10, 0.14])
# Price level of a platform relative to a full-price console game (older/handheld cheaper).
_PLATFORM_PRICE = np.array([1.0, 1.0, 1.05, 0.75, 0.7, 0.55])


@dataclass(frozen=True)
class Genre:
    """A genre with its two styles; the words feed titles, descriptions and reviews."""

    name: str
    styles: tuple[str, str]
    nouns: tuple[str, ...]
    words: tuple[tuple[str, ...], tuple[str, ...]]
    share: float
    price: float  # typical full price in dollars


GENRES: tuple[Genre, ...] = (
    Genre("RPG", ("turn-based", "action"), ("Chronicles", "Saga", "Legend", "Kingdom", "Fantasia"),
          (("party", "tactics", "classic", "dungeon crawler", "JRPG", "grid battles"),
           ("real-time combat", "hack and slash", "souls-like", "combos", "boss fights", "dodge roll")),
          0.14, 49.99),
    Genre("Shooter", ("tactical", "arena"), ("Strike", "Warfare", "Frontline", "Operation", "Recon"),
          (("squad", "cover", "stealth", "sniper", "realistic ballistics", "tactical"),
           ("fast-paced", "deathmatch", "rocket jumps", "arena", "twitch", "frag")),
          0.14, 59.99),
    Genre("Sports", ("simulation", "arcade"), ("League", "Championship", "Pro", "World Tour", "Season"),
          (("franchise mode", "realistic physics", "licensed teams", "career", "simulation", "season"),
           ("over-the-top", "arcade", "street", "power-ups", "party", "trick shots")),
          0.09, 39.99),
    Genre("Racing", ("simulation", "kart"), ("Grand Prix", "Rally", "Motorsport", "Speed", "Circuit"),
          (("tuning", "cockpit view", "realistic handling", "simulation", "telemetry", "endurance"),
           ("kart", "items", "shortcuts", "drift boost", "cartoon", "party racing")),
          0.07, 39.99),
    Genre("Strategy", ("real-time", "turn-based"), ("Empire", "Conquest", "Dominion", "Command", "Civilization"),
          (("real-time", "base building", "APM", "resource rush", "RTS", "micro"),
           ("turn-based", "4X", "hex map", "diplomacy", "one more turn", "grand strategy")),
          0.07, 39.99),
    Genre("Platformer", ("2D", "3D"), ("Jump", "Bros", "Adventures", "Dash", "World"),
          (("side-scrolling", "pixel art", "2D", "precision jumps", "retro", "metroidvania"),
           ("3D", "collectathon", "open levels", "camera", "platforming", "hub world")),
          0.10, 39.99),
    Genre("Puzzle", ("logic", "casual"), ("Puzzle", "Brain", "Blocks", "Mind", "Tiles"),
          (("logic", "deduction", "hard puzzles", "sokoban", "brain teaser", "minimalist"),
           ("casual", "match-three", "relaxing", "colorful", "family", "bite-sized")),
          0.06, 19.99),
    Genre("Fighting", ("technical", "party"), ("Fighter", "Tournament", "Clash", "Brawl", "Combat"),
          (("frame data", "combos", "competitive", "technical", "arcade stick", "versus"),
           ("party", "four-player", "items", "brawler", "couch", "chaotic")),
          0.06, 49.99),
    Genre("Adventure", ("narrative", "open-world"), ("Journey", "Mystery", "Tales", "Odyssey", "Island"),
          (("story-driven", "choices", "point-and-click", "narrative", "dialogue", "episodic"),
           ("open-world", "exploration", "sandbox", "crafting", "huge map", "side quests")),
          0.10, 49.99),
    Genre("Horror", ("survival", "psychological"), ("Evil", "Nightmare", "Dead", "Silent", "Haunt"),
          (("survival", "zombies", "limited ammo", "inventory", "resource management", "monsters"),
           ("psychological", "dread", "atmospheric", "mind-bending", "unsettling", "story")),
          0.06, 39.99),
    Genre("Simulation", ("life", "vehicle"), ("Simulator", "Tycoon", "Life", "Farm", "City"),
          (("life sim", "farming", "relationships", "building", "cozy", "management"),
           ("flight", "trucks", "trains", "cockpit", "realistic controls", "vehicle")),
          0.06, 29.99),
    Genre("Music", ("rhythm", "karaoke"), ("Hero", "Beat", "Rock", "Dance", "Star"),
          (("rhythm", "note highway", "guitar", "drums", "timing", "combo meter"),
           ("karaoke", "singing", "microphone", "party", "pop hits", "duets")),
          0.05, 29.99),
)
_GENRE_SHARE = np.array([g.share for g in GENRES]) / sum(g.share for g in GENRES)

# (publisher, main genres, platforms it publishes on or None for all)
PUBLISHERS: tuple[tuple[str, tuple[str, ...], tuple[str, ...] | None], ...] = (
    ("Nintendo", ("Platformer", "RPG", "Racing"), ("Nintendo Switch", "Nintendo 3DS")),
    ("Sony Interactive Entertainment", ("Adventure", "Shooter"), ("PlayStation 4", "PlayStation 3")),
    ("Microsoft", ("Shooter", "Racing"), ("Xbox One", "PC")),
    ("Electronic Arts", ("Sports", "Shooter", "Racing"), None),
    ("Activision", ("Shooter", "Music"), None),
    ("Ubisoft", ("Adventure", "Music"), None),
    ("Square Enix", ("RPG",), None),
    ("Bandai Namco", ("Fighting", "RPG"), None),
    ("Capcom", ("Fighting", "Horror"), None),
    ("Konami", ("Horror", "Sports"), None),
    ("SEGA", ("Strategy", "Platformer"), None),
    ("Atlus", ("RPG",), None),
    ("2K Games", ("Sports", "Strategy"), None),
    ("Bethesda Softworks", ("RPG", "Horror"), None),
    ("Paradox Interactive", ("Strategy", "Simulation"), ("PC", "PlayStation 4", "Xbox One")),
    ("Focus Home Interactive", ("Simulation", "Racing"), None),
    ("Codemasters", ("Racing",), None),
    ("Warner Bros", ("Adventure", "Fighting"), None),
    ("THQ Nordic", ("Adventure", "Platformer"), None),
    ("Devolver Digital", ("Shooter", "Platformer", "Puzzle"), None),
    ("Team17", ("Puzzle", "Strategy"), None),
    ("Koei Tecmo", ("Strategy", "Fighting"), None),
    ("Aksys Games", ("Puzzle", "Adventure"), None),
    ("Mad Catz", ("Music", "Simulation"), None),
    ("Majesco", ("Puzzle", "Music"), None),
    ("Maximum Games", ("Simulation", "Sports"), None),
)

# Affinity of a user for an item = platform match + genre match + (genre match and
# preferred style).  Choice probability is proportional to
# popularity**_POP_EXPONENT * exp(affinity / _TEMPERATURE).
_W_PLATFORM = 1.5
_W_GENRE = 2.3
_W_STYLE = 2.5
_TEMPERATURE = 1.0
_POP_EXPONENT = 0.7
_PARETO_SHAPE = 1.3

# Latent vector blocks: sqrt weights make the dot product equal to these weights on a match.
_LAT_PLATFORM = 1.0
_LAT_GENRE = 2.0
_LAT_STYLE = 0.08  # small: also-view lists must mix both styles of a genre
_LAT_NOISE_DIM = 8
_LAT_NOISE_SD = 0.25
_AV_PAIR_NOISE_SD = 0.45
_AV_MAX = 20

_CATALOG_FACTOR = 4  # catalog-only meta items per reviewable item
_MIN_USER_REVIEWS = 5
_MIN_ITEM_REVIEWS = 5
_REPEAT_SHARE = 0.003
_SAME_DAY_SHARE = 0.05

_DAY0 = 14610  # 2010-01-01 as days since the epoch
_DAY1 = 17805  # 2018-10-01 (the 2018 crawl ends in October)

_ALNUM = np.frombuffer(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", dtype=np.uint8)
_IMG_CHARS = np.frombuffer(
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+-", dtype=np.uint8
)
_IMG_CHAR_LIST: list[int] = _IMG_CHARS.tolist()
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


# --------------------------------------------------------------------------------------
# Public data classes
# --------------------------------------------------------------------------------------

REVIEW_DTYPE = np.dtype([("user", np.int32), ("item", np.int32), ("time", np.int64), ("rating", np.float32)])


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
    item_platform: np.ndarray   # int, index into PLATFORMS
    item_genre: np.ndarray      # int, index into GENRES
    item_style: np.ndarray      # int in {0, 1}: a fine-grained kind within the genre
    item_publisher: np.ndarray  # int index into PUBLISHERS, -1 where the brand is missing
    item_brand: list[str]       # brand as written in meta ("" when missing, odd forms kept)
    item_popularity: np.ndarray  # heavy tailed (Pareto), > 0
    item_latent: np.ndarray     # float32 (items, dim): platform/genre/style blocks plus noise
    user_id: list[str]
    user_platforms: np.ndarray  # bool (users, platforms): 1-2 preferred platforms
    user_genres: np.ndarray     # bool (users, genres): 1-3 preferred genres
    user_style: np.ndarray      # int8 (users, genres): preferred style per genre
    reviews: np.ndarray         # structured, REVIEW_DTYPE
    also_view: list[list[str]]  # per meta item; may hold asins that are in no file
    ghost_asins: list[str]      # asins used in also_view/also_buy that are in no file

    @property
    def n_items(self) -> int:
        """Number of distinct meta items (reviewable + catalog-only)."""
        return len(self.item_asin)

    def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Planted affinity of each (user, item) pair (the logit part of the choice model)."""
        p, g, s = self.item_platform[items], self.item_genre[items], self.item_style[items]
        genre_match = self.user_genres[users, g]
        return (_W_PLATFORM * self.user_platforms[users, p]
                + _W_GENRE * genre_match
                + _W_STYLE * (genre_match & (self.user_style[users, g] == s)))


@dataclass
class GenerateSummary:
    """What ``generate`` wrote and how long it took."""

    reviews_path: Path
    meta_path: Path
    generation_path: Path
    users: int
    reviewable_items: int
    meta_items: int
    meta_lines: int
    reviews: int
    seconds: float


# --------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------

GENERATION_RECORD = "generation.json"  # written last: its presence marks a complete dataset


def generate(out_dir: str | Path, users: int = 2000, items: int = 600, seed: int = 0) -> GenerateSummary:
    """Synthesize a world and write reviews.json.gz, meta.json.gz and generation.json into a new
    or empty folder, or over an earlier generated dataset (anything else is refused first)."""
    _validate(users, items, seed)
    storage.check_replaceable(Path(out_dir), GENERATION_RECORD, "generated dataset")
    start = time.perf_counter()
    world = synthesize(users=users, items=items, seed=seed)
    summary = write_amazon_files(world, Path(out_dir), seed=seed)
    summary.seconds = round(time.perf_counter() - start, 3)
    return summary


def synthesize(users: int = 2000, items: int = 600, seed: int = 0) -> SyntheticWorld:
    """Draw the planted world: catalog, users, reviews and also-view lists.

    ``items`` is the number of reviewable items; the catalog adds 4x as many
    catalog-only items that appear only in meta (as in real Video Games data).
    """
    _validate(users, items, seed)
    rng = np.random.default_rng(seed)
    n_total = items * (1 + _CATALOG_FACTOR)
    platform, genre, style = _draw_item_kinds(rng, n_total)
    popularity = (rng.pareto(_PARETO_SHAPE, n_total) + 1.0)
    popularity[items:] *= 0.25  # catalog-only items are less viewed
    latent = _item_latent(rng, platform, genre, style)
    asins, ghosts = _draw_asins(rng, n_total, n_ghost=max(10, n_total // 3))
    publisher, brand = _draw_brands(rng, platform, genre)
    u_plat, u_genre, u_style = _draw_users(rng, users)
    user_ids = _draw_reviewer_ids(rng, users)
    kinds = (platform[:items], genre[:items], style[:items])
    pairs_u, pairs_i = _sample_reviews(rng, kinds, popularity[:items], (u_plat, u_genre, u_style))
    pairs_u, pairs_i = _ensure_item_minimum(rng, pairs_u, pairs_i, kinds, (u_plat, u_genre, u_style))
    days = _draw_days(rng, pairs_u, users)
    pairs_u, pairs_i, days = _add_repeats(rng, pairs_u, pairs_i, days)
    rating = _draw_ratings(rng, pairs_u, pairs_i, kinds, popularity[:items], (u_plat, u_genre, u_style))
    reviews = _order_reviews(pairs_u, pairs_i, days, rating, asins[:items])
    also_view = _also_view(rng, latent, platform, genre, popularity, items, asins, ghosts)
    return SyntheticWorld(
        seed=seed, item_asin=asins, n_reviewable=items, item_platform=platform, item_genre=genre,
        item_style=style, item_publisher=publisher, item_brand=brand, item_popularity=popularity,
        item_latent=latent, user_id=user_ids, user_platforms=u_plat, user_genres=u_genre,
        user_style=u_style, reviews=reviews, also_view=also_view, ghost_asins=ghosts,
    )


def write_amazon_files(world: SyntheticWorld, out_dir: Path, seed: int) -> GenerateSummary:
    """Write the world as Amazon 2018 files; ``seed`` drives the cosmetic details."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7919])
    reviews_path = out_dir / "reviews.json.gz"
    meta_path = out_dir / "meta.json.gz"
    generation_path = out_dir / GENERATION_RECORD
    _write_gz(reviews_path, _review_lines(world, rng))
    meta_order = _meta_line_order(rng, world.n_items)
    _write_gz(meta_path, _meta_lines(world, rng, meta_order))
    summary = GenerateSummary(
        reviews_path=reviews_path, meta_path=meta_path, generation_path=generation_path,
        users=len(world.user_id), reviewable_items=world.n_reviewable, meta_items=world.n_items,
        meta_lines=len(meta_order), reviews=len(world.reviews), seconds=0.0,
    )
    generation_path.write_text(json.dumps(_generation_record(world, summary), indent=2) + "\n")
    return summary


def _validate(users: int, items: int, seed: int) -> None:
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


def _generation_record(world: SyntheticWorld, summary: GenerateSummary) -> dict:
    """Parameters and counts for generation.json (no timings: the file must be reproducible)."""
    return {
        "note": "SYNTHETIC data generated by alsoview.data.synthetic in the Amazon Review Data "
                "(2018) format (Video Games-like); not real reviews.",
        "generator": "alsoview.data.synthetic",
        "parameters": {"users": summary.users, "items": summary.reviewable_items, "seed": world.seed},
        "counts": {
            "users": summary.users,
            "reviewable_items": summary.reviewable_items,
            "meta_items": summary.meta_items,
            "meta_lines": summary.meta_lines,
            "reviews": summary.reviews,
        },
        "files": {"reviews": summary.reviews_path.name, "meta": summary.meta_path.name},
        "planted": {
            "platforms": list(PLATFORMS),
            "genres": [{"name": g.name, "styles": list(g.styles)} for g in GENRES],
            "weights": {"platform": _W_PLATFORM, "genre": _W_GENRE, "style": _W_STYLE,
                        "temperature": _TEMPERATURE, "popularity_exponent": _POP_EXPONENT},
        },
    }


# --------------------------------------------------------------------------------------
# Items
# --------------------------------------------------------------------------------------

def _draw_item_kinds(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Platform, genre and style per item; style shares differ a little per genre."""
    platform = rng.choice(len(PLATFORMS), size=n, p=_PLATFORM_SHARE).astype(np.int16)
    genre = rng.choice(len(GENRES), size=n, p=_GENRE_SHARE).astype(np.int16)
    style_p1 = rng.uniform(0.35, 0.65, len(GENRES))
    style = (rng.random(n) < style_p1[genre]).astype(np.int8)
    return platform, genre, style


def _item_latent(rng: np.random.Generator, platform: np.ndarray, genre: np.ndarray,
                 style: np.ndarray) -> np.ndarray:
    """Latent vector = weighted one-hot blocks (platform, genre, genre-style) plus noise.

    Dot products are then interpretable: 1.0 for a shared platform, 2.0 for a shared
    genre, 0.08 more for the same style, plus noise.
    """
    n, n_p, n_g = len(platform), len(PLATFORMS), len(GENRES)
    lat = np.zeros((n, n_p + n_g + 2 * n_g + _LAT_NOISE_DIM), dtype=np.float32)
    rows = np.arange(n)
    lat[rows, platform] = np.sqrt(_LAT_PLATFORM)
    lat[rows, n_p + genre] = np.sqrt(_LAT_GENRE)
    lat[rows, n_p + n_g + 2 * genre + style] = np.sqrt(_LAT_STYLE)
    lat[:, n_p + 3 * n_g:] = rng.normal(0.0, _LAT_NOISE_SD, (n, _LAT_NOISE_DIM))
    return lat


def _random_codes(rng: np.random.Generator, n: int, width: int, alphabet: np.ndarray) -> np.ndarray:
    """``n`` random byte strings of ``width`` characters from ``alphabet`` (as uint8 rows)."""
    return alphabet[rng.integers(0, len(alphabet), size=(n, width))]


def _rows_to_str(rows: np.ndarray) -> list[str]:
    """Turn a uint8 (n, width) array into a list of ASCII strings."""
    rows = np.ascontiguousarray(rows, dtype=np.uint8)
    return [b.decode("ascii") for b in rows.view(f"S{rows.shape[1]}").ravel().tolist()]


def _draw_asins(rng: np.random.Generator, n_items: int, n_ghost: int) -> tuple[list[str], list[str]]:
    """Unique 10-char ASINs: mostly "B0" + 8 alphanumerics, ~2% ISBN-like digits."""
    n = n_items + n_ghost
    rows = np.empty((n, 10), dtype=np.uint8)
    rows[:, :2] = np.frombuffer(b"B0", dtype=np.uint8)
    rows[:, 2:] = _random_codes(rng, n, 8, _ALNUM)
    isbn = rng.random(n) < 0.02
    rows[isbn] = _random_codes(rng, int(isbn.sum()), 10, _ALNUM[:10])
    while True:  # regenerate collisions (practically never happens)
        _, first = np.unique(rows.view("S10").ravel(), return_index=True)
        dup = np.setdiff1d(np.arange(n), first)
        if len(dup) == 0:
            break
        rows[dup, 2:] = _random_codes(rng, len(dup), 8, _ALNUM)
        rows[dup, :2] = np.frombuffer(b"B0", dtype=np.uint8)
    asins = _rows_to_str(rows)
    return asins[:n_items], asins[n_items:]


def _draw_brands(rng: np.random.Generator, platform: np.ndarray,
                 genre: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Publisher per item (tied to genre and platform) and the brand string as scraped."""
    n, n_pub = len(platform), len(PUBLISHERS)
    size = rng.lognormal(0.0, 0.7, n_pub)
    publisher = np.full(n, -1, dtype=np.int32)
    for p in range(len(PLATFORMS)):
        for g in range(len(GENRES)):
            idx = np.flatnonzero((platform == p) & (genre == g))
            if len(idx) == 0:
                continue
            w = np.array([_publisher_weight(pub, PLATFORMS[p], GENRES[g].name) for pub in PUBLISHERS]) * size
            publisher[idx] = rng.choice(n_pub, size=len(idx), p=w / w.sum())
    missing = rng.random(n) < 0.10
    publisher[missing] = -1
    odd = rng.random(n)
    brand: list[str] = []
    for pub, o in zip(publisher.tolist(), odd.tolist()):
        brand.append("" if pub < 0 else _odd_brand(PUBLISHERS[pub][0], o))
    return publisher, brand


def _publisher_weight(pub: tuple[str, tuple[str, ...], tuple[str, ...] | None],
                      platform: str, genre: str) -> float:
    """How likely a publisher publishes a game of this platform and genre."""
    if pub[2] is not None and platform not in pub[2]:
        return 0.0
    return 1.0 if genre in pub[1] else 0.02


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


# --------------------------------------------------------------------------------------
# Users and reviews
# --------------------------------------------------------------------------------------

def _top_k_mask(rng: np.random.Generator, n: int, share: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row, k[row] distinct columns drawn without replacement proportional to share."""
    keys = np.log(share)[None, :] + rng.gumbel(size=(n, len(share)))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    return rank < k[:, None]


def _draw_users(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Preferred platforms (1-2), genres (1-3) and, per genre, the preferred style."""
    k_plat = rng.choice([1, 2], size=n, p=[0.6, 0.4])
    k_genre = rng.choice([1, 2, 3], size=n, p=[0.3, 0.45, 0.25])
    u_plat = _top_k_mask(rng, n, _PLATFORM_SHARE, k_plat)
    u_genre = _top_k_mask(rng, n, _GENRE_SHARE, k_genre)
    u_style = rng.integers(0, 2, size=(n, len(GENRES)), dtype=np.int8)
    return u_plat, u_genre, u_style


def _draw_reviewer_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Unique reviewer ids: "A" + 12 or 13 uppercase alphanumerics."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:  # a second round only on a (practically impossible) collision
        k = n - len(ids)
        rows = np.empty((k, 14), dtype=np.uint8)
        rows[:, 0] = ord("A")
        rows[:, 1:] = _random_codes(rng, k, 13, _ALNUM)
        short = rng.random(k) < 0.45
        for s, sh in zip(_rows_to_str(rows), short.tolist()):
            s = s[:13] if sh else s
            if s not in seen:
                seen.add(s)
                ids.append(s)
    return ids


def _cells(kinds: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Cell id (platform, genre, style) of each item."""
    p, g, s = kinds
    return (p.astype(np.int64) * len(GENRES) + g) * 2 + s


def _cell_affinity(users: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Affinity (users, cells) of the choice model; a cell is (platform, genre, style)."""
    u_plat, u_genre, u_style = users
    n_cells = len(PLATFORMS) * len(GENRES) * 2
    c = np.arange(n_cells)
    cp, cg, cs = c // (2 * len(GENRES)), (c // 2) % len(GENRES), c % 2
    genre_match = u_genre[:, cg]
    return (_W_PLATFORM * u_plat[:, cp] + _W_GENRE * genre_match
            + _W_STYLE * (genre_match & (u_style[:, cg] == cs)))


def _row_cdf(weights: np.ndarray) -> np.ndarray:
    """Flattened per-row CDFs offset by the row index, for one vectorised searchsorted."""
    cdf = np.cumsum(weights, axis=1)
    cdf /= cdf[:, -1:]
    cdf[:, -1] = 1.0
    cdf += np.arange(len(weights))[:, None]
    return cdf.ravel()


def _sample_rows(rng: np.random.Generator, cdf_flat: np.ndarray, rows: np.ndarray, n_cols: int) -> np.ndarray:
    """Draw one column per entry of ``rows`` from that row's distribution."""
    r = rng.random(len(rows)) * (1.0 - 1e-9)
    pos = np.searchsorted(cdf_flat, rows + r, side="right")
    return np.minimum(pos - rows * n_cols, n_cols - 1)


class _ItemSampler:
    """Draws reviewable items for users: cell by user taste, then item by popularity."""

    def __init__(self, kinds: tuple[np.ndarray, np.ndarray, np.ndarray], popularity: np.ndarray,
                 users: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        cells = _cells(kinds)
        n_cells = len(PLATFORMS) * len(GENRES) * 2
        weight = popularity ** _POP_EXPONENT
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
        self.user_cdf = _row_cdf(np.exp(_cell_affinity(users) / _TEMPERATURE) * mass[None, :])

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


def _keep_first(users: np.ndarray, items: np.ndarray, n_items: int,
                limit: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Drop repeated (user, item) pairs (first wins) and keep at most limit[user] per user."""
    key = users.astype(np.int64) * n_items + items
    _, first = np.unique(key, return_index=True)
    first.sort()
    users, items = users[first], items[first]
    if limit is None:
        return users, items
    o = np.argsort(users, kind="stable")
    users, items = users[o], items[o]
    rank = np.arange(len(users)) - np.searchsorted(users, users, side="left")
    keep = rank < limit[users]
    return users[keep], items[keep]


def _sample_reviews(rng: np.random.Generator, kinds: tuple[np.ndarray, np.ndarray, np.ndarray],
                    popularity: np.ndarray, users: tuple[np.ndarray, np.ndarray, np.ndarray],
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Distinct (user, item) pairs; each user gets a heavy-tailed count of at least 5.

    Draws with replacement in bulk, drops repeats, and redraws only for users still short.
    """
    n_users, n_items = len(users[0]), len(popularity)
    sampler = _ItemSampler(kinds, popularity, users)
    target = _review_counts(rng, n_users, n_items)
    acc_u = np.empty(0, dtype=np.int64)
    acc_i = np.empty(0, dtype=np.int64)
    need = target.copy()
    for _ in range(200):
        short = np.flatnonzero(need > 0)
        if len(short) == 0:
            break
        draws = np.ceil(need[short] * 1.3).astype(np.int64) + 3
        new_u = np.repeat(short, draws)
        new_i = sampler.draw(rng, new_u)
        acc_u, acc_i = _keep_first(np.concatenate([acc_u, new_u]), np.concatenate([acc_i, new_i]),
                                   n_items, target)
        need = target - np.bincount(acc_u, minlength=n_users)
    else:
        raise RuntimeError("synthetic data: could not give every user enough distinct items")
    return acc_u, acc_i


def _ensure_item_minimum(rng: np.random.Generator, pairs_u: np.ndarray, pairs_i: np.ndarray,
                         kinds: tuple[np.ndarray, np.ndarray, np.ndarray],
                         users: tuple[np.ndarray, np.ndarray, np.ndarray],
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Best effort item 5-core: rarely drawn items get reviews from users who like their cell.

    Real 5-core files have >= 5 reviews per item too; the extra reviewers are drawn
    proportional to exp(affinity), so they follow the planted preferences.
    """
    n_users, n_items = len(users[0]), len(kinds[0])
    minimum = min(_MIN_ITEM_REVIEWS, n_users)
    cell_of_item = _cells(kinds)
    user_cdf = _row_cdf(np.exp(_cell_affinity(users).T / _TEMPERATURE))
    for _ in range(8):
        deficit = np.maximum(0, minimum - np.bincount(pairs_i, minlength=n_items))
        short = np.flatnonzero(deficit)
        if len(short) == 0:
            break
        new_i = np.repeat(short, deficit[short] * 2 + 2)
        new_u = _sample_rows(rng, user_cdf, cell_of_item[new_i], n_users)
        existing = np.unique(pairs_u.astype(np.int64) * n_items + pairs_i)
        key = new_u * n_items + new_i
        fresh = ~np.isin(key, existing)
        new_i, new_u = _keep_first(new_i[fresh], new_u[fresh], n_users, deficit)
        pairs_u = np.concatenate([pairs_u, new_u])
        pairs_i = np.concatenate([pairs_i, new_i])
    return pairs_u, pairs_i


def _draw_days(rng: np.random.Generator, pairs_u: np.ndarray, n_users: int) -> np.ndarray:
    """Review day (days since epoch): each user is active over their own span of days.

    Spreading a user's reviews in time makes a leave-last-out split meaningful; some
    reviews share a day with another review of the same user, as in real data.
    """
    span = np.clip(rng.lognormal(np.log(500.0), 0.9, n_users), 20, _DAY1 - _DAY0).astype(np.int64)
    start = _DAY0 + (rng.random(n_users) * (_DAY1 - _DAY0 - span + 1)).astype(np.int64)
    days = start[pairs_u] + (rng.random(len(pairs_u)) * (span[pairs_u] + 1)).astype(np.int64)
    days = np.minimum(days, _DAY1)
    o = np.lexsort((days, pairs_u))
    same_user_prev = np.r_[False, pairs_u[o][1:] == pairs_u[o][:-1]]
    tie = same_user_prev & (rng.random(len(o)) < _SAME_DAY_SHARE)
    sorted_days = days[o]
    sorted_days[tie] = sorted_days[np.flatnonzero(tie) - 1]
    days[o] = sorted_days
    return days


def _add_repeats(rng: np.random.Generator, pairs_u: np.ndarray, pairs_i: np.ndarray,
                 days: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """About 0.3% of reviews are repeated by the same user on another day (as in real files)."""
    n_rep = int(round(_REPEAT_SHARE * len(pairs_u)))
    if n_rep == 0:
        return pairs_u, pairs_i, days
    src = rng.choice(len(pairs_u), size=n_rep, replace=False)
    src.sort()
    shift = rng.integers(7, 700, n_rep)
    later = days[src] + shift
    new_days = np.where(later <= _DAY1, later, np.maximum(_DAY0, days[src] - shift))
    new_days = np.where(new_days == days[src], days[src] + 1, new_days)
    return (np.concatenate([pairs_u, pairs_u[src]]), np.concatenate([pairs_i, pairs_i[src]]),
            np.concatenate([days, new_days]))


def _draw_ratings(rng: np.random.Generator, pairs_u: np.ndarray, pairs_i: np.ndarray,
                  kinds: tuple[np.ndarray, np.ndarray, np.ndarray], popularity: np.ndarray,
                  users: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Star ratings skewed to 5 (like real data); higher when the user likes the item more."""
    aff = _cell_affinity(users)[pairs_u, _cells(kinds)[pairs_i]]
    quality = 0.25 * np.log(popularity) + rng.normal(0.0, 0.4, len(popularity))
    z = 0.8 * aff + quality[pairs_i] + rng.logistic(0.0, 1.0, len(pairs_u))
    share = np.array([0.065, 0.045, 0.085, 0.175])  # 1..4 stars; 5 stars get the rest (~63%)
    cuts = np.quantile(z, np.cumsum(share))
    return (1 + np.searchsorted(cuts, z, side="right")).astype(np.float32)


def _order_reviews(pairs_u: np.ndarray, pairs_i: np.ndarray, days: np.ndarray, rating: np.ndarray,
                   item_asin: list[str]) -> np.ndarray:
    """Reviews in file order: by asin, newest first (the layout of the real 5-core files)."""
    asin_rank = np.argsort(np.argsort(np.array(item_asin)))
    o = np.lexsort((pairs_u, -days, asin_rank[pairs_i]))
    out = np.empty(len(o), dtype=REVIEW_DTYPE)
    out["user"], out["item"] = pairs_u[o], pairs_i[o]
    out["time"], out["rating"] = days[o] * 86400, rating[o]
    return out


# --------------------------------------------------------------------------------------
# Also-view lists
# --------------------------------------------------------------------------------------

def _similar_reviewable(rng: np.random.Generator, latent: np.ndarray, genre: np.ndarray,
                        n_rev: int) -> np.ndarray:
    """Top-20 reviewable neighbours of every item (same genre, by noisy latent similarity).

    Returns int (items, 20), -1 padded; never the item itself.
    """
    n = len(latent)
    top = np.full((n, _AV_MAX), -1, dtype=np.int64)
    for g in range(len(GENRES)):
        queries = np.flatnonzero(genre == g)
        pool = np.flatnonzero(genre[:n_rev] == g)
        if len(pool) < 2 * _AV_MAX:
            pool = np.arange(n_rev)
        pool_lat = latent[pool].T
        k = min(_AV_MAX, len(pool))
        for lo in range(0, len(queries), 2048):
            block = queries[lo:lo + 2048]
            score = latent[block] @ pool_lat
            score += rng.standard_normal(score.shape, dtype=np.float32) * np.float32(_AV_PAIR_NOISE_SD)
            pos = np.minimum(np.searchsorted(pool, block), len(pool) - 1)
            self_hit = np.flatnonzero(pool[pos] == block)
            score[self_hit, pos[self_hit]] = -np.inf
            part = np.argpartition(-score, k - 1, axis=1)[:, :k] if k < len(pool) else \
                np.tile(np.arange(len(pool)), (len(block), 1))
            part_score = np.take_along_axis(score, part, axis=1)
            order = np.argsort(-part_score, axis=1, kind="stable")
            chosen = pool[np.take_along_axis(part, order, axis=1)]
            chosen[np.take_along_axis(part_score, order, axis=1) == -np.inf] = -1
            top[block, :k] = chosen
    return top


def _pick_by_group(rng: np.random.Generator, members: np.ndarray, member_group: np.ndarray,
                   want_group: np.ndarray, n_groups: int) -> np.ndarray:
    """For each wanted group, a uniformly random member of it (-1 where the group is empty)."""
    o = np.argsort(member_group, kind="stable")
    members, member_group = members[o], member_group[o]
    start = np.searchsorted(member_group, np.arange(n_groups))
    size = np.bincount(member_group, minlength=n_groups)
    s = size[want_group]
    pick = start[want_group] + (rng.random(len(want_group)) * s).astype(np.int64)
    return np.where(s > 0, members[np.minimum(pick, len(members) - 1)], -1)


def _also_view(rng: np.random.Generator, latent: np.ndarray, platform: np.ndarray, genre: np.ndarray,
               popularity: np.ndarray, n_rev: int, asins: list[str], ghosts: list[str]) -> list[list[str]]:
    """Also-view lists of 5-20 asins for most items, mostly same platform and genre.

    Slots: ~72% similar reviewable items (both styles, by noisy latent similarity),
    ~10% popular strays, ~15% catalog-only items, ~3% asins in no file; ~8% of items
    have an empty list.  Vectorised as one table of (item, sort key, asin index) rows.
    """
    n = len(latent)
    top = _similar_reviewable(rng, latent, genre, n_rev)
    length = rng.integers(5, _AV_MAX + 1, n)
    length[rng.random(n) < 0.08] = 0
    counts = rng.multinomial(length, [0.72, 0.10, 0.15, 0.03])
    # similar: the first counts[:, 0] entries of top, keys ordered by rank
    k_sim = counts[:, 0]
    rank = np.arange(_AV_MAX)[None, :]
    sim_mask = (rank < k_sim[:, None]) & (top >= 0)
    sim_item = np.nonzero(sim_mask)[0]
    sim_asin = top[sim_mask]
    sim_key = (np.nonzero(sim_mask)[1] + 0.5) / np.maximum(k_sim[sim_item], 1)
    # strays: popular reviewable items from anywhere
    stray_item = np.repeat(np.arange(n), counts[:, 1])
    cum = np.cumsum(popularity[:n_rev])
    stray_asin = np.minimum(np.searchsorted(cum, rng.random(len(stray_item)) * cum[-1], side="right"), n_rev - 1)
    # catalog-only items of the same platform and genre (else same genre, else any)
    cat_item = np.repeat(np.arange(n), counts[:, 2])
    cat_members = np.arange(n_rev, n)
    pg = platform.astype(np.int64) * len(GENRES) + genre
    cat_asin = _pick_by_group(rng, cat_members, pg[n_rev:], pg[cat_item], len(PLATFORMS) * len(GENRES))
    miss = cat_asin < 0
    cat_asin[miss] = _pick_by_group(rng, cat_members, genre[n_rev:].astype(np.int64),
                                    genre[cat_item[miss]].astype(np.int64), len(GENRES))
    miss = cat_asin < 0
    cat_asin[miss] = n_rev + rng.integers(0, n - n_rev, int(miss.sum()))
    # ghosts: asins that are in no file
    ghost_item = np.repeat(np.arange(n), counts[:, 3])
    ghost_asin = n + rng.integers(0, len(ghosts), len(ghost_item))
    extra_item = np.concatenate([stray_item, cat_item, ghost_item])
    item = np.concatenate([sim_item, extra_item])
    ref = np.concatenate([sim_asin, stray_asin, cat_asin, ghost_asin])
    key = np.concatenate([sim_key, rng.random(len(extra_item))])
    o = np.lexsort((key, item))
    item, ref = item[o], ref[o]
    keep = ref != item
    item, ref = _keep_first(item[keep], ref[keep], n + len(ghosts), None)
    names = np.array(asins + ghosts, dtype=object)
    bounds = np.searchsorted(item, np.arange(n + 1))
    return [names[ref[bounds[i]:bounds[i + 1]]].tolist() for i in range(n)]


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------

def _write_gz(path: Path, lines: Iterable[str], chunk: int = 4096) -> None:
    """Gzip text lines reproducibly (mtime 0, no file name in the header)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="",
                                                 compresslevel=6) as gz:
        buf: list[str] = []
        for line in lines:
            buf.append(line)
            if len(buf) >= chunk:
                gz.write("".join(buf).encode("utf-8"))
                buf.clear()
        if buf:
            gz.write("".join(buf).encode("utf-8"))


def _day_strings(first_day: int, last_day: int) -> tuple[list[str], list[str]]:
    """"MM D, YYYY" (review) and "Month D, YYYY" (meta date) strings per day in range."""
    days = np.arange(first_day, last_day + 1).astype("datetime64[D]")
    year = days.astype("datetime64[Y]").astype(np.int64) + 1970
    month = days.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dom = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    review = [f"{m:02d} {d}, {y}" for y, m, d in zip(year.tolist(), month.tolist(), dom.tolist())]
    meta = [f"{_MONTHS[m - 1]} {d}, {y}" for y, m, d in zip(year.tolist(), month.tolist(), dom.tolist())]
    return review, meta


_FIRST_NAMES = ("John", "Mike", "Chris", "David", "Jessica", "Sarah", "Matt", "Ashley", "Brian",
                "Kevin", "Amanda", "Jason", "Emily", "Ryan", "Laura", "Tyler", "Nicole", "Eric",
                "Rachel", "Justin", "Megan", "Josh", "Karen", "Steven", "Lisa", "Mark", "Anthony")
_LAST_NAMES = ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Garcia",
               "Wilson", "Anderson", "Taylor", "Thomas", "Moore", "Martin", "Lee", "Clark", "Lewis")
_HANDLES = ("gamer", "PlayerOne", "RetroFan", "pixel", "NoScope", "dad_of_3", "Speedrunner",
            "xXSniperXx", "CasualGamer", "ShadowFox", "LootGoblin", "BossFight")
_POSITIVE = ("Great {genre}!", "Love it.", "My son loves this game.", "Best {genre} on {platform}.",
             "The {word} is fantastic.", "Really fun {style} game.", "Worth every penny.",
             "Hours of fun with the {word}.", "Arrived on time and works great.",
             "If you like {word}, get this.", "Exactly as described.")
_NEUTRAL = ("It's ok.", "Decent {genre} but the {word} gets old.", "Not bad for the price.",
            "Fun for a while.", "The {word} could be better.", "Average {style} game.")
_NEGATIVE = ("Disappointed.", "Not a fan of the {word}.", "Game froze constantly on {platform}.",
             "Boring {genre}.", "Returned it.", "Too much {word}, not enough fun.",
             "Disc arrived scratched.")
_STAR_SUMMARY = ("One Star", "Two Stars", "Three Stars", "Four Stars", "Five Stars")
_SUMMARIES = (("Terrible", "Waste of money", "Do not buy", "Broken"),
              ("Meh", "It's okay", "Could be better", "Average"),
              ("Great game", "Awesome", "Love it!", "Fun", "Highly recommend", "A must have"))


def _user_names(rng: np.random.Generator, n: int) -> list[str | None]:
    """A display name per user; ~2% have none (the key is then missing)."""
    r = rng.integers(0, 1 << 30, size=(n, 4)).tolist()
    names: list[str | None] = []
    for a, b, c, d in r:
        kind = a % 100
        if kind < 2:
            names.append(None)
        elif kind < 12:
            names.append("Amazon Customer")
        elif kind < 14:
            names.append("Kindle Customer")
        elif kind < 30:
            names.append(f"{_HANDLES[b % len(_HANDLES)]}{c % 1000}")
        elif kind < 45:
            names.append(_FIRST_NAMES[b % len(_FIRST_NAMES)])
        else:
            names.append(f"{_FIRST_NAMES[b % len(_FIRST_NAMES)]} {_LAST_NAMES[c % len(_LAST_NAMES)]}"
                         if d % 3 else f"{_FIRST_NAMES[b % len(_FIRST_NAMES)]} {_LAST_NAMES[c % len(_LAST_NAMES)][0]}.")
    return names


def _fill(template: str, genre: Genre, style: int, platform: str, pick: int, noise: bool) -> str:
    """Fill a text template with (mostly) the item's own genre/style vocabulary."""
    g = GENRES[pick % len(GENRES)] if noise else genre
    word = g.words[style if not noise else pick % 2][(pick >> 4) % 6]
    return template.format(genre=genre.name, style=genre.styles[style], word=word, platform=platform)


def _review_text(rating: int, genre: Genre, style: int, platform: str, r: list[int]) -> str:
    """One to three short sentences whose tone follows the rating."""
    pool = _POSITIVE if rating >= 4 else (_NEUTRAL if rating == 3 else _NEGATIVE)
    n_sent = 1 + r[0] % 3
    return " ".join(_fill(pool[r[1 + k] % len(pool)], genre, style, platform, r[4 + k], r[7] % 5 == 0)
                    for k in range(n_sent))


def _review_lines(world: SyntheticWorld, rng: np.random.Generator) -> Iterator[str]:
    """JSON lines of the reviews file, key order of the real 2018 files."""
    review_day, _ = _day_strings(_DAY0, _DAY1)
    names = _user_names(rng, len(world.user_id))
    rev = world.reviews
    platforms = world.item_platform.tolist()
    genres = world.item_genre.tolist()
    styles = world.item_style.tolist()
    for lo in range(0, len(rev), 20000):
        chunk = rev[lo:lo + 20000]
        rand = rng.integers(0, 1 << 30, size=(len(chunk), 20)).tolist()
        for (u, i, t, rating), r in zip(chunk.tolist(), rand):
            yield json.dumps(_review_record(world, u, i, t, rating, r, names[u], review_day,
                                            PLATFORMS[platforms[i]], GENRES[genres[i]], styles[i])) + "\n"


def _review_record(world: SyntheticWorld, u: int, i: int, t: int, rating: float, r: list[int],
                   name: str | None, review_day: list[str], platform: str, genre: Genre,
                   style: int) -> dict:
    """One review as a dict with optional keys (image, vote, style, name, text) like real data."""
    rec: dict = {}
    if r[10] % 1000 < 3:
        rec["image"] = [f"https://images-na.ssl-images-amazon.com/images/I/{_img_id(r[1])}._SY88.jpg"]
    rec["overall"] = rating
    if r[0] % 100 < 12:
        rec["vote"] = f"{1 + int((((r[2] % 10000) + 1) / 10000.0) ** -0.8):,}"
    rec["verified"] = r[4] % 100 < 78
    day = t // 86400
    rec["reviewTime"] = review_day[day - _DAY0]
    rec["reviewerID"] = world.user_id[u]
    rec["asin"] = world.item_asin[i]
    s = r[5] % 100
    if s < 60:
        if s < 6:
            rec["style"] = {"Edition:": " Standard", "Platform:": " " + platform}
        elif s < 9:
            rec["style"] = {"Format:": " Video Game"}
        else:
            rec["style"] = {"Platform:": " " + platform}
    if name is not None:
        rec["reviewerName"] = name
    stars = int(rating)
    if r[6] % 100 != 0:
        rec["reviewText"] = _review_text(stars, genre, style, platform, r[12:20])
    if r[8] % 100 < 40:
        rec["summary"] = _STAR_SUMMARY[stars - 1]
    else:
        group = _SUMMARIES[0 if stars <= 2 else (1 if stars == 3 else 2)]
        rec["summary"] = group[r[9] % len(group)]
    rec["unixReviewTime"] = t
    return rec


def _img_id(x: int) -> str:
    """An 11-character image id like the ones in Amazon image URLs."""
    chars = _IMG_CHAR_LIST
    out = []
    for _ in range(11):
        out.append(chr(chars[x % len(chars)]))
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return "".join(out)


def _meta_line_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """Shuffled item order with ~2% of items written twice, the copy placed elsewhere."""
    dup = np.flatnonzero(rng.random(n) < 0.02)
    if len(dup) == 0:
        dup = rng.integers(0, n, 1)
    return rng.permutation(np.concatenate([np.arange(n), dup]))


_JUNK_PRICES = (
    ".a-box-inner{background-color:#fff}#alohaBuyBoxWidget .selected{background-color:#fffbf3;"
    "border-color:#e77600;box-shadow:0 0 3px rgba(228,121,17,.5)}#alohaBuyBoxWidget "
    ".contract-not-available{color:gray}#aloha-cart-popover .aloha-cart{height:auto;overflow:hidden}"
    "#aloha-cart-popover #aloha-cartInfo{float:left}#aloha-cart-popover #aloha-cart-details{float:right;"
    "margin-top:1em}#aloha-cart-popover .deviceContainer{width:160px;float:left;padding-right:10px;"
    "border-right:1px solid #ddd}",
    "<span class=\"a-price\" data-a-size=\"m\" data-a-color=\"price\"><span class=\"a-offscreen\">"
    "{price}</span><span aria-hidden=\"true\"><span class=\"a-price-symbol\">$</span>"
    "<span class=\"a-price-whole\">{whole}<span class=\"a-price-decimal\">.</span></span>"
    "<span class=\"a-price-fraction\">99</span></span></span>",
    "\n\t\t                                            \n\r\n\r\n\r\n    \r\n    \r\n        \r\n"
    "        \n\n\n\n\n    \n    \n       \n           <div class=\"a-section a-spacing-none\"",
)
_JUNK_DATE = ("<div class=\"a-fixed-left-grid   a-spacing-none\"><div class=\"a-fixed-left-grid-inner\" "
              "style=\"padding-left:280px\"><div class=\"a-fixed-left-grid-col a-col-left\" "
              "style=\"width:280px;margin-left:-280px;float:left;\">")
_TITLE_ADJ = ("Shadow", "Crystal", "Iron", "Neon", "Ancient", "Super", "Final", "Eternal", "Wild",
              "Dark", "Royal", "Lost", "Cosmic", "Mega", "Steel", "Hyper", "Broken", "Golden")
_HTML_TITLE = "<span class=\"a-size-medium a-color-secondary\""
_DESC_TEMPLATES = (
    "{title} brings {w1} {genre} gameplay to {platform}.",
    "Features {w1}, {w2} and {w3}.",
    "Experience the {style} {genre} with {w1} fans have been waiting for.",
    "Master {w2} &amp; {w3} in {n} hours of content.",
    "{A_style} {genre} with {w1} at its heart.",
    "Includes {n} bonus levels and online play.",
)
_FEATURE_TEMPLATES = ("{W1} gameplay with {w2}", "Play on {platform}", "Over {n} hours of {w1}",
                      "New {w2} mode", "Online multiplayer for up to {m} players")
_MAIN_CATS = ("Video Games", "All Electronics", "Toys & Games", "Computers",
              "<img src=\"https://images-na.ssl-images-amazon.com/images/G/01/nav2/images/gui/"
              "amazon-fashion-store-new._CB520838675_.png\" class=\"nav-categ-image\" alt=\"AMAZON FASHION\"/>")


def _price_levels(world: SyntheticWorld, rng: np.random.Generator) -> np.ndarray:
    """Price in dollars per item: genre level x platform factor x popularity, x.99 endings."""
    base = np.array([g.price for g in GENRES])[world.item_genre] * _PLATFORM_PRICE[world.item_platform]
    pop_factor = np.clip(world.item_popularity, 0.3, 30.0) ** 0.12
    raw = base * pop_factor * rng.lognormal(0.0, 0.35, world.n_items)
    return np.maximum(np.round(raw), 3.0) - 0.01


def _rank_numbers(world: SyntheticWorld, rng: np.random.Generator) -> np.ndarray:
    """Sales rank: popular items rank high (small numbers), with noise."""
    noisy = np.log(world.item_popularity) + rng.normal(0.0, 0.5, world.n_items)
    order = np.argsort(-noisy)
    rank = np.empty(world.n_items, dtype=np.int64)
    rank[order] = np.arange(world.n_items)
    return (rank * 7 + 1 + rng.integers(0, 7, world.n_items)).astype(np.int64)


def _meta_lines(world: SyntheticWorld, rng: np.random.Generator, order: np.ndarray) -> Iterator[str]:
    """JSON lines of the meta file in ``order`` (duplicates are identical lines)."""
    price = _price_levels(world, rng).tolist()
    rank = _rank_numbers(world, rng).tolist()
    rand = rng.integers(0, 1 << 30, size=(world.n_items, 48)).tolist()
    also_buy = _also_buy(world, rng)
    _, meta_day = _day_strings(_DAY0 - 3650, _DAY1)
    lines = [json.dumps(_meta_record(world, i, price[i], rank[i], rand[i], also_buy[i], meta_day)) + "\n"
             for i in range(world.n_items)]
    for i in order.tolist():
        yield lines[i]


def _also_buy(world: SyntheticWorld, rng: np.random.Generator) -> list[list[str]]:
    """also_buy: 0-12 asins of the same platform (any genre), ~45% of items have none."""
    n = world.n_items
    k = rng.integers(1, 13, n)
    k[rng.random(n) < 0.45] = 0
    item = np.repeat(np.arange(n), k)
    pick = _pick_by_group(rng, np.arange(n), world.item_platform.astype(np.int64),
                          world.item_platform[item].astype(np.int64), len(PLATFORMS))
    ghost = rng.random(len(item)) < 0.05
    pick[ghost] = n + rng.integers(0, len(world.ghost_asins), int(ghost.sum()))
    keep = pick != item
    item, pick = _keep_first(item[keep], pick[keep], n + len(world.ghost_asins), None)
    names = np.array(world.item_asin + world.ghost_asins, dtype=object)
    bounds = np.searchsorted(item, np.arange(n + 1))
    return [names[pick[bounds[i]:bounds[i + 1]]].tolist() for i in range(n)]


def _vocab_word(genre: Genre, style: int, r: int) -> str:
    """A word from the item's style (60%), its other style (20%) or another genre (20%)."""
    u = r % 10
    if u < 6:
        return genre.words[style][(r >> 4) % 6]
    if u < 8:
        return genre.words[1 - style][(r >> 4) % 6]
    other = GENRES[(r >> 8) % len(GENRES)]
    return other.words[(r >> 12) % 2][(r >> 4) % 6]


def _with_article(word: str) -> str:
    """"a turn-based" / "an action": keeps generated English readable."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _title(genre: Genre, style: int, platform: str, r: list[int]) -> str:
    """A game title from genre/style words; ~1.5% are scraped HTML fragments."""
    if r[0] % 1000 < 8:
        return _HTML_TITLE
    words = f"{_TITLE_ADJ[r[1] % len(_TITLE_ADJ)]} {genre.nouns[r[2] % len(genre.nouns)]}"
    if r[3] % 4 == 0:
        words += (" 2", " 3", " II", " III", " 4")[r[3] // 4 % 5]
    if r[4] % 3 == 0:
        words += f": {_vocab_word(genre, style, r[5]).title()} Edition"
    if r[6] % 2 == 0:
        words += f" - {platform}"
    if r[0] % 1000 < 15:
        return f"<span class=\"a-size-medium a-text-ellipsis\">{words}</span>"
    return words


def _description(title: str, genre: Genre, style: int, platform: str, r: list[int]) -> list[str]:
    """0-4 strings from platform/genre/style vocabulary, some with HTML; ~10% empty."""
    if r[0] % 10 == 0:
        return []
    out = []
    for k in range(1 + r[1] % 4):
        x = r[2 + k]
        text = _DESC_TEMPLATES[x % len(_DESC_TEMPLATES)].format(
            title=title if not title.startswith("<") else "This game", genre=genre.name,
            style=genre.styles[style], A_style=_with_article(genre.styles[style]).capitalize(),
            platform=platform, n=10 + x % 90,
            w1=_vocab_word(genre, style, x >> 3), w2=_vocab_word(genre, style, x >> 7),
            w3=_vocab_word(genre, style, x >> 11))
        h = (x >> 20) % 10
        if h == 0:
            text = f"<b>{text}</b>"
        elif h == 1:
            text = f"<p>{text}</p>"
        elif h == 2:
            text = text.replace(". ", ".<br>") + "<br>"
        out.append(text)
    if r[6] % 12 == 0:
        out.append("")
    return out


def _features(genre: Genre, style: int, platform: str, r: list[int]) -> list[str]:
    """0-5 feature bullets; ~40% of items have none."""
    if r[0] % 10 < 4:
        return []
    feats = []
    for k in range(1 + r[1] % 5):
        x = r[2 + k]
        w1 = _vocab_word(genre, style, x >> 3)
        feats.append(_FEATURE_TEMPLATES[x % len(_FEATURE_TEMPLATES)].format(
            W1=w1[:1].upper() + w1[1:], w1=w1, w2=_vocab_word(genre, style, x >> 9),
            platform=platform, n=5 + x % 95, m=2 + x % 7))
    return feats


def _price_string(price: float, r: int) -> str:
    """"$19.99" mostly; "" ~30%, a range ~3%, scraped junk ~1%."""
    u = r % 1000
    if u < 300:
        return ""
    if u < 330:
        low = max(0.99, round(price * 0.5) - 0.01)
        return f"${low:,.2f} - ${price:,.2f}"
    if u < 340:
        junk = _JUNK_PRICES[r % 3]
        return junk.replace("{price}", f"${price:,.2f}").replace("{whole}", f"{int(price)}")
    return f"${price:,.2f}"


def _rank_value(rank: int, platform: str, r: int) -> str | list[str]:
    """Sales rank as a string, a list of strings, or [] (all three occur in real files)."""
    u = r % 10
    if u < 2:
        return []
    if u < 6:
        return f"{rank:,} in Video Games ("
    return [f">#{rank:,} in Video Games (See Top 100 in Video Games)",
            f">#{max(1, rank // 9):,} in Video Games > {platform} > Games"]


def _details(asin: str, r: list[int]) -> dict:
    """Product details dict with the odd keys of real meta files."""
    d: dict = {}
    weight = 1.0 + r[0] % 60 / 10
    if r[1] % 10 < 6:
        d["\n    Product Dimensions: \n    "] = f"5.3 x 0.6 x 6.7 inches ; {weight:.1f} ounces"
    if r[1] % 10 < 8:
        d["Shipping Weight:"] = f"{weight:.1f} ounces"
    if r[2] % 10 < 2:
        d["Domestic Shipping: "] = "Item can be shipped within U.S."
        d["International Shipping: "] = "This item can be shipped to select countries outside of the U.S."
    if r[2] % 20 != 19:
        d["ASIN: " if r[3] % 10 == 0 else "ASIN:"] = asin
    if r[3] % 10 < 4:
        d["Item model number:"] = f"{r[4] % 100000:05d}"
    return d


def _meta_record(world: SyntheticWorld, i: int, price: float, rank: int, r: list[int],
                 also_buy: list[str], meta_day: list[str]) -> dict:
    """One meta item as a dict with the 18 keys in the order of the real 2018 files."""
    p = PLATFORMS[int(world.item_platform[i])]
    genre = GENRES[int(world.item_genre[i])]
    style = int(world.item_style[i])
    rr = r[24:]  # second block of independent draws
    title = _title(genre, style, p, r[0:7])
    category = ["Video Games", p] if r[7] % 20 == 0 else ["Video Games", p, "Games"]
    n_img = 0 if r[8] % 10 < 3 else 1 + r[8] % 3
    image = [f"https://images-na.ssl-images-amazon.com/images/I/{_img_id(r[9] + k)}._SX38_SY50_CR,0,0,38,50_.jpg"
             for k in range(n_img)]
    m = r[10] % 1000
    main_cat = _MAIN_CATS[0 if m < 930 else (1 if m < 960 else (2 if m < 980 else (3 if m < 995 else 4)))]
    dd = r[11] % 1000
    date = _JUNK_DATE if dd < 5 else (meta_day[(r[12] >> 3) % len(meta_day)] if dd < 400 else "")
    return {
        "category": category,
        "tech1": "",
        "description": _description(title, genre, style, p, rr[0:7]),
        "fit": "",
        "title": title,
        "also_buy": also_buy,
        "image": image,
        "tech2": "",
        "brand": world.item_brand[i],
        "feature": _features(genre, style, p, rr[7:14]),
        "rank": _rank_value(rank, p, r[13]),
        "also_view": world.also_view[i],
        "details": _details(world.item_asin[i], rr[14:19]),
        "main_cat": main_cat,
        "similar_item": "",
        "date": date,
        "price": _price_string(price, r[14]),
        "asin": world.item_asin[i],
    }
