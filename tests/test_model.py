"""The model's parts: towers, heads, the scorer that sums them; shapes, unknown ids, buffers, the
sparse variant, parameter counts, each head's fast path, and each part's own random stream."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn

from alsoview.data.relations import Neighbours, relation_counts
from alsoview.errors import UserError
from alsoview.model import (
    FastDropout,
    ModelConfig,
    TowerModel,
    build_tower_model,
    count_parameters,
    to_known_ids,
)
from alsoview.training.optim import MixedOptimizer, build_optimizer

N_USERS, N_ITEMS, N_BRANDS, TEXT_DIM = 5, 7, 3, 10


# Each user's training items (CSR over users 0..4): user 0 (unknown) has none.
HISTORY_INDPTR = np.array([0, 0, 2, 5, 6, 8])
HISTORY_ITEMS = np.array([1, 3, 2, 4, 6, 5, 1, 2])
# An also-view graph over items 1..6 (CSR over items 0..6), for the relation head.
ALSO_VIEW_INDPTR = np.array([0, 0, 2, 3, 5, 5, 6, 7])
ALSO_VIEW_ITEMS = np.array([2, 4, 5, 1, 6, 3, 2])


# An also-bought graph (CSR over items 0..6), for the second relation head.
ALSO_BUY_INDPTR = np.array([0, 0, 1, 1, 2, 3, 3, 3])
ALSO_BUY_ITEMS = np.array([5, 6, 1])


def relation_inputs(
    indptr: np.ndarray = ALSO_VIEW_INDPTR, items: np.ndarray = ALSO_VIEW_ITEMS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    neighbours = Neighbours.from_also_view(N_ITEMS, indptr, items)
    return (*relation_counts(HISTORY_INDPTR, HISTORY_ITEMS, neighbours), neighbours.keys)


def make_model(config: ModelConfig = ModelConfig(), text_dim: int = TEXT_DIM, seed: int = 0) -> TowerModel:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    missing = (torch.rand(N_ITEMS, generator=gen) < 0.3).float()
    price = torch.randn(N_ITEMS, generator=gen) * (1 - missing)
    return build_tower_model(
        N_USERS,
        N_ITEMS,
        N_BRANDS,
        text_dim,
        item_brand=torch.randint(0, N_BRANDS, (N_ITEMS,), generator=gen),
        item_price=price,
        item_price_missing=missing,
        item_text=torch.randn(N_ITEMS, text_dim, generator=gen),
        config=config,
        user_history=(HISTORY_INDPTR, HISTORY_ITEMS) if config.user_history else None,
        relations=relation_inputs() if config.also_view_relation else None,
        # the history's order taken as the time order
        user_sequence=(HISTORY_INDPTR, HISTORY_ITEMS) if config.user_sequence else None,
        also_buy_relations=relation_inputs(ALSO_BUY_INDPTR, ALSO_BUY_ITEMS) if config.also_buy_relation else None,
        cooccurrence=(HISTORY_INDPTR, HISTORY_ITEMS) if config.cooccurrence_relation else None,
        seed=seed,
    )


def batch(size: int = 16, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    users = torch.randint(1, N_USERS, (size,), generator=gen)
    items = torch.randint(1, N_ITEMS, (size,), generator=gen)
    labels = torch.randint(0, 2, (size,), generator=gen).float()
    return users, items, labels


@pytest.mark.parametrize("text_dim", [TEXT_DIM, 0])
def test_forward_backward_shapes_and_finite_logits(text_dim: int) -> None:
    model = make_model(text_dim=text_dim)
    users, items, labels = batch()
    logits = model(users, items)
    assert logits.shape == (16,) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    nn.functional.binary_cross_entropy_with_logits(logits, labels).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert (model.heads["mlp"].text_projection is None) == (text_dim == 0)
    model.eval()
    proba = model.predict_proba(users, items)
    assert proba.shape == (16,) and ((proba > 0) & (proba < 1)).all()
    torch.testing.assert_close(proba, torch.sigmoid(model(users, items)))


def test_unknown_id_zero_works_and_out_of_range_raises_in_eval() -> None:
    model = make_model().eval()
    zeros = torch.zeros(3, dtype=torch.long)
    assert torch.isfinite(model(zeros, zeros)).all()
    with pytest.raises(ValueError, match="to_known_ids"):
        model(torch.tensor([N_USERS]), torch.tensor([1]))
    with pytest.raises(ValueError, match="item ids"):
        model(torch.tensor([1]), torch.tensor([-1]))


def test_to_known_ids_maps_out_of_range_to_zero() -> None:
    ids = torch.tensor([-3, 0, 1, 6, 7, 100])
    mapped = to_known_ids(ids, N_ITEMS)
    assert mapped.tolist() == [0, 0, 1, 6, 0, 0] and mapped.dtype == ids.dtype
    assert to_known_ids(np.array([7, 2, -1], dtype=np.int32), N_ITEMS).tolist() == [0, 2, 0]
    model = make_model().eval()
    users = torch.tensor([1, 99])
    items = torch.tensor([123, 2])
    out = model(to_known_ids(users, model.n_users), to_known_ids(items, model.n_items))
    assert out.shape == (2,)


def test_sorted_lookup_and_expand_ranges_match_python() -> None:
    from alsoview.model.ids import expand_ranges, sorted_lookup

    keys = torch.tensor([2, 5, 9, 14])
    found, index = sorted_lookup(keys, torch.tensor([5, 6, 14, 0, 20]))
    assert found.tolist() == [True, False, True, False, False]
    assert index[found].tolist() == [1, 3]
    assert sorted_lookup(torch.zeros(0, dtype=torch.int64), torch.tensor([1]))[0].tolist() == [False]
    row, position = expand_ranges(torch.tensor([4, 0, 7]), torch.tensor([2, 0, 3]))
    assert row.tolist() == [0, 0, 2, 2, 2] and position.tolist() == [4, 5, 7, 8, 9]


def test_item_feature_buffers_in_state_dict_and_round_trip() -> None:
    model = make_model(seed=0)
    state = model.state_dict()
    for name in ("brand", "price", "price_missing", "text"):
        name = f"item_tower.features.{name}"
        assert name in state
        assert name not in dict(model.named_parameters())
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    other = make_model(seed=1)  # different weights and features
    other.load_state_dict(torch.load(buffer))
    model.eval(), other.eval()
    users, items, _ = batch()
    torch.testing.assert_close(model(users, items), other(users, items))
    torch.testing.assert_close(other.item_tower.features.text, model.item_tower.features.text)


def test_unknown_rows_start_at_zero() -> None:
    model = make_model()
    for emb in (model.user_tower.id_embedding, model.item_tower.id_embedding, model.item_tower.brand_embedding):
        assert torch.count_nonzero(emb.weight[0]) == 0
        assert emb.weight[1:].abs().max() < 1.0


def test_sparse_variant_trains_one_step() -> None:
    model = make_model(ModelConfig(sparse_embeddings=True))
    opt = build_optimizer(model, 1e-2, sparse=True)
    assert isinstance(opt, MixedOptimizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    users, items, labels = batch()
    opt.zero_grad()
    loss = nn.functional.binary_cross_entropy_with_logits(model(users, items), labels)
    loss.backward()
    assert model.user_tower.id_embedding.weight.grad.is_sparse
    assert not model.heads["mlp"].layers[0].weight.grad.is_sparse
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {
        "user_tower.id_embedding.weight",
        "item_tower.id_embedding.weight",
        "heads.mlp.layers.0.weight",
        "heads.mlp.text_projection.weight",
    } <= changed
    untouched_user = sorted(set(range(N_USERS)) - set(users.tolist()))
    torch.testing.assert_close(
        model.user_tower.id_embedding.weight[untouched_user], before["user_tower.id_embedding.weight"][untouched_user]
    )

    clone = build_optimizer(make_model(ModelConfig(sparse_embeddings=True)), 1e-2, sparse=True)
    clone.load_state_dict(opt.state_dict())
    assert clone.state_dict()["sparse"]["state"].keys() == opt.state_dict()["sparse"]["state"].keys()
    assert {g["lr"] for g in opt.param_groups} == {1e-2}


def test_parameter_count_of_default_config_by_hand() -> None:
    d, t = 64, 64
    embeddings = (N_USERS + N_ITEMS + N_BRANDS) * d
    text_projection = TEXT_DIM * t + t
    width = 3 * d + 2 + t  # user, item, brand embeddings + price, missing flag + projected text
    mlp = (width * 128 + 128) + (128 * 64 + 64) + (64 * 1 + 1)
    assert count_parameters(make_model()) == embeddings + text_projection + mlp == 43137
    # without text, the projection and its share of the first layer disappear
    no_text = (N_USERS + N_ITEMS + N_BRANDS) * d + ((3 * d + 2) * 128 + 128) + (128 * 64 + 64) + 65
    assert count_parameters(make_model(text_dim=0)) == no_text


def test_config_and_feature_validation() -> None:
    assert ModelConfig(hidden_dims=[32, 16]).hidden_dims == (32, 16)  # YAML lists become tuples
    with pytest.raises(UserError, match="model.dropout"):
        ModelConfig(dropout=1.0)
    with pytest.raises(UserError, match="model.hidden_dims"):
        ModelConfig(hidden_dims=(0,))
    with pytest.raises(ValueError, match="item_brand values"):
        build_tower_model(N_USERS, 3, 2, 0, torch.tensor([0, 1, 2]), torch.zeros(3), torch.zeros(3), None)
    with pytest.raises(ValueError, match="item_text must have shape"):
        build_tower_model(
            N_USERS, 3, 2, 4, torch.zeros(3, dtype=torch.long), torch.zeros(3), torch.zeros(3), torch.zeros(3, 5)
        )


def test_product_interaction_adds_the_elementwise_term() -> None:
    plain = make_model()
    product = make_model(ModelConfig(product_interaction=True))
    d = ModelConfig().embedding_dim
    assert count_parameters(product) - count_parameters(plain) == d * ModelConfig().hidden_dims[0]
    users, items = torch.tensor([1, 2]), torch.tensor([3, 4])
    product.eval()
    assert product(users, items).shape == (2,)


@pytest.mark.parametrize("p", [0.5, 0.3, 0.0])
def test_fast_dropout_has_nn_dropouts_distribution(p: float) -> None:
    layer = FastDropout(p).train()
    x = torch.ones(400, 1000, requires_grad=True)
    torch.manual_seed(3)
    out = layer(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005
    assert abs(out.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expected value
    assert torch.unique(out[kept]).numel() == 1  # one scale for every kept value
    out.sum().backward()
    torch.testing.assert_close(x.grad, out.detach())  # the gradient is the same mask and scale
    torch.manual_seed(3)
    assert torch.equal(layer(x), out)  # seeded by torch's generator
    assert torch.equal(layer.eval()(x), x)


def test_fast_dropout_masks_are_independent_across_columns() -> None:
    torch.manual_seed(0)
    mask = (FastDropout(0.5).train()(torch.ones(20000, 8)) != 0).float()
    correlation = torch.corrcoef(mask.T)
    off_diagonal = correlation[~torch.eye(8, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 0.05


QUALITY_SWITCHES = [
    ModelConfig(),
    ModelConfig(product_interaction=True),
    ModelConfig(user_history=True),
    ModelConfig(dot_product=True),
    ModelConfig(user_history=True, dot_product=True, mlp=False),
    ModelConfig(user_history=True, dot_product=True, product_interaction=True, hidden_dims=(32,)),
    ModelConfig(item_features=False, product_interaction=True),
    ModelConfig(item_features=False, dot_product=True, user_history=True, user_id=False),
    ModelConfig(user_history=True, dot_product=True, mlp=False, also_view_relation=True),
    ModelConfig(also_view_relation=True),
    ModelConfig(user_sequence=2),
    ModelConfig(also_view_relation=True, also_buy_relation=True, user_history=True, dot_product=True, mlp=False),
    ModelConfig(user_sequence=3, sequence_blocks=2, user_id=False, dot_product=True, mlp=False, user_history=True),
    ModelConfig(user_history=True, dot_product=True, mlp=False, also_view_relation=True, cooccurrence_relation=True),
    ModelConfig(user_history=True, dot_product=True, mlp=False, cooccurrence_relation=True, cooccurrence_recency=0.6),
    ModelConfig(
        user_history=True,
        dot_product=True,
        mlp=False,
        cooccurrence_relation=True,
        cooccurrence_recency=0.6,
        cooccurrence_proximity=0.7,
        cooccurrence_forward=True,
    ),
]


def switch_id(c: ModelConfig) -> str:
    """Every switch in the id, so no two parametrized cases share one."""
    return (
        f"h{c.user_history:d}d{c.dot_product:d}m{c.mlp:d}p{c.product_interaction:d}"
        f"f{c.item_features:d}u{c.user_id:d}r{c.also_view_relation:d}{c.also_buy_relation:d}{c.cooccurrence_relation:d}"
        f"s{c.user_sequence}b{c.sequence_blocks}"
        f"w{'-'.join(map(str, c.hidden_dims))}"
        f"c{c.cooccurrence_recency:g}-{c.cooccurrence_proximity:g}-{c.cooccurrence_forward:d}"
    )


@pytest.mark.parametrize("config", QUALITY_SWITCHES, ids=switch_id)
@pytest.mark.parametrize("text_dim", [TEXT_DIM, 0])
def test_score_all_items_equals_forward_on_every_pair(config: ModelConfig, text_dim: int) -> None:
    model = make_model(config, text_dim=text_dim)
    with torch.no_grad():  # move every weight off its initial value so every branch contributes
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    model.eval()
    users = torch.arange(N_USERS)
    every = model.score_all_items(users, elements_per_chunk=64)  # several user chunks
    pairs = model(users.repeat_interleave(N_ITEMS), torch.arange(N_ITEMS).repeat(N_USERS)).reshape(N_USERS, N_ITEMS)
    # float32 rounding of sums taken in another order (attention blocks, wide first layers): 1e-4
    torch.testing.assert_close(every, pairs, rtol=1e-4, atol=1e-4)
    assert not model.training  # scoring leaves the mode as it was


@pytest.mark.parametrize("config", QUALITY_SWITCHES, ids=switch_id)
def test_each_heads_fast_path_equals_its_score_on_every_pair(config: ModelConfig) -> None:
    """Per part: every head's `score_all` equals its `score` over every (user, item) pair."""
    model = make_model(config)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    model.eval()
    user = model.user_tower(torch.arange(N_USERS))
    users, items = torch.arange(N_USERS).repeat_interleave(N_ITEMS), torch.arange(N_ITEMS).repeat(N_USERS)
    for name, head in model.heads.items():
        ids = {"users": users} if getattr(head, "uses_user_ids", False) else {}
        every = head.score_all(
            user, model.item_tower, elements_per_chunk=64, **({"users": users[::N_ITEMS]} if ids else {})
        )
        pairs = head.score(user.repeat_interleave(N_ITEMS, dim=0), items, model.item_tower, **ids).reshape(N_USERS, -1)
        torch.testing.assert_close(every, pairs, rtol=1e-4, atol=1e-4, msg=name)  # float32 rounding
    assert len(users) == N_USERS * N_ITEMS


def test_dot_product_alone_is_user_vector_dot_item_plus_bias() -> None:
    model = make_model(ModelConfig(dot_product=True, mlp=False, user_history=True))
    dot, items_side = model.heads["dot"], model.item_tower
    with torch.no_grad():
        dot.item_bias.weight.normal_()
    model.eval()
    users, items = torch.tensor([1, 2, 3]), torch.tensor([2, 5, 6])
    features = items_side.features
    content = items_side.brand_embedding(features.brand[items]) + features.text[items] @ dot.text_to_item.weight.T
    expected = (model.user_tower(users) * (items_side.id_embedding(items) + content)).sum(-1)
    torch.testing.assert_close(model(users, items), expected + dot.item_bias.weight[items, 0])
    assert list(model.heads) == ["dot"]
    bare = make_model(ModelConfig(dot_product=True, mlp=False, user_history=True, item_features=False)).eval()
    assert bare.heads["dot"].text_to_item is None
    expected = (bare.user_tower(users) * bare.item_tower.id_embedding(items)).sum(-1)
    torch.testing.assert_close(bare(users, items), expected)


def test_user_history_is_the_scaled_sum_of_the_users_items_without_the_scored_one() -> None:
    model = make_model(ModelConfig(user_history=True))
    tower = model.user_tower
    rows, own = tower.history.embedding.weight, tower.id_embedding.weight
    # user 2 had items 2, 4 and 6
    torch.testing.assert_close(tower(torch.tensor([2])), own[2:3] + (rows[2] + rows[4] + rows[6])[None] / 3**0.5)
    # training on (2, 4): item 4 leaves the history; on (2, 5), not in it, nothing leaves
    left_out = tower(torch.tensor([2, 2]), leave_out=torch.tensor([4, 5]))
    torch.testing.assert_close(left_out[0], own[2] + (rows[2] + rows[6]) / 2**0.5)
    torch.testing.assert_close(left_out[1], own[2] + (rows[2] + rows[4] + rows[6]) / 3**0.5)
    # user 0 has no history: the bare embedding; user 3's only item scored: nothing left, no division by 0
    torch.testing.assert_close(tower(torch.tensor([0])), own[0:1])
    torch.testing.assert_close(tower(torch.tensor([3]), leave_out=torch.tensor([5])), own[3:4])
    # the forward pass leaves the scored item out only while training (no MLP, so no dropout noise)
    dot = make_model(ModelConfig(user_history=True, dot_product=True, mlp=False))
    user, item = torch.tensor([2]), torch.tensor([4])
    item_row = dot.heads["dot"].item_vector(item, dot.item_tower)[0]
    train_user = dot.user_tower(user, leave_out=item)
    torch.testing.assert_close(dot.train()(user, item), (train_user * item_row).sum(-1))
    torch.testing.assert_close(dot.eval()(user, item), (dot.user_tower(user) * item_row).sum(-1))
    with pytest.raises(ValueError, match="user_history"):
        build_tower_model(
            N_USERS,
            N_ITEMS,
            N_BRANDS,
            0,
            torch.zeros(N_ITEMS, dtype=torch.long),
            torch.zeros(N_ITEMS),
            torch.zeros(N_ITEMS),
            None,
            ModelConfig(user_history=True),
        )


def test_quality_switches_train_with_sparse_embeddings() -> None:
    model = make_model(ModelConfig(user_history=True, dot_product=True, sparse_embeddings=True))
    optimizer = build_optimizer(model, 0.01, sparse=True)
    users, items, labels = batch()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    nn.functional.binary_cross_entropy_with_logits(model(users, items), labels).backward()
    optimizer.step()
    for name in ("user_tower.history.embedding.weight", "heads.dot.item_bias.weight", "user_tower.id_embedding.weight"):
        assert not torch.equal(before[name], dict(model.named_parameters())[name]), name


def test_without_item_features_the_mlp_sees_only_the_two_embeddings() -> None:
    plain, bare = make_model(), make_model(ModelConfig(item_features=False))
    d, t = ModelConfig().embedding_dim, ModelConfig().text_projection_dim
    first, bare_first = plain.heads["mlp"].layers[0], bare.heads["mlp"].layers[0]
    assert first.in_features - bare_first.in_features == d + 2 + t  # brand, price pair, text
    assert bare_first.in_features == 2 * d


def test_a_model_needs_a_scoring_branch() -> None:
    with pytest.raises(UserError, match="model.mlp"):
        ModelConfig(mlp=False)
    with pytest.raises(UserError, match="model.user_id"):
        ModelConfig(user_id=False)  # without user_history a user would have no vector
    history_only = make_model(ModelConfig(user_history=True, user_id=False))
    assert history_only.user_tower.id_embedding is None
    torch.testing.assert_close(history_only.user_tower(torch.tensor([0])), torch.zeros(1, 64))


def test_each_part_draws_its_initial_weights_from_a_stream_of_its_own() -> None:
    """Turning a part on or off leaves every other part's initial weights as they were; a seed
    gives the same weights every time, another seed others."""
    plain = make_model(ModelConfig()).state_dict()
    more = make_model(ModelConfig(user_history=True, dot_product=True, user_sequence=2)).state_dict()
    for name, value in plain.items():
        assert torch.equal(more[name], value), name
    assert all(torch.equal(make_model(ModelConfig()).state_dict()[n], v) for n, v in plain.items())
    other = make_model(ModelConfig(), seed=1).state_dict()
    assert not torch.equal(other["heads.mlp.layers.0.weight"], plain["heads.mlp.layers.0.weight"])
    assert not torch.equal(other["item_tower.id_embedding.weight"], plain["item_tower.id_embedding.weight"])
