"""The user sequence (`model.user.sequence`, SASRec-like): each training positive sees only the
items its user had before it in time, checked window by window against a brute-force reading of
the interactions and by gradients (no later item can change the positive's score); it trains on
groups, and scoring outside training reads each user's last items."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from factories import model_config
from test_model import make_model

from alsoview.config import load_config
from alsoview.data.relations import user_items_in_time_order
from alsoview.errors import UserError
from alsoview.model.parts.sequence import SequenceEncoder, sequence_blocks
from alsoview.training.batches import group_rows
from alsoview.training.losses import GroupedBinaryCrossEntropy, build_loss

LENGTH = 3


def timed_catalog(seed: int = 0) -> SimpleNamespace:
    """Training pairs with times drawn from few values (many ties), in a shuffled row order."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 12, 30
    users, items = [], []
    for user in range(1, n_users):
        chosen = rng.choice(np.arange(1, n_items), rng.integers(0, 9), replace=False)
        users += [user] * len(chosen)
        items += chosen.tolist()
    users, items = np.array(users, np.int64), np.array(items, np.int64)
    times = rng.integers(0, 5, len(users)).astype(np.int64)
    shuffle = rng.permutation(len(users))
    train = SimpleNamespace(users=users[shuffle], items=items[shuffle], times=times[shuffle])
    return SimpleNamespace(train=train, n_users=n_users, n_items=n_items)


def encoder(catalog: SimpleNamespace, length: int = LENGTH) -> SequenceEncoder:
    torch.manual_seed(0)
    d = 8
    blocks = sequence_blocks(d, 1, 0.0)
    return SequenceEncoder(
        torch.nn.Embedding(catalog.n_items, d),
        torch.nn.Embedding(length, d),
        blocks,
        catalog.n_users,
        *user_items_in_time_order(catalog.train.users, catalog.train.items, catalog.train.times, catalog.n_users),
    ).eval()


def test_each_positive_sees_exactly_its_users_last_items_before_it_in_time():
    catalog = timed_catalog()
    train = catalog.train
    seq = encoder(catalog)
    users, items = torch.as_tensor(train.users), torch.as_tensor(train.items)
    windows = seq.window(users, leave_out=items).numpy()
    for row, (user, item, time) in enumerate(zip(train.users, train.items, train.times)):
        mine = np.flatnonzero(train.users == user)
        # before it: an earlier time, or the same time and a smaller item id (a fixed order for ties)
        earlier = [j for j in mine if (train.times[j], train.items[j]) < (time, item)]
        earlier.sort(key=lambda j: (train.times[j], train.items[j]))
        expected = [int(train.items[j]) for j in earlier][-LENGTH:]
        got = [int(i) for i in windows[row] if i > 0]
        assert got == expected, (user, item)
        assert all(train.times[mine][np.isin(train.items[mine], got)] <= time)  # no later item
    # outside training: the user's last LENGTH items
    last = seq.window(torch.arange(catalog.n_users)).numpy()
    for user in range(catalog.n_users):
        mine = sorted(np.flatnonzero(train.users == user), key=lambda j: (train.times[j], train.items[j]))
        assert [int(i) for i in last[user] if i > 0] == [int(train.items[j]) for j in mine][-LENGTH:]


def test_no_later_item_can_change_a_positives_user_vector():
    """Gradients: the vector a positive's user gets moves with the embeddings of earlier items
    only; every item at or after the positive has a zero gradient."""
    catalog = timed_catalog(seed=1)
    train = catalog.train
    seq = encoder(catalog, length=20)  # longer than any history: every earlier item is in the window
    checked = 0
    for user, item, time in zip(train.users, train.items, train.times):
        seq.zero_grad()
        seq(torch.tensor([user]), leave_out=torch.tensor([item])).sum().backward()
        moved = set(torch.nonzero(seq.embedding.weight.grad.abs().sum(1)).ravel().tolist())
        mine = train.users == user
        later = {int(i) for i, t in zip(train.items[mine], train.times[mine]) if (t, i) >= (time, item)}
        earlier = {int(i) for i, t in zip(train.items[mine], train.times[mine]) if (t, i) < (time, item)}
        assert not moved & later
        assert moved == earlier
        checked += bool(later - {int(item)})
    assert checked > 5  # the check met positives with later items


def test_a_user_with_no_earlier_item_gets_a_zero_vector_and_no_nan():
    catalog = timed_catalog()
    seq = encoder(catalog)
    train = catalog.train
    first = np.lexsort((train.items, train.times, train.users))
    row = first[0]
    vector = seq(torch.tensor([train.users[row]]), leave_out=torch.tensor([train.items[row]]))
    assert torch.equal(vector, torch.zeros_like(vector))
    empty_user = next(u for u in range(catalog.n_users) if u not in set(train.users.tolist()))
    assert torch.equal(seq(torch.tensor([empty_user])), torch.zeros(1, 8))


def test_the_user_sequence_trains_on_groups_with_any_loss():
    config = load_config(None, ["model.user.sequence.length=5", "sampling.negatives_per_positive=4"])
    assert group_rows(config) == 5
    assert isinstance(build_loss(config, SimpleNamespace()), GroupedBinaryCrossEntropy)
    assert group_rows(load_config(None, ["sampling.negatives_per_positive=4"])) == 1  # the design: any rows


def test_sequence_settings_are_checked():
    for bad in ("model.user.sequence.length=0", "model.user.sequence.blocks=0", "model.user.sequence.dropout=1.0"):
        with pytest.raises(UserError, match=bad.split("=")[0].replace(".", "\\.")):
            load_config(None, [bad])
    # the sequence alone can describe users
    load_config(None, ["model.user.id=false", "model.user.sequence.length=4"])


def test_the_sequence_leaves_every_other_parts_initial_weights_as_they_were():
    """The sequence draws from a random stream of its own."""
    plain = make_model(model_config("user.history=true", "heads.dot=true")).state_dict()
    with_sequence = make_model(
        model_config("user.history=true", "heads.dot=true", f"user.sequence.length={LENGTH}")
    ).state_dict()
    for key, value in plain.items():
        assert torch.equal(value, with_sequence[key]), key
    assert any(key.startswith("user_tower.parts.sequence.") for key in with_sequence)
