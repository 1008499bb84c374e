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


def _softmax(values, t=1.0):
    exps = [math.exp(v / t) for v in values]
    return [e / sum(exps) for e in exps]


def test_listwise_softmax_ce_against_hand_computation():
    from rankstill.distill.losses import listwise_softmax_ce

    student, teacher = [1.0, 0.0, 2.0], [0.5, 0.5, 1.0]
    for t in (1.0, 2.0):
        p, q = _softmax(teacher, t), _softmax(student, t)
        expected = -sum(pi * math.log(qi) for pi, qi in zip(p, q)) * t * t
        got = listwise_softmax_ce(torch.tensor([student]), torch.tensor([teacher]), temperature=t)
        assert got.item() == pytest.approx(expected, rel=1e-5)


def test_listwise_ignores_padding_and_single_item_queries():
    from rankstill.distill.losses import listwise_softmax_ce

    student = torch.tensor([[1.0, 0.0, 99.0], [5.0, 0.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0, -99.0], [1.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    p, q = _softmax([0.0, 1.0]), _softmax([1.0, 0.0])
    expected = -sum(pi * math.log(qi) for pi, qi in zip(p, q))  # the one-item query does not count
    assert listwise_softmax_ce(student, teacher, mask).item() == pytest.approx(expected, rel=1e-5)


def test_listwise_is_minimal_when_student_matches_teacher_up_to_a_shift():
    from rankstill.distill.losses import listwise_softmax_ce

    teacher = torch.tensor([[2.0, -1.0, 0.5]])
    student = (teacher + 3.0).clone().requires_grad_(True)
    listwise_softmax_ce(student, teacher).backward()
    assert torch.allclose(student.grad, torch.zeros_like(student.grad), atol=1e-6)


def test_ranknet_against_hand_computation():
    from rankstill.distill.losses import ranknet

    student, teacher = [1.0, 0.0, 2.0], [0.5, 0.5, 1.0]
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    terms = []
    for i, j in [(0, 1), (0, 2), (1, 2)]:
        s, p = student[i] - student[j], sig(teacher[i] - teacher[j])
        terms.append(-(p * math.log(sig(s)) + (1 - p) * math.log(1 - sig(s))))
    got = ranknet(torch.tensor([student]), torch.tensor([teacher]))
    assert got.item() == pytest.approx(sum(terms) / 3, rel=1e-5)


def test_ranknet_gradient_pushes_towards_the_teacher_order():
    from rankstill.distill.losses import ranknet

    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    ranknet(student, torch.tensor([[3.0, -3.0]])).backward()
    assert student.grad[0, 0] < 0 < student.grad[0, 1]  # descent raises item 0, lowers item 1


def test_ranking_loss_picks_by_name():
    from rankstill.distill.losses import margin_mse, ranking_loss

    s, t = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[0.5, 0.5, 1.0]])
    assert ranking_loss("margin-mse", s, t).item() == pytest.approx(margin_mse(s, t).item())
    with pytest.raises(ValueError, match="unknown loss"):
        ranking_loss("lambda-magic", s, t)
