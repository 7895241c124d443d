"""`model.user.id`: a learned embedding per user (the original design's user embedding)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from alsoview.model.ids import init_embedding
from alsoview.model.part import Part, PartInputs


@dataclass(frozen=True)
class UserIdConfig(Part):
    """A user's own vector, learned from their interactions alone: users with few of them get
    little signal (`model.user.history` describes them by their items instead)."""

    def build(self, inputs: PartInputs) -> "UserIdEmbedding":
        embedding = nn.Embedding(inputs.n_users, inputs.dim, sparse=inputs.sparse)
        init_embedding(embedding)
        return UserIdEmbedding(embedding)


class UserIdEmbedding(nn.Module):
    def __init__(self, embedding: nn.Embedding) -> None:
        super().__init__()
        self.embedding = embedding

    def forward(self, users: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """[B, dim]; nothing to leave out: the id embedding holds no item."""
        return self.embedding(users)

    def for_users(self, catalog: object) -> None:
        """None: a visitor (`model.visitors`) has no id, so this part has nothing to read for one."""
        return None
