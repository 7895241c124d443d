"""Per-epoch validation: the ranking metrics against a brute-force reference, and their sample of users."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alsoview.config import load_config
from alsoview.data.catalog import load_catalog
from alsoview.evaluation.validation import validate, validation_set
from alsoview.model import build_model


@pytest.fixture(scope="module")
def catalog(smoke_config):
    return load_catalog(smoke_config.data.prepared_dir)


def brute_force_full_ranking(model, catalog, users, positives):
    """HR@10 and NDCG@10 of each held-out item among every item its user never had before the
    valid split, one user at a time, ties broken in expectation by averaging over positions."""
    hr, ndcg = [], []
    train = {}
    for u, i in zip(catalog.train.users, catalog.train.items):
        train.setdefault(int(u), set()).add(int(i))
    for user, positive in zip(users.tolist(), positives.tolist()):
        candidates = [i for i in range(1, catalog.n_items) if i not in train.get(user, set()) and i != positive]
        with torch.no_grad():
            scores = model(torch.full((len(candidates) + 1,), user), torch.tensor([positive, *candidates])).numpy()
        above, equal = int((scores[1:] > scores[0]).sum()), int((scores[1:] == scores[0]).sum())
        ranks = range(above, above + equal + 1)  # each equally likely
        hr.append(np.mean([r < 10 for r in ranks]))
        ndcg.append(np.mean([1 / np.log2(r + 2) if r < 10 else 0.0 for r in ranks]))
    return float(np.mean(hr)), float(np.mean(ndcg))


@pytest.mark.parametrize("switches", [[], ["model.user.history=true", "model.heads.dot=true"]])
def test_ranking_validation_matches_a_brute_force_reference(catalog, smoke_config, switches):
    config = load_config(None, [f"data.prepared_dir={smoke_config.data.prepared_dir}", *switches])
    torch.manual_seed(0)
    model = build_model(catalog, config.model, config.seed).eval()
    valid = validation_set(catalog, seed=3, valid_users=60)
    metrics = validate(model, valid, torch.device("cpu"))
    cases = valid.ranking
    hr, ndcg = brute_force_full_ranking(model, catalog, cases.users, cases.positives)
    assert metrics["valid/full/hr@10"] == pytest.approx(hr, abs=1e-9)
    assert metrics["valid/full/ndcg@10"] == pytest.approx(ndcg, abs=1e-9)
    assert {"valid/sampled100/hr@10", "valid/sampled100/ndcg@10", "valid/auc", "valid/hard_auc"} <= set(metrics)
    assert model.training is False  # validation leaves the model's mode as it found it


def test_validation_users_are_a_seeded_sample_of_the_valid_split(catalog):
    small, again, other = (validation_set(catalog, seed, valid_users=50).ranking for seed in (1, 1, 2))
    assert len(small.users) == 50 and np.array_equal(small.users, again.users)
    assert not np.array_equal(small.users, other.users)
    assert set(zip(small.users.tolist(), small.positives.tolist())) <= set(
        zip(catalog.valid.users.tolist(), catalog.valid.items.tolist())
    )
    everyone = validation_set(catalog, 0, valid_users=10**6).ranking
    assert len(everyone.users) == len(catalog.valid)  # all of them when fewer than asked


def test_the_references_of_a_training_verdict_rank_the_same_validation_users(catalog):
    """`reference_validation`'s popularity on the run's validation users equals a brute force over
    train counts: the verdict at the end of `alsoview train` compares like with like."""
    from alsoview.evaluation.validation import reference_validation

    valid = validation_set(catalog, seed=3, valid_users=60)
    references = reference_validation(catalog, valid, seed=3)
    assert set(references) == {"popularity", "cooccurrence", "related"}
    counts = torch.tensor(np.bincount(catalog.train.items, minlength=catalog.n_items), dtype=torch.float64)
    hr, ndcg = brute_force_full_ranking(
        lambda users, items: counts[items], catalog, valid.ranking.users, valid.ranking.positives
    )
    assert references["popularity"]["valid/full/hr@10"] == pytest.approx(hr, abs=1e-9)
    assert references["popularity"]["valid/full/ndcg@10"] == pytest.approx(ndcg, abs=1e-9)
