"""Losses of DLLM2Rec's students: BCE with a sampled negative, DROS, importance-aware ranking distillation.

Ranking distillation over the teacher's top-K candidates c_1..c_K of a row (Cui et al., RecSys'24):

    w_position_k    ∝ exp(-k / β)                      (k = 1..K, the teacher's rank)
    w_confidence_k  = softmax_k(-distance_k)           (the teacher's distance to candidate k)
    w_consistency_k = 1 if c_k is in the student's own top-K, else 0
    w_k = (γ_p w_position_k + γ_c w_confidence_k + γ_o w_consistency_k), normalised to sum 1 per row
    L_distill = mean over rows of  -Σ_k w_k log σ(s(c_k))

DLLM2Rec's code pairs each candidate with the row's sampled negative n instead,
-Σ_k w_k [log σ(s(c_k)) + log σ(-s(n))] (`TrainConfig.distill_negative`; since Σ_k w_k = 1 the
negative's term is added once more, weighted by λ).

Weights are per row and per candidate (shape [batch, K]); they multiply only that row's scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def bce_sampled(scores: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """-log σ(s_pos) - log σ(-s_neg), averaged over rows."""
    positive = scores.gather(1, targets[:, None]).squeeze(1)
    negative = scores.gather(1, negatives[:, None]).squeeze(1)
    return -(F.logsigmoid(positive) + F.logsigmoid(-negative)).mean()


def dros(scores: torch.Tensor, targets: torch.Tensor, propensity: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Distributionally robust term of DROS (Yang et al., SIGIR'23), as DLLM2Rec adds it to BCE.

    Every item's squared score is treated as a loss under the item-popularity distribution
    `propensity`; the positive item's term uses (s - 1)² instead of s².
    """
    weighted_sq = scores.pow(2) * propensity
    positive_sq = weighted_sq.gather(1, targets[:, None]).squeeze(1)
    positive_miss = ((scores.gather(1, targets[:, None]).squeeze(1) - 1).pow(2)
                     * propensity[targets])
    inner = torch.exp(weighted_sq / beta).sum(1) - torch.exp(positive_sq / beta) + torch.exp(positive_miss / beta)
    return torch.log(inner + 1e-24).mean()


@dataclass(frozen=True)
class DistillWeights:
    position: float = 0.3  # γ_p
    confidence: float = 0.5  # γ_c
    consistency: float = 0.1  # γ_o
    beta: float = 1.0  # temperature of the position weight


def candidate_weights(scores: torch.Tensor, candidates: torch.Tensor, distances: torch.Tensor,
                      weights: DistillWeights, student_top: torch.Tensor | None = None) -> torch.Tensor:
    """Importance weights [batch, K] of the teacher's candidates, normalised per row.

    `scores`: the student's scores over all items (its own top-K gives the consistency weight), or
    pass that top-K as `student_top`."""
    k = candidates.shape[1]
    ranks = torch.arange(1, k + 1, dtype=distances.dtype, device=distances.device)
    position = torch.softmax(-ranks / weights.beta, dim=0).expand(candidates.shape[0], k)
    confidence = torch.softmax(-distances.float(), dim=1)
    if student_top is None:
        student_top = scores.detach().topk(k, dim=1).indices
    consistency = (candidates[:, :, None] == student_top[:, None, :]).any(-1).float()
    combined = weights.position * position + weights.confidence * confidence + weights.consistency * consistency
    return combined / combined.sum(1, keepdim=True).clamp(min=1e-12)


def ranking_distillation(scores: torch.Tensor, candidates: torch.Tensor, distances: torch.Tensor,
                         weights: DistillWeights, negatives: torch.Tensor | None = None) -> torch.Tensor:
    negative_scores = None if negatives is None else scores.gather(1, negatives[:, None]).squeeze(1)
    return weighted_candidate_loss(scores.gather(1, candidates), candidate_weights(scores, candidates, distances, weights),
                                   negative_scores)


def weighted_candidate_loss(candidate_scores: torch.Tensor, w: torch.Tensor,
                            negative_scores: torch.Tensor | None = None) -> torch.Tensor:
    """-Σ_k w_k log σ(s(c_k)), averaged over rows (candidate_scores and w: [batch, K]); with the rows' sampled
    negatives' scores [batch], -Σ_k w_k [log σ(s(c_k)) + log σ(-s(n))] (w sums to 1 per row)."""
    loss = -(w * F.logsigmoid(candidate_scores)).sum(1).mean()
    if negative_scores is not None:
        loss = loss - F.logsigmoid(-negative_scores).mean()
    return loss


def listwise_distillation(candidate_scores: torch.Tensor, distances: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher ‖ student) over the teacher's top-K candidates of each row (both [batch, K]), averaged over rows.

    The teacher's distribution is softmax(-distance / T) over its K candidates (distance = -log p, so at T = 1 its
    own probabilities conditioned on its top K); the student's is softmax(s / T) over the same items. The ranking
    term pushes each candidate up on its own; this one teaches their order. Scaled by T² (Hinton et al.) so that
    the gradient's size does not depend on T."""
    teacher = torch.softmax(-distances.float() / temperature, dim=1)
    student = F.log_softmax(candidate_scores / temperature, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean") * temperature ** 2
