"""The model's parts: towers, heads, the scorer that sums them; shapes, unknown ids, buffers, the
sparse variant, parameter counts, each head's fast path, and each part's own random stream."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from factories import N_BRANDS, N_ITEMS, N_USERS, TEXT_DIM, model_config, tiny_catalog
from torch import nn

from alsoview.errors import UserError
from alsoview.model import Heads, ModelConfig, TowerModel, UserParts, build_model, count_parameters, to_known_ids
from alsoview.model.features import ItemFeatures
from alsoview.model.parts.mlp import FastDropout
from alsoview.training.optim import MixedOptimizer, build_optimizer


def make_model(config: ModelConfig = ModelConfig(), text_dim: int = TEXT_DIM, seed: int = 0) -> TowerModel:
    """The model of `config` over `tiny_catalog` (item features drawn from `seed`)."""
    return build_model(tiny_catalog(text_dim, seed), config, seed)


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


def test_item_features_stay_out_of_state_dict_and_older_files_with_them_still_load() -> None:
    """The features are the dataset's: a model built on a catalog keeps that catalog's features
    whatever state it loads, and a state dict that carries them (older run files) loads strictly."""
    model = make_model(seed=0)
    state = model.state_dict()
    names = [f"item_tower.features.{name}" for name in ("brand", "price", "price_missing", "text")]
    assert not set(names) & set(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    same_catalog = build_model(tiny_catalog(TEXT_DIM, 0), ModelConfig(), seed=1)  # other weights
    same_catalog.load_state_dict(torch.load(buffer))
    model.eval(), same_catalog.eval()
    users, items, _ = batch()
    torch.testing.assert_close(model(users, items), same_catalog(users, items))
    other = make_model(seed=1)  # other features
    older = {**state, **{name: torch.zeros_like(getattr(other.item_tower.features, name.rsplit(".", 1)[1]))
                         for name in names}}  # fmt: skip
    text = other.item_tower.features.text.clone()
    other.load_state_dict(older)  # strict: the saved features are dropped, not reported as unexpected
    torch.testing.assert_close(other.item_tower.features.text, text)


def test_unknown_rows_start_at_zero() -> None:
    model = make_model()
    user_ids = model.user_tower.parts["id"].embedding
    for emb in (user_ids, model.item_tower.id_embedding, model.item_tower.brand_embedding):
        assert torch.count_nonzero(emb.weight[0]) == 0
        assert emb.weight[1:].abs().max() < 1.0


def test_sparse_variant_trains_one_step() -> None:
    model = make_model(model_config("sparse_embeddings=true"))
    opt = build_optimizer(model, 1e-2, sparse=True)
    assert isinstance(opt, MixedOptimizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    users, items, labels = batch()
    opt.zero_grad()
    loss = nn.functional.binary_cross_entropy_with_logits(model(users, items), labels)
    loss.backward()
    assert model.user_tower.parts["id"].embedding.weight.grad.is_sparse
    assert not model.heads["mlp"].layers[0].weight.grad.is_sparse
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert {
        "user_tower.parts.id.embedding.weight",
        "item_tower.id_embedding.weight",
        "heads.mlp.layers.0.weight",
        "heads.mlp.text_projection.weight",
    } <= changed
    untouched_user = sorted(set(range(N_USERS)) - set(users.tolist()))
    user_rows = model.user_tower.parts["id"].embedding.weight
    torch.testing.assert_close(
        user_rows[untouched_user], before["user_tower.parts.id.embedding.weight"][untouched_user]
    )

    clone = build_optimizer(make_model(model_config("sparse_embeddings=true")), 1e-2, sparse=True)
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
    assert model_config("heads.mlp.hidden_dims=[32, 16]").heads.mlp.hidden_dims == (32, 16)  # YAML lists: tuples
    with pytest.raises(UserError, match=r"model\.heads\.mlp\.dropout"):
        model_config("heads.mlp.dropout=1.0")
    with pytest.raises(UserError, match=r"model\.heads\.mlp\.hidden_dims"):
        model_config("heads.mlp.hidden_dims=[0]")
    with pytest.raises(ValueError, match="item_brand values"):
        ItemFeatures(2, torch.tensor([0, 1, 2]), torch.zeros(3), torch.zeros(3), None, 0)
    with pytest.raises(ValueError, match="item_text must have shape"):
        ItemFeatures(2, torch.zeros(3, dtype=torch.long), torch.zeros(3), torch.zeros(3), torch.zeros(3, 5), 4)


def test_product_interaction_adds_the_elementwise_term() -> None:
    plain = make_model()
    product = make_model(model_config("heads.mlp.product_interaction=true"))
    d = ModelConfig().embedding_dim
    assert count_parameters(product) - count_parameters(plain) == d * ModelConfig().heads.mlp.hidden_dims[0]
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


# Every part and setting that changes how a model scores, alone and together (`model.` settings).
QUALITY_SWITCHES = [
    (),
    ("heads.mlp.product_interaction=true",),
    ("user.history=true",),
    ("heads.dot=true",),
    ("user.history=true", "heads.dot=true", "heads.mlp=false"),
    ("user.history=true", "heads.dot=true", "heads.mlp.product_interaction=true", "heads.mlp.hidden_dims=[32]"),
    ("heads.mlp.item_features=false", "heads.mlp.product_interaction=true"),
    ("heads.mlp.item_features=false", "heads.dot.item_features=false", "user.history=true", "user.id=false"),
    ("user.history=true", "heads.dot=true", "heads.mlp=false", "heads.also_view=true"),
    ("heads.also_view=true",),
    ("user.sequence.length=2",),
    ("heads.also_view=true", "heads.also_buy=true", "user.history=true", "heads.dot=true", "heads.mlp=false"),
    ("user.sequence.length=3", "user.sequence.blocks=2", "user.id=false", "heads.dot=true", "heads.mlp=false",
     "user.history=true"),
    ("user.history=true", "heads.dot=true", "heads.mlp=false", "heads.also_view=true", "heads.cooccurrence=true"),
    ("user.history=true", "heads.dot=true", "heads.mlp=false", "heads.cooccurrence.recency=0.6"),
    ("user.history=true", "heads.dot=true", "heads.mlp=false", "heads.cooccurrence.recency=0.6",
     "heads.cooccurrence.proximity=0.7", "heads.cooccurrence.forward=true"),
]  # fmt: skip


# ... and every part of the registry on its own beside the default model, so a new part's fast path
# is checked against its pairs without a line here.
QUALITY_SWITCHES += [
    (f"{section}.{f.name}=true",)
    for section, parts in (("user", UserParts), ("heads", Heads))
    for f in dataclasses.fields(parts)
    if (f"{section}.{f.name}=true",) not in QUALITY_SWITCHES
]


def switch_id(settings: tuple[str, ...]) -> str:
    return "+".join(settings) or "design"


@pytest.mark.parametrize("config", QUALITY_SWITCHES, ids=switch_id)
@pytest.mark.parametrize("text_dim", [TEXT_DIM, 0])
def test_score_all_items_equals_forward_on_every_pair(config: tuple[str, ...], text_dim: int) -> None:
    model = make_model(model_config(*config), text_dim=text_dim)
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
def test_each_heads_fast_path_equals_its_score_on_every_pair(config: tuple[str, ...]) -> None:
    """Per part: every head's `score_all` equals its `score` over every (user, item) pair."""
    model = make_model(model_config(*config))
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.3)
    model.eval()
    users = model.users(torch.arange(N_USERS))
    items = torch.arange(N_ITEMS).repeat(N_USERS)
    for name, head in model.heads.items():
        every = head.score_all(users, model.item_tower, elements_per_chunk=64)
        pairs = head.score(users.repeat(N_ITEMS), items, model.item_tower).reshape(N_USERS, -1)
        torch.testing.assert_close(every, pairs, rtol=1e-4, atol=1e-4, msg=name)  # float32 rounding


def test_dot_product_alone_is_user_vector_dot_item_plus_bias() -> None:
    model = make_model(model_config("heads.dot=true", "heads.mlp=false", "user.history=true"))
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
    bare = make_model(model_config("heads.dot.item_features=false", "heads.mlp=false", "user.history=true")).eval()
    assert bare.heads["dot"].text_to_item is None
    expected = (bare.user_tower(users) * bare.item_tower.id_embedding(items)).sum(-1)
    torch.testing.assert_close(bare(users, items), expected)


def test_user_history_is_the_scaled_sum_of_the_users_items_without_the_scored_one() -> None:
    model = make_model(model_config("user.history=true"))
    tower = model.user_tower
    rows, own = tower.parts["history"].embedding.weight, tower.parts["id"].embedding.weight
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
    dot = make_model(model_config("user.history=true", "heads.dot=true", "heads.mlp=false"))
    user, item = torch.tensor([2]), torch.tensor([4])
    item_row = dot.heads["dot"].item_vector(item, dot.item_tower)[0]
    train_user = dot.user_tower(user, leave_out=item)
    torch.testing.assert_close(dot.train()(user, item), (train_user * item_row).sum(-1))
    torch.testing.assert_close(dot.eval()(user, item), (dot.user_tower(user) * item_row).sum(-1))


def test_quality_switches_train_with_sparse_embeddings() -> None:
    model = make_model(model_config("user.history=true", "heads.dot=true", "sparse_embeddings=true"))
    optimizer = build_optimizer(model, 0.01, sparse=True)
    users, items, labels = batch()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    nn.functional.binary_cross_entropy_with_logits(model(users, items), labels).backward()
    optimizer.step()
    trained = (
        "user_tower.parts.history.embedding.weight",
        "heads.dot.item_bias.weight",
        "user_tower.parts.id.embedding.weight",
    )
    for name in trained:
        assert not torch.equal(before[name], dict(model.named_parameters())[name]), name


def test_without_item_features_the_mlp_sees_only_the_two_embeddings() -> None:
    plain, bare = make_model(), make_model(model_config("heads.mlp.item_features=false"))
    d, t = ModelConfig().embedding_dim, ModelConfig().heads.mlp.text_projection_dim
    first, bare_first = plain.heads["mlp"].layers[0], bare.heads["mlp"].layers[0]
    assert first.in_features - bare_first.in_features == d + 2 + t  # brand, price pair, text
    assert bare_first.in_features == 2 * d


def test_a_model_needs_a_head_and_a_user_part() -> None:
    with pytest.raises(UserError, match=r"model\.heads needs at least one of mlp, dot, also_view"):
        model_config("heads.mlp=false")
    with pytest.raises(UserError, match=r"model\.user needs at least one of id, history, sequence"):
        model_config("user.id=false")  # without the history or a sequence a user would have no vector
    history_only = make_model(model_config("user.history=true", "user.id=false"))
    assert list(history_only.user_tower.parts) == ["history"]
    torch.testing.assert_close(history_only.user_tower(torch.tensor([0])), torch.zeros(1, 64))


def test_each_part_draws_its_initial_weights_from_a_stream_of_its_own() -> None:
    """Turning a part on or off leaves every other part's initial weights as they were; a seed
    gives the same weights every time, another seed others."""
    plain = make_model().state_dict()
    more = make_model(model_config("user.history=true", "heads.dot=true", "user.sequence.length=2")).state_dict()
    for name, value in plain.items():
        assert torch.equal(more[name], value), name
    assert all(torch.equal(make_model().state_dict()[n], v) for n, v in plain.items())
    other = make_model(seed=1).state_dict()
    assert not torch.equal(other["heads.mlp.layers.0.weight"], plain["heads.mlp.layers.0.weight"])
    assert not torch.equal(other["item_tower.id_embedding.weight"], plain["item_tower.id_embedding.weight"])


def test_a_frozen_model_scores_as_before_and_a_fresh_one_never_keeps_item_vectors():
    """`freeze` keeps the dot head's item vectors for a scoring-only model; without it (training,
    every epoch's validation) each call computes them from the weights of the moment."""
    settings = ("user.id=false", "user.history=true", "heads.mlp=false", "heads.dot=true")
    model = make_model(model_config(*settings)).eval()
    users = torch.tensor([1, 2, 3])
    first = model.score_all_items(users)
    with torch.no_grad():
        model.item_tower.id_embedding.weight.add_(0.5)
    changed = model.score_all_items(users)
    assert not torch.allclose(changed, first)
    pairs = model(users.repeat_interleave(N_ITEMS - 1), torch.arange(1, N_ITEMS).repeat(3)).view(3, -1)
    torch.testing.assert_close(changed[:, 1:], pairs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.freeze().score_all_items(users), changed)
    assert model.heads["dot"]._every_item is not None
