"""Ranking metrics shared by evaluation and serving (numpy only, no torch)."""

from __future__ import annotations

import numpy as np


def dcg_at_k(gains_in_rank_order: np.ndarray, k: int) -> float:
    """DCG@k with linear gains: sum_i g_i / log2(i + 2) over the first k ranks."""
    gains = np.asarray(gains_in_rank_order, dtype=np.float64)[:k]
    return float(np.sum(gains / np.log2(np.arange(2, gains.size + 2))))


def ndcg_at_k(scores: np.ndarray, gains: np.ndarray, k: int = 10) -> float | None:
    """NDCG@k of the order given by `scores` (descending) against `gains`.

    Ties in `scores` are broken by position (stable sort), so callers that want
    an unbiased tie order must shuffle first. Returns None when no item has a
    positive gain (NDCG is undefined there), so such queries can be skipped.
    """
    gains = np.asarray(gains, dtype=np.float64)
    ideal = dcg_at_k(np.sort(gains)[::-1], k)
    if ideal <= 0:
        return None
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return dcg_at_k(gains[order], k) / ideal


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float | None:
    """Kendall's tau-b between two score lists of one query (handles ties).

    Returns None for fewer than two items or when either list is constant.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.size < 2:
        return None
    upper = np.triu_indices(a.size, k=1)
    da = np.sign(a[:, None] - a[None, :])[upper]
    db = np.sign(b[:, None] - b[None, :])[upper]
    denominator = np.sqrt(np.count_nonzero(da) * np.count_nonzero(db))
    if denominator == 0:
        return None
    return float(np.sum(da * db) / denominator)


def mean_defined(values) -> float | None:
    """Mean of the values that are not None (None when there are none)."""
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None
