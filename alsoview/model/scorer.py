"""The model: a user tower and an item tower, scored by the sum of its heads."""

from __future__ import annotations

import torch
from torch import nn

from alsoview.model.ids import check_ids
from alsoview.model.towers import ItemTower, UserTower

# What a run file's "model_format" says; files of any other format are refused (checkpoint.py).
# 3: parts with random streams of their own (2: the first order of draws; 1: one class).
MODEL_FORMAT = 3


class TowerModel(nn.Module):
    """User tower + item tower, scored by the sum of the heads' logits.

    `heads` (name -> head, summed in this order) each offer ``score(user_vector, items, item_tower)``
    -> [B] and ``score_all(user_vector, item_tower)`` -> [B, n_items]; ``score_all_items`` adds the
    heads' ``score_all``, which equals ``forward`` in eval mode to float rounding (tested per head).
    """

    def __init__(self, user_tower: UserTower, item_tower: ItemTower, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a model needs at least one head")
        self.user_tower, self.item_tower = user_tower, item_tower
        self.heads = nn.ModuleDict(heads)
        self.n_users, self.n_items = user_tower.n_users, item_tower.n_items

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` (train with ``BCEWithLogitsLoss``); ids must be known, see `to_known_ids`."""
        if not self.training:
            check_ids("user", users, self.n_users)
            check_ids("item", items, self.n_items)
        leave_out = items if self.training else None
        user = self.user_tower(users, leave_out=leave_out)
        return self._score_pairs(user, users, items, leave_out)

    def _score_pairs(
        self, user: torch.Tensor, users: torch.Tensor, items: torch.Tensor, leave_out: torch.Tensor | None
    ) -> torch.Tensor:
        """The heads' summed logits [N] of pairs; heads that read user ids (`uses_user_ids`, e.g.
        the relation head) get the ids and the item left out of the user's history."""
        logit = torch.zeros(len(items), device=user.device, dtype=user.dtype)
        for head in self.heads.values():
            if getattr(head, "uses_user_ids", False):
                logit = logit + head.score(user, items, self.item_tower, users=users, leave_out=leave_out)
            else:
                logit = logit + head.score(user, items, self.item_tower)
        return logit

    def score_groups(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Logits ``[G, C]`` of each user against its row of candidates, the first of which is
        its positive: the user vector is made once per row, in training with that positive left
        out of the history, so the positive and every candidate it is ranked against meet the
        same user (the ranking losses, losses.py). Equals ``forward`` per pair in eval mode."""
        if not self.training:
            check_ids("user", users, self.n_users)
            check_ids("item", candidates, self.n_items)
        leave_out = candidates[:, 0] if self.training else None
        user = self.user_tower(users, leave_out=leave_out)
        width = candidates.shape[1]
        logit = self._score_pairs(
            user.repeat_interleave(width, dim=0),
            users.repeat_interleave(width),
            candidates.reshape(-1),
            None if leave_out is None else leave_out.repeat_interleave(width),
        )
        return logit.view(len(users), width)

    @torch.no_grad()
    def score_all_items(self, users: torch.Tensor, elements_per_chunk: int = 1 << 23) -> torch.Tensor:
        """Logits ``[B, n_items]`` of every item for each user, as ``forward`` in eval mode gives
        them (to float rounding), at a fraction of the cost (each head's ``score_all``)."""
        check_ids("user", users, self.n_users)
        user = self.user_tower(users)
        weight = self.item_tower.id_embedding.weight
        scores = torch.zeros(len(users), self.n_items, device=weight.device, dtype=weight.dtype)
        for head in self.heads.values():
            if getattr(head, "uses_user_ids", False):
                scores += head.score_all(user, self.item_tower, elements_per_chunk, users=users)
            else:
                scores += head.score_all(user, self.item_tower, elements_per_chunk)
        return scores

    def predict_proba(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B]``; call ``model.eval()`` first so dropout is off."""
        return torch.sigmoid(self(users, items))
