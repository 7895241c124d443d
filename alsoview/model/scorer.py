"""The model: a user tower and an item tower, scored by the sum of its heads."""

from __future__ import annotations

import torch
from torch import nn

from alsoview.model.ids import check_ids
from alsoview.model.part import Users
from alsoview.model.towers import ItemTower, UserTower

# What a run file's "model_format" says; files of any other format are refused (checkpoint.py).
# 3: parts with random streams of their own, built from the nested model config.
MODEL_FORMAT = 3


class TowerModel(nn.Module):
    """User tower + item tower, scored by the sum of the heads' logits.

    `heads` (name -> head, summed in this order) each offer ``score(users, items, item_tower)``
    -> [N] and ``score_all(users, item_tower)`` -> [B, n_items] (`part.Users`); ``score_all_items``
    adds the heads' ``score_all``, which equals ``forward`` in eval mode to float rounding (tested
    per head).
    """

    def __init__(self, user_tower: UserTower, item_tower: ItemTower, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        if not heads:
            raise ValueError("a model needs at least one head (model.heads)")
        self.user_tower, self.item_tower = user_tower, item_tower
        self.heads = nn.ModuleDict(heads)
        self.n_users, self.n_items = user_tower.n_users, item_tower.n_items

    def users(self, ids: torch.Tensor, leave_out: torch.Tensor | None = None) -> Users:
        """The heads' view of these users: their ids, vectors and the item each leaves out."""
        return Users(ids, self.user_tower(ids, leave_out=leave_out), leave_out)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Logits ``[B]`` (train with ``BCEWithLogitsLoss``); ids must be known, see `to_known_ids`.
        In training each pair's item is left out of its user's tables."""
        if not self.training:
            check_ids("user", users, self.n_users)
            check_ids("item", items, self.n_items)
        return self._score_pairs(self.users(users, items if self.training else None), items)

    def _score_pairs(self, users: Users, items: torch.Tensor) -> torch.Tensor:
        """The heads' summed logits [N] of pairs, one user row per item."""
        logit = torch.zeros(len(items), device=users.vector.device, dtype=users.vector.dtype)
        for head in self.heads.values():
            logit = logit + head.score(users, items, self.item_tower)
        return logit

    def score_groups(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Logits ``[G, C]`` of each user against its row of candidates, the first of which is
        its positive: the user vector is made once per row, in training with that positive left
        out of the history, so the positive and every candidate it is ranked against meet the
        same user (the ranking losses, losses.py). Equals ``forward`` per pair in eval mode."""
        if not self.training:
            check_ids("user", users, self.n_users)
            check_ids("item", candidates, self.n_items)
        rows = self.users(users, candidates[:, 0] if self.training else None)
        width = candidates.shape[1]
        return self._score_pairs(rows.repeat(width), candidates.reshape(-1)).view(len(users), width)

    def score_every(self, users: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, n_items]`` of every item for each user, with gradients: in training each
        row's `leave_out` item (its positive) left out of the user's tables, so every item is scored
        as `score_groups` scores that positive's candidates (a loss over every item: losses.py).
        Every head must score every item (`Part.scores_every_item`; the config checks it)."""
        rows = self.users(users, leave_out)
        scores = None
        for head in self.heads.values():
            score = head.score_every(rows, self.item_tower)
            scores = score if scores is None else scores + score
        return scores

    @torch.no_grad()
    def score_all_items(self, users: torch.Tensor, elements_per_chunk: int = 1 << 23) -> torch.Tensor:
        """Logits ``[B, n_items]`` of every item for each user, as ``forward`` in eval mode gives
        them (to float rounding), at a fraction of the cost (each head's ``score_all``)."""
        check_ids("user", users, self.n_users)
        rows = self.users(users)
        weight = self.item_tower.id_embedding.weight
        scores = torch.zeros(len(users), self.n_items, device=weight.device, dtype=weight.dtype)
        for head in self.heads.values():
            scores += head.score_all(rows, self.item_tower, elements_per_chunk)
        return scores

    def freeze(self) -> "TowerModel":
        """Eval mode for good, with each head keeping what it computes once for every item (the
        dot head's item vectors) across scoring calls: for a model that only scores from now on
        (a Recommender, a server's replica). Training it afterwards would score with stale parts."""
        self.eval()
        for head in self.heads.values():
            if hasattr(head, "freeze"):
                head.freeze(self.item_tower)
        return self

    def predict_proba(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Probabilities ``[B]``; call ``model.eval()`` first so dropout is off."""
        return torch.sigmoid(self(users, items))


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (buffers such as the item feature tables are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
