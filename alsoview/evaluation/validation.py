"""Validation every epoch: does the model rank a user's held-out item above the others?

- `valid/full/ndcg@10`, `valid/full/hr@10`, `valid/sampled100/*`: the held-out valid item ranked
  among every item the user has not had (and among 100 sampled ones), for a seeded sample of
  `train.valid_users` validation users, with the same protocol code as `alsoview evaluate`.
  Early stopping and tuning use `valid/full/ndcg@10` by default: it is what recommending does.
- `valid/auc` (held-out item vs one random item) and `valid/hard_auc` (vs one of its also-view
  items): cheap diagnostics. AUC against a random item mostly measures popularity, so it cannot
  tell when a model stops learning users' tastes; it stays for the hard-negative question.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from alsoview.data.catalog import Catalog
from alsoview.evaluation.metrics import pairwise_auc
from alsoview.evaluation.protocols import (
    EvalCases,
    ModelScorer,
    build_cases,
    reference_scorers,
    score_rows,
    summarize,
)
from alsoview.sampling.mixing import mix_negatives
from alsoview.seeds import VALIDATION_KEY, epoch_rng

RANKING_PROTOCOLS = ("full", "sampled100")


@dataclass(frozen=True)
class ValidationSet:
    """Fixed for a run, so every epoch's numbers are comparable."""

    users: np.ndarray  # each valid positive with one random negative ...
    positives: np.ndarray
    random_negatives: np.ndarray
    hard_users: np.ndarray  # ... and, where its item has one, an also-view negative
    hard_positives: np.ndarray
    hard_negatives: np.ndarray
    ranking: EvalCases | None  # the ranking cases of the sampled validation users (None: no valid split)


def validation_set(catalog: Catalog, seed: int, valid_users: int) -> ValidationSet:
    users, items = catalog.valid.users, catalog.valid.items
    rng = epoch_rng(seed, 0, VALIDATION_KEY)
    random_cols, _ = mix_negatives(
        users, items, catalog.sampling, negatives_per_positive=1, also_view_fraction=0.0, rng=rng
    )
    hard_cols, _ = mix_negatives(
        users, items, catalog.sampling, negatives_per_positive=1, also_view_fraction=1.0, rng=rng
    )
    n = len(users)
    hard = hard_cols["is_hard"][n:]
    ranking = build_cases(catalog, "valid", seed, max_users=valid_users) if n else None
    return ValidationSet(
        users=users,
        positives=items,
        random_negatives=random_cols["item"][n:],
        hard_users=users[hard],
        hard_positives=items[hard],
        hard_negatives=hard_cols["item"][n:][hard],
        ranking=ranking,
    )


@torch.no_grad()
def score_pairs(
    model: torch.nn.Module, users: np.ndarray, items: np.ndarray, device: torch.device, batch_size: int = 8192
) -> np.ndarray:
    """Model logits for aligned (user, item) arrays, in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(users), batch_size):
        # copies: the arrays may be read-only views into Ray's object store
        u = torch.tensor(users[start : start + batch_size], dtype=torch.long, device=device)
        i = torch.tensor(items[start : start + batch_size], dtype=torch.long, device=device)
        out.append(model(u, i).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def validate(model: torch.nn.Module, valid: ValidationSet, device: torch.device) -> dict[str, float]:
    """Every validation metric of one epoch (see the module docstring)."""
    auc = pairwise_auc(
        score_pairs(model, valid.users, valid.positives, device),
        score_pairs(model, valid.users, valid.random_negatives, device),
    )
    hard_auc = pairwise_auc(
        score_pairs(model, valid.hard_users, valid.hard_positives, device),
        score_pairs(model, valid.hard_users, valid.hard_negatives, device),
    )
    values = [v for v in (auc, hard_auc) if not math.isnan(v)]
    metrics = {
        "valid/auc": auc,
        "valid/hard_auc": hard_auc,
        "valid/mean_auc": float(np.mean(values)) if values else float("nan"),
        "valid/hard_pairs": float(len(valid.hard_users)),
    }
    if valid.ranking is not None:
        was_training = model.training
        scorer = ModelScorer(model, str(device))
        cases = valid.ranking
        counts = score_rows(scorer, cases, np.arange(len(cases.users)), RANKING_PROTOCOLS)
        model.train(was_training)
        ranking = summarize(counts, "valid", RANKING_PROTOCOLS)
        metrics.update({k: ranking[k] for k in ranking if k.rsplit("/", 1)[-1] in ("ndcg@10", "hr@10", "mrr")})
    return metrics


def reference_validation(catalog: Catalog, valid: ValidationSet, seed: int) -> dict[str, dict[str, float]]:
    """The cheap references (popularity, co-occurrence, related) on the run's own validation
    users and protocols, as the model's `valid/full/*` and `valid/sampled100/*` are measured: the
    bar a training run's verdict compares its best epoch with. Random is left out (it is chance)
    and so are ALS and BPR (fitting them costs more than a small run's training)."""
    if valid.ranking is None:
        return {}
    references = reference_scorers(catalog.inputs_for("valid"), seed, peers=False)
    rows = np.arange(len(valid.ranking.users))
    results = {}
    for name, scorer in references.scorers.items():
        if name == "random":
            continue
        results[name] = summarize(
            score_rows(scorer, valid.ranking, rows, RANKING_PROTOCOLS), "valid", RANKING_PROTOCOLS
        )
    return results
