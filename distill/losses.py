"""Distillation losses (one module per family; the formula is in each docstring)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def margin_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """All-pairs Margin-MSE over the items of each query (Hofstätter et al., 2020).

    For one query with n items, student logits s and teacher logits t::

        L = 2 / (n (n - 1)) * sum_{i<j} ((s_i - s_j) - (t_i - t_j))^2

    `student`, `teacher`: [queries, items]; `mask` (bool, same shape) marks real items
    in padded rows. The result is the mean of L over queries with at least two items.
    """
    if mask is None:
        mask = torch.ones_like(student, dtype=torch.bool)
    diff = student - teacher
    pair_error = (diff[:, :, None] - diff[:, None, :]) ** 2  # ((s_i - t_i) - (s_j - t_j))^2
    upper = torch.triu(torch.ones_like(pair_error[0], dtype=torch.bool), diagonal=1)
    valid = mask[:, :, None] & mask[:, None, :] & upper
    pairs_per_query = valid.sum(dim=(1, 2))
    per_query = (pair_error * valid).sum(dim=(1, 2)) / pairs_per_query.clamp(min=1)
    has_pairs = pairs_per_query > 0
    if not has_pairs.any():
        return student.sum() * 0.0
    return per_query[has_pairs].mean()


def soft_bce(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Pointwise binary cross-entropy against soft targets y in [0, 1]::

        L = -mean( y log σ(s) + (1 - y) log(1 - σ(s)) )

    Used to fine-tune the teacher on graded labels, and (with y = σ(teacher logit))
    as the student's pointwise term.
    """
    return F.binary_cross_entropy_with_logits(student_logits, targets)
