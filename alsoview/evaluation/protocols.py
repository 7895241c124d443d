"""The evaluation protocols: which candidates each held-out (user, item) is ranked against, how
a scorer's ranks become metrics, and the scorers a model is compared with (pure numpy/torch; the
Ray Data scoring that runs them is `evaluate.py`).

Every held-out (user, item) of a split is ranked against negatives chosen by a protocol:
- `full`: every catalog item the user has not interacted with before the split (train for
  `valid`; train and valid for `test`);
- `sampled100`: 100 items the user never interacted with (any split), drawn uniformly without
  replacement with a fixed seed, as in SASRec-style papers;
- `hard`: the held-out item's also-view items, less the user's own items; only users whose
  item has such items are covered (reported as `users`);
- `sampled99`: the public leaderboards' protocol (ReChorus and the papers it reproduces:
  leave-one-out on 5-core data, 99 never-interacted items, HR@5 and NDCG@5): the 99 of
  `sampled100`'s items with the lowest random priorities, so also a uniform draw without
  replacement, and its numbers can be read against those tables.
Per protocol: `auc` is the share of (held-out item, negative) pairs over all users where the
held-out item scores higher (ties count one half); `gauc` is that share per user, averaged
with equal weight per user; `hr@K`, `ndcg@K`, `mrr` use the expected rank under random
tie-breaking (a constant scorer gets chance level). Keys read `<split>/<protocol>/<metric>`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from alsoview.data.catalog import Catalog
from alsoview.data.relations import Neighbours, csr_positions
from alsoview.errors import UserError
from alsoview.evaluation.baselines import RelatedItemsScorer, Scorer, baseline_builders, matrix_factorisation_peers
from alsoview.evaluation.metrics import expected_rank_metrics, rank_counts
from alsoview.seeds import evaluation_negatives_rng, evaluation_users_rng

log = logging.getLogger("alsoview")

PROTOCOLS = ("full", "sampled100", "hard", "sampled99")
REPORTED_METRICS = ("auc", "gauc", "ndcg@10", "hr@10", "mrr")
LEADERBOARD_METRICS = ("hr@5", "ndcg@5")  # what the leaderboards print for sampled99
# The columns of every evaluation table (evaluate, compare): protocol/metric, full ranking first.
REPORT_COLUMNS = tuple(
    f"{protocol}/{metric}"
    for protocol in PROTOCOLS
    for metric in (LEADERBOARD_METRICS if protocol == "sampled99" else REPORTED_METRICS)
)
CUTOFFS = (5, 10, 20)
SAMPLED_NEGATIVES = 100
LEADERBOARD_NEGATIVES = 99


# ---------------------------------------------------------------- the cases (built once, on the driver)


@dataclass(frozen=True)
class EvalCases:
    """The held-out pairs of one split and the negatives each protocol ranks them against."""

    split: str
    users: np.ndarray  # int64 [n]
    positives: np.ndarray  # int64 [n]
    history_indptr: np.ndarray  # CSR over case rows: items to exclude in `full` (before the split)
    history_items: np.ndarray
    sampled: np.ndarray  # int64 [n, 100] by drawn priority (sampled99: the first 99), 0 = padding at the end
    hard: np.ndarray  # int64 [n, L], 0 = padding
    n_items: int


def build_cases(catalog: Catalog, split: str, seed: int, max_users: int | None = None) -> EvalCases:
    """Held-out pairs of `split` with their sampled and also-view negatives (fixed seed)."""
    held = catalog.split(split)
    if len(held) == 0:
        raise UserError(f"the {split} split is empty: no user has 3 or more interactions")
    rows = np.arange(len(held))
    if max_users is not None and len(held) > max_users:
        rows = np.sort(evaluation_users_rng(seed).choice(len(held), max_users, replace=False))
    users, positives = held.users[rows], held.items[rows]
    before = ("train",) if split == "valid" else ("train", "valid")
    indptr, items = _history(catalog, users, before)
    rng = evaluation_negatives_rng(seed)
    return EvalCases(
        split,
        users,
        positives,
        indptr,
        items,
        _sampled_negatives(catalog, users, rng),
        _hard_negatives(catalog, users, positives),
        catalog.n_items,
    )


def _history(catalog: Catalog, users: np.ndarray, splits: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per case row, the user's items in `splits` (CSR), for the full protocol's exclusions."""
    pairs_users = np.concatenate([catalog.split(s).users for s in splits])
    pairs_items = np.concatenate([catalog.split(s).items for s in splits])
    order = np.argsort(pairs_users, kind="stable")
    pairs_users, pairs_items = pairs_users[order], pairs_items[order]
    starts = np.searchsorted(pairs_users, users, side="left")
    ends = np.searchsorted(pairs_users, users, side="right")
    lengths = ends - starts
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    gather = np.repeat(starts - indptr[:-1], lengths) + np.arange(indptr[-1])
    return indptr, pairs_items[gather].astype(np.int64)


# Case rows x items the sampled negatives are drawn for at once (a float64 priority each).
SAMPLED_BLOCK_ELEMENTS = 1 << 22


def _sampled_negatives(catalog: Catalog, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """100 never-interacted items per user, uniformly without replacement (random priorities),
    ordered by priority: any first m columns are then a uniform draw of m. The priorities are
    drawn row after row, so the draw does not depend on the block size."""
    tables = catalog.sampling
    n_items = catalog.n_items
    out = np.zeros((len(users), SAMPLED_NEGATIVES), dtype=np.int64)
    take = min(SAMPLED_NEGATIVES, n_items)
    per_block = max(1, SAMPLED_BLOCK_ELEMENTS // max(1, n_items))
    for start in range(0, len(users), per_block):
        block = users[start : start + per_block]
        priority = rng.random((len(block), n_items))
        priority[:, 0] = np.inf
        owners, positions = csr_positions(tables.user_items_indptr, block)  # every item the user had
        priority[owners, tables.user_items_indices[positions]] = np.inf
        chosen = np.argpartition(priority, take - 1, axis=1)[:, :take]
        chosen = np.take_along_axis(chosen, np.argsort(np.take_along_axis(priority, chosen, axis=1), axis=1), axis=1)
        usable = np.isfinite(np.take_along_axis(priority, chosen, axis=1))
        out[start : start + len(block), :take] = np.where(usable, chosen, 0)
    return out


def _hard_negatives(catalog: Catalog, users: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """The held-out item's also-view items minus the user's items, padded with 0."""
    tables = catalog.sampling
    lengths = tables.also_view_indptr[positives + 1] - tables.also_view_indptr[positives]
    width = int(lengths.max()) if len(lengths) else 0
    out = np.zeros((len(users), max(width, 1)), dtype=np.int64)
    if width == 0:
        return out
    column = np.arange(width)
    valid = column[None, :] < lengths[:, None]
    index = np.minimum(tables.also_view_indptr[positives][:, None] + column[None, :], len(tables.also_view_indices) - 1)
    candidates = np.where(valid, tables.also_view_indices[index], 0)
    flat_users = np.repeat(users, width)
    seen = tables.interacted(flat_users, candidates.reshape(-1)).reshape(len(users), width)
    out[:] = np.where(valid & ~seen, candidates, 0)
    return out


# ---------------------------------------------------------------- scoring a batch of cases


def full_candidates(cases: EvalCases, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every item per case row, with a mask that drops item 0, the positive and the history."""
    n = cases.n_items
    items = np.broadcast_to(np.arange(n), (len(rows), n))
    mask = np.ones((len(rows), n), dtype=bool)
    mask[:, 0] = False
    mask[np.arange(len(rows)), cases.positives[rows]] = False
    owners, positions = csr_positions(cases.history_indptr, rows)
    mask[owners, cases.history_items[positions]] = False
    return items, mask


# Case rows x items scored at once: the full protocol's arrays are [rows, n_items] (float64 for
# the ranks), so a block of this many elements bounds the memory whatever the catalog's size.
BLOCK_ELEMENTS = 1 << 24


def score_rows(
    scorer: Scorer, cases: EvalCases, rows: np.ndarray, protocols: tuple[str, ...] = PROTOCOLS
) -> dict[str, np.ndarray]:
    """Per case row and protocol: negatives above the positive, equal to it, and in total.

    A scorer with `score_all(users) -> [B, n_items]` (every item at once, e.g. a matrix product)
    is asked once per row for all protocols; others score each protocol's candidates. Rows are
    scored in blocks of at most `BLOCK_ELEMENTS` row-items; each row's counts are its own.
    """
    per_block = max(1, BLOCK_ELEMENTS // max(1, cases.n_items))
    starts = range(0, len(rows), per_block) or [0]  # no rows: one empty block, its arrays empty
    blocks = [_score_block(scorer, cases, rows[i : i + per_block], protocols) for i in starts]
    if len(blocks) == 1:
        return blocks[0]
    return {key: np.concatenate([block[key] for block in blocks]) for key in blocks[0]}


def _score_block(
    scorer: Scorer, cases: EvalCases, rows: np.ndarray, protocols: tuple[str, ...]
) -> dict[str, np.ndarray]:
    users, positives = cases.users[rows], cases.positives[rows]
    out: dict[str, np.ndarray] = {"row": rows}
    every_item = scorer.score_all(users) if hasattr(scorer, "score_all") else None
    for protocol in protocols:
        if protocol == "full":
            items, mask = full_candidates(cases, rows)
        else:
            items = _candidates(cases, protocol, rows)
            mask = items > 0
        if every_item is not None:
            positive_scores = every_item[np.arange(len(rows)), positives]
            negative_scores = every_item if protocol == "full" else np.take_along_axis(every_item, items, axis=1)
        else:
            scores = scorer.score(users, np.concatenate([positives[:, None], items], axis=1))
            positive_scores, negative_scores = scores[:, 0], scores[:, 1:]
        greater, ties, total = rank_counts(positive_scores, negative_scores, mask)
        out[f"{protocol}_greater"], out[f"{protocol}_ties"], out[f"{protocol}_n"] = greater, ties, total
    return out


def _candidates(cases: EvalCases, protocol: str, rows: np.ndarray) -> np.ndarray:
    """The negatives a sampled or hard protocol ranks each case row against (0 = padding)."""
    if protocol == "sampled100":
        return cases.sampled[rows]
    if protocol == "sampled99":
        return cases.sampled[rows, :LEADERBOARD_NEGATIVES]
    return cases.hard[rows]


def summarize(counts: dict[str, np.ndarray], split: str, protocols: tuple[str, ...] = PROTOCOLS) -> dict[str, float]:
    """Metric keys `<split>/<protocol>/<metric>` from per-row rank counts."""
    metrics: dict[str, float] = {}
    for protocol in protocols:
        n = counts[f"{protocol}_n"]
        covered = n > 0
        greater, ties, n = counts[f"{protocol}_greater"][covered], counts[f"{protocol}_ties"][covered], n[covered]
        per_user = expected_rank_metrics(greater, ties, CUTOFFS, n_negatives=n)
        prefix = f"{split}/{protocol}"
        metrics[f"{prefix}/users"] = int(covered.sum())
        metrics[f"{prefix}/negatives_per_user"] = float(n.mean()) if len(n) else float("nan")
        metrics[f"{prefix}/auc"] = float((n - greater - 0.5 * ties).sum() / n.sum()) if n.sum() else float("nan")
        metrics[f"{prefix}/gauc"] = float(np.mean(per_user["auc"])) if len(n) else float("nan")
        for name, values in per_user.items():
            if name != "auc":
                metrics[f"{prefix}/{name}"] = float(np.mean(values)) if len(values) else float("nan")
    return metrics


# ---------------------------------------------------------------- the trained model as a scorer


class ModelScorer:
    """The trained model behind the Scorer interface: logits for [B, C] candidates, in sub-batches."""

    name = "model"

    def __init__(self, model: Any, device: str = "cpu", pairs_per_batch: int = 65536):
        import torch

        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.pairs_per_batch = pairs_per_batch

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        import torch

        flat_items = np.asarray(items, dtype=np.int64).reshape(-1)
        flat_users = np.repeat(np.asarray(users, dtype=np.int64), items.shape[1])
        out = np.empty(len(flat_items), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(flat_items), self.pairs_per_batch):
                stop = start + self.pairs_per_batch
                u = torch.as_tensor(flat_users[start:stop], device=self.device)
                i = torch.as_tensor(flat_items[start:stop], device=self.device)
                out[start:stop] = self.model(u, i).float().cpu().numpy()
        return out.reshape(items.shape)

    def score_all(self, users: np.ndarray) -> np.ndarray:
        """Logits [B, n_items] of every item, computed once per user and once per item where the
        model allows (see `TowerModel.score_all_items`): the same numbers as `score`, to float rounding."""
        import torch

        with torch.inference_mode():
            u = torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.device)
            return self.model.score_all_items(u).float().cpu().numpy()


@dataclass(frozen=True)
class References:
    """The scorers a model is compared with, the peers that could not be built (name -> why), and
    each scorer's fit in wall-clock seconds (benchmarks/time_to_quality.py)."""

    scorers: dict[str, Scorer]
    skipped: dict[str, str]
    fit_seconds: dict[str, float] = field(default_factory=dict)


def reference_scorers(catalog: Catalog, seed: int, peers: bool = True) -> References:
    """Popularity, random, co-occurrence and related (also-view neighbours of the user's items);
    with `peers`, ALS and BPR fitted on the same train split."""
    train, n_users, n_items = catalog.train, catalog.n_users, catalog.n_items
    tables = catalog.sampling
    builders = {
        **baseline_builders(train.users, train.items, n_users, n_items, seed),
        "related": lambda: RelatedItemsScorer(
            train.users,
            train.items,
            n_users,
            n_items,
            Neighbours.from_also_view(n_items, tables.also_view_indptr, tables.also_view_indices),
        ),
    }
    scorers: dict[str, Scorer] = {}
    fit_seconds: dict[str, float] = {}
    for name, build in builders.items():
        begin = time.perf_counter()
        scorers[name] = build()
        fit_seconds[name] = time.perf_counter() - begin
    skipped: dict[str, str] = {}
    if peers:
        fitted, skipped = matrix_factorisation_peers(train.users, train.items, n_users, n_items, seed)
        scorers.update(fitted)
        fit_seconds.update({name: scorer.fit_seconds for name, scorer in fitted.items()})
        for name, why in skipped.items():
            log.warning("peer %s skipped: %s", name, why)
    return References(scorers, skipped, fit_seconds)


def markdown_table(results: dict[str, dict[str, float]], split: str, skipped: dict[str, str] | None = None) -> str:
    """One row per scorer; the protocol of every column is in its name."""
    columns = REPORT_COLUMNS
    lines = [f"| scorer | {' | '.join(columns)} |", "|---|" + "---|" * len(columns)]
    for name, metrics in results.items():
        values = [f"{metrics.get(f'{split}/{c}', float('nan')):.4f}" for c in columns]
        lines.append(f"| {name} | {' | '.join(values)} |")
    any_metrics = next(iter(results.values()))
    coverage = ", ".join(
        f"{p}: {any_metrics[f'{split}/{p}/users']} users, "
        f"{any_metrics[f'{split}/{p}/negatives_per_user']:.1f} negatives each"
        for p in PROTOCOLS
    )
    return "\n".join(lines) + f"\n\nSplit `{split}`; {coverage}.\n" + skipped_note(skipped)


def skipped_note(skipped: dict[str, str] | None) -> str:
    """The peers a table lacks, and why (empty when none were skipped)."""
    if not skipped:
        return ""
    return "\nPeers skipped: " + "; ".join(f"{name}: {why}" for name, why in skipped.items()) + ".\n"
