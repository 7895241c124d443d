"""A trained model's vectors: what a vector database stores and a similar-items lookup reads.

With a dot head, an item's vector is the one that head scores a user against (id + brand +
projected description) and a user's vector the user tower's output: `user · item + bias` is the
head's logit, so the pair drops into any inner-product index. Without one (the original design's
MLP), the item vectors are the id embeddings: close items are close there too, but no inner
product of them is the model's score, and the export says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from alsoview.model.scorer import TowerModel

DOT_HEAD = "dot"
USERS_PER_BATCH = 4096


@dataclass(frozen=True)
class ItemVectors:
    """Every item's vector (row 0 is the unknown item), its bias where the score has one, and
    what the vectors are."""

    vectors: np.ndarray  # [n_items, dim] float32
    bias: np.ndarray | None  # [n_items] or None
    kind: str

    @property
    def scores_users(self) -> bool:
        """Whether user · item (+ bias) is a head's logit: an inner-product index serves it."""
        return self.bias is not None


@torch.no_grad()
def item_vectors(model: TowerModel) -> ItemVectors:
    """The model's item vectors: the dot head's when it has one, else the id embeddings."""
    tower = model.item_tower
    items = tower.every_item()
    if DOT_HEAD in model.heads:
        head = model.heads[DOT_HEAD]
        vectors = head.item_vector(items, tower)
        bias = head.item_bias.weight[:, 0].float().cpu().numpy()
        kind = "the dot head's item vectors: user . item + bias is that head's logit"
        return ItemVectors(vectors.float().cpu().numpy(), bias, kind)
    kind = "item id embeddings (the model has no dot head: their inner products are not its scores)"
    return ItemVectors(tower.id_embedding.weight.float().cpu().numpy(), None, kind)


@torch.no_grad()
def user_vectors(model: TowerModel, users: np.ndarray) -> np.ndarray:
    """The user tower's vectors [len(users), dim] (a user described by their items where the
    model's user parts do so), in batches."""
    device = model.item_tower.id_embedding.weight.device
    out = []
    for start in range(0, len(users), USERS_PER_BATCH):
        ids = torch.as_tensor(np.asarray(users[start : start + USERS_PER_BATCH], dtype=np.int64), device=device)
        out.append(model.users(ids).vector.float().cpu().numpy())
    dim = model.item_tower.dim
    return np.concatenate(out) if out else np.zeros((0, dim), np.float32)


def most_similar(vectors: np.ndarray, item: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The `k` items closest to `item` by cosine (ids, similarities), never itself or the
    unknown item 0; a zero vector is similar to nothing."""
    norms = np.linalg.norm(vectors, axis=1)
    unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > 0)
    similarity = unit @ unit[item]
    similarity[[0, item]] = -np.inf
    k = min(k, len(vectors) - 2)
    top = np.argpartition(-similarity, k - 1)[:k] if k > 0 else np.zeros(0, np.int64)
    top = top[np.argsort(-similarity[top], kind="stable")]
    return top, similarity[top]
