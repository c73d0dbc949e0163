"""The chi-square tests (torch_ref/stats.py): known p-values."""
from __future__ import annotations

import numpy as np

from torch_ref import stats


def test_chi_square_p_values_known():
    # one row off by 10 from 50/50, one on the nose: Pearson's statistic 4 on 2 dof, p = e^-2 (chi2(2) is Exp(1/2))
    counts, half = np.array([[60, 40], [50, 50]]), np.full((2, 2), 0.5)
    assert abs(stats.goodness_of_fit(counts, half) - np.exp(-2)) < 1e-14
    assert stats.goodness_of_fit(np.zeros((3, 3)), np.full((3, 3), 1 / 3)) == 1.0  # nothing sampled: nothing to reject
    assert stats.homogeneity(np.array([[5, 0], [0, 0]]), np.array([[0, 0], [0, 5]])) == 1.0  # no row visited by both
    assert stats.goodness_of_fit(counts, np.array([[1.0, 0.0], [0.5, 0.5]])) == 0.0  # a draw the law forbids
