"""Ranking and classification metrics: pure numpy, every number says what it compares."""

from __future__ import annotations

import numpy as np


def pairwise_auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Share of matched (positive, negative) pairs ranked correctly, ties counting one half.

    With one negative drawn per held-out positive this is the AUC of the validation protocol
    (`valid/auc` against a random item, `valid/hard_auc` against an also-view item).
    """
    positive_scores = np.asarray(positive_scores, dtype=np.float64)
    negative_scores = np.asarray(negative_scores, dtype=np.float64)
    if positive_scores.shape != negative_scores.shape:
        raise ValueError(f"pairs must align: {positive_scores.shape} vs {negative_scores.shape}")
    if positive_scores.size == 0:
        return float("nan")
    wins = (positive_scores > negative_scores).sum() + 0.5 * (positive_scores == negative_scores).sum()
    return float(wins / positive_scores.size)


# --- ROC AUC over a pool of scores -------------------------------------------------------------


def _binary_labels(labels: np.ndarray, n: int) -> np.ndarray:
    """Labels as bool; only {0, 1} / {False, True} are accepted so no label is silently recoded."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size != n:
        raise ValueError(f"labels and scores must align: {labels.size} vs {n}")
    if labels.dtype != np.bool_:
        if not np.all((labels == 0) | (labels == 1)):
            raise ValueError("labels must be binary (0/1 or bool)")
        labels = labels == 1
    return labels


def _finite_scores(scores: np.ndarray) -> np.ndarray:
    """Scores as a flat float64 array; NaN has no rank, so it is refused rather than misplaced."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


def _run_bounds(is_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position of a sorted array, the [start, end) of the run of equal keys it sits in."""
    starts = np.flatnonzero(is_start)
    ends = np.append(starts[1:], is_start.size)
    run = np.cumsum(is_start) - 1
    return starts[run], ends[run]


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC: P(score of a random positive > score of a random negative), ties counting one half.

    Computed as the Mann-Whitney U statistic from average ranks (tied scores share the mean of
    their ranks), which equals `sklearn.metrics.roc_auc_score` whenever both classes occur.
    Returns NaN (not an exception) when a class is missing, so callers can average with nanmean.
    O(n log n) for the sort; fine for 10^7 values.
    """
    scores = _finite_scores(scores)
    labels = _binary_labels(labels, scores.size)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores)
    sorted_scores = scores[order]
    is_start = np.empty(scores.size, dtype=bool)
    is_start[0] = True
    np.not_equal(sorted_scores[1:], sorted_scores[:-1], out=is_start[1:])
    start, end = _run_bounds(is_start)
    avg_rank = (start + end + 1) * 0.5  # 1-based ranks start+1..end, averaged
    rank_sum = float(avg_rank[labels[order]].sum())
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def gauc(groups: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """Group AUC: unweighted mean over groups (users) of each group's own `auc`.

    Only pairs within a group are compared; ties within a group count one half (average ranks).
    Groups lacking a positive or a negative are skipped. Returns (mean, number of groups used);
    (NaN, 0) when no group has both classes. Vectorised: one lexsort by (group, score), then
    per-group rank sums with bincount -- no Python loop over groups.
    """
    scores = _finite_scores(scores)
    labels = _binary_labels(labels, scores.size)
    groups = np.asarray(groups).reshape(-1)
    if groups.size != scores.size:
        raise ValueError(f"groups and scores must align: {groups.size} vs {scores.size}")
    if scores.size == 0:
        return float("nan"), 0
    order = np.lexsort((scores, groups))
    g, s, y = groups[order], scores[order], labels[order]
    new_group = np.empty(g.size, dtype=bool)
    new_group[0] = True
    np.not_equal(g[1:], g[:-1], out=new_group[1:])
    new_run = new_group.copy()
    new_run[1:] |= s[1:] != s[:-1]
    run_start, run_end = _run_bounds(new_run)
    group_start, _ = _run_bounds(new_group)
    avg_rank = (run_start + run_end + 1) * 0.5 - group_start  # 1-based rank inside the group
    gid = np.cumsum(new_group) - 1
    n_groups = int(gid[-1]) + 1
    n_pos = np.bincount(gid, weights=y, minlength=n_groups)
    n_all = np.bincount(gid, minlength=n_groups).astype(np.float64)
    n_neg = n_all - n_pos
    rank_sum = np.bincount(gid, weights=np.where(y, avg_rank, 0.0), minlength=n_groups)
    used = (n_pos > 0) & (n_neg > 0)
    if not used.any():
        return float("nan"), 0
    p, q = n_pos[used], n_neg[used]
    per_group = (rank_sum[used] - p * (p + 1) / 2.0) / (p * q)
    return float(per_group.mean()), int(used.sum())


# --- Ranking metrics of one held-out positive among sampled/full candidates --------------------


def rank_counts(
    positive_scores: np.ndarray, negative_scores: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per user: negatives scoring strictly higher than the positive, exactly equal, and in total.

    positive_scores [B]; negative_scores [B, C]; valid [B, C] bool marks real candidates (padding
    False). The outputs feed `expected_rank_metrics`, which resolves the ties in expectation.
    """
    pos = np.asarray(positive_scores, dtype=np.float64).reshape(-1, 1)
    neg = np.asarray(negative_scores, dtype=np.float64)
    if neg.ndim != 2 or neg.shape[0] != pos.shape[0]:
        raise ValueError(f"negative_scores must be [B, C] with B={pos.shape[0]}, got {neg.shape}")
    mask = np.ones(neg.shape, dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    if mask.shape != neg.shape:
        raise ValueError(f"valid must match negative_scores: {mask.shape} vs {neg.shape}")
    greater = ((neg > pos) & mask).sum(axis=1)
    ties = ((neg == pos) & mask).sum(axis=1)
    return greater.astype(np.int64), ties.astype(np.int64), mask.sum(axis=1).astype(np.int64)


def _prefix(values: np.ndarray) -> np.ndarray:
    """P[m] = sum of values[:m], with P[0] = 0, so a range sum over [a, b) is P[b] - P[a]."""
    return np.concatenate([[0.0], np.cumsum(values)])


def expected_rank_metrics(
    greater: np.ndarray, ties: np.ndarray, ks: tuple[int, ...] = (5, 10, 20), n_negatives: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-user ranking metrics of one held-out positive, in expectation over random tie-breaking.

    With `greater` negatives strictly above the positive and `ties` equal to it, the positive's
    0-based rank is uniform on {greater, ..., greater + ties}. Each metric is the mean over that
    range (exact, via prefix sums), so a constant scorer gets its chance level, not 0 or 1:
      hr@K   = P(rank < K) = clip(K - greater, 0, ties + 1) / (ties + 1)
      ndcg@K = E[1/log2(rank + 2) * (rank < K)]   (one relevant item, so IDCG = 1)
      mrr    = E[1/(rank + 1)]                    (no cutoff)
      auc    = (n_negatives - greater - ties/2) / n_negatives, NaN where n_negatives == 0;
               only returned when `n_negatives` is given.
    Returns float64 arrays [B] keyed "hr@K", "ndcg@K", "mrr" (and "auc").
    """
    g = np.asarray(greater, dtype=np.int64).reshape(-1)
    t = np.asarray(ties, dtype=np.int64).reshape(-1)
    if g.shape != t.shape:
        raise ValueError(f"greater and ties must align: {g.shape} vs {t.shape}")
    if (g < 0).any() or (t < 0).any():
        raise ValueError("greater and ties must be non-negative counts")
    lo, hi = g, g + t + 1  # rank range [lo, hi)
    width = (t + 1).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"cutoffs must be >= 1, got {k}")
        out[f"hr@{k}"] = (np.minimum(hi, k) - np.minimum(lo, k)) / width
        discount = _prefix(1.0 / np.log2(np.arange(k) + 2.0))
        out[f"ndcg@{k}"] = (discount[np.minimum(hi, k)] - discount[np.minimum(lo, k)]) / width
    top = int(hi.max()) if hi.size else 0
    harmonic = _prefix(1.0 / np.arange(1, top + 1, dtype=np.float64))
    out["mrr"] = (harmonic[hi] - harmonic[lo]) / width
    if n_negatives is not None:
        n = np.asarray(n_negatives, dtype=np.int64).reshape(-1)
        if n.shape != g.shape:
            raise ValueError(f"n_negatives must align with greater: {n.shape} vs {g.shape}")
        if (g + t > n).any():
            raise ValueError("greater + ties exceeds n_negatives")
        with np.errstate(divide="ignore", invalid="ignore"):
            out["auc"] = np.where(n > 0, (n - g - 0.5 * t) / n, np.nan)
    return out


def summarize_ranks(per_user: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean of each per-user metric, ignoring NaN (users without negatives), plus the user count.

    "users" is the number of per-user entries (all arrays must share it); a metric that is NaN for
    every user stays NaN.
    """
    sizes = {np.asarray(v).size for v in per_user.values()}
    if len(sizes) > 1:
        raise ValueError(f"per-user arrays differ in length: {sorted(sizes)}")
    summary: dict[str, float] = {}
    for name, values in per_user.items():
        values = np.asarray(values, dtype=np.float64)
        finite = values[~np.isnan(values)]
        summary[name] = float(finite.mean()) if finite.size else float("nan")
    summary["users"] = sizes.pop() if sizes else 0
    return summary
