"""The two towers: a user as one vector, an item as its parts (the heads combine them)."""

from __future__ import annotations

import torch
from torch import nn

from alsoview.model.features import ItemFeatures
from alsoview.model.ids import init_embedding
from alsoview.model.part import PartInputs


class UserTower(nn.Module):
    """A user as one vector: the sum of the user parts' vectors (`model.user`: the id embedding,
    the bag of their training items, their recent items in time order), in the registry's order."""

    def __init__(self, parts: dict[str, nn.Module], n_users: int, dim: int) -> None:
        super().__init__()
        if not parts:
            raise ValueError("a user tower needs at least one part (model.user)")
        self.parts = nn.ModuleDict(parts)
        self.n_users, self.dim = n_users, dim

    def forward(self, users: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, dim]; `leave_out` [B] (the items being scored in training) is left out of each
        user's history where the user has it, and ends the user's sequence (only earlier items)."""
        vector = None
        for part in self.parts.values():
            value = part(users, leave_out)
            vector = value if vector is None else vector + value
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

    @classmethod
    def build(cls, inputs: PartInputs) -> "ItemTower":
        catalog = inputs.catalog
        features = ItemFeatures(
            catalog.n_brands,
            # copies: the catalog's arrays are read-only views into Ray's object store
            torch.tensor(catalog.item_brand),
            torch.tensor(catalog.item_price),
            torch.tensor(catalog.item_price_missing),
            torch.tensor(catalog.item_text),
            catalog.text_dim,
        )
        if features.n_items != catalog.n_items:
            raise ValueError(f"item_brand must have shape ({catalog.n_items},), got ({features.n_items},)")
        item_id = nn.Embedding(inputs.n_items, inputs.dim, sparse=inputs.sparse)
        brand = nn.Embedding(catalog.n_brands, inputs.dim, sparse=inputs.sparse)
        init_embedding(item_id)
        init_embedding(brand)
        return cls(item_id, brand, features)

    @property
    def text_dim(self) -> int:
        return self.features.text_dim

    def ids(self, items: torch.Tensor) -> torch.Tensor:
        return self.id_embedding(items)

    def brand(self, items: torch.Tensor) -> torch.Tensor:
        return self.brand_embedding(self.features.brands(items))

    def every_item(self) -> torch.Tensor:
        return torch.arange(self.n_items, device=self.id_embedding.weight.device)
