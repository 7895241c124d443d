"""`model.heads.recent_relations`: the item graphs' relations of the user's items, each by how
many steps back it lies (KDA's relations whose pull changes with the time since the related
item, counted in the user's own steps).

The logit adds, per item graph g (also-view, also-bought), a_g * log(1 + sum over the user's
items j that are g-neighbours of the scored item of w_g(k_j)), where k_j is how many of the user's
items came after j (0: the most recent), grouped in buckets of 1, 2, 3-4, 5-8, ... steps back.
Each graph learns its own pull per bucket (w_g = softplus, starting at 1 for every bucket: the
relation head's count) and its own scale a_g (starting at 0: the other heads' model first). The
relation head counts every item the user had the same; here the last items may pull more, and a
graph whose old relations say little learns to weigh them less.

While training, a positive is described only by the items its user had before it in time (as the
user sequence and the recency-weighted co-occurrence head do): no later item, and not the
positive itself, can count as its relation. Scoring reads every item the user has.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from alsoview.data.relations import Neighbours
from alsoview.errors import check_setting
from alsoview.model.ids import ends_before, expand_ranges, sorted_lookup, time_order_keys, user_item_csr_tensors
from alsoview.model.part import Part, PartInputs, Users
from alsoview.model.towers import ItemTower
from alsoview.model.visitors import with_buffers

if TYPE_CHECKING:
    from alsoview.data.catalog import Catalog

GRAPHS = ("also_view", "also_buy")


@dataclass(frozen=True)
class RecentRelationsConfig(Part):
    """Which item graphs, and how many buckets of steps back their pull is learned for."""

    needs_groups = True

    graphs: tuple[str, ...] = GRAPHS  # the item graphs whose relations count
    buckets: int = 5  # steps back 1, 2, 3-4, 5-8, then 9 and more in the last

    def __post_init__(self) -> None:
        object.__setattr__(self, "graphs", tuple(self.graphs))  # YAML gives lists

    def validate(self, where: str) -> None:
        ok = 1 <= len(self.graphs) == len(set(self.graphs)) and set(self.graphs) <= set(GRAPHS)
        check_setting(ok, f"{where}.graphs", f"a list of distinct graphs of {list(GRAPHS)}", list(self.graphs))
        check_setting(1 <= self.buckets <= 16, f"{where}.buckets", "in [1, 16]", self.buckets)

    def build(self, inputs: PartInputs) -> "RecentRelationsHead":
        catalog = inputs.catalog
        graphs = [Neighbours.from_also_view(inputs.n_items, *catalog.item_graph(g)) for g in self.graphs]
        return RecentRelationsHead(inputs.n_users, inputs.n_items, *catalog.train_sequence, graphs, self.buckets)


class RecentRelationsHead(nn.Module):
    """The users' items in time order and each graph's edges are buffers rebuilt from the dataset
    (not saved with the weights); the weights are each graph's scale and pull per bucket."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        indptr: np.ndarray,
        items_in_time_order: np.ndarray,
        graphs: list[Neighbours],
        buckets: int,
    ) -> None:
        super().__init__()
        self.n_items, self.buckets = n_items, buckets
        indptr_t, items_t, owners = user_item_csr_tensors(
            indptr, items_in_time_order, n_users, n_items, "recent_relations", 1
        )
        user_keys, key_index = time_order_keys(owners, items_t, n_items, "recent_relations")
        self.register_buffer("indptr", indptr_t, persistent=False)
        self.register_buffer("items", items_t, persistent=False)
        self.register_buffer("user_keys", user_keys, persistent=False)
        self.register_buffer("key_index", key_index, persistent=False)
        for g, graph in enumerate(graphs):  # sorted keys a * n_items + b, both directions; CSR over a
            self.register_buffer(f"edges_{g}", torch.as_tensor(graph.keys, dtype=torch.int64), persistent=False)
            self.register_buffer(f"starts_{g}", torch.as_tensor(graph.indptr, dtype=torch.int64), persistent=False)
        self.n_graphs = len(graphs)
        self.scale = nn.Parameter(torch.zeros(self.n_graphs))
        self.pull = nn.Parameter(torch.full((self.n_graphs, buckets), math.log(math.e - 1.0)))  # softplus: 1

    def for_users(self, catalog: "Catalog") -> "RecentRelationsHead":
        """This head over `catalog`'s users (visitors: `model.visitors`), its graphs and weights shared."""
        indptr, items, owners = user_item_csr_tensors(
            *catalog.train_sequence, catalog.n_users, self.n_items, "recent_relations", 1
        )
        user_keys, key_index = time_order_keys(owners, items, self.n_items, "recent_relations")
        return with_buffers(self, indptr=indptr, items=items, user_keys=user_keys, key_index=key_index)

    def _recent(self, users: Users) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(row, item, bucket) of every item of every user that counts: before the row's
        `leave_out` item where the user had it (training), else all of the user's items."""
        ids = users.ids
        starts = self.indptr.index_select(0, ids)
        row, flat = expand_ranges(starts, self.indptr.index_select(0, ids + 1) - starts)
        ends = ends_before(self.indptr, self.user_keys, self.key_index, self.n_items, ids, users.leave_out)
        age = ends.index_select(0, row) - 1 - flat  # how many of the user's counted items came after it
        kept = age >= 0
        row, flat, age = row[kept], flat[kept], age[kept]
        bucket = torch.floor(torch.log2(age.to(torch.float32) + 1.0)).to(torch.int64).clamp(max=self.buckets - 1)
        return row, self.items.index_select(0, flat), bucket

    def score(self, users: Users, items: torch.Tensor, tower: ItemTower) -> torch.Tensor:
        """Logits [N] of (user, item) pairs (the user vector is not used)."""
        row, mine, bucket = self._recent(users)
        candidate = items.index_select(0, row)
        pulls = nn.functional.softplus(self.pull)
        logit = torch.zeros(len(items), device=items.device)
        for g in range(self.n_graphs):
            related, _ = sorted_lookup(getattr(self, f"edges_{g}"), mine * self.n_items + candidate)
            value = pulls[g].index_select(0, bucket) * related
            pulled = torch.zeros(len(items), device=items.device).index_add(0, row, value)
            logit = logit + self.scale[g] * torch.log1p(pulled)
        return logit

    def score_every(self, users: Users, tower: ItemTower) -> torch.Tensor:
        """Logits [B, n_items] with gradients: each counted item's neighbours in each graph,
        weighted by its bucket's pull, scattered into a dense row."""
        row, mine, bucket = self._recent(users)
        pulls = nn.functional.softplus(self.pull)
        logit = torch.zeros(len(users.ids), self.n_items, device=users.ids.device)
        for g in range(self.n_graphs):
            edges, graph_starts = getattr(self, f"edges_{g}"), getattr(self, f"starts_{g}")
            starts = graph_starts.index_select(0, mine)
            pair, position = expand_ranges(starts, graph_starts.index_select(0, mine + 1) - starts)
            pulled = torch.zeros_like(logit).index_put(
                (row.index_select(0, pair), edges.index_select(0, position) % self.n_items),
                pulls[g].index_select(0, bucket.index_select(0, pair)),
                accumulate=True,
            )
            logit = logit + self.scale[g] * torch.log1p(pulled)
        return logit

    @torch.no_grad()
    def score_all(self, users: Users, tower: ItemTower, elements_per_chunk: int = 1 << 23) -> torch.Tensor:
        """Logits [B, n_items], as `score` gives them."""
        return self.score_every(users, tower)
