"""The model: a user tower and an item tower, scored by the sum of its heads."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from alsoview.model.ids import check_ids
from alsoview.model.towers import ItemTower, UserTower

# What a checkpoint's "model_format" says: 1 (no key) is the first single-class model
# (`AlsoViewMLP`), whose weights load here under their new names (LEGACY_KEYS); 2 is this one.
MODEL_FORMAT = 2
LEGACY_KEYS = {  # the first model's state_dict names -> this model's
    "item_brand": "item_tower.features.brand",
    "item_price": "item_tower.features.price",
    "item_price_missing": "item_tower.features.price_missing",
    "item_text": "item_tower.features.text",
    "user_embedding.weight": "user_tower.id_embedding.weight",
    "history_embedding.weight": "user_tower.history.embedding.weight",
    "item_embedding.weight": "item_tower.id_embedding.weight",
    "brand_embedding.weight": "item_tower.brand_embedding.weight",
    "text_projection.weight": "heads.mlp.text_projection.weight",
    "text_projection.bias": "heads.mlp.text_projection.bias",
    "item_bias.weight": "heads.dot.item_bias.weight",
    "text_to_item.weight": "heads.dot.text_to_item.weight",
}
_LEGACY_MLP_PREFIX = "mlp."  # mlp.<i>.weight -> heads.mlp.layers.<i>.weight


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
        self._register_load_state_dict_pre_hook(_rename_legacy_keys, with_module=True)

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


def _rename_legacy_keys(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load hook: a first-format state_dict (model_format 1) under this model's names. Its text
    projection exists in every first-format model, used or not: it is dropped where no head uses it."""
    legacy = [key for key in list(state) if key.startswith(prefix) and _new_name(key[len(prefix) :]) is not None]
    own = module.state_dict().keys()
    for key in legacy:
        new = _new_name(key[len(prefix) :])
        value = state.pop(key)
        if new in own:
            state[prefix + new] = value


def _new_name(key: str) -> str | None:
    if key in LEGACY_KEYS:
        return LEGACY_KEYS[key]
    if key.startswith(_LEGACY_MLP_PREFIX):
        return "heads.mlp.layers." + key[len(_LEGACY_MLP_PREFIX) :]
    return None


def is_legacy_state(state: dict[str, Any]) -> bool:
    return "item_embedding.weight" in state
