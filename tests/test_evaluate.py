"""Evaluation protocols, the trained model against baselines, recommendations and the comparison."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from alsoview.data.catalog import load_catalog
from alsoview.evaluation.baselines import PopularityScorer
from alsoview.evaluation.protocols import CUTOFFS, PROTOCOLS, build_cases, full_candidates, score_rows, summarize


@pytest.fixture(scope="module")
def catalog(smoke_config):
    return load_catalog(smoke_config.data.prepared_dir)


def test_protocol_negatives(catalog):
    cases = build_cases(catalog, "test", seed=0)
    tables = catalog.sampling
    assert len(cases.users) == len(catalog.test)
    sampled = cases.sampled
    assert (sampled > 0).all()  # 200 items, < 100 interactions each: always 100 unseen items
    assert all(len(set(row)) == 100 for row in sampled[:100])  # without replacement
    flat_users = np.repeat(cases.users, sampled.shape[1])
    assert not tables.interacted(flat_users, sampled.reshape(-1)).any()
    hard_mask = cases.hard > 0
    users = np.repeat(cases.users, cases.hard.shape[1]).reshape(cases.hard.shape)
    assert not tables.interacted(users[hard_mask], cases.hard[hard_mask]).any()
    for row in range(30):
        also = tables.also_view_indices[
            tables.also_view_indptr[cases.positives[row]] : tables.also_view_indptr[cases.positives[row] + 1]
        ]
        assert set(cases.hard[row][hard_mask[row]]) <= set(also)
    items, mask = full_candidates(cases, np.arange(20))
    history = (
        catalog.train.items[catalog.train.users == cases.users[0]].tolist()
        + catalog.valid.items[catalog.valid.users == cases.users[0]].tolist()
    )
    assert not mask[0, history].any() and not mask[0, 0] and not mask[0, cases.positives[0]]
    assert mask[0].sum() == catalog.n_items - 2 - len(set(history))


def test_sampled_negatives_do_not_depend_on_how_many_rows_are_drawn_at_once(catalog, monkeypatch):
    """The priorities are drawn row after row: the block size bounds the memory, not the draw."""
    from alsoview.evaluation import protocols

    whole = build_cases(catalog, "test", seed=0).sampled
    monkeypatch.setattr(protocols, "SAMPLED_BLOCK_ELEMENTS", 3 * catalog.n_items + 1)  # blocks of 3 rows
    assert len(whole) % 3
    np.testing.assert_array_equal(build_cases(catalog, "test", seed=0).sampled, whole)


def test_rows_scored_in_blocks_count_as_in_one(catalog, monkeypatch):
    """Blocks bound the memory of a large catalog ([rows, n_items] arrays); each row's counts are its own."""
    from alsoview.evaluation import protocols
    from alsoview.evaluation.baselines import CooccurrenceScorer

    cases = build_cases(catalog, "test", seed=0)
    rows = np.arange(len(cases.users))
    scorers = [
        PopularityScorer(catalog.train.users, catalog.train.items, catalog.n_items),  # score_all
        CooccurrenceScorer(catalog.train.users, catalog.train.items, catalog.n_users, catalog.n_items),
    ]
    whole = [score_rows(scorer, cases, rows) for scorer in scorers]
    monkeypatch.setattr(protocols, "BLOCK_ELEMENTS", 7 * catalog.n_items)  # blocks of 7 rows, the last shorter
    assert len(rows) % 7
    for scorer, expected in zip(scorers, whole):
        blocked = score_rows(scorer, cases, rows)
        assert blocked.keys() == expected.keys()
        for key in expected:
            np.testing.assert_array_equal(blocked[key], expected[key], err_msg=key)
    assert {k: len(v) for k, v in score_rows(scorers[0], cases, rows[:0]).items()} == dict.fromkeys(whole[0], 0)


def test_metrics_of_a_scorer_match_a_brute_force_computation(catalog):
    cases = build_cases(catalog, "test", seed=0)
    scorer = PopularityScorer(catalog.train.users, catalog.train.items, catalog.n_items)
    rows = np.arange(len(cases.users))
    metrics = summarize(score_rows(scorer, cases, rows), "test")
    per_user_auc = []
    for row in rows[:200]:
        negatives = cases.sampled[row]
        scores = scorer.score(cases.users[[row]], np.r_[cases.positives[row], negatives][None, :])[0]
        labels = np.r_[1, np.zeros(len(negatives))]
        per_user_auc.append(roc_auc_score(labels, scores))
    counts = score_rows(scorer, cases, rows[:200])
    small = summarize(counts, "test")
    assert small["test/sampled100/gauc"] == pytest.approx(np.mean(per_user_auc))
    # the leaderboard's protocol: 99 of the 100, ranked the same way (popularity's hr@5 by hand)
    assert small["test/sampled99/negatives_per_user"] == 99
    hits = []
    for row in rows[:200]:
        scores = scorer.score(cases.users[[row]], np.r_[cases.positives[row], cases.sampled[row, :99]][None, :])[0]
        greater, ties = (scores[1:] > scores[0]).sum(), (scores[1:] == scores[0]).sum()
        hits.append(np.mean([greater + t < 5 for t in range(ties + 1)]))  # random tie-breaking
    assert small["test/sampled99/hr@5"] == pytest.approx(np.mean(hits))
    for protocol in PROTOCOLS:
        for name in ["auc", "gauc", "mrr", "users", *[f"{m}@{k}" for m in ("hr", "ndcg") for k in CUTOFFS]]:
            assert f"test/{protocol}/{name}" in metrics


def test_trained_model_beats_random_everywhere_and_popularity_on_full_ranking(evaluated_run):
    run, results = evaluated_run  # the README's `alsoview evaluate` of the README's trained run
    mlp, random, popularity = results["model"], results["random"], results["popularity"]
    for protocol in PROTOCOLS:
        for metric in ("auc", "gauc", "ndcg@10", "mrr"):
            key = f"test/{protocol}/{metric}"
            assert mlp[key] > random[key], (key, mlp[key], random[key])
    # Over the full catalogue the held-out item must rank higher than popularity ranks it. Not the
    # top ranks: the design's MLP is close to popularity there, and with the validation items
    # known to every scorer (popularity counts them too) its top 10 can tie popularity's on this
    # smoke world (hr@10 0.189 vs 0.191 after 30 epochs, while its auc was 0.694 vs 0.639).
    for metric in ("auc", "gauc"):
        assert mlp[f"test/full/{metric}"] > popularity[f"test/full/{metric}"], metric
    saved = json.loads((run.run_dir / "metrics.json").read_text())
    assert saved["test/full/ndcg@10"] == mlp["test/full/ndcg@10"] and "valid/auc" in saved
    assert set(json.loads((run.run_dir / "evaluation.json").read_text())) == {
        "model",
        "popularity",
        "random",
        "cooccurrence",
        "related",
        "als",
        "bpr",
    }
    assert "| model |" in (run.run_dir / "evaluation.md").read_text()
    assert mlp["test/hard/users"] < mlp["test/full/users"]  # coverage of the hard protocol is reported


@pytest.mark.parametrize(
    "switches",
    [
        [],
        ["model.heads.mlp.product_interaction=true"],
        ["model.user.history=true", "model.heads.dot=true", "model.heads.mlp=false"],
    ],
)
def test_every_item_at_once_ranks_like_pair_by_pair_scoring(catalog, smoke_config, switches):
    """A model's fast path (`score_all`: every item per user at once) gives the protocols' numbers
    of the pairwise path, for every kind of model."""
    import torch

    from alsoview.config import load_config
    from alsoview.evaluation.protocols import ModelScorer
    from alsoview.model import build_model

    torch.manual_seed(0)
    config = load_config(None, [f"data.prepared_dir={smoke_config.data.prepared_dir}", *switches])
    fast = ModelScorer(build_model(catalog, config.model, config.seed))

    class PairByPair:
        def score(self, users, items):
            return fast.score(users, items)

    cases = build_cases(catalog, "test", seed=0, max_users=80)
    rows = np.arange(len(cases.users))
    quick, slow = (summarize(score_rows(s, cases, rows), "test") for s in (fast, PairByPair()))
    for key in slow:
        assert quick[key] == pytest.approx(slow[key], abs=2e-3), key


def test_recommendations_never_repeat_what_the_user_has(trained_run, tmp_path):
    from alsoview.distributed.recommend import Recommender, recommend_batch

    _, run = trained_run
    recommender = Recommender.from_run(run.run_dir)
    catalog = recommender.catalog
    users = list(catalog.user_reviewer_id[1:61]) + ["NOT-A-USER"]
    frame = recommender.recommend(users, k=10)
    assert len(frame) == 10 * len(users)
    index = dict(zip(catalog.user_reviewer_id, range(len(catalog.user_reviewer_id))))
    known = frame[frame["reviewer_id"] != "NOT-A-USER"]
    asin_index = pd.Series(np.arange(catalog.n_items), index=catalog.item_asin)
    user_ids = known["reviewer_id"].map(index).to_numpy()
    item_ids = asin_index.reindex(known["asin"]).to_numpy()
    assert (item_ids > 0).all()
    assert not catalog.sampling.interacted(user_ids, item_ids).any()
    assert (known["source"] == "model").all()
    assert (frame[frame["reviewer_id"] == "NOT-A-USER"]["source"] == "popularity (unknown user)").all()
    assert known.groupby("reviewer_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()

    out = tmp_path / "recs.parquet"
    assert recommend_batch(run.run_dir, users, out, k=10) == len(frame)
    batch = pd.read_parquet(out)
    merged = batch.merge(frame, on=["reviewer_id", "rank"], suffixes=("", "_single"))
    assert len(merged) == len(frame) and (merged["asin"] == merged["asin_single"]).all()


def test_a_run_copied_elsewhere_recommends_the_same_items_without_its_dataset(trained_run, tmp_path, monkeypatch):
    """A run folder carries its prepared dataset (`dataset/`): copied to another place, with the
    dataset its config names out of reach, it recommends exactly what it did where it was trained."""
    import shutil

    import alsoview.distributed.recommend as recommend

    _, run = trained_run
    users = ["A5ESXJD33Z0F8", "NOT-A-USER"]
    here = recommend.Recommender.from_run(run.run_dir).recommend(users, k=10)
    moved = tmp_path / "elsewhere" / "f05"
    shutil.copytree(run.run_dir, moved, ignore=shutil.ignore_patterns("checkpoint_*"))
    prepared = Path(metrics_dataset(run.run_dir)).resolve()
    real_load = recommend.load_catalog

    def anywhere_but_the_original(folder):
        assert Path(folder).resolve() != prepared, "the moved run read the dataset its config names"
        return real_load(folder)

    monkeypatch.setattr(recommend, "load_catalog", anywhere_but_the_original)
    there = recommend.Recommender.from_run(moved).recommend(users, k=10)
    pd.testing.assert_frame_equal(here, there)


def metrics_dataset(run_dir) -> str:
    """The prepared dataset a run was trained on, as its metrics.json records it."""
    return json.loads((run_dir / "metrics.json").read_text())["dataset"]


def test_every_reference_has_its_fit_time(catalog):
    from alsoview.evaluation.protocols import reference_scorers

    references = reference_scorers(catalog, seed=0)
    assert {"popularity", "random", "cooccurrence", "related"} <= set(references.scorers)
    assert set(references.fit_seconds) == set(references.scorers)
    assert all(seconds >= 0 for seconds in references.fit_seconds.values())


def test_the_test_split_is_ranked_with_the_validation_items_known(catalog, smoke_config):
    """Leave-one-out as SASRec and the ReChorus leaderboard score it: the test item is predicted
    from everything before it. A trained model keeps its weights; its user-side tables (history,
    relations, sequence) read the validation items."""
    import torch

    from alsoview.config import load_config
    from alsoview.data.relations import Neighbours
    from alsoview.distributed.evaluate import ModelFactory
    from alsoview.model import build_model

    known = catalog.inputs_for("test")

    def pairs(interactions):
        return set(zip(interactions.users.tolist(), interactions.items.tolist()))

    assert catalog.inputs_for("valid") is catalog  # validation reads what training reads
    assert pairs(known.train) == pairs(catalog.train) | pairs(catalog.valid)
    assert pairs(catalog.inputs_for("recommend").train) == pairs(known.train) | pairs(catalog.test)
    assert known.valid is catalog.valid and known.sampling is catalog.sampling
    with pytest.raises(ValueError, match="unknown purpose 'train'"):
        catalog.inputs_for("train")

    switches = ["model.user.history=true", "model.heads.dot=true", "model.heads.mlp=false", "model.user.id=false"]
    switches += ["model.heads.also_view=true", "model.user.sequence.length=5"]
    config = load_config(None, [f"data.prepared_dir={smoke_config.data.prepared_dir}", *switches])
    torch.manual_seed(0)
    trained = build_model(catalog, config.model, config.seed).eval()
    scoring = ModelFactory(trained.state_dict(), config, known)("cpu").model
    users, valid_items = torch.as_tensor(catalog.valid.users[:60]), catalog.valid.items[:60]
    assert (scoring.user_tower.parts["sequence"].window(users)[:, -1].numpy() == valid_items).all()
    assert (trained.user_tower.parts["sequence"].window(users)[:, -1].numpy() != valid_items).all()
    neighbours = Neighbours.from_also_view(
        catalog.n_items, catalog.sampling.also_view_indptr, catalog.sampling.also_view_indices
    )
    related = [(u, n) for u, v in zip(users.tolist(), valid_items.tolist()) for n in neighbours.of(v)[:2]]
    assert related, "the smoke data's validation items have also-view neighbours"
    u, n = (torch.as_tensor(column) for column in zip(*related))
    before, after = (m.heads["also_view"].relation(u, n, None).expm1() for m in (trained, scoring))
    assert torch.allclose(after - before, torch.ones_like(after))  # the validation item is one more relation


def test_evaluate_ranks_the_test_split_with_the_validation_items_known_to_every_scorer(evaluated_run):
    """`alsoview evaluate` fits the baselines with the validation items known, as the model reads them."""
    from alsoview.evaluation.protocols import reference_scorers
    from alsoview.training.checkpoint import load_saved_model

    run, results = evaluated_run
    config = load_saved_model(run.run_dir).config
    catalog = load_catalog(config.data.prepared_dir)
    cases = build_cases(catalog, "test", config.seed)

    def full_ndcg(scorer):
        return summarize(score_rows(scorer, cases, np.arange(len(cases.users))), "test")["test/full/ndcg@10"]

    for_test = reference_scorers(catalog.inputs_for("test"), config.seed, peers=False).scorers
    train_only = reference_scorers(catalog, config.seed, peers=False).scorers
    differs = []
    for name in ("popularity", "cooccurrence", "related"):
        assert results[name]["test/full/ndcg@10"] == pytest.approx(full_ndcg(for_test[name]), abs=1e-9), name
        differs.append(full_ndcg(train_only[name]) != results[name]["test/full/ndcg@10"])
    assert any(differs)  # the smoke data tell the two apart
