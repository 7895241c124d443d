"""The world as the reviews file's JSON lines, and the helpers the meta file shares (``meta``).

Every cosmetic field of a review (its image, vote, style, text, ...) is drawn from its own named
stream as a column for a chunk of records, then handed by name to the record builder. So adding
a field never reuses or shifts another field's draws, and the probabilities below read as what
they are. The meta file's lines are in ``meta``, which draws its fields the same way.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from alsoview.data.synthetic.draws import Streams, random_codes, rows_to_str
from alsoview.data.synthetic.vocabulary import (
    FIRST_NAMES,
    GENRE_WORDS,
    GENRES,
    HANDLES,
    IMAGE_ID_CHARS,
    IMAGE_ID_LENGTH,
    LAST_NAMES,
    MONTHS,
    NEGATIVE,
    NEUTRAL,
    PLATFORMS,
    POSITIVE,
    REVIEW_IMAGE_URL,
    STAR_SUMMARY,
    SUMMARIES,
    WORDS_PER_STYLE,
)
from alsoview.data.synthetic.world import FIRST_DAY, LAST_DAY, SyntheticWorld

CHUNK = 20_000  # records whose fields are drawn together: bounded memory at any scale

# Review sentences and summaries by tone: 0 for 1-2 stars, 1 for 3 stars, 2 for 4-5 stars.
_SENTENCES_BY_TONE = (NEGATIVE, NEUTRAL, POSITIVE)
_MAX_SENTENCES = 3


# ------------------------------------------------------------------------------------------ files


def write_gz(path: Path, lines: Iterable[str], chunk: int = 4096) -> None:
    """Gzip text lines reproducibly (mtime 0, no file name in the header)."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="", compresslevel=6) as gz:
        buffer: list[str] = []
        for line in lines:
            buffer.append(line)
            if len(buffer) >= chunk:
                gz.write("".join(buffer).encode("utf-8"))
                buffer.clear()
        if buffer:
            gz.write("".join(buffer).encode("utf-8"))


def day_strings(first_day: int, last_day: int) -> tuple[list[str], list[str]]:
    """Per day in range, the review date ("MM D, YYYY") and the meta date ("Month D, YYYY")."""
    days = np.arange(first_day, last_day + 1).astype("datetime64[D]")
    year = (days.astype("datetime64[Y]").astype(np.int64) + 1970).tolist()
    month = (days.astype("datetime64[M]").astype(np.int64) % 12 + 1).tolist()
    day_of_month = ((days - days.astype("datetime64[M]")).astype(np.int64) + 1).tolist()
    review = [f"{m:02d} {d}, {y}" for y, m, d in zip(year, month, day_of_month)]
    meta = [f"{MONTHS[m - 1]} {d}, {y}" for y, m, d in zip(year, month, day_of_month)]
    return review, meta


# ------------------------------------------------------------------------------- shared field draws


def _tone(stars: np.ndarray) -> np.ndarray:
    """0 for 1-2 stars, 1 for 3 stars, 2 for 4-5 stars."""
    return np.where(stars <= 2, 0, np.where(stars == 3, 1, 2))


def image_ids(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` 11-character image ids like the ones in Amazon image URLs."""
    return rows_to_str(random_codes(rng, n, IMAGE_ID_LENGTH, IMAGE_ID_CHARS)) if n else []


# ---------------------------------------------------------------------------------------- reviews


@dataclass(frozen=True, slots=True)
class ReviewLook:
    """The cosmetic fields of one review line; None where the line leaves the key out."""

    image_url: str | None
    vote: str | None
    verified: bool
    style: dict[str, str] | None
    text: str | None
    summary: str


class _ReviewFields:
    """One stream per review field; each chunk of reviews draws a column per field."""

    def __init__(self, streams: Streams) -> None:
        self.image = streams.generator("review.image")
        self.vote = streams.generator("review.vote")
        self.verified = streams.generator("review.verified")
        self.style = streams.generator("review.style")
        self.text = streams.generator("review.text")
        self.summary = streams.generator("review.summary")

    def looks(self, world: SyntheticWorld, chunk: np.ndarray) -> list[ReviewLook]:
        """The looks of a chunk of reviews (REVIEW_DTYPE rows), in order."""
        n = len(chunk)
        items = chunk["item"]
        stars = chunk["rating"].astype(np.int64)
        platform = world.item_platform[items]
        columns = zip(
            _review_image_urls(self.image, n),
            _votes(self.vote, n),
            (self.verified.random(n) < 0.78).tolist(),
            _review_styles(self.style, platform),
            _review_texts(self.text, stars, world.item_genre[items], world.item_style[items], platform),
            _review_summaries(self.summary, stars),
        )
        return [ReviewLook(*fields) for fields in columns]


def _review_image_urls(rng: np.random.Generator, n: int) -> list[str | None]:
    """A photo on ~0.3% of reviews."""
    has_image = (rng.random(n) < 0.003).tolist()
    ids = iter(image_ids(rng, sum(has_image)))
    return [REVIEW_IMAGE_URL.format(next(ids)) if has else None for has in has_image]


def _votes(rng: np.random.Generator, n: int) -> list[str | None]:
    """Helpful votes on ~12% of reviews, heavy tailed, written "1,234"."""
    has_vote = (rng.random(n) < 0.12).tolist()
    votes = (1 + np.floor(((rng.integers(0, 10000, n) + 1) / 10000.0) ** -0.8)).astype(np.int64).tolist()
    return [f"{v:,}" if has else None for has, v in zip(has_vote, votes)]


def _review_styles(rng: np.random.Generator, platform: np.ndarray) -> list[dict[str, str] | None]:
    """The "style" dict on ~60% of reviews: mostly the platform, sometimes edition or format."""
    u = rng.random(len(platform)).tolist()
    styles: list[dict[str, str] | None] = []
    for x, p in zip(u, platform.tolist()):
        if x < 0.06:
            styles.append({"Edition:": " Standard", "Platform:": " " + PLATFORMS[p]})
        elif x < 0.09:
            styles.append({"Format:": " Video Game"})
        elif x < 0.60:
            styles.append({"Platform:": " " + PLATFORMS[p]})
        else:
            styles.append(None)
    return styles


def _review_texts(
    rng: np.random.Generator, stars: np.ndarray, genre: np.ndarray, style: np.ndarray, platform: np.ndarray
) -> list[str | None]:
    """One to three short sentences whose tone follows the rating; ~1% of reviews have no text.

    The sentences' words come from the item's genre and style, or on ~20% of reviews from any
    genre (reviewers drift off topic).
    """
    n = len(stars)
    has_text = (rng.random(n) >= 0.01).tolist()
    n_sentences = rng.integers(1, _MAX_SENTENCES + 1, n).tolist()
    tone = _tone(stars)
    pool_size = np.array([len(pool) for pool in _SENTENCES_BY_TONE])[tone]
    template = rng.integers(0, pool_size[:, None], (n, _MAX_SENTENCES)).tolist()
    off_topic = (rng.random(n) < 0.2)[:, None]
    word_genre = np.where(off_topic, rng.integers(0, len(GENRES), (n, _MAX_SENTENCES)), genre[:, None])
    word_style = np.where(off_topic, rng.integers(0, 2, (n, _MAX_SENTENCES)), style[:, None])
    words = GENRE_WORDS[word_genre, word_style, rng.integers(0, WORDS_PER_STYLE, (n, _MAX_SENTENCES))].tolist()
    texts: list[str | None] = []
    for k, (g, s, p, t) in enumerate(zip(genre.tolist(), style.tolist(), platform.tolist(), tone.tolist())):
        if not has_text[k]:
            texts.append(None)
            continue
        item_genre, pool = GENRES[g], _SENTENCES_BY_TONE[t]
        sentences = (
            pool[template[k][j]].format(
                genre=item_genre.name, style=item_genre.styles[s], word=words[k][j], platform=PLATFORMS[p]
            )
            for j in range(n_sentences[k])
        )
        texts.append(" ".join(sentences))
    return texts


def _review_summaries(rng: np.random.Generator, stars: np.ndarray) -> list[str]:
    """A star count ("Five Stars") on ~40% of reviews, else a short phrase of the rating's tone."""
    n = len(stars)
    star_words = (rng.random(n) < 0.4).tolist()
    tone = _tone(stars)
    group_size = np.array([len(group) for group in SUMMARIES])[tone]
    phrase = rng.integers(0, group_size).tolist()
    return [
        STAR_SUMMARY[s - 1] if as_stars else SUMMARIES[t][k]
        for s, t, k, as_stars in zip(stars.tolist(), tone.tolist(), phrase, star_words)
    ]


# Reviewer name kinds and their shares (real 2018 files: many "Amazon Customer", ~2% no name).
_NAME_KINDS = ("none", "amazon", "kindle", "handle", "first", "full")
_NAME_KIND_SHARE = (0.02, 0.10, 0.02, 0.16, 0.15, 0.55)


def _reviewer_names(rng: np.random.Generator, n: int) -> list[str | None]:
    """A display name per user; ~2% have none (the key is then missing)."""
    kind = rng.choice(len(_NAME_KINDS), size=n, p=_NAME_KIND_SHARE).tolist()
    first = rng.integers(0, len(FIRST_NAMES), n).tolist()
    last = rng.integers(0, len(LAST_NAMES), n).tolist()
    handle = rng.integers(0, len(HANDLES), n).tolist()
    number = rng.integers(0, 1000, n).tolist()
    initial_only = (rng.random(n) < 1 / 3).tolist()
    names: list[str | None] = []
    for k in range(n):
        name = _NAME_KINDS[kind[k]]
        if name == "none":
            names.append(None)
        elif name == "amazon":
            names.append("Amazon Customer")
        elif name == "kindle":
            names.append("Kindle Customer")
        elif name == "handle":
            names.append(f"{HANDLES[handle[k]]}{number[k]}")
        elif name == "first":
            names.append(FIRST_NAMES[first[k]])
        else:
            surname = LAST_NAMES[last[k]]
            names.append(f"{FIRST_NAMES[first[k]]} {surname[0] + '.' if initial_only[k] else surname}")
    return names


def review_lines(world: SyntheticWorld, streams: Streams) -> Iterator[str]:
    """JSON lines of the reviews file, in the world's review order."""
    review_day, _ = day_strings(FIRST_DAY, LAST_DAY)
    names = _reviewer_names(streams.generator("review.reviewer_name"), len(world.user_id))
    fields = _ReviewFields(streams)
    for lo in range(0, len(world.reviews), CHUNK):
        chunk = world.reviews[lo : lo + CHUNK]
        for (user, item, time, rating), look in zip(chunk.tolist(), fields.looks(world, chunk)):
            record = _review_record(world, user, item, time, rating, look, names[user], review_day)
            yield json.dumps(record) + "\n"


def _review_record(
    world: SyntheticWorld,
    user: int,
    item: int,
    time: int,
    rating: float,
    look: ReviewLook,
    name: str | None,
    review_day: list[str],
) -> dict:
    """One review in the key order of the real 2018 files, optional keys left out like there."""
    record: dict = {}
    if look.image_url is not None:
        record["image"] = [look.image_url]
    record["overall"] = rating
    if look.vote is not None:
        record["vote"] = look.vote
    record["verified"] = look.verified
    record["reviewTime"] = review_day[time // 86400 - FIRST_DAY]
    record["reviewerID"] = world.user_id[user]
    record["asin"] = world.item_asin[item]
    if look.style is not None:
        record["style"] = look.style
    if name is not None:
        record["reviewerName"] = name
    if look.text is not None:
        record["reviewText"] = look.text
    record["summary"] = look.summary
    record["unixReviewTime"] = time
    return record
