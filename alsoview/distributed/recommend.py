"""`alsoview recommend`: top-k items for users of a trained run, raw ids in, asins and titles out."""

from __future__ import annotations

import functools
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
from alsoview.model.visitors import for_visitors
from alsoview.storage import check_replaceable, check_writable_file
from alsoview.training.checkpoint import find_run, load_saved_model, run_dataset

log = logging.getLogger("alsoview")


@dataclass
class Recommender:
    """A run's best model over its catalog; unknown users fall back to popularity (and say so),
    visitors described by their items are scored by the model where its user side reads items
    (`model.visitors`), else by the items' co-occurrences (and say so)."""

    catalog: Catalog
    model: ModelScorer
    popularity: PopularityScorer
    known: Catalog  # the catalog the model reads users from: every split (`catalog.inputs_for("recommend")`)
    run_dir: Path | None = None

    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> "Recommender":
        """The run's model (`run_dir`: a path or a run name, as `find_run` resolves it)."""
        run = find_run(run_dir)
        saved = load_saved_model(run)
        catalog = load_catalog(run_dataset(run, saved))
        known = catalog.inputs_for("recommend")  # a user is described by every item they had
        model = ModelFactory(saved.state, saved.config, known)(device)
        model.model.freeze()  # scoring only from here: item-side work once, not per request
        popularity = PopularityScorer(known.train.users, known.train.items, catalog.n_items)
        return cls(catalog, model, popularity, known, run)

    def user_index(self, reviewer_ids: list[str]) -> np.ndarray:
        """Dense ids of raw reviewer ids; 0 for users the run has never seen."""
        return self._user_lookup.reindex(reviewer_ids).fillna(0).to_numpy(np.int64)

    @functools.cached_property
    def _user_lookup(self) -> pd.Series:
        return pd.Series(np.arange(len(self.catalog.user_reviewer_id)), index=self.catalog.user_reviewer_id)

    @functools.cached_property
    def _item_lookup(self) -> pd.Series:
        asins = self.catalog.item_asin
        return pd.Series(np.arange(1, len(asins)), index=asins[1:])

    def top_k(self, users: np.ndarray, k: int, exclude_seen: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Item ids [B, k] and scores, never the unknown item 0 and (`exclude_seen`) never an item
        the user already has."""
        _check_k(k)
        known = users > 0
        scores = np.empty((len(users), self.catalog.n_items), dtype=np.float64)
        if known.any():
            scores[known] = self.model.score_all(users[known])
        if (~known).any():
            scores[~known] = self.popularity.score_all(users[~known])
        seen = [self._seen_by(user) for user in users] if exclude_seen else None
        return _best(scores, k, seen)

    def recommend(self, reviewer_ids: list[str], k: int = 10, exclude_seen: bool = True) -> pd.DataFrame:
        """One row per (user, rank): reviewer_id, rank, asin, title, score, source (model | popularity)."""
        users = self.user_index(reviewer_ids)
        top, scores = self.top_k(users, k, exclude_seen)
        sources = np.where(users > 0, "model", "popularity (unknown user)")
        return self._rows("reviewer_id", np.asarray(reviewer_ids, dtype=object), top, scores, sources)

    def item_indices(self, asins: list[str]) -> np.ndarray:
        """Dense ids of asins of this run's catalog; any other is one line naming the first few."""
        ids = self._item_lookup.reindex(asins)
        unknown = [asin for asin, found in zip(asins, ids.notna()) if not found]
        if unknown:
            named = ", ".join(repr(a) for a in unknown[:5]) + (
                f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            )
            raise UserError(f"unknown asin{'s' if len(unknown) > 1 else ''} {named}: not an item of this run's catalog")
        return ids.to_numpy(np.int64)

    def top_k_visitors(
        self, item_lists: list[np.ndarray], k: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray, str | None]:
        """Item ids [V, k] and scores for visitors described by their item ids (their order: their
        time order), and the fallback the answer names (None: the model's own scores)."""
        _check_k(k)
        if not item_lists or any(len(items) == 0 for items in item_lists):
            raise UserError("a visitor needs at least one item")
        view = for_visitors(self.model.model, self.catalog, item_lists)
        if view.model is None:
            scores = np.stack([self._cooccurrence_counts(items) for items in item_lists])
            fallback = "co-occurrence: users who had these items also had (the model describes a user by an id only)"
        else:
            scores = ModelScorer(view.model, str(self.model.device)).score_all(np.arange(1, len(item_lists) + 1))
            left = ", ".join(f"model.user.{name}" for name in view.left_out)
            fallback = f"the model without {left} (a visitor has no id)" if view.left_out else None
        seen = [np.asarray(items, dtype=np.int64) for items in item_lists] if exclude_seen else None
        top, best = _best(scores.astype(np.float64), k, seen)
        return top, best, fallback

    def recommend_items(
        self, asins: list[str], k: int = 10, exclude_seen: bool = True
    ) -> tuple[pd.DataFrame, str | None]:
        """A visitor described by these items (oldest first): rank, asin, title, score, source; and
        the fallback (None: the model's own scores)."""
        top, scores, fallback = self.top_k_visitors([self.item_indices(asins)], k, exclude_seen)
        source = "model" if fallback is None else fallback.split(":")[0]
        frame = self._rows("visitor", np.array(["items"], dtype=object), top, scores, np.array([source], dtype=object))
        return frame.drop(columns="visitor"), fallback

    def _rows(
        self, key: str, who: np.ndarray, top: np.ndarray, scores: np.ndarray, sources: np.ndarray
    ) -> pd.DataFrame:
        """One row per (who, rank) of a top-k, the items that had no finite score left out."""
        width = top.shape[1]
        frame = pd.DataFrame(
            {
                key: np.repeat(who, width),
                "rank": np.tile(np.arange(1, width + 1), len(who)),
                "item_idx": top.reshape(-1),
                "score": scores.reshape(-1),
                "source": np.repeat(sources, width),
            }
        )[np.isfinite(scores).reshape(-1)]
        frame["asin"] = self.catalog.item_asin[frame["item_idx"].to_numpy()]
        frame["title"] = self.catalog.item_title[frame["item_idx"].to_numpy()]
        return frame[[key, "rank", "asin", "title", "score", "source"]].reset_index(drop=True)

    def _seen_by(self, user: int) -> np.ndarray:
        """The items a user had in any split (none for the unknown user 0)."""
        tables = self.catalog.sampling
        return tables.user_items_indices[tables.user_items_indptr[user] : tables.user_items_indptr[user + 1]]

    @functools.cached_property
    def _user_item_matrix(self) -> Any:
        """Users x items, 1 where a user had the item (every split), as CSR and its transpose."""
        from scipy import sparse

        known = self.known.train
        pairs = np.unique(np.stack([known.users, known.items]), axis=1)
        shape = (self.catalog.n_users, self.catalog.n_items)
        matrix = sparse.csr_matrix((np.ones(pairs.shape[1]), (pairs[0], pairs[1])), shape=shape)
        return matrix, matrix.T.tocsr()

    def _cooccurrence_counts(self, items: np.ndarray) -> np.ndarray:
        """Per item: over `items`, how many users had both it and each of them (the items
        themselves and the unknown item 0 get 0)."""
        matrix, transposed = self._user_item_matrix
        had = np.asarray(matrix[:, np.unique(items)].sum(axis=1)).ravel()
        counts = transposed @ had
        counts[0] = 0.0
        counts[np.asarray(items)] = 0.0
        return counts.astype(np.float64)

    def item_index(self, asin: str) -> int:
        """The dense id of an asin of this run's catalog; any other is one line naming it."""
        return int(self.item_indices([asin])[0])

    def similar(self, asin: str, k: int = 10, by: str = "vectors") -> pd.DataFrame:
        """The items most like `asin`, one row per rank: asin, title, similarity, source.

        `by`: "vectors" (cosine of the model's item vectors, `model.vectors`), "cooccurrence"
        (how many users had both), "also_view" (the item's also-view list, most reviewed first)."""
        _check_k(k)
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
        if by == "cooccurrence":
            return self._cooccurrence_counts(np.array([item]))
        tables = self.catalog.sampling
        neighbours = tables.also_view_indices[tables.also_view_indptr[item] : tables.also_view_indptr[item + 1]]
        counts = np.zeros(self.catalog.n_items, dtype=np.float64)
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


def _check_k(k: int) -> None:
    if k < 1:
        raise UserError(f"-k must be >= 1, got {k}")


def _best(scores: np.ndarray, k: int, seen: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """The k best items [B, k] of each row of `scores` (modified: the unknown item 0 and each
    row's `seen` items set to -inf) and their scores, ordered by score, ties by the lower id: the
    first k of a ranking of more items are exactly this ranking (serving ranks a batch at once)."""
    scores[np.isnan(scores)] = -np.inf
    scores[:, 0] = -np.inf
    if seen:
        rows = np.repeat(np.arange(len(seen)), [len(s) for s in seen])
        scores[rows, np.concatenate(seen)] = -np.inf
    k = min(k, scores.shape[1] - 1)
    kth = np.take_along_axis(scores, np.argpartition(-scores, k - 1, axis=1)[:, k - 1 : k], axis=1)[:, 0]
    top = np.empty((len(scores), k), dtype=np.int64)
    for row, (values, threshold) in enumerate(zip(scores, kth)):
        above = np.flatnonzero(values > threshold)
        chosen = np.concatenate([above, np.flatnonzero(values == threshold)[: k - len(above)]])
        top[row] = chosen[np.lexsort((chosen, -values[chosen]))]
    return top, np.take_along_axis(scores, top, axis=1)


class _BatchRecommender:
    """Ray Data actor: one Recommender per actor, then batches of reviewer ids."""

    def __init__(self, run_dir: str, k: int):
        self.recommender = Recommender.from_run(run_dir)
        self.k = k

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return self.recommender.recommend(batch["reviewer_id"].astype(str).tolist(), self.k)


def recommend_batch(
    run_dir: str | Path,
    reviewer_ids: list[str],
    out: str | Path,
    k: int = 10,
    actors: int = 1,
    batch_users: int = 256,
    stall_timeout: float | None = None,
) -> int:
    """Recommendations for many users with a Ray Data actor pool, written as Parquet; returns rows
    written. A pool that scores nothing for `stall_timeout` seconds (default: the run's
    `train.stall_timeout`) while its actors wait for CPUs ends in one line (`stall.watched`)."""
    import ray.data

    from alsoview.distributed.runtime import init_ray
    from alsoview.distributed.stall import stalled_line, watched

    _check_k(k)
    if actors < 1:
        raise UserError(f"--actors must be >= 1, got {actors}")
    check_writable_file(Path(out), "recommendations")
    run_dir = find_run(run_dir)
    saved = load_saved_model(run_dir)  # a missing or unreadable model is one line here, not in every actor
    timeout = saved.config.train.stall_timeout if stall_timeout is None else stall_timeout
    log.info(init_ray())
    frame = pd.DataFrame({"reviewer_id": reviewer_ids})
    done = [0]

    def scored() -> Any:
        return (
            ray.data.from_pandas(frame)
            .map_batches(
                _BatchRecommender,
                fn_constructor_args=(str(run_dir), k),
                compute=ray.data.ActorPoolStrategy(size=actors),
                batch_size=batch_users,
                batch_format="pandas",
            )
            .iter_batches(batch_format="pandas", batch_size=None)
        )

    def waited() -> str:
        return stalled_line(
            "recommend",
            "no batch of users scored",
            timeout,
            f"{done[0]} of {len(reviewer_ids)} users scored by a pool of {actors} Ray Data actors (1 CPU each)",
            "free 1 CPU for at least one of them",
        )

    parts = []
    for part in watched(scored, timeout, waited):
        parts.append(part)
        done[0] += part["reviewer_id"].nunique()
    result = pd.concat(parts, ignore_index=True).sort_values(["reviewer_id", "rank"]).reset_index(drop=True)
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
