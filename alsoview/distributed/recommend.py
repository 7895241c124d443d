"""`alsoview recommend`: top-k items for users of a trained run, raw ids in, asins and titles out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alsoview.data.catalog import Catalog, load_catalog
from alsoview.distributed.evaluate import ModelFactory
from alsoview.errors import UserError
from alsoview.evaluation.baselines import PopularityScorer
from alsoview.evaluation.protocols import ModelScorer
from alsoview.storage import check_writable_file
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
