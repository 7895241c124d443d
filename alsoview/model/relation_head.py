"""A relation head (`model.also_view_relation`): the logit adds w * log(1 + r(u, i)), where r is
how many of the user's training items are also-view neighbours of i (`relations.py`), and w is
learned. It lets the model use also-view the way the Chorus/KDA family does, as evidence that an
item fits the user, beside also-view items as hard negatives.

While training, the positive of each group (a positive and its negatives, `TowerModel.score_groups`)
is left out of the user's relations for every candidate of the group: without that, every
also-view negative of a positive would count that positive as a relation, and the model would
learn that related items are negatives. So with this head batches hold whole groups, whatever
the loss (`blocks.group_rows`, `losses.GroupedBinaryCrossEntropy`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from alsoview.model.ids import expand_ranges, sorted_lookup
from alsoview.model.towers import ItemTower


class RelationHead(nn.Module):
    """Reads user ids (``uses_user_ids``): the counts are per (user, item), rebuilt from the dataset."""

    uses_user_ids = True

    def __init__(self, n_items: int, keys: np.ndarray, counts: np.ndarray, neighbour_keys: np.ndarray) -> None:
        super().__init__()
        self.n_items = n_items
        self.weight = nn.Parameter(torch.zeros(1))  # starts at 0: the other heads' model, then learns
        self.register_buffer("keys", torch.as_tensor(np.asarray(keys), dtype=torch.int64), persistent=False)
        self.register_buffer("counts", torch.as_tensor(np.asarray(counts), dtype=torch.float32), persistent=False)
        neighbours = torch.as_tensor(np.asarray(neighbour_keys), dtype=torch.int64)
        self.register_buffer("neighbour_keys", neighbours, persistent=False)

    def relation(self, users: torch.Tensor, items: torch.Tensor, leave_out: torch.Tensor | None) -> torch.Tensor:
        """log(1 + r) [N] of (user, item) pairs, the `leave_out` item [N] not counted as a relation."""
        found, index = sorted_lookup(self.keys, users * self.n_items + items)
        count = torch.where(found, self.counts.index_select(0, index), torch.zeros_like(index, dtype=torch.float32))
        if leave_out is not None:
            near, _ = sorted_lookup(self.neighbour_keys, leave_out * self.n_items + items)
            count = (count - near.float()).clamp(min=0)
        return torch.log1p(count)

    def score(
        self,
        user: torch.Tensor,
        items: torch.Tensor,
        tower: ItemTower,
        users: torch.Tensor | None = None,
        leave_out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits [B] of (user, item) pairs (`user`, the vector, is not used)."""
        return self.weight * self.relation(users, items, leave_out)

    @torch.no_grad()
    def score_all(
        self, user: torch.Tensor, tower: ItemTower, elements_per_chunk: int = 1 << 23, users: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits [B, n_items]: each user's counts scattered into a dense row."""
        out = torch.zeros(len(users), self.n_items, device=self.keys.device)
        lo = torch.searchsorted(self.keys, users * self.n_items)
        hi = torch.searchsorted(self.keys, (users + 1) * self.n_items)
        lengths = hi - lo
        rows, flat = expand_ranges(lo, lengths)
        out[rows, self.keys.index_select(0, flat) % self.n_items] = torch.log1p(self.counts.index_select(0, flat))
        return self.weight * out
