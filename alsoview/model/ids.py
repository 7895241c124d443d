"""Ids and embedding rows: the conventions every part of the model shares.

Id 0 is the reserved "unknown" row of every vocabulary and works like any other row (its
embedding starts at zero, a neutral input, and stays trainable). Ids outside ``[0, vocab)`` are
not remapped silently: callers that may see new ids (serving, evaluation on other data) map them
with :func:`to_known_ids` first; in eval mode the model checks the range and raises a
``ValueError`` instead of an opaque CUDA device-side assert (training skips the check: it costs a
device sync, and the training pipeline only produces known ids).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

# Embedding rows start small (like Keras' uniform(-0.05, 0.05)); N(0, 1) rows would dwarf the
# scalar price features in the first layer.
EMBEDDING_INIT_STD = 0.05


def to_known_ids(ids: torch.Tensor | np.ndarray, vocab_size: int) -> torch.Tensor | np.ndarray:
    """Map ids outside ``[0, vocab_size)`` to 0 ("unknown"); use before inference on unseen ids."""
    if isinstance(ids, torch.Tensor):
        return torch.where((ids >= 0) & (ids < vocab_size), ids, torch.zeros_like(ids))
    ids = np.asarray(ids)
    return np.where((ids >= 0) & (ids < vocab_size), ids, 0).astype(ids.dtype, copy=False)


def check_ids(name: str, ids: torch.Tensor, vocab_size: int) -> None:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(
            f"{name} ids must be in [0, {vocab_size}); map unseen ids to 0 with to_known_ids(ids, {vocab_size})"
        )


def init_embedding(emb: nn.Embedding | nn.EmbeddingBag) -> None:
    """Small random rows; row 0 ("unknown") starts at zero so unseen ids get a neutral input."""
    with torch.no_grad():
        nn.init.normal_(emb.weight, std=EMBEDDING_INIT_STD)
        emb.weight[0].zero_()


def user_item_csr_tensors(
    indptr: Any, items: Any, n_users: int, n_items: int, name: str, lowest: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indptr, items, owner of each item) of a per-user item list given as CSR, checked: a CSR
    index over `n_users` users, item ids in [lowest, n_items). `name` is the config key, for errors."""
    indptr = torch.as_tensor(np.asarray(indptr), dtype=torch.int64)
    items = torch.as_tensor(np.asarray(items), dtype=torch.int64)
    if indptr.shape != (n_users + 1,) or int(indptr[-1]) != len(items) or bool((indptr[1:] < indptr[:-1]).any()):
        raise ValueError(f"{name} indptr must be a CSR index over {n_users} users")
    if len(items) and (int(items.min()) < lowest or int(items.max()) >= n_items):
        raise ValueError(f"{name} items must be item ids in [{lowest}, {n_items})")
    return indptr, items, torch.repeat_interleave(torch.arange(n_users), indptr[1:] - indptr[:-1])


def sorted_lookup(sorted_keys: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(found [N] bool, index [N] into `sorted_keys`) of each key; the index is only meaningful where found.

    The model's per-(user, item) tables are sorted int64 keys ``user * n_items + item``."""
    if len(sorted_keys) == 0:
        return torch.zeros_like(keys, dtype=torch.bool), torch.zeros_like(keys)
    index = torch.searchsorted(sorted_keys, keys).clamp(max=len(sorted_keys) - 1)
    return sorted_keys.index_select(0, index) == keys, index


def expand_ranges(starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, position) of every element of the ranges ``[starts[r], starts[r] + lengths[r])``, in
    row order: how a block of users' CSR items is gathered without a Python loop."""
    row = torch.repeat_interleave(torch.arange(len(starts), device=starts.device), lengths)
    offsets = torch.cumsum(lengths, 0) - lengths
    position = torch.repeat_interleave(starts - offsets, lengths) + torch.arange(
        int(lengths.sum()), device=starts.device
    )
    return row, position


def time_order_keys(
    owners: torch.Tensor, items: torch.Tensor, n_items: int, name: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted keys ``user * n_items + item``, the index into `items` of each key's item) of a
    per-user item list in time order; each (user, item) must appear once. `name` is for errors."""
    keys, index = torch.sort(owners * n_items + items)
    if len(keys) > 1 and bool((keys[1:] == keys[:-1]).any()):
        raise ValueError(f"{name} must hold each (user, item) once")
    return keys, index


def ends_before(
    indptr: torch.Tensor,
    keys: torch.Tensor,
    key_index: torch.Tensor,
    n_items: int,
    users: torch.Tensor,
    leave_out: torch.Tensor | None,
) -> torch.Tensor:
    """[B] the end (exclusive, an index into the time-ordered items) of each user's items before
    its `leave_out` item where the user had it (only earlier items precede it), else of all the
    user's items: how a training positive sees no later item (`time_order_keys`' tables)."""
    ends = indptr.index_select(0, users + 1)
    if leave_out is None:
        return ends
    found, index = sorted_lookup(keys, users * n_items + leave_out)
    return torch.where(found, key_index.index_select(0, index), ends)
