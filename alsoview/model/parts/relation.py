"""The relation heads, `model.heads.also_view` and `model.heads.also_buy`: the logit adds
w * log(1 + r(u, i)), where r is how many of the user's training items are neighbours of i in the
item graph (`data/relations.py`), and w is learned. It lets the model use also-view the way the
Chorus/KDA family does, as evidence that an item fits the user, beside also-view items as hard
negatives.

While training, the positive of each group (a positive and its negatives, `TowerModel.score_groups`)
is left out of the user's relations for every candidate of the group: without that, every
also-view negative of a positive would count that positive as a relation, and the model would
learn that related items are negatives. So with this head batches hold whole groups, whatever
the loss (`losses.GroupedBinaryCrossEntropy`). Also-bought is the "complement" relation beside
also-view's "substitute": what users buy together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from alsoview.model.ids import expand_ranges, sorted_lookup
from alsoview.model.part import Part, PartInputs, Users
from alsoview.model.towers import ItemTower
from alsoview.model.visitors import with_buffers

if TYPE_CHECKING:
    from alsoview.data.catalog import Catalog


@dataclass(frozen=True)
class RelationConfig(Part):
    """A relation head over one item graph of the catalog (`Catalog.item_graph`)."""

    needs_groups = True
    graph: ClassVar[str]

    def build(self, inputs: PartInputs) -> "RelationHead":
        relations = inputs.catalog.train_relations(self.graph)
        return RelationHead(inputs.n_items, relations.keys, relations.counts, relations.neighbour_keys, self.graph)


@dataclass(frozen=True)
class AlsoViewConfig(RelationConfig):
    """Also-view as evidence an item fits the user, as the Chorus/KDA family uses it."""

    graph = "also_view"


@dataclass(frozen=True)
class AlsoBuyConfig(RelationConfig):
    """The same over the also-bought graph, with a weight of its own."""

    graph = "also_buy"


class RelationHead(nn.Module):
    """The counts are per (user, item) buffers, rebuilt from the dataset (not saved with the weights)."""

    def __init__(
        self, n_items: int, keys: np.ndarray, counts: np.ndarray, neighbour_keys: np.ndarray, graph: str = "also_view"
    ) -> None:
        super().__init__()
        self.n_items, self.graph = n_items, graph
        self.weight = nn.Parameter(torch.zeros(1))  # starts at 0: the other heads' model, then learns
        self.register_buffer("keys", torch.as_tensor(np.asarray(keys), dtype=torch.int64), persistent=False)
        self.register_buffer("counts", torch.as_tensor(np.asarray(counts), dtype=torch.float32), persistent=False)
        neighbours = torch.as_tensor(np.asarray(neighbour_keys), dtype=torch.int64)
        self.register_buffer("neighbour_keys", neighbours, persistent=False)

    def for_users(self, catalog: "Catalog") -> "RelationHead":
        """This head over `catalog`'s users (visitors: `model.visitors`), its weight shared."""
        relations = catalog.train_relations(self.graph)
        as_tensor = lambda values: torch.as_tensor(np.asarray(values))  # noqa: E731
        return with_buffers(self, keys=as_tensor(relations.keys).long(), counts=as_tensor(relations.counts).float())

    def relation(self, users: torch.Tensor, items: torch.Tensor, leave_out: torch.Tensor | None) -> torch.Tensor:
        """log(1 + r) [N] of (user, item) pairs, the `leave_out` item [N] not counted as a relation."""
        found, index = sorted_lookup(self.keys, users * self.n_items + items)
        count = torch.where(found, self.counts.index_select(0, index), torch.zeros_like(index, dtype=torch.float32))
        if leave_out is not None:
            near, _ = sorted_lookup(self.neighbour_keys, leave_out * self.n_items + items)
            count = (count - near.float()).clamp(min=0)
        return torch.log1p(count)

    def score(self, users: Users, items: torch.Tensor, tower: ItemTower) -> torch.Tensor:
        """Logits [B] of (user, item) pairs (the user vector is not used)."""
        return self.weight * self.relation(users.ids, items, users.leave_out)

    def score_every(self, users: Users, tower: ItemTower) -> torch.Tensor:
        """Logits [B, n_items] with gradients (in the weight): each user's counts scattered into a
        dense row, each row's `leave_out` item not counted as a relation (as `relation` does)."""
        ids = users.ids
        counts = torch.zeros(len(ids), self.n_items, device=self.keys.device)
        lo = torch.searchsorted(self.keys, ids * self.n_items)
        hi = torch.searchsorted(self.keys, (ids + 1) * self.n_items)
        rows, flat = expand_ranges(lo, hi - lo)
        counts[rows, self.keys.index_select(0, flat) % self.n_items] = self.counts.index_select(0, flat)
        if users.leave_out is not None:
            start = torch.searchsorted(self.neighbour_keys, users.leave_out * self.n_items)
            end = torch.searchsorted(self.neighbour_keys, (users.leave_out + 1) * self.n_items)
            near_rows, near = expand_ranges(start, end - start)
            counts[near_rows, self.neighbour_keys.index_select(0, near) % self.n_items] -= 1.0
            counts = counts.clamp(min=0)
        return self.weight * torch.log1p(counts)

    @torch.no_grad()
    def score_all(self, users: Users, tower: ItemTower, elements_per_chunk: int = 1 << 23) -> torch.Tensor:
        """Logits [B, n_items], as `score` gives them."""
        return self.score_every(users, tower)
