"""The world as the meta file's JSON lines: titles, categories, descriptions, prices, ranks, also_buy.

Like the review fields (``render``), every field of a meta line is drawn from its own named
stream as a column for a chunk of items, then handed by name to the record builder. Kept apart
from the review lines because the meta file has many more fields, each with its own oddities.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from alsoview.data.synthetic.draws import Streams
from alsoview.data.synthetic.pairs import asin_lists, keep_first, pick_by_group
from alsoview.data.synthetic.render import CHUNK, day_strings, image_ids
from alsoview.data.synthetic.vocabulary import (
    DESCRIPTION_TEMPLATES,
    ELLIPSIS_TITLE,
    FEATURE_TEMPLATES,
    GENRE_WORDS,
    GENRES,
    HTML_TITLE,
    JUNK_DATE,
    JUNK_PRICES,
    MAIN_CATEGORIES,
    META_IMAGE_URL,
    PLATFORM_PRICE,
    PLATFORMS,
    SEQUEL_SUFFIXES,
    TITLE_ADJECTIVES,
    WORDS_PER_STYLE,
)
from alsoview.data.synthetic.world import FIRST_DAY, LAST_DAY, SyntheticWorld

_MAX_DESCRIPTION_SENTENCES = 4
_MAX_FEATURES = 5
_META_FIRST_DAY = FIRST_DAY - 3650  # release dates reach ten years further back than reviews


def _vocabulary_words(
    rng: np.random.Generator, genre: np.ndarray, style: np.ndarray, shape: tuple[int, ...]
) -> np.ndarray:
    """Words for items (first axis of ``shape``): 60% from the item's style, 20% its genre's other
    style, 20% any genre's (so text is informative but not a give-away)."""
    genre = genre.reshape((-1,) + (1,) * (len(shape) - 1))
    style = style.reshape(genre.shape)
    source = rng.random(shape)
    any_genre = rng.integers(0, len(GENRES), shape)
    any_style = rng.integers(0, 2, shape)
    index = rng.integers(0, WORDS_PER_STYLE, shape)
    word_genre = np.where(source < 0.8, genre, any_genre)
    word_style = np.where(source < 0.6, style, np.where(source < 0.8, 1 - style, any_style))
    return GENRE_WORDS[word_genre, word_style, index]


def _with_article(word: str) -> str:
    """The word with "a" or "an" ("a turn-based", "an action"): keeps generated English readable."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


@dataclass(frozen=True, slots=True)
class MetaLook:
    """The drawn fields of one meta line (the world supplies brand, also_view and asin)."""

    category: list[str]
    description: list[str]
    title: str
    image: list[str]
    feature: list[str]
    rank: str | list[str]
    details: dict[str, str]
    main_cat: str
    date: str
    price: str


class _MetaFields:
    """One stream per meta field; each chunk of items draws a column per field."""

    def __init__(self, streams: Streams) -> None:
        self.title = streams.generator("meta.title")
        self.category = streams.generator("meta.category")
        self.image = streams.generator("meta.image")
        self.main_cat = streams.generator("meta.main_cat")
        self.date = streams.generator("meta.date")
        self.description = streams.generator("meta.description")
        self.features = streams.generator("meta.features")
        self.rank = streams.generator("meta.rank")
        self.details = streams.generator("meta.details")
        self.price = streams.generator("meta.price")

    def looks(
        self, world: SyntheticWorld, items: np.ndarray, price: np.ndarray, rank: np.ndarray, meta_day: list[str]
    ) -> list[MetaLook]:
        """The looks of a chunk of ``items``, in order; ``price`` and ``rank`` cover every item."""
        n = len(items)
        genre, style, platform = world.item_genre[items], world.item_style[items], world.item_platform[items]
        titles = _titles(self.title, genre, style, platform)
        columns = zip(
            _categories(self.category, platform),
            _descriptions(self.description, titles, genre, style, platform),
            titles,
            _meta_images(self.image, n),
            _features(self.features, genre, style, platform),
            _rank_values(self.rank, rank[items], platform),
            _details(self.details, [world.item_asin[i] for i in items.tolist()]),
            _main_categories(self.main_cat, n),
            _dates(self.date, n, meta_day),
            _price_strings(self.price, price[items]),
        )
        return [MetaLook(*fields) for fields in columns]


def _titles(rng: np.random.Generator, genre: np.ndarray, style: np.ndarray, platform: np.ndarray) -> list[str]:
    """A game title from genre/style words; ~1.5% are scraped HTML fragments."""
    n = len(genre)
    markup = rng.random(n).tolist()
    adjective = rng.integers(0, len(TITLE_ADJECTIVES), n).tolist()
    noun = rng.integers(0, np.array([len(g.nouns) for g in GENRES])[genre]).tolist()
    has_sequel = (rng.random(n) < 0.25).tolist()
    sequel = rng.integers(0, len(SEQUEL_SUFFIXES), n).tolist()
    has_edition = (rng.random(n) < 1 / 3).tolist()
    edition = _vocabulary_words(rng, genre, style, (n,)).tolist()
    has_platform = (rng.random(n) < 0.5).tolist()
    titles = []
    for k, (g, p) in enumerate(zip(genre.tolist(), platform.tolist())):
        if markup[k] < 0.008:
            titles.append(HTML_TITLE)
            continue
        words = f"{TITLE_ADJECTIVES[adjective[k]]} {GENRES[g].nouns[noun[k]]}"
        if has_sequel[k]:
            words += SEQUEL_SUFFIXES[sequel[k]]
        if has_edition[k]:
            words += f": {edition[k].title()} Edition"
        if has_platform[k]:
            words += f" - {PLATFORMS[p]}"
        titles.append(ELLIPSIS_TITLE.format(words) if markup[k] < 0.015 else words)
    return titles


def _categories(rng: np.random.Generator, platform: np.ndarray) -> list[list[str]]:
    """Video Games > platform > Games, ~5% without the last level."""
    short = (rng.random(len(platform)) < 0.05).tolist()
    return [
        ["Video Games", PLATFORMS[p]] if cut else ["Video Games", PLATFORMS[p], "Games"]
        for p, cut in zip(platform.tolist(), short)
    ]


def _meta_images(rng: np.random.Generator, n: int) -> list[list[str]]:
    """No image on ~30% of items, else 1-3 thumbnails."""
    count = np.where(rng.random(n) < 0.3, 0, rng.integers(1, 4, n))
    urls = [META_IMAGE_URL.format(image_id) for image_id in image_ids(rng, int(count.sum()))]
    bounds = np.concatenate([[0], np.cumsum(count)]).tolist()
    return [urls[bounds[k] : bounds[k + 1]] for k in range(n)]


_MAIN_CATEGORY_SHARE = (0.93, 0.03, 0.02, 0.015, 0.005)


def _main_categories(rng: np.random.Generator, n: int) -> list[str]:
    """Mostly "Video Games"; sometimes another store, or a scraped image tag."""
    return [MAIN_CATEGORIES[k] for k in rng.choice(len(MAIN_CATEGORIES), size=n, p=_MAIN_CATEGORY_SHARE).tolist()]


def _dates(rng: np.random.Generator, n: int, meta_day: list[str]) -> list[str]:
    """A release date on ~40% of items ("" elsewhere), scraped HTML on ~0.5%."""
    u = rng.random(n).tolist()
    day = rng.integers(0, len(meta_day), n).tolist()
    return [JUNK_DATE if x < 0.005 else (meta_day[d] if x < 0.4 else "") for x, d in zip(u, day)]


def _descriptions(
    rng: np.random.Generator, titles: list[str], genre: np.ndarray, style: np.ndarray, platform: np.ndarray
) -> list[list[str]]:
    """0-4 strings from platform/genre/style vocabulary, ~30% with HTML; ~10% of items have none."""
    n, width = len(genre), _MAX_DESCRIPTION_SENTENCES
    empty = (rng.random(n) < 0.1).tolist()
    n_sentences = rng.integers(1, width + 1, n).tolist()
    template = rng.integers(0, len(DESCRIPTION_TEMPLATES), (n, width)).tolist()
    hours = rng.integers(10, 100, (n, width)).tolist()
    words = _vocabulary_words(rng, genre, style, (n, width, 3)).tolist()
    decoration = rng.integers(0, 10, (n, width)).tolist()  # 0 bold, 1 paragraph, 2 line breaks, else plain
    trailing_empty = (rng.random(n) < 1 / 12).tolist()
    descriptions: list[list[str]] = []
    for k, (g, s, p) in enumerate(zip(genre.tolist(), style.tolist(), platform.tolist())):
        if empty[k]:
            descriptions.append([])
            continue
        item_genre = GENRES[g]
        sentences = []
        for j in range(n_sentences[k]):
            w1, w2, w3 = words[k][j]
            text = DESCRIPTION_TEMPLATES[template[k][j]].format(
                title="This game" if titles[k].startswith("<") else titles[k],
                genre=item_genre.name,
                style=item_genre.styles[s],
                A_style=_with_article(item_genre.styles[s]).capitalize(),
                platform=PLATFORMS[p],
                n=hours[k][j],
                w1=w1,
                w2=w2,
                w3=w3,
            )
            sentences.append(_decorate(text, decoration[k][j]))
        if trailing_empty[k]:
            sentences.append("")
        descriptions.append(sentences)
    return descriptions


def _decorate(text: str, decoration: int) -> str:
    """The HTML that scraped descriptions carry."""
    if decoration == 0:
        return f"<b>{text}</b>"
    if decoration == 1:
        return f"<p>{text}</p>"
    if decoration == 2:
        return text.replace(". ", ".<br>") + "<br>"
    return text


def _features(rng: np.random.Generator, genre: np.ndarray, style: np.ndarray, platform: np.ndarray) -> list[list[str]]:
    """0-5 feature bullets; ~40% of items have none."""
    n, width = len(genre), _MAX_FEATURES
    none = (rng.random(n) < 0.4).tolist()
    n_bullets = rng.integers(1, width + 1, n).tolist()
    template = rng.integers(0, len(FEATURE_TEMPLATES), (n, width)).tolist()
    words = _vocabulary_words(rng, genre, style, (n, width, 2)).tolist()
    hours = rng.integers(5, 100, (n, width)).tolist()
    players = rng.integers(2, 9, (n, width)).tolist()
    features: list[list[str]] = []
    for k, p in enumerate(platform.tolist()):
        bullets = []
        for j in range(0 if none[k] else n_bullets[k]):
            w1, w2 = words[k][j]
            bullets.append(
                FEATURE_TEMPLATES[template[k][j]].format(
                    W1=w1[:1].upper() + w1[1:], w1=w1, w2=w2, platform=PLATFORMS[p], n=hours[k][j], m=players[k][j]
                )
            )
        features.append(bullets)
    return features


def _rank_values(rng: np.random.Generator, rank: np.ndarray, platform: np.ndarray) -> list[str | list[str]]:
    """Sales rank as a string (~40%), a list of strings (~40%) or [] (all three occur in real files)."""
    u = rng.random(len(rank)).tolist()
    values: list[str | list[str]] = []
    for x, r, p in zip(u, rank.tolist(), platform.tolist()):
        if x < 0.2:
            values.append([])
        elif x < 0.6:
            values.append(f"{r:,} in Video Games (")
        else:
            values.append(
                [
                    f">#{r:,} in Video Games (See Top 100 in Video Games)",
                    f">#{max(1, r // 9):,} in Video Games > {PLATFORMS[p]} > Games",
                ]
            )
    return values


def _details(rng: np.random.Generator, asins: list[str]) -> list[dict[str, str]]:
    """Product details dicts with the odd keys (and key spellings) of real meta files."""
    n = len(asins)
    weight = (1.0 + rng.integers(0, 60, n) / 10).tolist()
    package = rng.random(n).tolist()  # < 0.6: dimensions and weight; < 0.8: weight only
    shipping_note = (rng.random(n) < 0.2).tolist()
    asin_listed = (rng.random(n) >= 0.05).tolist()
    asin_key = np.where(rng.random(n) < 0.1, "ASIN: ", "ASIN:").tolist()
    has_model = (rng.random(n) < 0.4).tolist()
    model = rng.integers(0, 100000, n).tolist()
    details: list[dict[str, str]] = []
    for k, asin in enumerate(asins):
        d: dict[str, str] = {}
        if package[k] < 0.6:
            d["\n    Product Dimensions: \n    "] = f"5.3 x 0.6 x 6.7 inches ; {weight[k]:.1f} ounces"
        if package[k] < 0.8:
            d["Shipping Weight:"] = f"{weight[k]:.1f} ounces"
        if shipping_note[k]:
            d["Domestic Shipping: "] = "Item can be shipped within U.S."
            d["International Shipping: "] = "This item can be shipped to select countries outside of the U.S."
        if asin_listed[k]:
            d[asin_key[k]] = asin
        if has_model[k]:
            d["Item model number:"] = f"{model[k]:05d}"
        details.append(d)
    return details


def _price_strings(rng: np.random.Generator, price: np.ndarray) -> list[str]:
    """Mostly "$19.99"; "" ~30%, a range ~3%, scraped junk ~1%."""
    u = rng.random(len(price)).tolist()
    junk = rng.integers(0, len(JUNK_PRICES), len(price)).tolist()
    out = []
    for x, p, j in zip(u, price.tolist(), junk):
        if x < 0.30:
            out.append("")
        elif x < 0.33:
            out.append(f"${max(0.99, round(p * 0.5) - 0.01):,.2f} - ${p:,.2f}")
        elif x < 0.34:
            out.append(JUNK_PRICES[j].replace("{price}", f"${p:,.2f}").replace("{whole}", f"{int(p)}"))
        else:
            out.append(f"${p:,.2f}")
    return out


def _price_levels(rng: np.random.Generator, world: SyntheticWorld) -> np.ndarray:
    """Price in dollars per item: genre level x platform factor x popularity, x.99 endings."""
    base = np.array([g.price for g in GENRES])[world.item_genre] * PLATFORM_PRICE[world.item_platform]
    popularity_factor = np.clip(world.item_popularity, 0.3, 30.0) ** 0.12
    raw = base * popularity_factor * rng.lognormal(0.0, 0.35, world.n_items)
    return np.maximum(np.round(raw), 3.0) - 0.01


def _sales_ranks(rng: np.random.Generator, world: SyntheticWorld) -> np.ndarray:
    """Sales rank: popular items rank high (small numbers), with noise."""
    noisy = np.log(world.item_popularity) + rng.normal(0.0, 0.5, world.n_items)
    rank = np.empty(world.n_items, dtype=np.int64)
    rank[np.argsort(-noisy)] = np.arange(world.n_items)
    return rank * 7 + 1 + rng.integers(0, 7, world.n_items)


def _also_buy(rng: np.random.Generator, world: SyntheticWorld) -> list[list[str]]:
    """also_buy: 0-12 asins of the same platform (any genre), ~45% of items have none."""
    n, n_ghosts = world.n_items, len(world.ghost_asins)
    length = np.where(rng.random(n) < 0.45, 0, rng.integers(1, 13, n))
    item = np.repeat(np.arange(n), length)
    platform = world.item_platform.astype(np.int64)
    ref = pick_by_group(rng, np.arange(n), platform, platform[item], len(PLATFORMS))
    ghost = rng.random(len(item)) < 0.05
    ref[ghost] = n + rng.integers(0, n_ghosts, int(ghost.sum()))
    not_itself = ref != item
    item, ref = keep_first(item[not_itself], ref[not_itself], n + n_ghosts, None)
    return asin_lists(item, ref, n, world.item_asin, world.ghost_asins)


def meta_line_order(rng: np.random.Generator, n: int) -> np.ndarray:
    """Shuffled item order with ~2% of items written twice, the copy placed elsewhere."""
    repeated = np.flatnonzero(rng.random(n) < 0.02)
    if len(repeated) == 0:
        repeated = rng.integers(0, n, 1)
    return rng.permutation(np.concatenate([np.arange(n), repeated]))


def meta_lines(world: SyntheticWorld, streams: Streams, order: np.ndarray) -> Iterator[str]:
    """JSON lines of the meta file in ``order`` (a repeated item is an identical line)."""
    price = _price_levels(streams.generator("meta.price_level"), world)
    rank = _sales_ranks(streams.generator("meta.sales_rank"), world)
    also_buy = _also_buy(streams.generator("meta.also_buy"), world)
    _, meta_day = day_strings(_META_FIRST_DAY, LAST_DAY)
    fields = _MetaFields(streams)
    lines: list[str] = []
    for lo in range(0, world.n_items, CHUNK):
        items = np.arange(lo, min(lo + CHUNK, world.n_items))
        for item, look in zip(items.tolist(), fields.looks(world, items, price, rank, meta_day)):
            lines.append(json.dumps(_meta_record(world, item, look, also_buy[item])) + "\n")
    for item in order.tolist():
        yield lines[item]


def _meta_record(world: SyntheticWorld, item: int, look: MetaLook, also_buy: list[str]) -> dict:
    """One meta item with the 18 keys in the order of the real 2018 files."""
    return {
        "category": look.category,
        "tech1": "",
        "description": look.description,
        "fit": "",
        "title": look.title,
        "also_buy": also_buy,
        "image": look.image,
        "tech2": "",
        "brand": world.item_brand[item],
        "feature": look.feature,
        "rank": look.rank,
        "also_view": world.also_view[item],
        "details": look.details,
        "main_cat": look.main_cat,
        "similar_item": "",
        "date": look.date,
        "price": look.price,
        "asin": world.item_asin[item],
    }
