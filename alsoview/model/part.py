"""What every model part shares: its settings class (`Part`), what it builds from (`PartInputs`),
and what a head reads of the users it scores (`Users`).

A part is one module under `model/parts/`: a frozen dataclass of its settings, subclassing
`Part`, that says whether training must hand it whole groups (`needs_groups`), checks its values
(`validate`) and builds its `nn.Module` (`build`); its config key is its field in
`model/config.py`'s `UserParts` or `Heads`, the registry. A user part's module maps
``(users, leave_out)`` to ``[B, dim]`` vectors that the user tower sums; a head's module has
``score(users, items, item_tower)`` -> ``[N]`` and ``score_all(users, item_tower,
elements_per_chunk)`` -> ``[B, n_items]``, and the model sums the heads' logits. A module that
reads per-user tables built from the catalog's interactions also has ``for_users(catalog)``, the
same module over another catalog's users (visitors described by their items: `model.visitors`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from alsoview.data.catalog import Catalog


class Part:
    """Base of a part's settings (subclasses are frozen dataclasses)."""

    # Training must score each positive together with its own negatives (batches of whole
    # groups): the part describes a group's user by its positive (its relations or its later
    # items left out).
    needs_groups: ClassVar[bool] = False
    # A head that can score every item with gradients in training (`score_every`), for a loss
    # over every item (`train.loss=full_softmax`).
    scores_every_item: ClassVar[bool] = True

    def validate(self, where: str) -> None:
        """Check the settings' values; `where` is the part's config key, for the message."""

    def build(self, inputs: "PartInputs") -> nn.Module:
        raise NotImplementedError


def has_settings(part: Part) -> bool:
    """Whether a part has settings of its own (a part without any is written `true` in YAML)."""
    return bool(dataclasses.fields(part))


@dataclass(frozen=True)
class PartInputs:
    """What a part builds from: the dataset's vocabulary, features and tables (`Catalog`), and the
    sizes every part shares."""

    catalog: "Catalog"
    dim: int  # model.embedding_dim
    sparse: bool  # model.sparse_embeddings: embedding tables emit row-sparse gradients

    @property
    def n_users(self) -> int:
        return self.catalog.n_users

    @property
    def n_items(self) -> int:
        return self.catalog.n_items

    @property
    def text_dim(self) -> int:
        return self.catalog.text_dim


@dataclass
class Users:
    """The users a head scores, one row per scored pair or per user: their ids, their vectors
    (the user tower's) and, while training, the item each row leaves out of its user's tables
    (its group's positive; None outside training)."""

    ids: torch.Tensor  # [B] int64
    vector: torch.Tensor  # [B, dim]
    leave_out: torch.Tensor | None = None

    def repeat(self, times: int) -> "Users":
        """Each row `times` times in a row (a user against each of its candidates)."""
        return Users(
            self.ids.repeat_interleave(times),
            self.vector.repeat_interleave(times, dim=0),
            None if self.leave_out is None else self.leave_out.repeat_interleave(times),
        )
