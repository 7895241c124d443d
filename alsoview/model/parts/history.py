"""`model.user.history`: a user described by the items they trained on (FISM, SVD++): the
1/sqrt(n)-scaled sum of "history" embeddings of the user's n training items.

A user with five interactions is described by those items, whose embeddings every other user of
them also trains. While training, the scored item itself is left out of its user's history, or
the model would learn to find an item in its own input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from alsoview.model.ids import expand_ranges, init_embedding, sorted_lookup, user_item_csr_tensors
from alsoview.model.part import Part, PartInputs
from alsoview.model.visitors import with_buffers

if TYPE_CHECKING:
    from alsoview.data.catalog import Catalog


@dataclass(frozen=True)
class HistoryConfig(Part):
    """The bag of the user's training items (no settings: `true` turns it on)."""

    def build(self, inputs: PartInputs) -> "HistoryBag":
        bag = nn.EmbeddingBag(inputs.n_items, inputs.dim, mode="sum", sparse=inputs.sparse)
        init_embedding(bag)
        return HistoryBag(bag, inputs.n_users, *inputs.catalog.train_history)


class HistoryBag(nn.Module):
    """The history part of a user vector; each user's training items are CSR buffers (not saved
    with the weights: rebuilt from the dataset)."""

    def __init__(self, embedding: nn.EmbeddingBag, n_users: int, indptr: np.ndarray, items: np.ndarray) -> None:
        super().__init__()
        self.embedding = embedding
        self.n_users, self.n_items = n_users, embedding.num_embeddings
        indptr, items, owners = user_item_csr_tensors(indptr, items, n_users, self.n_items, "user_history", 0)
        keys, _ = torch.sort(owners * self.n_items + items)
        self.register_buffer("indptr", indptr, persistent=False)
        self.register_buffer("items", items, persistent=False)
        self.register_buffer("keys", keys, persistent=False)  # sorted user * n_items + item

    def forward(self, users: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, d]; `leave_out` [B] is one item per user to drop from its history where the user has it."""
        starts = self.indptr.index_select(0, users)
        lengths = self.indptr.index_select(0, users + 1) - starts
        _, flat = expand_ranges(starts, lengths)
        summed = self.embedding(self.items.index_select(0, flat), torch.cumsum(lengths, 0) - lengths)
        count = lengths.to(summed.dtype)
        if leave_out is not None:
            own = sorted_lookup(self.keys, users * self.n_items + leave_out)[0].to(summed.dtype)
            own_rows = nn.functional.embedding(leave_out, self.embedding.weight, sparse=self.embedding.sparse)
            summed = summed - own[:, None] * own_rows
            count = count - own
        return summed * count.clamp(min=1.0).rsqrt()[:, None]

    def for_users(self, catalog: "Catalog") -> "HistoryBag":
        """This bag over `catalog`'s users (visitors: `model.visitors`), its embeddings shared."""
        indptr, items = catalog.train_history
        indptr, items, owners = user_item_csr_tensors(indptr, items, catalog.n_users, self.n_items, "user_history", 0)
        keys, _ = torch.sort(owners * self.n_items + items)
        bag = with_buffers(self, indptr=indptr, items=items, keys=keys)
        bag.n_users = catalog.n_users
        return bag
