"""`model.heads.dot`, a dot-product head: user · (item + brand + projected description) + item bias (NeuMF's GMF
branch, with content on the item's side).

A dot product models user-item affinity directly, which an MLP over a concatenation learns
slowly and poorly (Rendle et al. 2020, "Neural Collaborative Filtering vs. Matrix Factorization
Revisited"); the item's brand and description let items with little history borrow from their
content.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alsoview.model.part import Part, PartInputs, Users
from alsoview.model.towers import ItemTower


@dataclass(frozen=True)
class DotConfig(Part):
    """The logit of a pair is user · item_vector + item bias."""

    item_features: bool = True  # brand and projected description added to the item's vector

    def build(self, inputs: PartInputs) -> "DotHead":
        item_bias = nn.Embedding(inputs.n_items, 1, sparse=inputs.sparse)
        nn.init.zeros_(item_bias.weight)
        with_text = self.item_features and inputs.text_dim > 0
        text_to_item = nn.Linear(inputs.text_dim, inputs.dim, bias=False) if with_text else None
        return DotHead(item_bias, text_to_item, self.item_features)


class DotHead(nn.Module):
    """`item_features` false scores the id embeddings alone."""

    def __init__(self, item_bias: nn.Embedding, text_to_item: nn.Linear | None, item_features: bool) -> None:
        super().__init__()
        self.item_bias, self.text_to_item, self.item_features = item_bias, text_to_item, item_features
        self._every_item: torch.Tensor | None = None  # kept by `TowerModel.freeze` only

    def item_vector(self, items: torch.Tensor, tower: ItemTower) -> torch.Tensor:
        vector = tower.ids(items)
        if self.item_features:
            vector = vector + tower.brand(items)
            if self.text_to_item is not None:
                vector = vector + self.text_to_item(tower.features.texts(items))
        return vector

    def score(self, users: Users, items: torch.Tensor, tower: ItemTower) -> torch.Tensor:
        """Logits [B] of (user vector, item) pairs."""
        return (users.vector * self.item_vector(items, tower)).sum(-1) + self.item_bias(items).squeeze(-1)

    def score_every(self, users: Users, tower: ItemTower) -> torch.Tensor:
        """Logits [B, n_items] with gradients: one matrix product with every item's vector."""
        return users.vector @ self.item_vector(tower.every_item(), tower).T + self.item_bias.weight.T

    @torch.no_grad()
    def score_all(self, users: Users, tower: ItemTower, elements_per_chunk: int = 1 << 23) -> torch.Tensor:
        """Logits [B, n_items], as `score` gives them."""
        every_item = self._every_item
        if every_item is None:
            every_item = self.item_vector(tower.every_item(), tower)
        return users.vector @ every_item.T + self.item_bias.weight.T

    @torch.no_grad()
    def freeze(self, tower: ItemTower) -> None:
        """Keep every item's vector (its projected description is the costly part) for the
        scoring calls that follow: the weights will not change (a server, `TowerModel.freeze`)."""
        self._every_item = self.item_vector(tower.every_item(), tower)
