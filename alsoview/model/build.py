"""The config mapped to parts, in one place: which towers and heads a model has.

Each part draws its initial weights from a random stream of its own, seeded by (seed, the part's
name): turning one part on or off never changes another part's initial weights. A part no head
uses is not built.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from torch import nn

from alsoview.config import ModelConfig
from alsoview.data.relations import sequence_cooccurrence_counts
from alsoview.model.cooccurrence_head import CooccurrenceHead
from alsoview.model.dot_head import DotHead
from alsoview.model.features import ItemFeatures
from alsoview.model.history import HistoryBag
from alsoview.model.ids import init_embedding
from alsoview.model.mlp_head import MLPHead, mlp_layers
from alsoview.model.relation_head import RelationHead
from alsoview.model.scorer import TowerModel
from alsoview.model.sequence import SequenceEncoder, sequence_blocks
from alsoview.model.towers import ItemTower, UserTower
from alsoview.seeds import part_seed

if TYPE_CHECKING:
    from alsoview.config import Config
    from alsoview.data.catalog import Catalog


def build_model(catalog: "Catalog", config: "Config") -> TowerModel:
    """The configured model over a prepared dataset's vocabulary and item features."""
    m = config.model
    needs_history = m.user_history or m.also_view_relation or m.also_buy_relation
    history = catalog.train_history if needs_history else None
    return build_tower_model(
        n_users=catalog.n_users,
        n_items=catalog.n_items,
        n_brands=catalog.n_brands,
        text_dim=catalog.text_dim,
        # copies: the catalog's arrays are read-only views into Ray's object store
        item_brand=torch.tensor(catalog.item_brand),
        item_price=torch.tensor(catalog.item_price),
        item_price_missing=torch.tensor(catalog.item_price_missing),
        item_text=torch.tensor(catalog.item_text),
        config=config.model,
        user_history=history if config.model.user_history else None,
        relations=relation_tables(catalog, "also_view") if m.also_view_relation else None,
        also_buy_relations=relation_tables(catalog, "also_buy") if m.also_buy_relation else None,
        user_sequence=catalog.train_sequence if config.model.user_sequence else None,
        cooccurrence=catalog.train_sequence if m.cooccurrence_relation else None,
        seed=config.seed,
    )


def build_tower_model(
    n_users: int,
    n_items: int,
    n_brands: int,
    text_dim: int,
    item_brand: torch.Tensor,
    item_price: torch.Tensor,
    item_price_missing: torch.Tensor,
    item_text: torch.Tensor | None,
    config: ModelConfig = ModelConfig(),
    user_history: tuple[np.ndarray, np.ndarray] | None = None,
    relations: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    user_sequence: tuple[np.ndarray, np.ndarray] | None = None,
    also_buy_relations: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    cooccurrence: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 0,
) -> TowerModel:
    """Towers and heads for `config` over these vocabularies and feature tables."""
    if min(n_users, n_items, n_brands) < 1 or text_dim < 0:
        raise ValueError("vocabulary sizes must be >= 1 (id 0 is reserved) and text_dim >= 0")
    if config.user_history and user_history is None:
        raise ValueError("model.user_history needs the users' training items (user_history=(indptr, items))")
    if config.also_view_relation and relations is None:
        raise ValueError("model.also_view_relation needs relations=(keys, counts, neighbour keys): relation_tables")
    if config.also_buy_relation and also_buy_relations is None:
        raise ValueError("model.also_buy_relation needs also_buy_relations=(keys, counts, neighbour keys)")
    if config.cooccurrence_relation and cooccurrence is None:
        raise ValueError("model.cooccurrence_relation needs the users' training items in time order: training_sequence")
    if config.user_sequence and user_sequence is None:
        raise ValueError("model.user_sequence needs the users' training items in time order: training_sequence")
    features = ItemFeatures(n_brands, item_brand, item_price, item_price_missing, item_text, text_dim)
    if features.n_items != n_items:
        raise ValueError(f"item_brand must have shape ({n_items},), got ({features.n_items},)")
    d, sparse = config.embedding_dim, config.sparse_embeddings

    user_id = None
    if config.user_id:
        with part_random_stream(seed, "user.id"):
            user_id = nn.Embedding(n_users, d, sparse=sparse)
            init_embedding(user_id)
    history = None
    if config.user_history:
        with part_random_stream(seed, "user.history"):
            bag = nn.EmbeddingBag(n_items, d, mode="sum", sparse=sparse)
            init_embedding(bag)
            history = HistoryBag(bag, n_users, *user_history)
    sequence = None
    if config.user_sequence:
        with part_random_stream(seed, "user.sequence"):
            embedding, positions = nn.Embedding(n_items, d, sparse=sparse), nn.Embedding(config.user_sequence, d)
            init_embedding(embedding)
            nn.init.normal_(positions.weight, std=embedding.weight[1:].std().item() if n_items > 2 else 0.01)
            blocks = sequence_blocks(d, config.sequence_blocks, config.sequence_dropout)
            sequence = SequenceEncoder(embedding, positions, blocks, n_users, *user_sequence)

    with part_random_stream(seed, "item"):
        item_id = nn.Embedding(n_items, d, sparse=sparse)
        brand = nn.Embedding(n_brands, d, sparse=sparse)
        init_embedding(item_id)
        init_embedding(brand)

    with_text = config.item_features and text_dim > 0
    heads: dict[str, nn.Module] = {}
    if config.mlp:
        with part_random_stream(seed, "heads.mlp"):
            text_projection = nn.Linear(text_dim, config.text_projection_dim) if with_text else None
            head = MLPHead(d, nn.Sequential(), text_projection, config.item_features, config.product_interaction)
            width = d + head.item_width() + (d if config.product_interaction else 0)
            head.layers = mlp_layers(width, config.hidden_dims, config.dropout)
            heads["mlp"] = head
    if config.dot_product:
        with part_random_stream(seed, "heads.dot"):
            item_bias = nn.Embedding(n_items, 1, sparse=sparse)
            nn.init.zeros_(item_bias.weight)
            heads["dot"] = DotHead(
                item_bias, nn.Linear(text_dim, d, bias=False) if with_text else None, config.item_features
            )
    if config.also_view_relation:
        heads["relation"] = RelationHead(n_items, *relations)
    if config.also_buy_relation:
        heads["also_buy"] = RelationHead(n_items, *also_buy_relations)
    if config.cooccurrence_relation:
        heads["cooccurrence"] = CooccurrenceHead(
            n_users,
            n_items,
            *cooccurrence,
            # the table counts pairs as the head takes the user's own share out (proximity, forward)
            *sequence_cooccurrence_counts(
                *cooccurrence, n_items, config.cooccurrence_proximity, config.cooccurrence_forward
            ),
            recency=config.cooccurrence_recency,
            proximity=config.cooccurrence_proximity,
            forward=config.cooccurrence_forward,
        )
    user_tower = UserTower(n_users, d, user_id, history, sequence)
    return TowerModel(user_tower, ItemTower(item_id, brand, features), heads)


@contextlib.contextmanager
def part_random_stream(seed: int, part: str) -> Iterator[None]:
    """torch's global generator seeded by (seed, part) while one part draws its initial weights,
    restored afterwards (nn.Linear and friends draw from the global generator)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(part_seed(seed, part))
        yield


def relation_tables(catalog: "Catalog", graph: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A relation head's tables (`Catalog.train_relations`): (user, item) relation keys and
    counts, and the undirected graph's keys (to leave a user's positive out while training)."""
    relations = catalog.train_relations(graph)
    return relations.keys, relations.counts, relations.neighbour_keys


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters (buffers such as the item feature tables are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
