"""Checks that an exported model ranks like its source: value parity and ranking parity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rankstill.metrics import kendall_tau, mean_defined, ndcg_at_k

FP32_MAX_ABS_DIFF = 1e-4
# int8 matrix products reorder near-ties (items whose fp32 logits differ by ~1e-3), so the
# full order of every query cannot be kept; these are the stated, tested tolerances. The
# share of queries whose full order is unchanged is reported, not gated.
INT8_MIN_KENDALL_TAU = 0.95  # mean over queries, int8 vs fp32
INT8_MAX_NDCG_DROP = 0.002  # NDCG@10 against human labels, fp32 minus int8 (~10% of the teacher's gain over random)


def value_parity(reference: np.ndarray, candidate: np.ndarray) -> dict:
    max_abs = float(np.max(np.abs(reference - candidate)))
    return {"max_abs_diff": max_abs, "tolerance": FP32_MAX_ABS_DIFF, "passed": max_abs <= FP32_MAX_ABS_DIFF}


def ranking_parity(frame: pd.DataFrame, reference: np.ndarray, candidate: np.ndarray) -> dict:
    """Compare per-query orders of two score arrays aligned with `frame` rows (query, gain)."""
    frame = frame.assign(reference=reference, candidate=candidate)
    identical, taus, ndcg_reference, ndcg_candidate = [], [], [], []
    for _, group in frame.groupby("query", sort=False):
        ref, cand = group["reference"].to_numpy(), group["candidate"].to_numpy()
        identical.append(bool(np.array_equal(np.argsort(-ref, kind="stable"), np.argsort(-cand, kind="stable"))))
        taus.append(kendall_tau(ref, cand))
        ndcg_reference.append(ndcg_at_k(ref, group["gain"].to_numpy()))
        ndcg_candidate.append(ndcg_at_k(cand, group["gain"].to_numpy()))
    report = {
        "queries": len(identical),
        "identical_order_share": float(np.mean(identical)),
        "mean_kendall_tau": mean_defined(taus),
        "ndcg@10_reference": mean_defined(ndcg_reference),
        "ndcg@10_candidate": mean_defined(ndcg_candidate),
        "tolerance": {"min_mean_kendall_tau": INT8_MIN_KENDALL_TAU,
                      "max_ndcg@10_drop": INT8_MAX_NDCG_DROP},
    }
    report["passed"] = bool(
        report["mean_kendall_tau"] >= INT8_MIN_KENDALL_TAU
        and report["ndcg@10_reference"] - report["ndcg@10_candidate"] <= INT8_MAX_NDCG_DROP
    )
    return report
