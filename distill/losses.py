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


def _masked(scores: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    if mask is None:
        mask = torch.ones_like(scores, dtype=torch.bool)
    return scores, mask


def listwise_softmax_ce(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
                        temperature: float = 1.0) -> torch.Tensor:
    """Listwise softmax cross-entropy against the teacher's distribution over a query's items
    (ListNet top-one probabilities, Cao et al., 2007; as used for distillation in RankDistil / Walmart).

    For one query with student logits s and teacher logits t, at temperature T::

        p_i = exp(t_i / T) / sum_j exp(t_j / T)          (teacher)
        L   = - sum_i p_i * log( exp(s_i / T) / sum_j exp(s_j / T) )

    Padded items (mask False) get no probability. The result is the mean of L over queries with
    at least two items, multiplied by T^2 (Hinton et al., 2015) so that gradients keep their scale
    as T changes.
    """
    _, mask = _masked(student, mask)
    neg = torch.finfo(student.dtype).min / 4
    target = torch.softmax(teacher.masked_fill(~mask, neg) / temperature, dim=-1)
    log_probs = torch.log_softmax(student.masked_fill(~mask, neg) / temperature, dim=-1)
    per_query = -(target * log_probs).masked_fill(~mask, 0.0).sum(dim=-1)
    has_pairs = mask.sum(dim=-1) > 1
    if not has_pairs.any():
        return student.sum() * 0.0
    return per_query[has_pairs].mean() * temperature ** 2


def ranknet(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
            temperature: float = 1.0) -> torch.Tensor:
    """RankNet (Burges et al., 2005) with the teacher's soft pairwise preferences as targets.

    For items i != j of one query::

        P_ij = σ((t_i - t_j) / T)                      (teacher: probability that i ranks above j)
        L    = mean_{i<j} BCE(σ(s_i - s_j), P_ij)
             = mean_{i<j} [ softplus(s_i - s_j) - P_ij (s_i - s_j) ]  - const

    (the BCE with logits is used, so L is 0 only up to the targets' entropy). Averaged over the
    item pairs of each query, then over queries with at least two items.
    """
    _, mask = _masked(student, mask)
    s_diff = student[:, :, None] - student[:, None, :]
    target = torch.sigmoid((teacher[:, :, None] - teacher[:, None, :]) / temperature)
    upper = torch.triu(torch.ones_like(s_diff[0], dtype=torch.bool), diagonal=1)
    valid = mask[:, :, None] & mask[:, None, :] & upper
    bce = F.binary_cross_entropy_with_logits(s_diff, target, reduction="none")
    pairs_per_query = valid.sum(dim=(1, 2))
    per_query = (bce * valid).sum(dim=(1, 2)) / pairs_per_query.clamp(min=1)
    has_pairs = pairs_per_query > 0
    if not has_pairs.any():
        return student.sum() * 0.0
    return per_query[has_pairs].mean()


LOSSES = {"margin-mse": margin_mse, "listwise": listwise_softmax_ce, "ranknet": ranknet}


def ranking_loss(name: str, student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor | None = None,
                 temperature: float = 1.0) -> torch.Tensor:
    """The ranking term chosen by name: margin-mse, listwise (softmax CE, temperature T) or ranknet."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}: one of {', '.join(LOSSES)}")
    if name == "margin-mse":
        return margin_mse(student, teacher, mask)
    return LOSSES[name](student, teacher, mask, temperature=temperature)
