"""Dataset-level cleaning of parsed rows: dedupe, filters, id encoding, time split. Pure pandas.

Row-level parsing lives in `amazon.py`; this module sees all parsed rows at once because
duplicates, k-cores and per-user splits are global. Every dropped row is counted under a
named reason so the manifest can show `read == kept + sum(dropped)`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from alsoview.data.fields import brand_key

SPLIT_NAMES = ("train", "valid", "test")


@dataclass
class DropLog:
    """Counts of dropped rows by reason, with a few `file:line: detail` examples each."""

    max_examples: int = 5
    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, rows: pd.DataFrame, detail: str | None = None) -> None:
        """Count `rows` as dropped for `reason`, keeping the first examples (rows carry file/line)."""
        if len(rows) == 0:
            return
        self.counts[reason] += len(rows)
        kept = self.examples.setdefault(reason, [])
        for row in rows.head(self.max_examples - len(kept)).itertuples(index=False):
            why = detail if detail is not None else getattr(row, "detail", None) or reason
            kept.append(f"{row.file}:{row.line}: {why}")

    @property
    def total(self) -> int:
        return int(sum(self.counts.values()))


@dataclass
class CleanOptions:
    min_rating: float | None = None
    kcore: int = 0
    max_examples: int = 5


@dataclass
class CleanDataset:
    """The prepared dataset in memory, before it is written to Parquet."""

    interactions: pd.DataFrame  # user_idx, item_idx, rating, time, split
    users: pd.DataFrame  # user_idx, reviewer_id
    items: pd.DataFrame  # item_idx, asin, title, brand, brand_idx, price, price_status, ...
    brands: pd.DataFrame  # brand_idx, brand
    logged_negatives: pd.DataFrame  # user_idx, item_idx (empty without combined_samples.csv)
    review_drops: DropLog
    meta_drops: DropLog
    counts: dict[str, int]
    stats: dict[str, Any]


def clean(reviews: pd.DataFrame, meta: pd.DataFrame, options: CleanOptions) -> CleanDataset:
    """From parsed review and meta rows (with file, line, drop_reason, detail) to the dataset."""
    review_drops = DropLog(options.max_examples)
    meta_drops = DropLog(options.max_examples)
    reviews = _drop_unparsed(reviews, review_drops)
    meta = _drop_unparsed(meta, meta_drops)

    positives = reviews[reviews["label"] == 1]
    negatives = reviews[reviews["label"] == 0]
    positives = _filter_min_rating(positives, options.min_rating, review_drops)
    positives = _dedupe_interactions(positives, review_drops)
    positives = _kcore(positives, options.kcore, review_drops)

    user_ids = np.sort(positives["user"].unique())
    item_ids = np.sort(positives["item"].unique())
    user_index = pd.Series(np.arange(1, len(user_ids) + 1, dtype=np.int32), index=user_ids)
    item_index = pd.Series(np.arange(1, len(item_ids) + 1, dtype=np.int32), index=item_ids)

    interactions = _encode_interactions(positives, user_index, item_index)
    logged = _logged_negatives(negatives, positives, user_index, item_index, review_drops)
    meta = _dedupe_meta(meta, item_index, meta_drops)
    items, brands, item_stats = _build_items(item_ids, item_index, meta, reviews)

    counts = {
        "users": len(user_ids),
        "items": len(item_ids),
        "interactions": len(interactions),
        **{name: int((interactions["split"] == name).sum()) for name in SPLIT_NAMES},
        "items_with_also_view": int((items["also_view"].map(len) > 0).sum()),
        "also_view_edges": int(items["also_view"].map(len).sum()),
        "items_with_also_buy": int((items["also_buy"].map(len) > 0).sum()),
        "also_buy_edges": int(items["also_buy"].map(len).sum()),
        "brands": len(brands),
        "logged_negatives": len(logged),
    }
    stats = {**item_stats, "time_source": _time_source(reviews)}
    return CleanDataset(
        interactions, _users_frame(user_ids), items, brands, logged, review_drops, meta_drops, counts, stats
    )


def _drop_unparsed(rows: pd.DataFrame, drops: DropLog) -> pd.DataFrame:
    bad = rows["drop_reason"].notna()
    for reason, group in rows[bad].groupby("drop_reason", sort=True):
        drops.add(str(reason), group)
    return rows[~bad]


def _filter_min_rating(rows: pd.DataFrame, min_rating: float | None, drops: DropLog) -> pd.DataFrame:
    if min_rating is None:
        return rows
    # Rows without a rating (combined_samples.csv) are interactions by label: keep them.
    low = rows["rating"] < min_rating
    drops.add("below_min_rating", rows[low], f"rating below {min_rating}")
    return rows[~low]


def _dedupe_interactions(rows: pd.DataFrame, drops: DropLog) -> pd.DataFrame:
    """Repeated (user, item): keep the earliest review (ties: first in file order)."""
    rows = rows.sort_values(["user", "item", "time", "source", "line"], kind="stable")
    repeated = rows.duplicated(["user", "item"], keep="first")
    drops.add("duplicate_interaction", rows[repeated], "repeated (user, item); the earliest is kept")
    return rows[~repeated]


def _kcore(rows: pd.DataFrame, k: int, drops: DropLog) -> pd.DataFrame:
    """Iteratively drop users and items with fewer than k interactions until none is left."""
    if k <= 1:
        return rows
    while True:
        user_counts = rows["user"].map(rows["user"].value_counts())
        item_counts = rows["item"].map(rows["item"].value_counts())
        weak = (user_counts < k) | (item_counts < k)
        if not weak.any():
            return rows
        drops.add("kcore", rows[weak], f"user or item with fewer than {k} interactions")
        rows = rows[~weak]


def assign_splits(user_idx: np.ndarray, time: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Leave-last-out by time: last -> test, second last -> valid, rest -> train.

    Users with fewer than 3 interactions stay in train (nothing to learn from otherwise).
    Ties in time are broken by `order` (file order), so the split is deterministic.
    Returns split codes 0 (train), 1 (valid), 2 (test) aligned with the inputs.
    """
    sort = np.lexsort((order, time, user_idx))
    users_sorted = user_idx[sort]
    n = len(users_sorted)
    group_end = np.r_[np.flatnonzero(users_sorted[1:] != users_sorted[:-1]), n - 1] if n else np.array([], int)
    group_size = np.diff(np.r_[-1, group_end])
    end_of_row = np.repeat(group_end, group_size)
    size_of_row = np.repeat(group_size, group_size)
    from_end = end_of_row - np.arange(n)
    codes_sorted = np.zeros(n, dtype=np.int8)
    long_enough = size_of_row >= 3
    codes_sorted[long_enough & (from_end == 0)] = 2
    codes_sorted[long_enough & (from_end == 1)] = 1
    codes = np.empty(n, dtype=np.int8)
    codes[sort] = codes_sorted
    return codes


def _encode_interactions(rows: pd.DataFrame, user_index: pd.Series, item_index: pd.Series) -> pd.DataFrame:
    user_idx = user_index.reindex(rows["user"].to_numpy()).to_numpy(np.int32)
    item_idx = item_index.reindex(rows["item"].to_numpy()).to_numpy(np.int32)
    time = rows["time"].to_numpy(np.int64)
    order = rows["source"].to_numpy(np.int64) * (1 << 40) + rows["line"].to_numpy(np.int64)
    codes = assign_splits(user_idx, time, order)
    frame = pd.DataFrame(
        {
            "user_idx": user_idx,
            "item_idx": item_idx,
            "rating": rows["rating"].to_numpy(np.float32),
            "time": time,
            "split": pd.Categorical.from_codes(codes, categories=list(SPLIT_NAMES)),
        }
    )
    return frame.sort_values(["user_idx", "time", "item_idx"], kind="stable").reset_index(drop=True)


def _logged_negatives(
    negatives: pd.DataFrame, positives: pd.DataFrame, user_index: pd.Series, item_index: pd.Series, drops: DropLog
) -> pd.DataFrame:
    """Label-0 rows of combined_samples.csv: kept as a pool of logged negatives."""
    empty = pd.DataFrame({"user_idx": np.array([], np.int32), "item_idx": np.array([], np.int32)})
    if negatives.empty:
        return empty
    outside = ~negatives["user"].isin(user_index.index) | ~negatives["item"].isin(item_index.index)
    drops.add("logged_negative_outside_catalog", negatives[outside], "user or item not among the interactions")
    negatives = negatives[~outside]
    positive_pairs = pd.MultiIndex.from_frame(positives[["user", "item"]])
    is_positive = pd.MultiIndex.from_frame(negatives[["user", "item"]]).isin(positive_pairs)
    drops.add("logged_negative_is_positive", negatives[is_positive], "the user also has this item as a positive")
    negatives = negatives[~is_positive]
    repeated = negatives.duplicated(["user", "item"], keep="first")
    drops.add("duplicate_logged_negative", negatives[repeated], "repeated (user, item) negative")
    negatives = negatives[~repeated]
    return (
        pd.DataFrame(
            {
                "user_idx": user_index.reindex(negatives["user"].to_numpy()).to_numpy(np.int32),
                "item_idx": item_index.reindex(negatives["item"].to_numpy()).to_numpy(np.int32),
            }
        )
        .sort_values(["user_idx", "item_idx"])
        .reset_index(drop=True)
    )


def _dedupe_meta(meta: pd.DataFrame, item_index: pd.Series, drops: DropLog) -> pd.DataFrame:
    """One meta row per catalog item: the first line of an asin wins; unreviewed items go."""
    repeated = meta.duplicated(["asin"], keep="first")
    drops.add("duplicate_meta", meta[repeated], "asin seen before; the first line is kept")
    meta = meta[~repeated]
    unreviewed = ~meta["asin"].isin(item_index.index)
    drops.add("item_not_reviewed", meta[unreviewed], "no kept interaction with this item")
    return meta[~unreviewed]


def _build_items(
    item_ids: np.ndarray, item_index: pd.Series, meta: pd.DataFrame, reviews: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Item features for the catalog: meta lines first, combined_samples.csv rows as fallback."""
    items = pd.DataFrame({"item_idx": item_index.to_numpy(), "asin": item_ids})
    source = meta.set_index("asin")
    items["has_meta"] = items["asin"].isin(source.index)
    fallback = _combined_item_meta(reviews, exclude=source.index)
    if not fallback.empty:
        source = pd.concat([source, fallback])
    columns = ["title", "brand", "price", "price_status", "description", "also_view", "also_buy"]
    joined = source.reindex(items["asin"])[columns].reset_index(drop=True)
    items = pd.concat([items, joined], axis=1)
    items["title"] = items["title"].fillna("")
    items["description"] = items["description"].fillna("")
    items["brand"] = items["brand"].fillna("")
    items["price_status"] = items["price_status"].fillna("missing")
    items["price"] = items["price"].astype(float)
    for graph in ("also_view", "also_buy"):
        items[graph] = [list(v) if isinstance(v, (list, np.ndarray)) else [] for v in items[graph]]
    items["price_missing"] = items["price"].isna()
    items["price_norm"], price_stats = _normalise_price(items["price"].to_numpy(float))
    items, brands = _encode_brands(items)
    items["also_view"], also_view_stats = _encode_item_links(items, item_index, "also_view")
    items["also_buy"], also_buy_stats = _encode_item_links(items, item_index, "also_buy")
    stats = {
        "items_without_meta": int((~items["has_meta"]).sum()),
        "items_meta_from_combined": int(items["asin"].isin(fallback.index).sum()),
        "price_status": {k: int(v) for k, v in items["price_status"].value_counts().sort_index().items()},
        "price_normalisation": price_stats,
        **also_view_stats,
        **also_buy_stats,
    }
    return items, brands, stats


def _combined_item_meta(reviews: pd.DataFrame, exclude: pd.Index) -> pd.DataFrame:
    """Item features carried by combined_samples.csv rows (first row per asin), for items without meta."""
    rows = reviews[reviews["format"] == "combined_csv"] if "format" in reviews else reviews.iloc[:0]
    rows = rows[~rows["item"].isin(exclude)].drop_duplicates("item", keep="first")
    if rows.empty:
        return pd.DataFrame()
    frame = rows.rename(columns={"item": "asin"}).set_index("asin")
    frame["title"] = ""
    frame["also_buy"] = [[] for _ in range(len(frame))]  # combined_samples.csv has no also_buy
    return frame[["title", "brand", "price", "price_status", "description", "also_view", "also_buy"]]


def _normalise_price(price: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Standardised log price; 0 where missing (the missing flag carries that information)."""
    known = ~np.isnan(price)
    logs = np.log1p(price[known])
    mean = float(logs.mean()) if known.any() else 0.0
    std = float(logs.std()) if known.sum() > 1 else 1.0
    std = std if std > 1e-6 else 1.0
    out = np.zeros(len(price), dtype=np.float32)
    out[known] = (logs - mean) / std
    return out, {"log1p_mean": mean, "log1p_std": std, "items_with_price": int(known.sum())}


def _encode_brands(items: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Brand ids by case-folded key, 0 for unknown; the display form is the first seen."""
    keys = items["brand"].map(brand_key)
    known = keys != ""
    names = sorted(keys[known].unique())
    index = {k: i for i, k in enumerate(names, start=1)}
    items["brand_idx"] = keys.map(lambda k: index.get(k, 0)).astype(np.int32)
    display = items[known].drop_duplicates("brand_idx").set_index("brand_idx")["brand"]
    brands = pd.DataFrame({"brand_idx": np.arange(0, len(names) + 1, dtype=np.int32)})
    brands["brand"] = [display.get(i, "") for i in brands["brand_idx"]]
    return items, brands


def _encode_item_links(
    items: pd.DataFrame, item_index: pd.Series, graph: str
) -> tuple[list[list[int]], dict[str, int]]:
    """One item-link column's asins (`also_view`, `also_buy`) to catalog ids: outside the
    catalog, self-links and repeats are removed (and counted)."""
    exploded = items[["item_idx", graph]].explode(graph).dropna(subset=[graph])
    raw_edges = len(exploded)
    exploded["target"] = item_index.reindex(exploded[graph].to_numpy()).to_numpy()
    inside = exploded.dropna(subset=["target"])
    outside = raw_edges - len(inside)
    inside = inside[inside["target"] != inside["item_idx"]]
    self_links = raw_edges - outside - len(inside)
    inside = inside.drop_duplicates(["item_idx", "target"], keep="first")
    lists = inside.groupby("item_idx", sort=False)["target"].agg(lambda s: s.astype(np.int32).tolist())
    encoded = [lists.get(i, []) for i in items["item_idx"]]
    stats = {
        f"{graph}_raw_edges": raw_edges,
        f"{graph}_edges_outside_catalog": int(outside),
        f"{graph}_self_links": int(self_links),
    }
    return encoded, stats


def _users_frame(user_ids: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"user_idx": np.arange(1, len(user_ids) + 1, dtype=np.int32), "reviewer_id": user_ids})


def _time_source(reviews: pd.DataFrame) -> str:
    formats = set(reviews["format"].unique()) if "format" in reviews else set()
    if formats == {"combined_csv"}:
        return "file order (combined_samples.csv has no timestamps)"
    if "combined_csv" in formats:
        return "review timestamps; file order for combined_samples.csv rows (mixed sources)"
    return "review timestamps (unixReviewTime), ties broken by file order"
