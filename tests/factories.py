"""Small real objects for the model's tests: a hand-made catalog and model configs written in the
override grammar users type (`model_config("heads.dot=true")`)."""

from __future__ import annotations

import numpy as np
import torch

from alsoview.config import load_config
from alsoview.data.catalog import Catalog, Interactions
from alsoview.data.tables import SamplingTables
from alsoview.model import ModelConfig
from alsoview.model.part import Users

N_USERS, N_ITEMS, N_BRANDS, TEXT_DIM = 5, 7, 3, 10

# Each user's training items (CSR over users 0..4): user 0 (unknown) has none; the order is the
# time order (their times are their positions).
HISTORY_INDPTR = np.array([0, 0, 2, 5, 6, 8])
HISTORY_ITEMS = np.array([1, 3, 2, 4, 6, 5, 1, 2])
# An also-view graph over items 1..6 (CSR over items 0..6), for the relation head.
ALSO_VIEW_INDPTR = np.array([0, 0, 2, 3, 5, 5, 6, 7])
ALSO_VIEW_ITEMS = np.array([2, 4, 5, 1, 6, 3, 2])
# An also-bought graph (CSR over items 0..6), for the second relation head.
ALSO_BUY_INDPTR = np.array([0, 0, 1, 1, 2, 3, 3, 3])
ALSO_BUY_ITEMS = np.array([5, 6, 1])


def model_config(*settings: str) -> ModelConfig:
    """The model section of `key=value` settings under `model.` (e.g. "heads.mlp=false")."""
    return load_config(None, [f"model.{setting}" for setting in settings]).model


def _none() -> Interactions:
    empty = np.zeros(0, np.int64)
    return Interactions(empty, empty, empty)


def tiny_catalog(text_dim: int = TEXT_DIM, seed: int = 0) -> Catalog:
    """A catalog of N_USERS users and N_ITEMS items: the training pairs above (no valid or test
    pairs), both item graphs, and item features drawn from `seed`."""
    return catalog_from(
        HISTORY_INDPTR, HISTORY_ITEMS, N_ITEMS, N_BRANDS, text_dim, seed, (ALSO_VIEW_INDPTR, ALSO_VIEW_ITEMS),
        (ALSO_BUY_INDPTR, ALSO_BUY_ITEMS),
    )  # fmt: skip


def catalog_from(
    history_indptr: np.ndarray,
    history_items: np.ndarray,
    n_items: int,
    n_brands: int = N_BRANDS,
    text_dim: int = TEXT_DIM,
    seed: int = 0,
    also_view: tuple[np.ndarray, np.ndarray] | None = None,
    also_buy: tuple[np.ndarray, np.ndarray] | None = None,
) -> Catalog:
    """A catalog whose users had these training items (CSR over users; the order is the time
    order), with item features drawn from `seed` and the item graphs given (empty if None)."""
    n_users = len(history_indptr) - 1
    gen = torch.Generator().manual_seed(seed)
    missing = (torch.rand(n_items, generator=gen) < 0.3).float()
    price = torch.randn(n_items, generator=gen) * (1 - missing)
    brand = torch.randint(0, n_brands, (n_items,), generator=gen)
    text = torch.randn(n_items, text_dim, generator=gen)
    no_links = (np.zeros(n_items + 1, np.int64), np.zeros(0, np.int64))
    also_view, also_buy = also_view or no_links, also_buy or no_links
    users = np.repeat(np.arange(n_users), np.diff(history_indptr))
    train = Interactions(users, np.asarray(history_items, np.int64), np.arange(len(users), dtype=np.int64))
    rows = [np.unique(history_items[a:b]) for a, b in zip(history_indptr[:-1], history_indptr[1:])]
    tables = SamplingTables(
        n_items=n_items,
        also_view_indptr=also_view[0],
        also_view_indices=np.asarray(also_view[1], np.int32),
        user_items_indptr=np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64),
        user_items_indices=np.concatenate(rows).astype(np.int32),
        item_popularity=np.bincount(history_items, minlength=n_items).astype(np.float64),
    )
    return Catalog(
        n_users=n_users,
        n_items=n_items,
        n_brands=n_brands,
        item_brand=brand.numpy(),
        item_price=price.numpy(),
        item_price_missing=missing.numpy(),
        item_text=text.numpy(),
        item_asin=np.array([""] + [f"I{i}" for i in range(1, n_items)], dtype=object),
        item_title=np.array([""] + [f"item {i}" for i in range(1, n_items)], dtype=object),
        user_reviewer_id=np.array([""] + [f"U{u}" for u in range(1, n_users)], dtype=object),
        train=train,
        valid=_none(),
        test=_none(),
        logged_negatives=_none(),
        sampling=tables,
        manifest={},
        also_buy_indptr=also_buy[0],
        also_buy_indices=np.asarray(also_buy[1], np.int32),
    )


def users_by_id(ids: torch.Tensor, leave_out: torch.Tensor | None = None) -> Users:
    """The rows a head scores, for the heads that read user ids only (relations, co-occurrence)."""
    return Users(ids, torch.zeros(len(ids), 0), leave_out)
