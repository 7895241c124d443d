"""Dataset-level cleaning: dedupe, filters, splits, id encoding and the row accounting."""

import numpy as np
import pandas as pd
import pytest

from alsoview.data.clean import CleanOptions, assign_splits, clean


def review_rows(rows):
    """Parsed review rows as the prepare pipeline hands them over: (user, item, rating, time)."""
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "time"])
    n = len(frame)
    frame["label"] = 1
    for column, value in (
        ("brand", ""),
        ("price_status", "missing"),
        ("description", ""),
        ("format", "reviews_json"),
        ("file", "reviews.json"),
        ("detail", None),
        ("drop_reason", None),
    ):
        frame[column] = value
    frame["price"] = np.nan
    frame["also_view"] = [[] for _ in range(n)]
    frame["source"] = 0
    frame["line"] = np.arange(1, n + 1)
    return frame


def meta_rows(rows):
    frame = pd.DataFrame(rows, columns=["asin", "brand", "price", "also_view"])
    frame["also_buy"] = [list(reversed(v)) for v in frame["also_view"]]  # the same links, another order
    frame["title"] = frame["asin"] + " title"
    frame["description"] = ""
    frame["price_status"] = np.where(frame["price"].isna(), "missing", "ok")
    frame["drop_reason"] = None
    frame["detail"] = None
    frame["source"] = 1
    frame["line"] = np.arange(1, len(frame) + 1)
    frame["file"] = "meta.json"
    return frame


def test_assign_splits_leave_last_out_by_time_with_ties_in_file_order():
    user = np.array([1, 1, 1, 1, 2, 2, 3, 3, 3])
    time = np.array([40, 10, 30, 20, 5, 6, 7, 7, 7])
    order = np.arange(9)
    codes = assign_splits(user, time, order)
    # user 1: times 10,20 train; 30 valid; 40 test. user 2 (< 3 interactions): train only.
    # user 3: equal times, file order decides: 6 train, 7 valid, 8 test.
    assert codes.tolist() == [2, 0, 1, 0, 0, 0, 0, 1, 2]


def test_clean_counts_every_row_and_keeps_the_earliest_duplicate():
    reviews = review_rows(
        [
            ("u1", "i1", 5, 100),
            ("u1", "i2", 4, 200),
            ("u1", "i3", 3, 300),
            ("u1", "i1", 1, 50),  # repeat of (u1, i1), earlier: it wins
            ("u2", "i1", 5, 10),
            ("u2", "i2", 2, 20),
        ]
    )
    reviews.loc[5, "drop_reason"] = "malformed_record"
    reviews.loc[5, "detail"] = "not valid JSON"
    meta = meta_rows(
        [
            ("i1", "Nintendo", 10.0, ["i2", "i1", "zz"]),
            ("i2", "nintendo", np.nan, []),
            ("i1", "Dup", 1.0, []),
            ("i9", "Other", 5.0, []),
        ]
    )
    data = clean(reviews, meta, CleanOptions())
    assert sum(data.review_drops.counts.values()) + len(data.interactions) == len(reviews)
    assert dict(data.review_drops.counts) == {"malformed_record": 1, "duplicate_interaction": 1}
    assert data.review_drops.examples["malformed_record"] == ["reviews.json:6: not valid JSON"]
    kept = data.interactions.merge(data.users, on="user_idx").merge(data.items[["item_idx", "asin"]], on="item_idx")
    first = kept[(kept.reviewer_id == "u1") & (kept.asin == "i1")]
    assert first["time"].tolist() == [50] and first["rating"].tolist() == [1.0]
    assert dict(data.meta_drops.counts) == {"duplicate_meta": 1, "item_not_reviewed": 1}
    assert data.counts["users"] == 2 and data.counts["items"] == 3
    # brands: case variants share one id; unknown (i3 has no meta) is 0
    brand_ids = dict(zip(data.items["asin"], data.items["brand_idx"]))
    assert brand_ids["i1"] == brand_ids["i2"] != 0 and brand_ids["i3"] == 0
    # also-view: self link and outside-catalog asin removed
    also = dict(zip(data.items["asin"], data.items["also_view"]))
    assert also["i1"] == [int(data.items.set_index("asin").loc["i2", "item_idx"])]
    assert data.stats["also_view_edges_outside_catalog"] == 1 and data.stats["also_view_self_links"] == 1
    # also-bought: encoded and counted the same way
    bought = dict(zip(data.items["asin"], data.items["also_buy"]))
    assert {k: sorted(v) for k, v in bought.items()} == {k: sorted(v) for k, v in also.items()}
    assert data.stats["also_buy_edges_outside_catalog"] == 1 and data.stats["also_buy_self_links"] == 1
    assert data.stats["items_without_meta"] == 1
    # ids start at 1: 0 is reserved for unknown
    assert data.users["user_idx"].min() == 1 and data.items["item_idx"].min() == 1


def test_price_normalisation_and_missing_flag():
    reviews = review_rows([("u", "a", 5, 1), ("u", "b", 5, 2), ("u", "c", 5, 3)])
    meta = meta_rows([("a", "", 10.0, []), ("b", "", 100.0, []), ("c", "", np.nan, [])])
    items = clean(reviews, meta, CleanOptions()).items.set_index("asin")
    assert items.loc["c", "price_missing"] and items.loc["c", "price_norm"] == 0
    assert items.loc["a", "price_norm"] == pytest.approx(-1.0) and items.loc["b", "price_norm"] == pytest.approx(1.0)


def test_min_rating_and_kcore_are_counted():
    rows = [(f"u{u}", f"i{i}", 5 if (u + i) % 3 else 1, u * 10 + i) for u in range(4) for i in range(4)]
    rows.append(("lonely", "i0", 5, 1))
    reviews = review_rows(rows)
    data = clean(reviews, meta_rows([]), CleanOptions(min_rating=3, kcore=2))
    assert data.review_drops.counts["below_min_rating"] == sum(1 for r in rows if r[2] < 3)
    assert data.review_drops.counts["kcore"] >= 1
    assert "lonely" not in set(data.users["reviewer_id"])
    assert len(data.interactions) + data.review_drops.total == len(reviews)
    per_user = data.interactions.groupby("user_idx").size()
    per_item = data.interactions.groupby("item_idx").size()
    assert per_user.min() >= 2 and per_item.min() >= 2


def test_logged_negatives_from_combined_rows():
    reviews = review_rows(
        [
            ("u", "a", np.nan, 1),
            ("u", "b", np.nan, 2),
            ("u", "c", np.nan, 3),
            ("u", "b", np.nan, 4),
            ("u", "zz", np.nan, 5),
            ("v", "c", np.nan, 6),
        ]
    )
    reviews["format"] = "combined_csv"
    reviews.loc[3:5, "label"] = 0  # (u, b) is also a positive; zz is unknown; (v, c): v has no positive
    reviews.loc[0, "brand"] = "Acme"
    data = clean(reviews, meta_rows([]), CleanOptions())
    assert data.counts["logged_negatives"] == 0
    assert data.review_drops.counts["logged_negative_is_positive"] == 1
    assert data.review_drops.counts["logged_negative_outside_catalog"] == 2
    assert data.stats["items_meta_from_combined"] == 3
    assert data.items.set_index("asin").loc["a", "brand"] == "Acme"
    assert data.stats["time_source"].startswith("file order")
