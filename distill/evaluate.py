"""Evaluation as its own stage: NDCG@10 against human labels, and student–teacher agreement."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rankstill.metrics import kendall_tau, mean_defined, ndcg_at_k


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def ranking_report(frame: pd.DataFrame, score_columns: list[str], gain_column: str = "gain",
                   k: int = 10, random_draws: int = 20, seed: int = 0) -> dict:
    """Mean NDCG@k per score column over the queries of `frame`, plus a random order.

    `frame` holds one row per judged (query, item) with `query`, the gain column and the
    score columns. Random order is averaged over `random_draws` shuffles per query.
    """
    rng = np.random.default_rng(seed)
    per_column: dict[str, list] = {name: [] for name in ["random", *score_columns]}
    for _, group in frame.groupby("query", sort=False):
        gains = group[gain_column].to_numpy(dtype=np.float64)
        draws = [ndcg_at_k(rng.random(gains.size), gains, k) for _ in range(random_draws)]
        per_column["random"].append(mean_defined(draws))
        for name in score_columns:
            # Shuffle before the stable sort so ties are not broken in file order.
            shuffle = rng.permutation(gains.size)
            scores = group[name].to_numpy(dtype=np.float64)
            per_column[name].append(ndcg_at_k(scores[shuffle], gains[shuffle], k))
    report = {f"ndcg@{k}": {name: mean_defined(values) for name, values in per_column.items()}}
    report["queries"] = int(sum(v is not None for v in per_column["random"]))
    return report


def agreement_report(frame: pd.DataFrame, student_column: str, teacher_column: str,
                     k: int = 10) -> dict:
    """How closely the student orders items like the teacher (teacher logits as truth)."""
    ndcgs, taus = [], []
    for _, group in frame.groupby("query", sort=False):
        student = group[student_column].to_numpy()
        teacher = group[teacher_column].to_numpy()
        ndcgs.append(ndcg_at_k(student, _sigmoid(teacher), k))
        taus.append(kendall_tau(student, teacher))
    return {f"ndcg@{k}_teacher_gains": mean_defined(ndcgs), "kendall_tau": mean_defined(taus)}


def gain_retention(ndcg: dict, student: str, teacher: str = "teacher") -> float | None:
    """Share of the teacher's NDCG gain over random order that the student keeps."""
    teacher_gain = ndcg[teacher] - ndcg["random"]
    if teacher_gain <= 0:
        return None
    return (ndcg[student] - ndcg["random"]) / teacher_gain


def save_report(report: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


def print_report(title: str, report: dict) -> None:
    print(f"== {title}")
    print(json.dumps(report, indent=2))
