"""Also-view as a relation: the undirected graph, the per-user counts, the dense rows, the
`related` reference scorer, and the relation head (left-out positive, learned weight, the config
rule that it needs a ranking loss)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import (
    ALSO_VIEW_INDPTR,
    ALSO_VIEW_ITEMS,
    HISTORY_INDPTR,
    HISTORY_ITEMS,
    N_ITEMS,
    N_USERS,
    model_config,
    users_by_id,
)
from test_losses import K, grouped_batch, small_catalog
from test_model import make_model
from torch.nn import functional as F

from alsoview.config import load_config
from alsoview.data import relations
from alsoview.data.relations import (
    Neighbours,
    cooccurrence_counts,
    relation_counts,
    relation_rows,
    sequence_cooccurrence_counts,
)
from alsoview.errors import UserError
from alsoview.evaluation.baselines import CooccurrenceScorer, RelatedItemsScorer
from alsoview.training.batches import group_rows, mix_spec
from alsoview.training.losses import GroupedBinaryCrossEntropy, build_loss

NEIGHBOURS = Neighbours.from_also_view(N_ITEMS, ALSO_VIEW_INDPTR, ALSO_VIEW_ITEMS)


def also_view(item: int) -> set[int]:
    return set(ALSO_VIEW_ITEMS[ALSO_VIEW_INDPTR[item] : ALSO_VIEW_INDPTR[item + 1]].tolist())


def brute_counts() -> np.ndarray:
    counts = np.zeros((N_USERS, N_ITEMS))
    for user in range(N_USERS):
        for h in HISTORY_ITEMS[HISTORY_INDPTR[user] : HISTORY_INDPTR[user + 1]]:
            for c in range(N_ITEMS):
                counts[user, c] += c in also_view(int(h)) or int(h) in also_view(c)
    return counts


def test_neighbours_are_the_also_view_graph_in_both_directions():
    for item in range(N_ITEMS):
        expected = also_view(item) | {j for j in range(N_ITEMS) if item in also_view(j)}
        assert set(NEIGHBOURS.of(item).tolist()) == expected
    assert len(np.unique(NEIGHBOURS.keys)) == len(NEIGHBOURS.keys)


def as_dense(keys: np.ndarray, counts: np.ndarray) -> np.ndarray:
    dense = np.zeros((N_USERS, N_ITEMS), dtype=np.int64)
    dense[keys // N_ITEMS, keys % N_ITEMS] = counts
    return dense


@pytest.mark.parametrize("block_pairs", [1, 3, 1 << 22])
def test_relation_counts_match_a_brute_force_count_in_blocks_of_any_size(monkeypatch, block_pairs):
    monkeypatch.setattr(relations, "RELATION_BLOCK_PAIRS", block_pairs)
    keys, counts = relation_counts(HISTORY_INDPTR, HISTORY_ITEMS, NEIGHBOURS)
    assert np.all(np.diff(keys) > 0)  # sorted and unique, as the blocks are concatenated
    np.testing.assert_array_equal(as_dense(keys, counts), brute_counts())


def test_relation_rows_count_each_users_relations_in_any_order():
    users = np.arange(N_USERS)
    np.testing.assert_array_equal(relation_rows(HISTORY_INDPTR, HISTORY_ITEMS, NEIGHBOURS, users), brute_counts())
    reversed_rows = relation_rows(HISTORY_INDPTR, HISTORY_ITEMS, NEIGHBOURS, users[::-1])
    np.testing.assert_array_equal(reversed_rows, brute_counts()[::-1])


def test_the_related_scorer_ranks_by_relations_then_popularity():
    users = np.repeat(np.arange(N_USERS), np.diff(HISTORY_INDPTR))
    scorer = RelatedItemsScorer(users, HISTORY_ITEMS, N_USERS, N_ITEMS, NEIGHBOURS)
    every = scorer.score_all(np.arange(1, N_USERS))
    relations = brute_counts()[1:]
    popularity = np.bincount(HISTORY_ITEMS, minlength=N_ITEMS)
    tie_break = 0.5 * popularity / (popularity.max() + 1)
    np.testing.assert_allclose(every, np.log1p(relations) + tie_break, rtol=1e-6)
    assert tie_break.max() < np.log1p(1)  # popularity only breaks ties: one relation outranks it
    np.testing.assert_allclose(scorer.score(np.array([2]), np.array([[1, 4, 6]])), every[[1]][:, [1, 4, 6]])


def test_the_relation_head_scores_log_counts_and_leaves_the_positive_out_while_training():
    model = make_model(model_config("user.history=true", "heads.dot=true", "heads.mlp=false", "heads.also_view=true"))
    head = model.heads["also_view"]
    with torch.no_grad():
        head.weight.fill_(2.0)
    users, items = torch.tensor([2, 2, 3]), torch.tensor([1, 4, 6])
    expected = 2.0 * np.log1p(brute_counts()[[2, 2, 3], [1, 4, 6]])
    got = head.score(users_by_id(users), items, model.item_tower)
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=1e-6)
    # user 2 had items 2, 4 and 6; leaving out 2 (an also-view neighbour of 1 and 4 ... ) lowers their counts
    leave = torch.tensor([2, 2, 2])
    lowered = head.score(users_by_id(users, leave), items, model.item_tower).detach().numpy()
    near = np.array([int(i) in set(NEIGHBOURS.of(2).tolist()) for i in items])
    np.testing.assert_allclose(lowered, 2.0 * np.log1p(np.maximum(brute_counts()[[2, 2, 3], [1, 4, 6]] - near, 0)))
    assert head.weight.requires_grad and len(list(head.parameters())) == 1


def test_with_the_relation_head_every_loss_trains_on_groups():
    config = load_config(None, ["model.heads.also_view=true", "sampling.negatives_per_positive=4"])
    assert group_rows(config) == 5 and mix_spec(config).grouped
    loss = build_loss(config, small_catalog())
    assert isinstance(loss, GroupedBinaryCrossEntropy)
    model = make_model(model_config("heads.also_view=true")).eval()
    batch = grouped_batch()
    users, items = batch["user"].view(-1, 1 + K)[:, 0], batch["item"].view(-1, 1 + K)
    expected = F.binary_cross_entropy_with_logits(model.score_groups(users, items).reshape(-1), batch["label"])
    assert GroupedBinaryCrossEntropy(K)(model, batch).item() == pytest.approx(expected.item())


def user_items(user: int) -> set[int]:
    return set(HISTORY_ITEMS[HISTORY_INDPTR[user] : HISTORY_INDPTR[user + 1]].tolist())


def brute_cooccurrence() -> np.ndarray:
    """[N_ITEMS, N_ITEMS]: users who had both items, diagonal 0."""
    both = np.zeros((N_ITEMS, N_ITEMS))
    for user in range(N_USERS):
        for a in user_items(user):
            for b in user_items(user) - {a}:
                both[a, b] += 1
    return both


def test_cooccurrence_counts_match_a_brute_force_count():
    keys, counts = cooccurrence_counts(HISTORY_INDPTR, HISTORY_ITEMS, N_ITEMS)
    dense = np.zeros((N_ITEMS, N_ITEMS))
    dense[keys // N_ITEMS, keys % N_ITEMS] = counts
    np.testing.assert_array_equal(dense, brute_cooccurrence())
    assert (np.diff(keys) > 0).all()


def brute_cooccurrence_score(user: int, item: int, leave_out: int | None) -> float:
    """log(1 + sum over the user's items j (leave_out not among them) of (C[j, item] minus the
    user's own co-occurrence) / sqrt(n_j n_item))."""
    both = brute_cooccurrence()
    had = np.bincount(HISTORY_ITEMS, minlength=N_ITEMS)
    mine = user_items(user) - ({leave_out} if leave_out is not None else set())
    own = 1.0 if item in user_items(user) else 0.0
    total = sum((both[j, item] - own) / np.sqrt(had[j] * had[item]) for j in mine - {item})
    return float(np.log1p(total))


def test_the_cooccurrence_head_is_the_peer_without_the_users_own_cooccurrences():
    """Training: a positive is scored without its user's own co-occurrences and without itself
    among the user's items, so its label cannot leak in; scoring: items the user never had get
    the co-occurrence peer's score."""
    model = make_model(
        model_config("user.history=true", "heads.dot=true", "heads.mlp=false", "heads.cooccurrence=true")
    )
    head = model.heads["cooccurrence"]
    with torch.no_grad():
        head.weight.fill_(1.0)
    users = torch.arange(1, N_USERS).repeat_interleave(N_ITEMS - 1)
    items = torch.arange(1, N_ITEMS).repeat(N_USERS - 1)
    firsts = torch.as_tensor(HISTORY_ITEMS[HISTORY_INDPTR[users.numpy()]])  # a training group's positive
    for leave_out in (None, firsts):
        got = head.score(users_by_id(users, leave_out), items, model.item_tower).detach().numpy()
        expected = [
            brute_cooccurrence_score(int(u), int(i), None if leave_out is None else int(leave_out[k]))
            for k, (u, i) in enumerate(zip(users, items))
        ]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    peer = CooccurrenceScorer(
        np.repeat(np.arange(N_USERS), np.diff(HISTORY_INDPTR)), HISTORY_ITEMS, N_USERS, N_ITEMS
    ).score_all(np.arange(1, N_USERS))
    every = head.score_all(users_by_id(torch.arange(1, N_USERS)), model.item_tower).numpy()
    never_had = np.array([[i not in user_items(u) for i in range(N_ITEMS)] for u in range(1, N_USERS)])
    np.testing.assert_allclose(every[never_had], np.log1p(peer[never_had]), rtol=1e-5, atol=1e-6)
    assert (peer[never_had] > 0).any() and head.weight.requires_grad and len(list(head.parameters())) == 1


def in_time_order(user: int) -> list[int]:
    """The test data's time order is HISTORY_ITEMS' order."""
    return HISTORY_ITEMS[HISTORY_INDPTR[user] : HISTORY_INDPTR[user + 1]].tolist()


def own_share(user: int, j: int, i: int, proximity: float = 1.0, forward: bool = False) -> float:
    """What `user` added to C[j, i]: proximity^(g - 1) for i g places after j (or before, unless forward)."""
    order = in_time_order(user)
    if j == i or j not in order or i not in order:
        return 0.0
    gap = order.index(i) - order.index(j)
    return 0.0 if forward and gap < 0 else proximity ** (abs(gap) - 1)


def brute_sequence_cooccurrence(proximity: float, forward: bool) -> np.ndarray:
    """[N_ITEMS, N_ITEMS]: every user's own shares summed."""
    both = np.zeros((N_ITEMS, N_ITEMS))
    for user in range(N_USERS):
        for a in in_time_order(user):
            for b in in_time_order(user):
                both[a, b] += own_share(user, a, b, proximity, forward)
    return both


def brute_recency_score(
    user: int, item: int, leave_out: int | None, recency: float, proximity: float = 1.0, forward: bool = False
) -> float:
    """log(1 + sum over the user's items before `leave_out` in time order (all of them without
    it), the k-th most recent weighted recency^k, of (C[j, item] minus the user's own share of
    it) / sqrt(n_j n_item)); C counts pairs by `proximity` and `forward` (at 1 and false: users
    who had both)."""
    both = brute_sequence_cooccurrence(proximity, forward)
    had = np.bincount(HISTORY_ITEMS, minlength=N_ITEMS)
    in_order = in_time_order(user)
    earlier = in_order[: in_order.index(leave_out)] if leave_out in in_order else in_order
    total = sum(
        recency**k * (both[j, item] - own_share(user, j, item, proximity, forward)) / np.sqrt(had[j] * had[item])
        for k, j in enumerate(reversed(earlier))
        if j != item
    )
    return float(np.log1p(total))


def assert_head_matches_the_brute_force(settings: dict, leave_outs: tuple[str, ...]) -> None:
    """Pair scores against `brute_recency_score` (with `leave_out` each of None, every user's
    middle item, every user's last one), and score_all against pair scores."""
    recency = settings.get("recency", 1.0)
    chosen_settings = [f"heads.cooccurrence.{key}={str(value).lower()}" for key, value in settings.items()]
    model = make_model(
        model_config(
            "user.history=true", "heads.dot=true", "heads.mlp=false", "heads.cooccurrence=true", *chosen_settings
        )
    )
    head = model.heads["cooccurrence"]
    users = torch.arange(1, N_USERS).repeat_interleave(N_ITEMS - 1)
    items = torch.arange(1, N_ITEMS).repeat(N_USERS - 1)
    starts, ends = HISTORY_INDPTR[users.numpy()], HISTORY_INDPTR[users.numpy() + 1]
    chosen = {
        "none": None,
        "middle": torch.as_tensor(HISTORY_ITEMS[(starts + ends) // 2]),  # a positive with items before and after it
        "last": torch.as_tensor(HISTORY_ITEMS[ends - 1]),
    }
    proximity, forward = settings.get("proximity", 1.0), settings.get("forward", False)
    for name in leave_outs:
        leave_out = chosen[name]
        got = head.score(users_by_id(users, leave_out), items, model.item_tower).detach().numpy()
        expected = [
            brute_recency_score(
                int(u), int(i), None if leave_out is None else int(leave_out[k]), recency, proximity, forward
            )
            for k, (u, i) in enumerate(zip(users, items))
        ]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        assert (np.array(expected) > 0).any()
    every = head.score_all(users_by_id(torch.arange(1, N_USERS)), model.item_tower).numpy()
    pairs = head.score(users_by_id(users), items, model.item_tower).detach().numpy().reshape(N_USERS - 1, N_ITEMS - 1)
    np.testing.assert_allclose(every[:, 1:], pairs, rtol=1e-5, atol=1e-6)


def test_the_recency_weighted_cooccurrence_head_sees_only_earlier_items_most_recent_first():
    """With model.heads.cooccurrence.recency below 1 a training positive is scored from its user's
    items before it only (nothing later leaks in), the most recent weighted most; in scoring every
    item the user had counts, and score_all agrees with pair-by-pair scores."""
    assert_head_matches_the_brute_force({"recency": 0.5}, ("none", "middle", "last"))


def test_sequence_cooccurrence_counts_match_a_brute_force_count_and_are_the_plain_counts_at_one():
    for proximity, forward in ((0.5, False), (0.5, True), (1.0, True), (1.0, False)):
        keys, weights = sequence_cooccurrence_counts(HISTORY_INDPTR, HISTORY_ITEMS, N_ITEMS, proximity, forward)
        dense = np.zeros((N_ITEMS, N_ITEMS))
        dense[keys // N_ITEMS, keys % N_ITEMS] = weights
        np.testing.assert_allclose(dense, brute_sequence_cooccurrence(proximity, forward), rtol=1e-12)
        assert (np.diff(keys) > 0).all() and (weights > 0).all()
    plain_keys, plain_counts = cooccurrence_counts(HISTORY_INDPTR, HISTORY_ITEMS, N_ITEMS)
    np.testing.assert_array_equal(keys, plain_keys)
    np.testing.assert_array_equal(weights, plain_counts)


@pytest.mark.parametrize(
    "settings",
    [
        {"proximity": 0.5},
        {"proximity": 0.5, "forward": True, "recency": 0.5},
        {"forward": True},
    ],
    ids=["proximity", "proximity-forward-recency", "forward"],
)
def test_the_head_counting_pairs_by_their_places_leaves_the_users_own_share_out(settings):
    """With model.heads.cooccurrence.proximity or .forward the table weighs each user's pair
    by its places in the user's time order; the user's own share of it is taken out by the same
    rule (no label leak), as the brute force does it, in training and in scoring."""
    assert_head_matches_the_brute_force(settings, ("none", "middle", "last"))


@pytest.mark.parametrize("key", ["recency", "proximity"])
def test_cooccurrence_weights_must_be_in_zero_one(key):
    for bad in ("0", "1.5", "-0.2"):
        with pytest.raises(UserError, match=rf"model\.heads\.cooccurrence\.{key} must be in \(0, 1\]"):
            load_config(None, [f"model.heads.cooccurrence.{key}={bad}"])


def test_the_cooccurrence_head_trains_on_groups():
    config = load_config(None, ["model.heads.cooccurrence=true", "sampling.negatives_per_positive=4"])
    assert group_rows(config) == 5 and mix_spec(config).grouped
    assert isinstance(build_loss(config, small_catalog()), GroupedBinaryCrossEntropy)
