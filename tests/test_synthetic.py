"""Tests of the synthetic Amazon-format generator: format fidelity, determinism, planted structure.

Sizes are tiny (200 users, 100 reviewable items) so the whole file runs in about a second.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from alsoview.data.synthetic import (
    GENERATOR_VERSION,
    GENRES,
    PLATFORMS,
    GenerateSummary,
    SyntheticWorld,
    generate,
    synthesize,
)
from alsoview.data.synthetic.draws import Streams
from alsoview.errors import UserError
from alsoview.seeds import stable_key

USERS, ITEMS, SEED = 200, 100, 0

REVIEW_KEY_ORDER = [
    "image",
    "overall",
    "vote",
    "verified",
    "reviewTime",
    "reviewerID",
    "asin",
    "style",
    "reviewerName",
    "reviewText",
    "summary",
    "unixReviewTime",
]
REVIEW_REQUIRED = {"overall", "verified", "reviewTime", "reviewerID", "asin", "summary", "unixReviewTime"}
META_KEYS = [
    "category",
    "tech1",
    "description",
    "fit",
    "title",
    "also_buy",
    "image",
    "tech2",
    "brand",
    "feature",
    "rank",
    "also_view",
    "details",
    "main_cat",
    "similar_item",
    "date",
    "price",
    "asin",
]
HTML = re.compile(r"<br>|<b>|<p>|&amp;")


def _lines(path: Path) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateSummary, Path]:
    d = tmp_path_factory.mktemp("syn_a")
    return generate(d, users=USERS, items=ITEMS, seed=SEED), d


@pytest.fixture(scope="module")
def world() -> SyntheticWorld:
    return synthesize(users=USERS, items=ITEMS, seed=SEED)


@pytest.fixture(scope="module")
def reviews(out: tuple[GenerateSummary, Path]) -> list[dict]:
    return [json.loads(line) for line in _lines(out[0].reviews_path)]


@pytest.fixture(scope="module")
def meta_lines(out: tuple[GenerateSummary, Path]) -> list[str]:
    return _lines(out[0].meta_path)


@pytest.fixture(scope="module")
def meta(meta_lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in meta_lines]


# ---------------------------------------------------------------- determinism and summary


def test_same_seed_gives_identical_bytes(out: tuple[GenerateSummary, Path], tmp_path: Path) -> None:
    _, first = out
    generate(tmp_path / "b", users=USERS, items=ITEMS, seed=SEED)
    for name in ("reviews.json.gz", "meta.json.gz", "generation.json"):
        assert (first / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_other_seed_gives_other_files(out: tuple[GenerateSummary, Path], tmp_path: Path) -> None:
    _, first = out
    generate(tmp_path, users=USERS, items=ITEMS, seed=SEED + 1)
    for name in ("reviews.json.gz", "meta.json.gz"):
        assert (first / name).read_bytes() != (tmp_path / name).read_bytes(), name


def test_summary_and_generation_json(
    out: tuple[GenerateSummary, Path], reviews: list[dict], meta_lines: list[str]
) -> None:
    summary, d = out
    assert summary.users == USERS and summary.reviewable_items == ITEMS
    assert summary.meta_items == 5 * ITEMS
    assert summary.meta_lines == len(meta_lines) > summary.meta_items
    assert summary.reviews == len(reviews)
    gen = json.loads((d / "generation.json").read_text())
    assert "synthetic" in gen["note"].lower()
    assert gen["parameters"] == {"users": USERS, "items": ITEMS, "seed": SEED}
    assert gen["generator_version"] == GENERATOR_VERSION == 3
    assert gen["counts"]["reviews"] == len(reviews)


def test_item_steps_do_not_depend_on_the_user_steps() -> None:
    """Each step of the world has its own stream: more users leave the catalog as it was."""
    few, many = synthesize(users=50, items=40, seed=2), synthesize(users=80, items=40, seed=2)
    assert few.item_asin == many.item_asin and few.item_brand == many.item_brand
    for field in ("item_platform", "item_genre", "item_style", "item_popularity", "item_latent"):
        assert np.array_equal(getattr(few, field), getattr(many, field)), field


def test_creates_nested_out_dir(tmp_path: Path) -> None:
    s = generate(tmp_path / "x" / "y", users=10, items=20, seed=3)
    assert s.reviews_path.exists() and s.meta_path.exists() and s.generation_path.exists()


# ---------------------------------------------------------------- named random streams


def _draws(streams: Streams, name: str) -> np.ndarray:
    return streams.generator(name).integers(0, 1 << 30, 8)


def test_same_seed_scope_and_name_give_the_same_draws() -> None:
    assert np.array_equal(_draws(Streams(7, "files"), "review.vote"), _draws(Streams(7, "files"), "review.vote"))


@pytest.mark.parametrize(
    "seed, scope, name", [(7, "files", "review.text"), (7, "world", "review.vote"), (8, "files", "review.vote")]
)
def test_another_name_scope_or_seed_gives_other_draws(seed: int, scope: str, name: str) -> None:
    assert not np.array_equal(_draws(Streams(7, "files"), "review.vote"), _draws(Streams(seed, scope), name))


def test_a_stream_name_can_be_taken_only_once() -> None:
    streams = Streams(0, "files")
    streams.generator("review.vote")
    with pytest.raises(ValueError, match="review.vote"):
        streams.generator("review.vote")
    streams.generator("review.text")  # other names stay available


def test_a_stream_does_not_depend_on_the_streams_taken_before_it() -> None:
    alone = _draws(Streams(3, "files"), "meta.price")
    busy = Streams(3, "files")
    for name in ("meta.title", "review.vote", "meta.details"):
        busy.generator(name).random(1000)
    assert np.array_equal(alone, _draws(busy, "meta.price"))


def test_stream_keys_do_not_depend_on_the_process() -> None:
    """Python's str hash is salted per process; the keys must be the same in every run."""
    assert stable_key("world") == 1654943304 and stable_key("review.vote") == 1958466473


# ---------------------------------------------------------------- review file format


def test_review_lines_keys_and_types(reviews: list[dict]) -> None:
    for r in reviews:
        keys = list(r)
        assert REVIEW_REQUIRED <= set(keys)
        assert keys == [k for k in REVIEW_KEY_ORDER if k in r]  # real key order
        assert isinstance(r["overall"], float) and 1.0 <= r["overall"] <= 5.0
        assert isinstance(r["verified"], bool)
        assert re.fullmatch(r"A[0-9A-Z]{12,13}", r["reviewerID"])
        assert re.fullmatch(r"B0[0-9A-Z]{8}|\d{10}", r["asin"])
        if "style" in r:
            assert all(v.startswith(" ") for v in r["style"].values())
    n = len(reviews)
    assert 0.5 < sum("style" in r for r in reviews) / n < 0.7
    assert 0 < sum("reviewerName" not in r for r in reviews) / n < 0.06
    assert sum("reviewText" not in r for r in reviews) / n < 0.03


def test_review_time_is_consistent(reviews: list[dict]) -> None:
    for r in reviews:
        t = r["unixReviewTime"]
        assert isinstance(t, int) and t % 86400 == 0
        day = datetime.fromtimestamp(t, tz=timezone.utc)
        assert 2010 <= day.year <= 2018
        assert r["reviewTime"] == f"{day.month:02d} {day.day}, {day.year}"


def test_ratings_skew_to_five(reviews: list[dict]) -> None:
    stars = Counter(r["overall"] for r in reviews)
    assert set(stars) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert stars[5.0] / len(reviews) > 0.5


def test_users_are_a_five_core_spread_in_time(reviews: list[dict]) -> None:
    by_user: dict[str, list[int]] = {}
    for r in reviews:
        by_user.setdefault(r["reviewerID"], []).append(r["unixReviewTime"])
    assert len(by_user) == USERS
    counts = np.array([len(v) for v in by_user.values()])
    assert counts.min() >= 5
    assert 7 <= counts.mean() <= 11 and counts.max() >= 2 * counts.mean()  # heavy tail
    assert np.mean([len(set(v)) > 1 for v in by_user.values()]) > 0.95  # leave-last-out makes sense
    assert sum(len(v) - len(set(v)) for v in by_user.values()) > 0  # same-day ties exist


def test_some_repeated_user_item_reviews(reviews: list[dict]) -> None:
    pairs = Counter((r["reviewerID"], r["asin"]) for r in reviews)
    repeated = [p for p, c in pairs.items() if c > 1]
    assert 0 < len(repeated) <= 0.01 * len(reviews)
    for p in repeated:
        times = [r["unixReviewTime"] for r in reviews if (r["reviewerID"], r["asin"]) == p]
        assert len(set(times)) == len(times)


# ---------------------------------------------------------------- meta file format


def test_meta_keys_and_asins(meta: list[dict]) -> None:
    for m in meta:
        assert list(m) == META_KEYS
        assert re.fullmatch(r"B0[0-9A-Z]{8}|\d{10}", m["asin"])
        assert m["category"][0] == "Video Games" and m["category"][1] in PLATFORMS
        assert isinstance(m["description"], list) and all(isinstance(s, str) for s in m["description"])
        assert isinstance(m["also_view"], list) and isinstance(m["also_buy"], list)
        assert isinstance(m["rank"], (str, list)) and isinstance(m["details"], dict)
        assert m["asin"] not in m["also_view"]  # never lists itself


def test_meta_price_styles(meta: list[dict]) -> None:
    kinds = Counter()
    for m in meta:
        p = m["price"]
        if p == "":
            kinds["empty"] += 1
        elif re.fullmatch(r"\$[\d,]+\.\d\d", p):
            kinds["single"] += 1
        elif re.fullmatch(r"\$[\d,]+\.\d\d - \$[\d,]+\.\d\d", p):
            kinds["range"] += 1
        else:
            kinds["junk"] += 1
    assert set(kinds) == {"empty", "single", "range", "junk"}
    assert kinds["single"] > kinds["empty"] > kinds["range"] > 0
    assert 0.2 < kinds["empty"] / len(meta) < 0.4


def test_meta_brand_description_title(meta: list[dict]) -> None:
    brands = [m["brand"] for m in meta]
    assert 0.05 < brands.count("") / len(brands) < 0.15
    assert any(b.startswith("by\n") or b != b.strip() for b in brands)  # scraped oddities
    descs = [m["description"] for m in meta]
    assert any(d == [] for d in descs)
    assert any(HTML.search(s) for d in descs for s in d)
    assert max(len([s for s in d if s]) for d in descs) <= 4
    assert any(m["title"].startswith("<span") for m in meta)


def test_meta_duplicates_and_shuffled_order(meta_lines: list[str], meta: list[dict], world: SyntheticWorld) -> None:
    asin_count = Counter(m["asin"] for m in meta)
    dups = [a for a, c in asin_count.items() if c > 1]
    assert dups and len(dups) < 0.05 * len(asin_count)
    line_of = {}
    for line, m in zip(meta_lines, meta):
        line_of.setdefault(m["asin"], set()).add(line)
    assert all(len(line_of[a]) == 1 for a in dups)  # duplicates are identical lines
    assert set(asin_count) == set(world.item_asin)
    reviewable = set(world.item_asin[: world.n_reviewable])
    first_half = [m["asin"] in reviewable for m in meta[: len(meta) // 2]]
    assert 0 < sum(first_half) < len(first_half)  # reviewable and catalog-only interleaved


def test_also_view_mixture(meta: list[dict], reviews: list[dict]) -> None:
    in_meta = {m["asin"] for m in meta}
    reviewed = {r["asin"] for r in reviews}
    catalog_only = in_meta - reviewed
    refs = [a for m in meta for a in m["also_view"]]
    assert any(a in catalog_only for a in refs)
    assert any(a not in in_meta for a in refs)  # asins that are in no file
    assert sum(a in reviewed for a in refs) > 0.6 * len(refs)
    lengths = [len(m["also_view"]) for m in meta]
    assert 0.03 < lengths.count(0) / len(lengths) < 0.15
    assert max(lengths) <= 20


# ---------------------------------------------------------------- planted structure


def test_files_match_world(world: SyntheticWorld, reviews: list[dict]) -> None:
    assert len(world.reviews) == len(reviews)
    for rec, r in zip(world.reviews[:50], reviews[:50]):
        assert world.user_id[rec["user"]] == r["reviewerID"]
        assert world.item_asin[rec["item"]] == r["asin"]
        assert int(rec["time"]) == r["unixReviewTime"] and float(rec["rating"]) == r["overall"]
    assert (world.reviews["item"] < world.n_reviewable).all()


def test_planted_preferences_hold(world: SyntheticWorld, reviews: list[dict]) -> None:
    user = {u: k for k, u in enumerate(world.user_id)}
    item = {a: k for k, a in enumerate(world.item_asin)}
    u = np.array([user[r["reviewerID"]] for r in reviews])
    i = np.array([item[r["asin"]] for r in reviews])
    assert (i < world.n_reviewable).all()
    g, s = world.item_genre[i], world.item_style[i]
    in_genre = world.user_genres[u, g]
    assert in_genre.mean() > 0.6
    assert (world.user_style[u, g] == s)[in_genre].mean() > 0.75
    assert world.user_platforms[u, world.item_platform[i]].mean() > 1.5 * world.user_platforms.mean()
    # popularity still matters: rank correlation of popularity and review count
    counts = np.bincount(i, minlength=world.n_reviewable)
    pop = world.item_popularity[: world.n_reviewable]
    rho = np.corrcoef(np.argsort(np.argsort(pop)), np.argsort(np.argsort(counts)))[0, 1]
    assert rho > 0.4
    # liked items get better ratings
    rating = np.array([r["overall"] for r in reviews])
    aff = world.affinity(u, i)
    assert rating[aff >= aff.max() - 1e-6].mean() > rating[aff < 2].mean() + 0.5


def test_user_preference_shapes(world: SyntheticWorld) -> None:
    assert set(world.user_platforms.sum(1)) <= {1, 2}
    assert set(world.user_genres.sum(1)) <= {1, 2, 3}
    assert world.user_style.shape == (USERS, len(GENRES))
    assert set(np.unique(world.item_style)) == {0, 1}


def test_also_view_same_genre_both_styles(world: SyntheticWorld) -> None:
    w = synthesize(users=300, items=400, seed=5)  # large enough cells for this check
    idx = {a: k for k, a in enumerate(w.item_asin)}
    same_pg = styles_same = reviewable_refs = 0
    for k, lst in enumerate(w.also_view):
        for a in lst:
            j = idx.get(a)
            if j is None or j >= w.n_reviewable:
                continue
            reviewable_refs += 1
            if w.item_genre[j] == w.item_genre[k] and w.item_platform[j] == w.item_platform[k]:
                same_pg += 1
                styles_same += int(w.item_style[j] == w.item_style[k])
    assert same_pg > 0.4 * reviewable_refs
    assert 0.35 < styles_same / same_pg < 0.8  # both styles appear among the hard negatives


def test_neighbours_of_a_large_genre_come_from_fresh_candidates_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above NEIGHBOUR_CANDIDATES a block of queries scores a sample of its genre: neighbours stay
    in the genre, close in the latent space, never the item itself, and each block has its own
    sample (one shared sample would funnel every also-view link into it)."""
    from alsoview.data.synthetic import links
    from alsoview.data.synthetic.world import draw_item_kinds, item_latent

    streams = Streams(0, "world")
    kinds = draw_item_kinds(streams.generator("item_kinds"), 5 * 3000)
    latent = item_latent(streams.generator("latent"), kinds)
    monkeypatch.setattr(links, "NEIGHBOUR_CANDIDATES", 64)
    monkeypatch.setattr(links, "_QUERY_BLOCK", 200)
    top = links.similar_reviewable(streams.generator("neighbours"), latent, kinds.genre, 3000)
    assert top.shape == (5 * 3000, links.ALSO_VIEW_MAX) and (top >= 0).all() and (top < 3000).all()
    assert (kinds.genre[top] == kinds.genre[:, None]).all()
    assert not (top == np.arange(len(top))[:, None]).any()
    assert all(len(set(row)) == len(row) for row in top.tolist())
    chosen = np.einsum("id,ikd->ik", latent, latent[top]).mean()
    anyone = np.einsum("id,id->i", latent, latent[np.random.default_rng(0).integers(0, 3000, len(latent))]).mean()
    assert chosen > anyone + 0.5
    genre = kinds.genre[:3000]
    for g in range(int(genre.max()) + 1):
        linked = np.unique(top[kinds.genre == g])
        assert len(linked) > 64, f"genre {g}: every block scored the same 64 candidates"


@pytest.mark.parametrize(("users", "items"), [(400, 120), (100, 50), (1000, 60)])
def test_a_small_catalog_still_gives_every_user_distinct_items(users: int, items: int) -> None:
    """Narrow tastes reach too few items by the choice model alone here (these sizes ended in an
    internal error); the rest come uniformly from the items a user lacks."""
    reviews = synthesize(users=users, items=items, seed=0).reviews
    pairs = np.unique(reviews["user"].astype(np.int64) * items + reviews["item"])
    per_user = np.bincount(pairs // items, minlength=users)
    assert per_user.min() >= 5


# ---------------------------------------------------------------- argument validation


@pytest.mark.parametrize(
    "kwargs",
    [
        {"users": 9},
        {"items": 19},
        {"users": 0},
        {"items": -5},
        {"seed": -1},
        {"users": "100"},
        {"items": 50.0},
        {"users": True},
    ],
)
def test_bad_arguments_raise_user_error(kwargs: dict, tmp_path: Path) -> None:
    with pytest.raises(UserError):
        generate(tmp_path, **kwargs)
    with pytest.raises(UserError):
        synthesize(**kwargs)
    assert not (tmp_path / "reviews.json.gz").exists()
