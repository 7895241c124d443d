"""The recent-relations head (`model.heads.recent_relations`): each graph's relations of the user's
items by how many steps back they lie, checked against a brute-force reading of the tiny catalog
in training (the positive and every later item left out) and in scoring, with every item at once
and with gradients. (tests/test_model.py checks its `score_all` against its pairs, as every part's.)"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from factories import (
    ALSO_BUY_INDPTR,
    ALSO_BUY_ITEMS,
    ALSO_VIEW_INDPTR,
    ALSO_VIEW_ITEMS,
    HISTORY_INDPTR,
    HISTORY_ITEMS,
    N_ITEMS,
    N_USERS,
    model_config,
    users_by_id,
)
from test_model import make_model

from alsoview.config import load_config
from alsoview.errors import UserError

GRAPHS = {"also_view": (ALSO_VIEW_INDPTR, ALSO_VIEW_ITEMS), "also_buy": (ALSO_BUY_INDPTR, ALSO_BUY_ITEMS)}


def neighbours(graph: str) -> list[set[int]]:
    indptr, items = GRAPHS[graph]
    out = [set() for _ in range(N_ITEMS)]
    for a in range(N_ITEMS):
        for b in items[indptr[a] : indptr[a + 1]]:
            out[a].add(int(b))
            out[int(b)].add(a)
    return out


def brute(head, graphs: tuple[str, ...], user: int, item: int, leave_out: int | None) -> float:
    """The head's logit as the module docstring defines it, one item at a time."""
    sequence = HISTORY_ITEMS[HISTORY_INDPTR[user] : HISTORY_INDPTR[user + 1]].tolist()  # in time order
    counted = sequence[: sequence.index(leave_out)] if leave_out in sequence else sequence
    pulls = torch.nn.functional.softplus(head.pull).detach().numpy()
    total = 0.0
    for g, graph in enumerate(graphs):
        near = neighbours(graph)
        pulled = 0.0
        for steps_back, j in enumerate(reversed(counted)):
            bucket = min(int(math.floor(math.log2(steps_back + 1))), head.buckets - 1)
            pulled += pulls[g, bucket] if item in near[j] else 0.0
        total += float(head.scale[g].detach()) * math.log1p(pulled)
    return total


@pytest.mark.parametrize(
    "settings", [(), ("heads.recent_relations.graphs=[also_buy]", "heads.recent_relations.buckets=2")]
)
def test_the_head_pulls_each_graphs_relations_by_steps_back_with_the_positive_and_later_items_left_out(settings):
    model = make_model(model_config("heads.mlp=false", "heads.recent_relations=true", *settings))
    head = model.heads["recent_relations"]
    graphs = model_config("heads.recent_relations=true", *settings).heads.recent_relations.graphs
    with torch.no_grad():  # weights off their start, so each bucket and graph shows
        head.scale.copy_(torch.linspace(0.5, 1.5, len(graphs)))
        head.pull.add_(torch.randn(head.pull.shape, generator=torch.Generator().manual_seed(0)))
    users = torch.arange(1, N_USERS).repeat_interleave(N_ITEMS - 1)
    items = torch.arange(1, N_ITEMS).repeat(N_USERS - 1)
    starts, ends = HISTORY_INDPTR[users.numpy()], HISTORY_INDPTR[users.numpy() + 1]
    for leave_out in (
        None,
        torch.as_tensor(HISTORY_ITEMS[(starts + ends) // 2]),
        torch.as_tensor(HISTORY_ITEMS[ends - 1]),
    ):
        got = head.score(users_by_id(users, leave_out), items, model.item_tower).detach().numpy()
        expected = [
            brute(head, graphs, int(u), int(i), None if leave_out is None else int(leave_out[k]))
            for k, (u, i) in enumerate(zip(users, items))
        ]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert (np.abs(expected) > 0).any()
        # every item at once, in training as in scoring, equals the pairs
        rows = torch.arange(1, N_USERS)
        every = head.score_every(users_by_id(rows, None if leave_out is None else leave_out[:: N_ITEMS - 1]), None)
        np.testing.assert_allclose(every[:, 1:].detach().numpy().reshape(-1), got, rtol=1e-5, atol=1e-6)
    every.sum().backward()
    assert head.scale.grad is not None and head.pull.grad is not None


def test_the_head_starts_as_the_other_heads_model_and_trains_on_groups():
    model = make_model(model_config("heads.mlp=false", "heads.dot=true", "heads.recent_relations=true"))
    assert torch.equal(model.heads["recent_relations"].scale, torch.zeros(2))  # adds nothing at first
    config = load_config(None, ["model.heads.recent_relations=true", "sampling.negatives_per_positive=4"])
    assert config.model.needs_groups


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("graphs=[also_view, also_view]", "distinct graphs"),
        ("graphs=[likes]", "distinct graphs"),
        ("buckets=0", r"in \[1, 16\]"),
    ],
)
def test_its_settings_are_checked(setting, message):
    with pytest.raises(
        UserError, match=rf"model\.heads\.recent_relations\.{setting.split('=')[0]} must be .*{message}"
    ):
        load_config(None, [f"model.heads.recent_relations.{setting}"])
