"""The two towers: a user as one vector, an item as its parts (the heads combine them)."""

from __future__ import annotations

import torch
from torch import nn

from alsoview.model.features import ItemFeatures
from alsoview.model.history import HistoryBag
from alsoview.model.sequence import SequenceEncoder


class UserTower(nn.Module):
    """A user as one vector: the sum of a learned id embedding, the bag of their training items
    and their recent items in time order, whichever are configured (`model.user_id`,
    `model.user_history`, `model.user_sequence`)."""

    def __init__(
        self,
        n_users: int,
        dim: int,
        id_embedding: nn.Embedding | None,
        history: HistoryBag | None,
        sequence: SequenceEncoder | None = None,
    ) -> None:
        super().__init__()
        if id_embedding is None and history is None and sequence is None:
            raise ValueError("a user tower needs an id embedding, a history bag or a sequence")
        self.n_users, self.dim = n_users, dim
        self.id_embedding = id_embedding
        self.history = history
        self.sequence = sequence

    def forward(self, users: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, dim]; `leave_out` [B] (the items being scored in training) is left out of each
        user's history where the user has it, and ends the user's sequence (only earlier items)."""
        if self.id_embedding is not None:
            vector = self.id_embedding(users)
        else:
            vector = torch.zeros(len(users), self.dim, device=users.device)
        if self.history is not None:
            vector = vector + self.history(users, leave_out)
        if self.sequence is not None:
            vector = vector + self.sequence(users, leave_out)
        return vector


class ItemTower(nn.Module):
    """An item's parts: its id embedding, its brand's embedding, and its feature tables (price,
    description vector). Each head decides which parts it uses and how."""

    def __init__(self, id_embedding: nn.Embedding, brand_embedding: nn.Embedding, features: ItemFeatures) -> None:
        super().__init__()
        self.id_embedding = id_embedding
        self.brand_embedding = brand_embedding
        self.features = features
        self.n_items, self.dim = id_embedding.num_embeddings, id_embedding.embedding_dim

    @property
    def text_dim(self) -> int:
        return self.features.text_dim

    def ids(self, items: torch.Tensor) -> torch.Tensor:
        return self.id_embedding(items)

    def brand(self, items: torch.Tensor) -> torch.Tensor:
        return self.brand_embedding(self.features.brands(items))

    def every_item(self) -> torch.Tensor:
        return torch.arange(self.n_items, device=self.id_embedding.weight.device)
