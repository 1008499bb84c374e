import math

import pytest
import torch

from rankstill.distill.losses import margin_mse, soft_bce


def test_margin_mse_against_hand_computation():
    student = torch.tensor([[1.0, 0.0, 2.0]])
    teacher = torch.tensor([[0.5, 0.5, 1.0]])
    # pairs (0,1): (1-0)-(0.5-0.5)=1 -> 1; (0,2): (1-2)-(0.5-1)=-0.5 -> 0.25; (1,2): (0-2)-(0.5-1)=-1.5 -> 2.25
    expected = 2 / (3 * 2) * (1 + 0.25 + 2.25)
    assert margin_mse(student, teacher).item() == pytest.approx(expected)


def test_margin_mse_ignores_masked_items_and_averages_queries():
    student = torch.tensor([[1.0, 0.0, 99.0], [0.0, 1.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0, -99.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    first = 1.0  # one pair: (1 - 0) - 0 = 1
    second = 2 / 6 * (1 + 0 + 1)  # pairs (0,1): -1, (0,2): 0, (1,2): 1
    assert margin_mse(student, teacher, mask).item() == pytest.approx((first + second) / 2)


def test_margin_mse_is_shift_invariant_and_has_gradients():
    teacher = torch.tensor([[2.0, -1.0, 0.5]])
    student = (teacher + 3.0).clone().requires_grad_(True)
    loss = margin_mse(student, teacher)
    assert loss.item() == pytest.approx(0.0)
    wrong = torch.tensor([[0.0, 0.0, 0.0]], requires_grad=True)
    margin_mse(wrong, teacher).backward()
    assert wrong.grad.abs().sum() > 0


def test_soft_bce_against_hand_computation():
    logits = torch.tensor([0.0, 2.0])
    targets = torch.tensor([0.5, 1.0])
    sig = 1 / (1 + math.exp(-2.0))
    expected = (-(0.5 * math.log(0.5) + 0.5 * math.log(0.5)) - math.log(sig)) / 2
    assert soft_bce(logits, targets).item() == pytest.approx(expected, rel=1e-6)
