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
