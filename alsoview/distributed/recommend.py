"""`alsoview recommend`: top-k items for users of a trained run, raw ids in, asins and titles out."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alsoview.data.catalog import Catalog, load_catalog
from alsoview.distributed.evaluate import ModelFactory
from alsoview.errors import UserError
from alsoview.evaluation.baselines import PopularityScorer
from alsoview.evaluation.protocols import ModelScorer
from alsoview.model.vectors import item_vectors, most_similar, user_vectors
from alsoview.storage import check_replaceable, check_writable_file
from alsoview.training.checkpoint import find_run, load_saved_model, run_dataset

log = logging.getLogger("alsoview")


@dataclass
class Recommender:
    """A run's best model over its catalog; unknown users fall back to popularity (and say so)."""

    catalog: Catalog
    model: ModelScorer
    popularity: PopularityScorer

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> "Recommender":
        """The run's model (`run_dir`: a path or a run name, as `find_run` resolves it)."""
        run = find_run(run_dir)
        saved = load_saved_model(run)
        catalog = load_catalog(run_dataset(run, saved))
        known = catalog.inputs_for("recommend")  # a user is described by every item they had
        model = ModelFactory(saved.state, saved.config, known)(device)
        popularity = PopularityScorer(known.train.users, known.train.items, catalog.n_items)
        return cls(catalog, model, popularity)

    def user_index(self, reviewer_ids: list[str]) -> np.ndarray:
        """Dense ids of raw reviewer ids; 0 for users the run has never seen."""
        lookup = pd.Series(np.arange(len(self.catalog.user_reviewer_id)), index=self.catalog.user_reviewer_id)
        return lookup.reindex(reviewer_ids).fillna(0).to_numpy(np.int64)

    def top_k(self, users: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Item ids [B, k] and scores, never an item the user already has, never the unknown item 0."""
        if k < 1:
            raise UserError(f"-k must be >= 1, got {k}")
        n = self.catalog.n_items
        items = np.broadcast_to(np.arange(n), (len(users), n))
        known = users > 0
        scores = np.empty((len(users), n), dtype=np.float64)
        if known.any():
            scores[known] = self.model.score_all(users[known])
        if (~known).any():
            scores[~known] = self.popularity.score_all(users[~known])
        scores[:, 0] = -np.inf
        seen = self.catalog.sampling.interacted(np.repeat(users, n), items.reshape(-1)).reshape(len(users), n)
        scores[seen] = -np.inf
        k = min(k, n - 1)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
        top = np.take_along_axis(top, order, axis=1)
        return top, np.take_along_axis(scores, top, axis=1)

    def recommend(self, reviewer_ids: list[str], k: int = 10) -> pd.DataFrame:
        """One row per (user, rank): reviewer_id, rank, asin, title, score, source (model | popularity)."""
        users = self.user_index(reviewer_ids)
        top, scores = self.top_k(users, k)
        width = top.shape[1]
        finite = np.isfinite(scores)
        frame = pd.DataFrame(
            {
                "reviewer_id": np.repeat(np.asarray(reviewer_ids, dtype=object), width),
                "rank": np.tile(np.arange(1, width + 1), len(users)),
                "item_idx": top.reshape(-1),
                "score": scores.reshape(-1),
                "source": np.repeat(np.where(users > 0, "model", "popularity (unknown user)"), width),
            }
        )[finite.reshape(-1)]
        frame["asin"] = self.catalog.item_asin[frame["item_idx"].to_numpy()]
        frame["title"] = self.catalog.item_title[frame["item_idx"].to_numpy()]
        return frame[["reviewer_id", "rank", "asin", "title", "score", "source"]].reset_index(drop=True)

    def item_index(self, asin: str) -> int:
        """The dense id of an asin of this run's catalog; any other is one line naming it."""
        found = np.flatnonzero(self.catalog.item_asin == asin)
        if len(found) == 0 or found[0] == 0:
            raise UserError(f"unknown asin {asin!r}: not an item of this run's catalog")
        return int(found[0])

    def similar(self, asin: str, k: int = 10, by: str = "vectors") -> pd.DataFrame:
        """The items most like `asin`, one row per rank: asin, title, similarity, source.

        `by`: "vectors" (cosine of the model's item vectors, `model.vectors`), "cooccurrence"
        (how many users had both), "also_view" (the item's also-view list, most reviewed first)."""
        if k < 1:
            raise UserError(f"-k must be >= 1, got {k}")
        item = self.item_index(asin)
        if by == "vectors":
            items, similarity = most_similar(item_vectors(self.model.model).vectors, item, k)
            source = "model vectors (cosine)"
        elif by in ("cooccurrence", "also_view"):
            counts = self._neighbour_counts(item, by)
            order = np.lexsort((-self.popularity.counts, -counts))  # ties: the more reviewed first
            items = order[counts[order] > 0][:k]
            similarity, source = counts[items], {"cooccurrence": "users who had both", "also_view": "also viewed"}[by]
        else:
            raise UserError(f"--by must be one of vectors, cooccurrence, also_view; got {by!r}")
        return pd.DataFrame(
            {
                "rank": np.arange(1, len(items) + 1),
                "asin": self.catalog.item_asin[items],
                "title": self.catalog.item_title[items],
                "similarity": np.asarray(similarity, dtype=np.float64),
                "source": source,
            }
        )

    def _neighbour_counts(self, item: int, by: str) -> np.ndarray:
        """Per item: users who had both it and `item` (every split), or 1 for each also-view
        neighbour of `item`; 0 for `item` itself and the unknown item."""
        n = self.catalog.n_items
        if by == "cooccurrence":
            known = self.catalog.inputs_for("recommend").train
            had_it = np.zeros(self.catalog.n_users, dtype=bool)
            had_it[known.users[known.items == item]] = True
            pairs = np.unique(np.stack([known.users, known.items])[:, had_it[known.users]], axis=1)
            counts = np.bincount(pairs[1], minlength=n).astype(np.float64)
        else:
            tables = self.catalog.sampling
            neighbours = tables.also_view_indices[tables.also_view_indptr[item] : tables.also_view_indptr[item + 1]]
            counts = np.zeros(n, dtype=np.float64)
            counts[neighbours] = 1.0
        counts[[0, item]] = 0.0
        return counts

    def export(self, out_dir: str | Path) -> dict[str, Any]:
        """items.parquet (item_idx, asin, title, vector, bias) and users.parquet (user_idx,
        reviewer_id, vector) for a vector database, and vectors.json saying what they are."""
        out = Path(out_dir)
        check_replaceable(out, EXPORT_RECORD, "vector export")
        out.mkdir(parents=True, exist_ok=True)
        model = self.model.model
        items = item_vectors(model)
        ids = np.arange(1, self.catalog.n_items)
        pd.DataFrame(
            {
                "item_idx": ids,
                "asin": self.catalog.item_asin[ids],
                "title": self.catalog.item_title[ids],
                "vector": list(items.vectors[ids]),
                **({"bias": items.bias[ids]} if items.bias is not None else {}),
            }
        ).to_parquet(out / "items.parquet", index=False)
        users = np.arange(1, self.catalog.n_users)
        pd.DataFrame(
            {
                "user_idx": users,
                "reviewer_id": self.catalog.user_reviewer_id[users],
                "vector": list(user_vectors(model, users)),
            }
        ).to_parquet(out / "users.parquet", index=False)
        record = {
            "items": int(len(ids)),
            "users": int(len(users)),
            "dim": int(items.vectors.shape[1]),
            "item_vectors": items.kind,
            "inner_product_is_the_score": items.scores_users,
        }
        (out / EXPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n")
        return record


EXPORT_RECORD = "vectors.json"


class _BatchRecommender:
    """Ray Data actor: one Recommender per actor, then batches of reviewer ids."""

    def __init__(self, run_dir: str, k: int):
        self.recommender = Recommender.from_run(run_dir)
        self.k = k

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.recommender.recommend(batch["reviewer_id"].astype(str).tolist(), self.k)


def recommend_batch(
    run_dir: str | Path, reviewer_ids: list[str], out: str | Path, k: int = 10, actors: int = 1, batch_users: int = 256
) -> int:
    """Recommendations for many users with a Ray Data actor pool, written as Parquet; returns rows written."""
    import ray.data

    from alsoview.distributed.runtime import init_ray

    if k < 1:
        raise UserError(f"-k must be >= 1, got {k}")
    if actors < 1:
        raise UserError(f"--actors must be >= 1, got {actors}")
    check_writable_file(Path(out), "recommendations")
    run_dir = find_run(run_dir)
    load_saved_model(run_dir)  # a missing or unreadable model is one line here, not an error in every actor
    log.info(init_ray())
    frame = pd.DataFrame({"reviewer_id": reviewer_ids})
    result = (
        ray.data.from_pandas(frame)
        .map_batches(
            _BatchRecommender,
            fn_constructor_args=(str(run_dir), k),
            compute=ray.data.ActorPoolStrategy(size=actors),
            batch_size=batch_users,
            batch_format="pandas",
        )
        .to_pandas()
    )
    result = result.sort_values(["reviewer_id", "rank"]).reset_index(drop=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    result.to_parquet(out, index=False)
    return len(result)


def read_user_ids(path: str | Path) -> list[str]:
    """Reviewer ids from a text file, one per line (blank lines skipped): a missing, empty or
    binary file is refused in one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"users file not found: {path}")
    users = []
    for number, line in enumerate(path.read_bytes().splitlines(), start=1):
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise UserError(f"{path}:{number}: not UTF-8 text; give one reviewerID per line") from None
        if not text.isprintable():
            raise UserError(f"{path}:{number}: holds control characters; give one reviewerID per line")
        if text:
            users.append(text)
    if not users:
        raise UserError(f"{path} holds no reviewer ids (one reviewerID per line)")
    return users
