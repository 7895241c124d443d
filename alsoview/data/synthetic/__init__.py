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
items, ~500k reviews, ~85k meta lines) takes about half a minute on two cores.

Layout: ``synthesis`` draws the planted truth step by step: ``world`` holds its data model
and draws the items and users, ``reviews`` who reviews what, when and with how many stars, and
``links`` the also-view lists, with ``pairs`` the pair-table helpers they share. ``render``
writes the reviews as JSON lines and ``meta`` the meta items, ``files`` puts the files in a
folder, ``vocabulary`` holds the words, and ``draws`` gives every step and every field its own
named random stream.
"""

from __future__ import annotations

from alsoview.data.synthetic.files import GENERATION_RECORD, GENERATOR_VERSION, GenerateSummary, generate
from alsoview.data.synthetic.synthesis import synthesize
from alsoview.data.synthetic.vocabulary import GENRES, PLATFORMS, Genre
from alsoview.data.synthetic.world import REVIEW_DTYPE, SyntheticWorld

__all__ = [
    "GENERATION_RECORD",
    "GENERATOR_VERSION",
    "GENRES",
    "PLATFORMS",
    "REVIEW_DTYPE",
    "GenerateSummary",
    "Genre",
    "SyntheticWorld",
    "generate",
    "synthesize",
]
