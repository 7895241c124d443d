"""Visitors described by their items: the model's view of an item list scores as a known user
with those items does, shares every weight, and names what it cannot use."""

from __future__ import annotations

import numpy as np
import torch

from alsoview.model import build_model
from alsoview.model.visitors import for_visitors, visitor_catalog
from tests.factories import HISTORY_INDPTR, HISTORY_ITEMS, model_config, tiny_catalog

# Every part that reads a user's items, except the co-occurrence head (below: its table holds
# the known users' own pairs, never a visitor's).
READS_ITEMS = (
    "user.id=false", "user.history=true", "user.sequence.length=3", "heads.mlp=true", "heads.dot=true",
    "heads.also_view=true", "heads.also_buy=true", "heads.recent_relations=true",
)  # fmt: skip


def _trained_like(settings: tuple[str, ...], seed: int = 0):
    """A model whose weights are all random but nonzero (as after training: the relation heads
    start at 0)."""
    catalog = tiny_catalog()
    model = build_model(catalog, model_config(*settings), seed=seed).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return catalog, model


def _items_of(user: int) -> np.ndarray:
    return HISTORY_ITEMS[HISTORY_INDPTR[user] : HISTORY_INDPTR[user + 1]]


def test_a_visitor_with_a_users_items_scores_as_that_user():
    catalog, model = _trained_like(READS_ITEMS)
    users = [1, 2, 3, 4]
    view = for_visitors(model, catalog, [_items_of(u) for u in users])
    assert view.left_out == ()
    expected = model.score_all_items(torch.tensor(users))
    got = view.model.score_all_items(torch.arange(1, len(users) + 1))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    pairs = view.model(torch.tensor([1, 1, 2]), torch.tensor([4, 5, 1]))  # the pair path agrees
    torch.testing.assert_close(pairs, expected[[0, 0, 1], [4, 5, 1]], rtol=1e-5, atol=1e-5)


def test_the_view_shares_the_weights_and_leaves_the_model_as_it_was():
    catalog, model = _trained_like(READS_ITEMS)
    before = model.score_all_items(torch.tensor([2]))
    view = for_visitors(model, catalog, [np.array([5, 6])])
    trained = {id(p) for p in model.parameters()}
    assert {id(p) for p in view.model.parameters()} == trained
    torch.testing.assert_close(model.score_all_items(torch.tensor([2])), before)
    assert model.n_users == catalog.n_users and view.model.n_users == 2


def test_the_order_of_a_visitors_items_is_their_time_order():
    catalog, model = _trained_like(("user.id=false", "user.sequence.length=3", "heads.mlp=false", "heads.dot=true"))
    view = for_visitors(model, catalog, [np.array([1, 3]), np.array([3, 1]), np.array([3, 1, 3])])
    scores = view.model.score_all_items(torch.tensor([1, 2, 3]))
    assert not torch.allclose(scores[0], scores[1])  # a sequence reads order
    torch.testing.assert_close(scores[2], scores[0])  # an item listed twice counts at its last place


def test_a_visitors_cooccurrence_counts_every_pair_of_the_table():
    catalog, model = _trained_like(("user.id=false", "user.history=true", "heads.mlp=false", "heads.cooccurrence=true"))
    head = model.heads["cooccurrence"]
    view = for_visitors(model, catalog, [np.array([2])])
    scores = view.model.heads["cooccurrence"].score_all(view.model.users(torch.tensor([1])), model.item_tower)[0]
    # a visitor with item 2 alone: item 2's row of the normalised table, no own pair taken out
    row = torch.zeros(catalog.n_items)
    start, end = int(head.row_starts[2]), int(head.row_starts[3])
    row[head.row_items[start:end]] = head.row_values[start:end]
    torch.testing.assert_close(scores, head.weight * torch.log1p(row))
    pairs = view.model.heads["cooccurrence"].score(
        view.model.users(torch.tensor([1, 1, 1])), torch.tensor([1, 4, 6]), model.item_tower
    )
    torch.testing.assert_close(pairs, scores[[1, 4, 6]])


def test_a_user_id_part_is_left_out_and_an_id_alone_cannot_describe_a_visitor():
    catalog, model = _trained_like(("user.id=true", "user.history=true", "heads.dot=true"))
    view = for_visitors(model, catalog, [np.array([1, 2])])
    assert view.left_out == ("id",) and view.model is not None
    design = build_model(catalog, model_config(), seed=0)  # the original design: a user is an id
    assert for_visitors(design, catalog, [np.array([1])]).model is None


def test_visitor_catalog_numbers_visitors_from_one():
    catalog = visitor_catalog(tiny_catalog(), [np.array([4, 2, 4]), np.array([6])])
    assert catalog.n_users == 3
    assert list(catalog.train.users) == [1, 1, 2] and list(catalog.train.items) == [2, 4, 6]
    assert list(catalog.train.times) == [0, 1, 0]
