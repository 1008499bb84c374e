"""Full-ranking evaluation over all items: HR@k, NDCG@k, and overlap@k with a teacher's top-k."""

from __future__ import annotations

import numpy as np
import torch

from .data import SeqDataset
from .models import SeqRecommender

CUTOFFS = (10, 20)


def mask_history(scores: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Items already in the row's history cannot be recommended (MovieLens users rate a film once);
    used when the dataset says so (`SeqDataset.exclude_history`)."""
    num_items = scores.shape[1]
    index = history.clamp(max=num_items)  # padding id = num_items
    padded = torch.cat([scores, torch.zeros(scores.shape[0], 1, dtype=scores.dtype)], dim=1)
    return padded.scatter(1, index, float("-inf"))[:, :num_items]


@torch.no_grad()
def top_items(model: SeqRecommender, data: SeqDataset, k: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item ids and all-item log-softmax at those ids, per row (eval mode, in batches)."""
    was_training = model.training
    model.eval()
    ids, log_probs = [], []
    for start in range(0, len(data), batch_size):
        history = torch.from_numpy(data.history[start:start + batch_size])
        lengths = torch.from_numpy(data.lengths[start:start + batch_size])
        scores = model(history, lengths)
        if data.exclude_history:
            scores = mask_history(scores, history)
        top = scores.topk(k, dim=1)
        ids.append(top.indices.numpy())
        log_probs.append(torch.log_softmax(scores, dim=1).gather(1, top.indices).numpy())
    model.train(was_training)
    return np.concatenate(ids), np.concatenate(log_probs)


def ranking_metrics(top: np.ndarray, targets: np.ndarray, cutoffs=CUTOFFS) -> dict[str, float]:
    hits = top == targets[:, None]  # at most one hit per row
    ranks = np.where(hits.any(1), hits.argmax(1), top.shape[1])
    metrics = {}
    for k in cutoffs:
        inside = ranks < k
        metrics[f"hr@{k}"] = float(inside.mean())
        metrics[f"ndcg@{k}"] = float(np.where(inside, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    return metrics


def overlap_at_k(student_top: np.ndarray, teacher_top: np.ndarray, k: int = 20) -> float:
    """Mean share of the teacher's top-k that is also in the student's top-k."""
    shared = [len(np.intersect1d(s[:k], t[:k], assume_unique=True)) for s, t in zip(student_top, teacher_top)]
    return float(np.mean(shared) / k)


def evaluate(model: SeqRecommender, data: SeqDataset, teacher_top: np.ndarray | None = None) -> dict[str, float]:
    top, _ = top_items(model, data, max(CUTOFFS))
    metrics = ranking_metrics(top, data.targets)
    if teacher_top is not None:
        metrics["overlap@20"] = overlap_at_k(top, teacher_top, 20)
    return metrics
