import itertools

import numpy as np
import pytest

from metrics import kendall_tau_b, pearson, rankdata, spearman


def _brute_tau_b(x, y):
    s = n1 = n2 = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        s += np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
        n1 += x[i] == x[j]
        n2 += y[i] == y[j]
    n0 = len(x) * (len(x) - 1) / 2
    return s / np.sqrt((n0 - n1) * (n0 - n2))


def test_hand_computed_values():
    x, y = [1, 2, 3, 4], [1, 3, 2, 4]
    assert pearson(x, y) == pytest.approx(0.8)                  # cov 1.0 / var 1.25
    assert spearman(x, y) == pytest.approx(0.8)
    assert kendall_tau_b(x, y) == pytest.approx(4 / 6)          # 5 concordant, 1 discordant
    assert kendall_tau_b(x, x[::-1]) == pytest.approx(-1.0)
    # ties: x has one tied pair, y none -> (n_c - n_d) / sqrt(5 * 6)
    assert kendall_tau_b([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / np.sqrt(30))


def test_rankdata_averages_ties():
    assert rankdata([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(pearson([1, 2.5, 2.5, 4], [1, 2, 3, 4]))


def test_kendall_matches_brute_force_with_many_ties():
    rng = np.random.default_rng(0)
    for n in (2, 7, 40, 120):
        x = rng.integers(0, 5, n).astype(float)
        y = rng.integers(0, 4, n).astype(float) + 0.5 * x
        assert kendall_tau_b(x, y) == pytest.approx(_brute_tau_b(x, y), abs=1e-12)


def test_against_scipy_when_installed():
    stats = pytest.importorskip('scipy.stats', reason='scipy is optional; the numpy code is checked above')
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=500), 1)
    y = np.round(x + rng.normal(size=500), 1)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert kendall_tau_b(x, y) == pytest.approx(stats.kendalltau(x, y)[0])


def test_bad_input():
    with pytest.raises(ValueError):
        pearson([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        kendall_tau_b([1], [1])
    with pytest.raises(ValueError):
        spearman([1, np.nan], [1, 2])
