"""`model.heads.cooccurrence`: the logit adds w * log(1 + s(u, i)), with s the co-occurrence
peer's score, sum over the user's items j of C[j, i] / sqrt(n_j n_i) (C[j, i]: users who had
both, n_i: users who had i; `evaluation.baselines.CooccurrenceScorer`), and w learned.

Co-occurrence is the strongest simple peer on review data, most of all when a user's last item
is known (the leave-one-out test split): the next item is often one other users had beside it.
A dot product of learned vectors approximates that slowly; this head gives it to the model
directly, and the weight says how much it pays.

Counts come from the training users, the scored user among them, so a training positive would be
scored by its own user's co-occurrences: its label would leak in. The head therefore counts C
without the user's own contribution (C[j, i] - 1 where the user had both j and i), always, and
while training leaves the group's positive out of the user's items for every candidate (as the
relation head does). An item outside the user's items, such as a held-out one, is unaffected.

With `recency` r below 1, only the user's items before the scored one in time count, the k-th
most recent (k = 0, 1, ...) weighted r^k: in training the items before the group's positive (so
the positive sees no later item, as the user sequence does), in scoring every item the model
knows (for the test split: train and validation, the validation item the most recent). Under
next-item protocols the last items say the most.

With `proximity` p below 1 or `forward`, C counts each user's pair of items by their places in
the user's time order (p^(g - 1) for g places apart; forward: only pairs whose scored item came
after; `data.data.relations.sequence_cooccurrence_counts`), and the user's own share taken out of C is
the user's own pair by the same rule. What each setting buys, measured with this head untrained
as a peer: experiments/results/recency_peer-places.json (experiments/recency_peer.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from alsoview.data.relations import sequence_cooccurrence_counts
from alsoview.errors import check_setting
from alsoview.model.ids import ends_before, expand_ranges, sorted_lookup, time_order_keys, user_item_csr_tensors
from alsoview.model.part import Part, PartInputs, Users
from alsoview.model.towers import ItemTower
from alsoview.model.visitors import with_buffers

if TYPE_CHECKING:
    from alsoview.data.catalog import Catalog


@dataclass(frozen=True)
class CooccurrenceConfig(Part):
    """How the head weighs the user's items and which pairs its table counts (module docstring)."""

    needs_groups = True

    recency: float = 1.0  # the k-th most recent item weighs recency^k (1: every item the same, the peer's rule)
    proximity: float = 1.0  # a pair g places apart counts proximity^(g - 1) (1: every pair counts 1)
    forward: bool = False  # count only pairs whose scored item came after the user's item

    def validate(self, where: str) -> None:
        check_setting(0.0 < self.recency <= 1.0, f"{where}.recency", "in (0, 1] (1: every item the same)", self.recency)
        check_setting(
            0.0 < self.proximity <= 1.0, f"{where}.proximity", "in (0, 1] (1: every pair the same)", self.proximity
        )

    def build(self, inputs: PartInputs) -> "CooccurrenceHead":
        sequence = inputs.catalog.train_sequence
        # the table counts pairs as the head takes the user's own share out (proximity, forward)
        table = sequence_cooccurrence_counts(*sequence, inputs.n_items, self.proximity, self.forward)
        return CooccurrenceHead(
            inputs.n_users, inputs.n_items, *sequence, *table, self.recency, self.proximity, self.forward
        )


class CooccurrenceHead(nn.Module):
    """Its tables are buffers rebuilt from the dataset (not saved with the weights)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        indptr: np.ndarray,
        items_in_time_order: np.ndarray,
        keys: np.ndarray,
        counts: np.ndarray,
        recency: float = 1.0,
        proximity: float = 1.0,
        forward: bool = False,
    ) -> None:
        super().__init__()
        self.n_users, self.n_items, self.recency = n_users, n_items, float(recency)
        # how `counts` weighed a user's pair of items (data.relations.sequence_cooccurrence_counts):
        # the user's own share of each count is taken out with the same rule
        self.proximity, self.forward = float(proximity), bool(forward)
        # Starts at 1: with the other heads near 0 at their start, the model first ranks as the peer
        # does (log1p keeps its order), then learns from there. From 0 the weight moved too little
        # on a small set (a few thousand Adam steps of at most lr 0.001 each) to matter.
        self.weight = nn.Parameter(torch.ones(1))
        # Whether the table counted these users' own pairs (they trained with it): then each
        # user's own share comes out of the counts; a visitor's (`for_users`) never was in it.
        self.own_pairs_counted = True
        indptr_t, items_t, owners = user_item_csr_tensors(
            indptr, items_in_time_order, n_users, n_items, "cooccurrence", 1
        )
        users_per_item = torch.bincount(items_t, minlength=n_items).to(torch.float32)
        user_keys, key_index = time_order_keys(owners, items_t, n_items, "cooccurrence")
        self.register_buffer("indptr", indptr_t, persistent=False)
        self.register_buffer("items", items_t, persistent=False)
        self.register_buffer("user_keys", user_keys, persistent=False)
        self.register_buffer("key_index", key_index, persistent=False)  # each key's index into `items`
        self.register_buffer("keys", torch.as_tensor(np.asarray(keys), dtype=torch.int64), persistent=False)
        self.register_buffer("counts", torch.as_tensor(np.asarray(counts), dtype=torch.float32), persistent=False)
        self.register_buffer("norm", users_per_item.clamp(min=1).rsqrt() * (users_per_item > 0), persistent=False)
        # The normalised matrix as CSR over its first item (the keys are sorted by it), for score_all
        first, second = self.keys // n_items, self.keys % n_items
        self.register_buffer("row_starts", torch.searchsorted(first, torch.arange(n_items + 1)), persistent=False)
        self.register_buffer("row_items", second, persistent=False)
        self.register_buffer("row_values", self.counts * self.norm[first] * self.norm[second], persistent=False)

    def for_users(self, catalog: "Catalog") -> "CooccurrenceHead":
        """This head over `catalog`'s users (visitors: `model.visitors`): their items in time
        order, the trained table and weight shared, no own share taken out (module docstring)."""
        indptr, items, owners = user_item_csr_tensors(
            *catalog.train_sequence, catalog.n_users, self.n_items, "cooccurrence", 1
        )
        user_keys, key_index = time_order_keys(owners, items, self.n_items, "cooccurrence")
        head = with_buffers(self, indptr=indptr, items=items, user_keys=user_keys, key_index=key_index)
        head.n_users, head.own_pairs_counted = catalog.n_users, False
        return head

    def _own_share(self, gap: torch.Tensor, had_both: torch.Tensor) -> torch.Tensor:
        """A user's own share of C[j, i] for the user's items j and i, i `gap` places after j in
        the user's time order (`gap` 0: the same item, no share)."""
        counted = had_both & ((gap > 0) if self.forward else (gap != 0)) & self.own_pairs_counted
        return torch.where(counted, self.proximity ** (gap.abs() - 1).clamp(min=0).to(torch.float32), 0.0)

    def _item_weights(
        self, users: torch.Tensor, row: torch.Tensor, flat: torch.Tensor, leave_out: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Each gathered user item's weight (recency^age, 0 from the scored item on), or None
        when every item weighs 1 (recency 1)."""
        if self.recency == 1.0:
            return None
        ends = ends_before(self.indptr, self.user_keys, self.key_index, self.n_items, users, leave_out)
        age = ends.index_select(0, row) - 1 - flat
        return torch.where(age >= 0, self.recency ** age.clamp(min=0).to(torch.float32), 0.0)

    def sums(self, users: torch.Tensor, items: torch.Tensor, leave_out: torch.Tensor | None) -> torch.Tensor:
        """s(u, i) [N] of (user, item) pairs without the user's own co-occurrences, the `leave_out`
        item [N] not counted among the user's items (with recency below 1: nor any later item)."""
        row, flat = _each_users_items(self.indptr, users)
        weights = self._item_weights(users, row, flat, leave_out)
        if weights is not None:  # recency: no lookups for the items from the scored one on (they weigh 0)
            kept = weights > 0
            row, flat, weights = row[kept], flat[kept], weights[kept]
        mine, candidate = self.items.index_select(0, flat), items.index_select(0, row)
        found, index = sorted_lookup(self.keys, mine * self.n_items + candidate)
        count = torch.where(found, self.counts.index_select(0, index), 0.0)
        had, place = sorted_lookup(self.user_keys, users * self.n_items + items)  # the scored item's place, if had
        gap = self.key_index.index_select(0, place).index_select(0, row) - flat
        count = count - self._own_share(gap, had.index_select(0, row))
        if leave_out is not None:
            count = count * (mine != leave_out.index_select(0, row))
        value = count.clamp(min=0) * self.norm.index_select(0, mine) * self.norm.index_select(0, candidate)
        if weights is not None:
            value = value * weights
        return torch.zeros(len(users), device=users.device).index_add_(0, row, value)

    def score(self, users: Users, items: torch.Tensor, tower: ItemTower) -> torch.Tensor:
        """Logits [B] of (user, item) pairs (the user vector is not used)."""
        return self.weight * torch.log1p(self.sums(users.ids, items, users.leave_out))

    def score_every(self, users: Users, tower: ItemTower) -> torch.Tensor:
        """Logits [B, n_items] with gradients (in the weight): the users' weighted item rows times
        the normalised co-occurrence matrix, each own co-occurrence taken out of the user's items'
        entries; in training each row's `leave_out` item is not among its user's items (with
        recency below 1, nor any later item), as `sums` has it."""
        ids, leave_out = users.ids, users.leave_out
        row, flat = _each_users_items(self.indptr, ids)
        item = self.items.index_select(0, flat)
        weights = self._item_weights(ids, row, flat, leave_out)
        if weights is None:
            weights = torch.ones(len(item), device=ids.device)
        if leave_out is not None:
            weights = weights * (item != leave_out.index_select(0, row))
        had = torch.zeros(len(ids), self.n_items, device=ids.device)
        had[row, item] = 1.0  # [B, n_items]: 1 where the user had the item
        plain = self.recency == 1.0 and leave_out is None  # every item weighs 1
        mine = had if plain else torch.zeros_like(had).index_put_((row, item), weights)
        # sum over the user's items j of weight_j * row j of the normalised matrix, gathered row by
        # row (a user has few items: a sparse-times-dense product over every item was far slower)
        starts = self.row_starts.index_select(0, item)
        pair, position = expand_ranges(starts, self.row_starts.index_select(0, item + 1) - starts)
        sums = torch.zeros(len(ids), self.n_items, device=ids.device).index_put_(
            (row.index_select(0, pair), self.row_items.index_select(0, position)),
            self.row_values.index_select(0, position) * weights.index_select(0, pair),
            accumulate=True,
        )
        if not self.own_pairs_counted:
            own = torch.zeros_like(sums)
        elif self.proximity == 1.0 and not self.forward:  # every own pair counts 1: in closed form
            weighted = mine @ self.norm  # [B]: the user's items' weighted norms
            own = had * self.norm * (weighted[:, None] - mine * self.norm)
        else:
            own = self._own_rows(ids, row, flat, weights)
        return self.weight * torch.log1p((sums - own).clamp(min=0))

    @torch.no_grad()
    def score_all(self, users: Users, tower: ItemTower, elements_per_chunk: int = 1 << 23) -> torch.Tensor:
        """Logits [B, n_items], as `score` gives them."""
        return self.score_every(users, tower)

    def _own_rows(
        self, users: torch.Tensor, row: torch.Tensor, flat: torch.Tensor, weights: torch.Tensor
    ) -> torch.Tensor:
        """[B, n_items] each user's own share of `score_all`'s sums: over every pair (j, i) of the
        user's items, weight_j * own share * norm_j * norm_i at i."""
        starts = self.indptr.index_select(0, users).index_select(0, row)
        lengths = self.indptr.index_select(0, users + 1).index_select(0, row) - starts
        entry, other = expand_ranges(starts, lengths)  # each item j of a user (entry) with each of its items
        j, i = self.items.index_select(0, flat.index_select(0, entry)), self.items.index_select(0, other)
        share = self._own_share(other - flat.index_select(0, entry), torch.ones_like(other, dtype=torch.bool))
        value = weights.index_select(0, entry) * share * self.norm.index_select(0, j) * self.norm.index_select(0, i)
        return torch.zeros(len(users), self.n_items, device=users.device).index_put_(
            (row.index_select(0, entry), i), value, accumulate=True
        )


def _each_users_items(indptr: torch.Tensor, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, index into the CSR items) of every item of every user, the users' order kept."""
    starts = indptr.index_select(0, users)
    return expand_ranges(starts, indptr.index_select(0, users + 1) - starts)
