"""The `model` section: the registry of parts, one field each, and the rules between them.

    model:
      embedding_dim: 64
      user:   {id: true, history: false, sequence: {length: 20}}
      heads:  {mlp: {dropout: 0.5}, dot: false, also_view: false, also_buy: false, cooccurrence: false}

A part is on when its key holds `true` (its default settings) or a mapping of settings, off when
it holds `false` or `null`. The defaults are the original design: a user id embedding and the MLP.
A new part is one module under `parts/` and one field below (user parts are summed into the user
vector and heads' logits are summed, each in the order of the fields).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar, Iterator

from alsoview.errors import UserError, check_setting
from alsoview.model.part import Part
from alsoview.model.parts.cooccurrence import CooccurrenceConfig
from alsoview.model.parts.dot import DotConfig
from alsoview.model.parts.history import HistoryConfig
from alsoview.model.parts.mlp import MLPConfig
from alsoview.model.parts.recent_relations import RecentRelationsConfig
from alsoview.model.parts.relation import AlsoBuyConfig, AlsoViewConfig
from alsoview.model.parts.sequence import SequenceConfig
from alsoview.model.parts.user_id import UserIdConfig


def _enabled(parts: object) -> Iterator[tuple[str, Part]]:
    for f in dataclasses.fields(parts):
        part = getattr(parts, f.name)
        if part is not None:
            yield f.name, part


@dataclass(frozen=True)
class UserParts:
    """`model.user`: the parts whose vectors sum to a user's vector (at least one on)."""

    id: UserIdConfig | None = field(default_factory=UserIdConfig)
    history: HistoryConfig | None = None  # the bag of the user's training items (FISM)
    sequence: SequenceConfig | None = None  # the user's last items in time order (SASRec)

    def enabled(self) -> Iterator[tuple[str, Part]]:
        return _enabled(self)


@dataclass(frozen=True)
class Heads:
    """`model.heads`: the parts whose logits sum to a pair's logit (at least one on)."""

    mlp: MLPConfig | None = field(default_factory=MLPConfig)  # the design's MLP over the concatenation
    dot: DotConfig | None = None  # user . item + item bias
    also_view: AlsoViewConfig | None = None  # how many of the user's items are also-view neighbours
    also_buy: AlsoBuyConfig | None = None  # the same over also-bought
    cooccurrence: CooccurrenceConfig | None = None  # the co-occurrence peer's score, learned weight
    recent_relations: RecentRelationsConfig | None = None  # the graphs' relations by steps back, learned pull

    def enabled(self) -> Iterator[tuple[str, Part]]:
        return _enabled(self)


@dataclass(frozen=True)
class ModelConfig:
    """The model's parts and what they share; the defaults are the original design: user, item and
    brand embeddings of dim 64, the description projected, Dense(128) -> Dense(64) -> Dense(1)."""

    embedding_dim: int = 64  # the size of every user and item vector
    # Sparse embedding gradients with SparseAdam's update (only the rows in a batch move) for the
    # embeddings, Adam for the rest (benchmarks/results/training.json). Works with several workers
    # (training/gradient_sync.py). Off by default: the design's dense Adam.
    sparse_embeddings: bool = False
    user: UserParts = field(default_factory=UserParts)
    heads: Heads = field(default_factory=Heads)

    # The flat keys of earlier versions, and where each went (a config naming one stops with this).
    moved_keys: ClassVar[dict[str, str]] = {
        "hidden_dims": "model.heads.mlp.hidden_dims",
        "dropout": "model.heads.mlp.dropout",
        "text_projection_dim": "model.heads.mlp.text_projection_dim",
        "product_interaction": "model.heads.mlp.product_interaction",
        "item_features": "model.heads.mlp.item_features (and model.heads.dot.item_features)",
        "mlp": "model.heads.mlp (true, false or its settings)",
        "dot_product": "model.heads.dot",
        "user_id": "model.user.id",
        "user_history": "model.user.history",
        "user_sequence": "model.user.sequence.length (0 was off: model.user.sequence=false)",
        "sequence_blocks": "model.user.sequence.blocks",
        "sequence_dropout": "model.user.sequence.dropout",
        "also_view_relation": "model.heads.also_view",
        "also_buy_relation": "model.heads.also_buy",
        "cooccurrence_relation": "model.heads.cooccurrence",
        "cooccurrence_recency": "model.heads.cooccurrence.recency",
        "cooccurrence_proximity": "model.heads.cooccurrence.proximity",
        "cooccurrence_forward": "model.heads.cooccurrence.forward",
    }

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every part's own checks, then the rules between parts (the only place they live)."""
        check_setting(self.embedding_dim >= 1, "model.embedding_dim", ">= 1", self.embedding_dim)
        for name, part in self.parts():
            part.validate(f"model.{name}")
        if not any(True for _ in self.user.enabled()):
            users = ", ".join(_names(UserParts))
            raise UserError(f"config: model.user needs at least one of {users} (users would have no vector)")
        if not any(True for _ in self.heads.enabled()):
            heads = ", ".join(_names(Heads))
            raise UserError(f"config: model.heads needs at least one of {heads} (nothing would score)")

    def parts(self) -> Iterator[tuple[str, Part]]:
        """Every part that is on, by its key under `model` ("user.id", ..., "heads.mlp", ...)."""
        for section in ("user", "heads"):
            for name, part in getattr(self, section).enabled():
                yield f"{section}.{name}", part

    @property
    def needs_groups(self) -> bool:
        """Whether a part that is on needs batches of whole groups (`Part.needs_groups`)."""
        return any(part.needs_groups for _, part in self.parts())


def _names(parts: type) -> list[str]:
    return [f.name for f in dataclasses.fields(parts)]
