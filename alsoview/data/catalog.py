"""The prepared dataset as compact arrays: what training, sampling and evaluation read.

Loaded once on the driver and shared with workers through Ray's object store (numpy arrays
are zero-copy there), so no worker needs the prepared directory on its own disk.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from alsoview.data import layout
from alsoview.data.relations import UserRelations, user_item_csr, user_items_in_time_order
from alsoview.data.tables import SamplingTables

# Tables a Catalog derives from its arrays on first use, in the process that uses them (never pickled)
_DERIVED = ("train_history", "train_sequence", "_relations")


@dataclass(frozen=True)
class Interactions:
    """(user, item) id pairs of one split and when they happened, aligned arrays."""

    users: np.ndarray  # int64
    items: np.ndarray  # int64
    times: np.ndarray  # int64: the review's time, or its position in a file without timestamps

    def __len__(self) -> int:
        return len(self.users)


@dataclass(frozen=True)
class Catalog:
    """Vocabulary sizes include the reserved id 0 (unknown): real ids are 1..n-1."""

    n_users: int
    n_items: int
    n_brands: int
    item_brand: np.ndarray  # int64 [n_items]
    item_price: np.ndarray  # float32 [n_items], standardised log price, 0 where missing
    item_price_missing: np.ndarray  # float32 [n_items], 1.0 where the price is unknown
    item_text: np.ndarray  # float32 [n_items, text_dim]
    item_asin: np.ndarray  # object [n_items], "" for id 0
    item_title: np.ndarray  # object [n_items]
    user_reviewer_id: np.ndarray  # object [n_users], "" for id 0
    train: Interactions
    valid: Interactions
    test: Interactions
    logged_negatives: Interactions
    sampling: SamplingTables  # also-view CSR, every user's items (all splits), train popularity
    manifest: dict[str, Any]
    also_buy_indptr: np.ndarray  # int64 [n_items + 1]: each item's also-bought items, CSR
    also_buy_indices: np.ndarray  # int32

    @property
    def text_dim(self) -> int:
        return int(self.item_text.shape[1])

    @functools.cached_property
    def train_history(self) -> tuple[np.ndarray, np.ndarray]:
        """Each user's distinct training items, as CSR (indptr over users, item ids in id order)."""
        return user_item_csr(self.train.users, self.train.items, self.n_users, self.n_items)

    @functools.cached_property
    def train_sequence(self) -> tuple[np.ndarray, np.ndarray]:
        """Each user's training items in time order (equal times in item-id order), as CSR."""
        return user_items_in_time_order(self.train.users, self.train.items, self.train.times, self.n_users)

    def item_graph(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """An item graph as CSR (indptr over items, item ids): "also_view" or "also_buy"."""
        graphs = {
            "also_view": (self.sampling.also_view_indptr, self.sampling.also_view_indices),
            "also_buy": (self.also_buy_indptr, self.also_buy_indices),
        }
        if name not in graphs:
            raise ValueError(f"unknown item graph {name!r}: one of {sorted(graphs)}")
        return graphs[name]

    def train_relations(self, graph: str) -> UserRelations:
        """How many of each user's training items are neighbours of each item in `graph` (built
        once per process: the relation heads and `sampling.exclude_related` read the same)."""
        cache = self.__dict__.setdefault("_relations", {})
        if graph not in cache:
            cache[graph] = UserRelations.build(self.train_history, self.n_items, *self.item_graph(graph))
        return cache[graph]

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in _DERIVED}

    def vocabulary(self) -> dict[str, int]:
        """The sizes a trained model depends on: a run and a dataset fit each other when these agree."""
        return {"n_users": self.n_users, "n_items": self.n_items, "n_brands": self.n_brands, "text_dim": self.text_dim}

    def split(self, name: str) -> Interactions:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {name!r}")
        return getattr(self, name)

    def inputs_for(self, purpose: str) -> "Catalog":
        """This catalog with `train` holding every interaction a scorer may read as the users' known
        items when it ranks for `purpose`: ``valid`` -> the train split (as in training); ``test`` ->
        train and valid (leave-one-out as SASRec and the ReChorus leaderboard score it: the test item
        is predicted from everything before it, the validation item included); ``recommend`` ->
        every split. A trained model's weights never change: only the tables built from the users'
        items (history, relations, sequence) and the baselines' and peers' fits read the extra
        interactions, the same ones for every scorer. The sampling tables stay as they are."""
        held_out = {"valid": (), "test": (self.valid,), "recommend": (self.valid, self.test)}
        if purpose not in held_out:
            raise ValueError(f"unknown purpose {purpose!r}: one of {sorted(held_out)}")
        if not held_out[purpose]:
            return self
        return dataclasses.replace(self, train=concatenate((self.train, *held_out[purpose])))


def concatenate(parts: tuple[Interactions, ...]) -> Interactions:
    """One Interactions of several, in the given order."""
    return Interactions(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("users", "items", "times")))


def load_catalog(prepared_dir: str | Path) -> Catalog:
    """Read a prepared dataset directory (see ARCHITECTURE: the prepared dataset contract)."""
    folder = Path(prepared_dir)
    manifest = layout.read_manifest(folder)
    items = pq.read_table(folder / layout.ITEMS).to_pandas()
    interactions = pd.read_parquet(folder / layout.INTERACTIONS)
    users = pd.read_parquet(folder / layout.USERS)
    brands = pd.read_parquet(folder / layout.BRANDS)
    logged = pd.read_parquet(folder / layout.LOGGED_NEGATIVES)

    n_items = len(items) + 1
    n_users = len(users) + 1
    item_idx = items["item_idx"].to_numpy(np.int64)
    if not np.array_equal(item_idx, np.arange(1, n_items)):
        raise ValueError(f"{folder}/items.parquet: item ids are not 1..{n_items - 1}")
    text = np.stack(items["text_vector"].to_numpy()).astype(np.float32) if len(items) else np.zeros((0, 0), np.float32)

    splits = {name: _pairs(interactions[interactions["split"] == name]) for name in ("train", "valid", "test")}
    return Catalog(
        n_users=n_users,
        n_items=n_items,
        n_brands=len(brands),
        item_brand=_with_unknown(items["brand_idx"].to_numpy(np.int64), 0),
        item_price=_with_unknown(items["price_norm"].to_numpy(np.float32), 0.0),
        item_price_missing=_with_unknown(items["price_missing"].to_numpy(np.float32), 1.0),
        item_text=np.vstack([np.zeros((1, text.shape[1]), np.float32), text]),
        item_asin=_with_unknown(items["asin"].to_numpy(object), ""),
        item_title=_with_unknown(items["title"].to_numpy(object), ""),
        user_reviewer_id=_with_unknown(users["reviewer_id"].to_numpy(object), ""),
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
        logged_negatives=_pairs(logged),
        sampling=_sampling_tables(items, interactions, n_users, n_items, splits["train"]),
        manifest=manifest,
        **dict(zip(("also_buy_indptr", "also_buy_indices"), _item_links(items, "also_buy"))),
    )


def _pairs(frame: pd.DataFrame) -> Interactions:
    """A split's pairs with their times; logged negatives (combined_samples.csv labels) have no
    time of their own and get 0."""
    times = frame["time"].to_numpy(np.int64) if "time" in frame.columns else np.zeros(len(frame), np.int64)
    return Interactions(frame["user_idx"].to_numpy(np.int64), frame["item_idx"].to_numpy(np.int64), times)


def _with_unknown(values: np.ndarray, unknown: Any) -> np.ndarray:
    """Prepend row 0, the reserved unknown id."""
    return np.concatenate([np.array([unknown], dtype=values.dtype), values])


def _item_links(items: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """An item-link column (`also_view`, `also_buy`) as CSR over item ids 0..n (row 0 empty)."""
    lengths = np.r_[0, items[column].map(len).to_numpy(np.int64)]
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = items[column].explode().dropna().to_numpy(np.int64) if indptr[-1] else np.array([], np.int64)
    return indptr, flat.astype(np.int32)


def _sampling_tables(
    items: pd.DataFrame, interactions: pd.DataFrame, n_users: int, n_items: int, train: Interactions
) -> SamplingTables:
    also_view_indptr, flat = _item_links(items, "also_view")

    pairs = interactions[["user_idx", "item_idx"]].drop_duplicates().sort_values(["user_idx", "item_idx"])
    user_counts = np.bincount(pairs["user_idx"].to_numpy(np.int64), minlength=n_users)
    user_indptr = np.concatenate([[0], np.cumsum(user_counts)]).astype(np.int64)
    popularity = np.bincount(train.items, minlength=n_items).astype(np.float64)
    return SamplingTables(
        n_items=n_items,
        also_view_indptr=also_view_indptr,
        also_view_indices=flat.astype(np.int32),
        user_items_indptr=user_indptr,
        user_items_indices=pairs["item_idx"].to_numpy(np.int32),
        item_popularity=popularity,
    )
