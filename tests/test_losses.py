"""The ranking losses: the grouped sample layout they read, whole groups per batch, each loss
against a brute-force computation, the logQ correction, the in-batch mask; and each loss trains."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from factories import N_ITEMS, N_USERS, model_config
from test_model import make_model
from torch.nn import functional as F

from alsoview.config import load_config
from alsoview.data.tables import SamplingTables
from alsoview.errors import UserError
from alsoview.model import ModelConfig
from alsoview.sampling.blocks import MixSpec, mix_block
from alsoview.training.batches import group_rows, mix_spec, rows_per_batch
from alsoview.training.losses import (
    GroupedBinaryCrossEntropy,
    HardestCandidates,
    PairwiseLoss,
    SampledSoftmax,
    SamplingLogQ,
    build_loss,
    groups,
)

K = 3


def small_catalog(seed: int = 0) -> SimpleNamespace:
    """What mix_block reads of a Catalog: the training positives and the sampling tables."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 30, 40
    user_items = [sorted(rng.choice(np.arange(1, n_items), 4, replace=False).tolist()) for _ in range(n_users)]
    also_view = [[] if i == 0 else sorted({int(j) for j in rng.integers(1, n_items, 6)} - {i}) for i in range(n_items)]
    users = np.repeat(np.arange(n_users), 4)
    items = np.array([i for row in user_items for i in row])
    tables = SamplingTables.from_lists(n_items, also_view, user_items, np.bincount(items, minlength=n_items))
    return SimpleNamespace(train=SimpleNamespace(users=users, items=items), sampling=tables)


def spec(negatives: int, grouped: bool) -> MixSpec:
    return MixSpec(50, 7, negatives, 0.5, 0, "uniform", 0.75, grouped=grouped, exclude_related=False)


def mix(grouped: bool, block: int = 0) -> dict[str, np.ndarray]:
    return mix_block(block, small_catalog(), spec(K, grouped), epoch=2)


def test_a_grouped_block_is_each_positive_then_its_own_negatives_with_the_same_samples():
    grouped, shuffled = mix(True), mix(False)
    rows = grouped["label"].reshape(-1, 1 + K)
    assert (rows[:, 0] == 1).all() and (rows[:, 1:] == 0).all()
    users = grouped["user"].reshape(-1, 1 + K)
    assert (users == users[:, :1]).all()  # a group is one user's
    as_set = lambda cols: sorted(zip(*(cols[c].tolist() for c in ("user", "item", "label", "is_hard"))))  # noqa: E731
    assert as_set(grouped) == as_set(shuffled)  # the same draws, in another order
    assert not np.array_equal(grouped["item"][:: 1 + K], np.sort(grouped["item"][:: 1 + K]))  # positives shuffled


def test_batches_hold_whole_groups_for_the_ranking_losses():
    config = load_config(None, ["train.loss=softmax", "sampling.negatives_per_positive=4", "train.batch_size=512"])
    assert group_rows(config) == 5 and rows_per_batch(config, 1) == 510 and rows_per_batch(config, 2) == 255
    assert rows_per_batch(load_config(None, ["train.batch_size=512"]), 2) == 256  # bce: any rows
    tiny = load_config(None, ["train.loss=bpr", "sampling.negatives_per_positive=8", "train.batch_size=4"])
    assert rows_per_batch(tiny, 1) == 9  # at least one group
    with pytest.raises(ValueError, match="whole groups of 1 \\+ 3 rows"):
        groups({"label": torch.ones(7), "user": torch.ones(7), "item": torch.ones(7), "is_hard": torch.ones(7)}, 3)


@pytest.mark.parametrize(
    "config",
    [ModelConfig(), model_config("user.history=true", "heads.dot=true", "heads.mlp=false", "user.id=false")],
    ids=["mlp", "dot"],
)
def test_scores_of_groups_equal_forward_per_pair(config):
    model = make_model(config).eval()
    gen = torch.Generator().manual_seed(3)
    users = torch.randint(1, N_USERS, (6,), generator=gen)
    candidates = torch.randint(1, N_ITEMS, (6, 5), generator=gen)
    expected = model(users.repeat_interleave(5), candidates.reshape(-1)).view(6, 5)
    torch.testing.assert_close(model.score_groups(users, candidates), expected)


def grouped_batch(groups_: int = 8, seed: int = 5) -> dict[str, torch.Tensor]:
    return grouped_batch_of(K, groups_, seed)


def grouped_batch_of(k: int, groups_: int = 8, seed: int = 5) -> dict[str, torch.Tensor]:
    """Groups of a positive and k negatives of random users and items."""
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(1, N_USERS, (groups_,), generator=gen).repeat_interleave(1 + k)
    items = torch.randint(1, N_ITEMS, (groups_ * (1 + k),), generator=gen)
    label = torch.zeros(groups_, 1 + k)
    label[:, 0] = 1
    hard = (torch.rand(groups_, 1 + k, generator=gen) < 0.5).float()
    hard[:, 0] = 0
    return {"user": users, "item": items, "label": label.reshape(-1), "is_hard": hard.reshape(-1)}


class ExplicitScores(torch.nn.Module):
    """A 'model' whose score of (user, item) is a fixed table entry: the losses' arithmetic alone."""

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.randn(N_USERS, N_ITEMS, generator=torch.Generator().manual_seed(0))

    def score_groups(self, users: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return self.table[users[:, None], candidates]


def test_bpr_is_minus_log_sigmoid_of_each_positive_over_each_own_negative():
    model, batch = ExplicitScores(), grouped_batch()
    users, items = batch["user"].view(-1, 1 + K)[:, 0], batch["item"].view(-1, 1 + K)
    expected = np.mean(
        [
            -np.log(1 / (1 + np.exp(-(model.table[u, row[0]] - model.table[u, j]).item())))
            for u, row in zip(users.tolist(), items.tolist())
            for j in row[1:]
        ]
    )
    assert PairwiseLoss(K)(model, batch).item() == pytest.approx(expected, rel=1e-5)


def test_the_sampled_softmax_is_cross_entropy_over_own_and_in_batch_candidates():
    model, batch = ExplicitScores(), grouped_batch()
    users, items = batch["user"].view(-1, 1 + K)[:, 0], batch["item"].view(-1, 1 + K)
    positives = items[:, 0]
    total = 0.0
    for u, row in zip(users.tolist(), items.tolist()):
        others = [p for p in positives.tolist() if p != row[0]]  # not its own item
        logits = torch.tensor([model.table[u, j].item() for j in row + others]) / 0.5
        total += F.cross_entropy(logits[None], torch.tensor([0])).item()
    loss = SampledSoftmax(K, 0.5, None, in_batch=True)(model, batch)
    assert loss.item() == pytest.approx(total / len(users), rel=1e-5)
    own_only = SampledSoftmax(K, 1.0, None, in_batch=False)(model, batch)
    expected = F.cross_entropy(model.table[users[:, None], items], torch.zeros(len(users), dtype=torch.long))
    assert own_only.item() == pytest.approx(expected.item(), rel=1e-6)


def test_a_uniform_log_q_changes_nothing_and_a_skewed_one_lowers_often_drawn_candidates():
    model, batch = ExplicitScores(), grouped_batch()
    flat = torch.full((N_ITEMS,), -3.0)
    uniform = SamplingLogQ(flat, flat, flat)
    plain = SampledSoftmax(K, 1.0, None, in_batch=True)(model, batch)
    assert SampledSoftmax(K, 1.0, uniform, in_batch=True)(model, batch).item() == pytest.approx(plain.item(), rel=1e-6)
    # every negative drawn far more often than the positives: their corrected logits drop, the loss too
    skewed = SamplingLogQ(torch.full((N_ITEMS,), -6.0), flat, flat)
    assert SampledSoftmax(K, 1.0, skewed, in_batch=False)(model, batch) < SampledSoftmax(K, 1.0, None, False)(
        model, batch
    )


def test_the_log_q_tables_follow_the_sampling():
    catalog = small_catalog()
    config = load_config(None, ["train.loss=softmax"])
    log_q = SamplingLogQ.of(catalog, config)
    popularity = catalog.sampling.item_popularity
    item = int(np.argmax(popularity))
    assert log_q.positive[item].item() == pytest.approx(np.log(popularity[item] / popularity.sum()), rel=1e-5)
    assert log_q.random[5].item() == pytest.approx(-np.log(39), rel=1e-5)  # uniform over items 1..39
    length = np.diff(catalog.sampling.also_view_indptr)[7]
    assert log_q.also_view[7].item() == pytest.approx(-np.log(length), rel=1e-5)
    weighted = SamplingLogQ.of(catalog, load_config(None, ["sampling.random_pool=popularity"]))
    probabilities = torch.exp(weighted.random[1:])
    assert probabilities.sum().item() == pytest.approx(1.0, rel=1e-5)


def test_build_loss_maps_the_config():
    catalog = small_catalog()
    assert build_loss(load_config(None, []), catalog).__name__ == "binary_cross_entropy"
    assert isinstance(build_loss(load_config(None, ["train.loss=bpr"]), catalog), PairwiseLoss)
    softmax = build_loss(load_config(None, ["train.loss=softmax", "train.logq_correction=false"]), catalog)
    assert isinstance(softmax, SampledSoftmax) and softmax.log_q is None and softmax.in_batch


def test_the_hardest_of_each_negatives_candidates_trains():
    """K = 3 negatives of C = 2 candidates each (groups of 1 + 6): per negative the candidate
    with the higher score is kept, with its is_hard flag, and the inner loss sees groups of 1 + 3."""
    candidates = 2
    model = ExplicitScores()
    batch = grouped_batch_of(K * candidates)
    seen: list[dict[str, torch.Tensor]] = []

    def inner(model_: torch.nn.Module, kept: dict[str, torch.Tensor]) -> torch.Tensor:
        seen.append(kept)
        return torch.tensor(0.0)

    HardestCandidates(inner, K, candidates)(model, batch)
    (kept,) = seen
    width = 1 + K * candidates
    for g, (users, items, hard) in enumerate(
        zip(batch["user"].view(-1, width), batch["item"].view(-1, width), batch["is_hard"].view(-1, width))
    ):
        scores = model.table[users[0], items]
        expected_items, expected_hard = [int(items[0])], [0.0]
        for slot in range(K):
            pair = slice(1 + slot * candidates, 1 + (slot + 1) * candidates)
            best = int(torch.argmax(scores[pair])) + pair.start
            expected_items.append(int(items[best]))
            expected_hard.append(float(hard[best]))
        rows = slice(g * (1 + K), (g + 1) * (1 + K))
        assert kept["item"][rows].tolist() == expected_items
        assert kept["is_hard"][rows].tolist() == expected_hard
        assert kept["user"][rows].tolist() == [int(users[0])] * (1 + K)
        assert kept["label"][rows].tolist() == [1.0] + [0.0] * K


def test_candidates_per_negative_draws_more_and_batches_count_trained_groups():
    config = load_config(
        None, ["sampling.candidates_per_negative=3", "sampling.negatives_per_positive=4", "train.batch_size=512"]
    )
    assert group_rows(config) == 13  # 1 + 4 x 3 drawn
    assert rows_per_batch(config, 1) == 102 * 13  # 102 groups of 1 + 4 trained rows
    assert mix_spec(config).negatives == 12
    loss = build_loss(config, small_catalog())
    assert isinstance(loss, HardestCandidates) and isinstance(loss.loss, GroupedBinaryCrossEntropy)
    block = mix_block(0, small_catalog(), spec(12, grouped=True), epoch=2)
    assert (block["label"].reshape(-1, 13)[:, 0] == 1).all()  # groups of 1 + 12 drawn
    model = make_model(ModelConfig()).train()
    value = loss(model, grouped_batch_of(12, groups_=4))
    value.backward()
    assert torch.isfinite(value) and model.item_tower.id_embedding.weight.grad.abs().sum() > 0


# Parts that score every item in training, alone and together (dropout off: training mode is then
# deterministic, and the positive's leave-out is what differs from scoring)
EVERY_ITEM_MODELS = [
    ("user.history=true", "user.id=false", "heads.mlp=false", "heads.dot=true"),
    ("heads.mlp=false", "heads.dot=true", "heads.also_view=true", "heads.also_buy=true"),
    ("heads.mlp=false", "heads.dot=true", "heads.cooccurrence=true"),
    ("heads.mlp=false", "heads.dot=true", "heads.cooccurrence.recency=0.5", "heads.cooccurrence.forward=true"),
    ("heads.mlp=false", "heads.dot=true", "user.sequence.length=3", "user.sequence.dropout=0", "user.history=true"),
]


@pytest.mark.parametrize("settings", EVERY_ITEM_MODELS, ids=["+".join(s) for s in EVERY_ITEM_MODELS])
def test_scoring_every_item_in_training_equals_scoring_each_candidate_of_the_positives_group(settings):
    """`score_every` with the positive left out gives every item the logit `score_groups` gives it
    as a candidate of that positive's group, with gradients for the weights."""
    model = make_model(model_config(*settings)).train()
    with torch.no_grad():  # move every weight off its start so every head contributes
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    users = torch.arange(1, N_USERS)
    positives = torch.tensor([1, 2, 5, 1])  # users 1, 2 and 4 had theirs; user 3 had item 5
    every = model.score_every(users, positives)
    candidates = torch.cat([positives[:, None], torch.arange(N_ITEMS).expand(len(users), -1)], dim=1)
    torch.testing.assert_close(every, model.score_groups(users, candidates)[:, 1:], rtol=1e-4, atol=1e-4)
    every.sum().backward()
    assert all(p.grad is not None for name, p in model.named_parameters() if name.startswith("heads."))


def test_the_full_softmax_is_cross_entropy_over_every_item_but_the_users_others():
    from factories import tiny_catalog

    config = load_config(None, ["train.loss=full_softmax", "model.heads.mlp=false", "model.heads.dot=true",
                                "model.user.history=true", "sampling.negatives_per_positive=1"])  # fmt: skip
    catalog = tiny_catalog()
    loss = build_loss(config, catalog)
    model = make_model(config.model).train()
    batch = grouped_batch_of(1, groups_=6)
    users, items, _ = groups(batch, 1)
    logits = model.score_every(users, items[:, 0]).detach()
    expected = []
    for row, (user, positive) in enumerate(zip(users.tolist(), items[:, 0].tolist())):
        start, end = catalog.sampling.user_items_indptr[user : user + 2]
        others = set(catalog.sampling.user_items_indices[start:end].tolist()) - {positive}
        keep = [i for i in range(1, N_ITEMS) if i not in others]
        expected.append(-F.log_softmax(logits[row, keep], 0)[keep.index(positive)])
    torch.testing.assert_close(loss(model, batch).detach(), torch.stack(expected).mean(), rtol=1e-5, atol=1e-6)


def test_the_full_softmax_refuses_a_part_that_cannot_score_every_item():
    with pytest.raises(UserError, match=r"train.loss must be a loss over sampled items with model\.heads\.mlp on"):
        load_config(None, ["train.loss=full_softmax"])


def test_the_full_softmax_adds_its_weight_times_bpr_over_the_groups_also_view_negatives():
    from factories import tiny_catalog

    overrides = ["train.loss=full_softmax", "model.heads.mlp=false", "model.heads.dot=true", "model.user.history=true"]
    plain = load_config(None, [*overrides, "sampling.negatives_per_positive=2"])
    weighted = load_config(None, [*overrides, "sampling.negatives_per_positive=2", "train.hard_negative_weight=0.5"])
    catalog, model = tiny_catalog(), make_model(plain.model).train()
    batch = grouped_batch_of(2, groups_=6)
    users, items, is_hard = groups(batch, 2)
    scores = model.score_every(users, items[:, 0]).detach().gather(1, items)
    hard = is_hard[:, 1:] > 0
    expected_term = -0.5 * F.logsigmoid(scores[:, :1] - scores[:, 1:])[hard].mean()
    difference = build_loss(weighted, catalog)(model, batch) - build_loss(plain, catalog)(model, batch)
    torch.testing.assert_close(difference.detach(), expected_term, rtol=1e-5, atol=1e-6)


def test_the_sampled_softmax_adds_its_weight_times_bpr_over_the_groups_also_view_negatives():
    from factories import tiny_catalog

    overrides = ["train.loss=softmax", "sampling.negatives_per_positive=2", "train.softmax_temperature=0.5"]
    plain = load_config(None, overrides)
    weighted = load_config(None, [*overrides, "train.hard_negative_weight=2"])
    catalog, model = tiny_catalog(), make_model(plain.model).eval()  # eval: no dropout noise between the two
    batch = grouped_batch_of(2, groups_=6)
    users, items, is_hard = groups(batch, 2)
    hard = is_hard[:, 1:] > 0
    assert hard.any() and not hard.all()  # the term reads only the also-view negatives
    scores = model.score_groups(users, items).detach() / 0.5  # the logits before the logQ correction
    expected_term = -2 * F.logsigmoid(scores[:, :1] - scores[:, 1:])[hard].mean()
    difference = build_loss(weighted, catalog)(model, batch) - build_loss(plain, catalog)(model, batch)
    torch.testing.assert_close(difference.detach(), expected_term, rtol=1e-5, atol=1e-6)


def test_the_hard_negative_term_needs_a_softmax_and_also_view_negatives():
    with pytest.raises(UserError, match=r"train.loss must be one of \('softmax', 'full_softmax'\) with"):
        load_config(None, ["train.hard_negative_weight=1"])
    with pytest.raises(UserError, match="sampling.also_view_fraction must be > 0 with train.hard_negative_weight"):
        load_config(None, ["train.loss=softmax", "train.hard_negative_weight=1", "sampling.also_view_fraction=0"])
