"""Similar items and exported vectors: cosine neighbours, co-occurrence and also-view lists, and
vectors whose inner product is the dot head's score."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from alsoview.errors import UserError
from alsoview.model.vectors import most_similar


def test_cosine_neighbours_leave_out_the_item_and_the_unknown_item():
    vectors = np.array([[9.0, 9.0], [1.0, 0.0], [2.0, 0.1], [0.0, 1.0], [0.0, 0.0], [-1.0, 0.0]], np.float32)
    items, similarity = most_similar(vectors, 1, k=10)
    assert list(items) == [2, 3, 4, 5]  # 0 (unknown) and 1 (itself) never; the zero vector is like nothing
    assert similarity[0] == pytest.approx(2 / np.hypot(2, 0.1)) and similarity[2] == 0.0 and similarity[3] == -1.0


@pytest.fixture(scope="module")
def recommender(trained_run):
    from alsoview.distributed.recommend import Recommender

    _, run = trained_run
    return Recommender.from_run(run.run_dir)


def test_similar_items_by_each_measure(recommender):
    catalog = recommender.catalog
    item = int(np.bincount(catalog.train.items).argmax())  # an item many users had
    asin = catalog.item_asin[item]
    for by in ("vectors", "cooccurrence", "also_view"):
        frame = recommender.similar(asin, k=5, by=by)
        assert asin not in set(frame["asin"]) and len(frame) > 0, by
        assert frame["similarity"].is_monotonic_decreasing, by
    known = catalog.inputs_for("recommend").train
    users = set(known.users[known.items == item])
    both = pd.Series(known.items[np.isin(known.users, list(users))]).groupby(
        known.users[np.isin(known.users, list(users))]
    )
    brute = pd.Series(np.concatenate([np.unique(g) for _, g in both])).value_counts().drop(item)
    top = recommender.similar(asin, k=3, by="cooccurrence")
    assert list(top["similarity"]) == list(brute.iloc[:3].astype(float))
    tables = catalog.sampling
    neighbours = set(
        catalog.item_asin[tables.also_view_indices[tables.also_view_indptr[item] : tables.also_view_indptr[item + 1]]]
    )
    assert set(recommender.similar(asin, k=1000, by="also_view")["asin"]) <= neighbours
    with pytest.raises(UserError, match="unknown asin 'NOPE'"):
        recommender.similar("NOPE")
    with pytest.raises(UserError, match="--by must be one of"):
        recommender.similar(asin, by="magic")


def test_export_writes_every_item_and_user_and_says_what_the_vectors_are(recommender, tmp_path):
    record = recommender.export(tmp_path / "vectors")
    items = pd.read_parquet(tmp_path / "vectors" / "items.parquet")
    users = pd.read_parquet(tmp_path / "vectors" / "users.parquet")
    assert len(items) == recommender.catalog.n_items - 1 and len(users) == recommender.catalog.n_users - 1
    assert len(items["vector"].iloc[0]) == record["dim"] == len(users["vector"].iloc[0])
    saved = json.loads((tmp_path / "vectors" / "vectors.json").read_text())
    assert saved["inner_product_is_the_score"] is False and "no dot head" in saved["item_vectors"]  # the MLP
    recommender.export(tmp_path / "vectors")  # an earlier export is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="refusing to replace it"):
        recommender.export(tmp_path / "mine")
