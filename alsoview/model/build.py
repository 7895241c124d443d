"""The model a `ModelConfig` describes, built part by part over a catalog.

Each part draws its initial weights from a random stream of its own, seeded by (seed, its config
key; `seeds.part_seed`): turning one part on or off never changes another part's initial weights.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

import torch
from torch import nn

from alsoview.model.config import ModelConfig
from alsoview.model.part import Part, PartInputs
from alsoview.model.scorer import TowerModel
from alsoview.model.towers import ItemTower, UserTower
from alsoview.seeds import part_seed

if TYPE_CHECKING:
    from alsoview.data.catalog import Catalog


def build_model(catalog: "Catalog", config: ModelConfig = ModelConfig(), seed: int = 0) -> TowerModel:
    """The user tower's parts, the item tower and the heads, over `catalog`'s vocabulary, item
    features and tables."""
    inputs = PartInputs(catalog, config.embedding_dim, config.sparse_embeddings)
    user = {name: _build(part, inputs, seed, f"user.{name}") for name, part in config.user.enabled()}
    with part_random_stream(seed, "item"):
        items = ItemTower.build(inputs)
    heads = {name: _build(part, inputs, seed, f"heads.{name}") for name, part in config.heads.enabled()}
    return TowerModel(UserTower(user, inputs.n_users, inputs.dim), items, heads)


def _build(part: Part, inputs: PartInputs, seed: int, key: str) -> nn.Module:
    with part_random_stream(seed, key):
        return part.build(inputs)


@contextlib.contextmanager
def part_random_stream(seed: int, key: str) -> Iterator[None]:
    """torch's global generator seeded by (seed, key) while one part draws its initial weights,
    restored afterwards (nn.Linear and friends draw from the global generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(part_seed(seed, key))
        yield
