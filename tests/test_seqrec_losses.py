"""DLLM2Rec losses against hand computations on tiny inputs."""

import math

import pytest
import torch

from rankstill.distill.seqrec.losses import (DistillWeights, bce_sampled, candidate_weights, dros, listwise_distillation,
                                             ranking_distillation)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_bce_negative_term_is_log_sigmoid_of_minus_score():
    scores = torch.tensor([[2.0, -1.0, 0.5]])
    loss = bce_sampled(scores, torch.tensor([0]), torch.tensor([2]))
    assert loss.item() == pytest.approx(-math.log(sigmoid(2.0)) - math.log(sigmoid(-0.5)), rel=1e-6)


def test_candidate_weights_by_hand():
    weights = DistillWeights(position=0.3, confidence=0.5, consistency=0.1, beta=1.0)
    scores = torch.tensor([[0.0, 5.0, 4.0, 1.0]])  # the student's own top-2: items 1 and 2
    candidates = torch.tensor([[2, 3]])
    distances = torch.tensor([[0.2, 1.2]])
    position = [math.exp(-1) / (math.exp(-1) + math.exp(-2)), math.exp(-2) / (math.exp(-1) + math.exp(-2))]
    confidence = [math.exp(-0.2) / (math.exp(-0.2) + math.exp(-1.2)), math.exp(-1.2) / (math.exp(-0.2) + math.exp(-1.2))]
    consistency = [1.0, 0.0]  # item 2 is in the student's top-2, item 3 is not
    raw = [0.3 * p + 0.5 * c + 0.1 * o for p, c, o in zip(position, confidence, consistency)]
    expected = [r / sum(raw) for r in raw]
    assert candidate_weights(scores, candidates, distances, weights)[0].tolist() == pytest.approx(expected, rel=1e-6)

    loss = ranking_distillation(scores, candidates, distances, weights)
    by_hand = -(expected[0] * math.log(sigmoid(4.0)) + expected[1] * math.log(sigmoid(1.0)))
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_weights_are_per_row_not_an_outer_product():
    weights = DistillWeights()
    scores = torch.randn(2, 20)
    candidates = torch.tensor([[1, 2, 3], [4, 5, 6]])
    distances = torch.tensor([[0.1, 0.5, 2.0], [3.0, 0.1, 0.2]])
    both = candidate_weights(scores, candidates, distances, weights)
    alone = candidate_weights(scores[:1], candidates[:1], distances[:1], weights)
    assert both.shape == (2, 3)
    assert torch.allclose(both[0], alone[0])
    assert torch.allclose(both.sum(1), torch.ones(2))
    per_row = torch.stack([ranking_distillation(scores[i:i + 1], candidates[i:i + 1], distances[i:i + 1], weights)
                           for i in range(2)])
    assert ranking_distillation(scores, candidates, distances, weights).item() == pytest.approx(per_row.mean().item(), rel=1e-6)


def test_dros_by_hand():
    scores = torch.tensor([[0.5, -1.0, 2.0]])
    propensity = torch.tensor([0.5, 0.3, 0.2])
    target = 2
    terms = [math.exp(s * s * p) for s, p in zip(scores[0].tolist(), propensity.tolist())]
    inner = sum(terms) - terms[target] + math.exp((2.0 - 1) ** 2 * 0.2)
    assert dros(scores, torch.tensor([target]), propensity).item() == pytest.approx(math.log(inner), rel=1e-6)


def test_listwise_distillation_by_hand():
    distances = torch.tensor([[0.5, 1.5, 3.0]])  # -log p of the teacher's top 3
    scores = torch.tensor([[1.0, 2.0, 0.0]])
    for temperature in (1.0, 2.0):
        teacher = [math.exp(-d / temperature) for d in distances[0].tolist()]
        teacher = [t / sum(teacher) for t in teacher]
        student = [math.exp(s / temperature) for s in scores[0].tolist()]
        student = [s / sum(student) for s in student]
        kl = sum(t * math.log(t / s) for t, s in zip(teacher, student)) * temperature ** 2
        assert listwise_distillation(scores, distances, temperature).item() == pytest.approx(kl, rel=1e-5)
    # Scores that order and space the candidates as the teacher does (any shift) cost nothing.
    assert listwise_distillation(-distances + 7.0, distances).item() == pytest.approx(0.0, abs=1e-6)


def test_table_variants_switch_the_listwise_term():
    from rankstill.distill.seqrec.stage import variant_settings
    from rankstill.distill.seqrec.train import TrainConfig

    config = TrainConfig(distill_weight=3.2, listwise_weight=3.0)
    settings = {v: variant_settings(v, config, 1.0) for v in ("alone", "dllm2rec", "no-listwise", "no-ranking-distill", "no-position")}
    assert [(c.distill_weight, c.listwise_weight, e) for c, e in settings.values()] == [
        (0.0, 0.0, 0.0), (3.2, 3.0, 1.0), (3.2, 0.0, 1.0), (0.0, 0.0, 1.0), (3.2, 3.0, 1.0)]
    assert settings["no-position"][0].distill.position == 0.0
