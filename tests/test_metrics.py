import math

import numpy as np
import pytest
from scipy.stats import kendalltau

from rankstill.metrics import kendall_tau, ndcg_at_k


def test_ndcg_matches_hand_computation():
    # Order by score: items 1 (gain 0), 0 (gain 1), 2 (gain 0.5).
    dcg = 0 / math.log2(2) + 1 / math.log2(3) + 0.5 / math.log2(4)
    ideal = 1 / math.log2(2) + 0.5 / math.log2(3) + 0 / math.log2(4)
    assert ndcg_at_k([0.5, 0.9, 0.1], [1.0, 0.0, 0.5]) == pytest.approx(dcg / ideal)


def test_ndcg_cuts_at_k_and_is_one_for_ideal_order():
    gains = np.array([0.0, 1.0, 0.5, 0.2])
    assert ndcg_at_k(gains, gains) == pytest.approx(1.0)
    # With k=1 only the top item counts: the best-gain item first gives 1, another gives its share.
    assert ndcg_at_k([0, 0, 1, 0], gains, k=1) == pytest.approx(0.5)


def test_ndcg_undefined_without_positive_gain():
    assert ndcg_at_k([0.3, 0.1], [0.0, 0.0]) is None


@pytest.mark.parametrize("seed", range(5))
def test_kendall_tau_matches_scipy_tau_b(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, size=12).astype(float)  # ties on purpose
    b = a + rng.normal(0, 1.5, size=12)
    assert kendall_tau(a, b) == pytest.approx(kendalltau(a, b).statistic)


def test_kendall_tau_undefined_cases():
    assert kendall_tau([1.0], [2.0]) is None
    assert kendall_tau([1.0, 1.0], [1.0, 2.0]) is None
