import math

import numpy as np
import pytest
import torch

from sharing import candidate_sets, free_zone, is_candidate, num_candidates, sample_candidate, units_to_channels


def test_card_examples():
    assert candidate_sets(6, 3, 1) == [(0, 1, 2), (0, 1, 3)]
    assert candidate_sets(6, 1, 1) == [(0,), (1,)]
    assert candidate_sets(6, 6, 1) == [(0, 1, 2, 3, 4, 5)]
    s = candidate_sets(8, 3, 2)
    assert len(s) == 6 and all(u[0] == 0 and set(u[1:]) <= {1, 2, 3, 4} for u in s)
    assert free_zone(8, 3, 2) == (1, 1, 5, 2)


@pytest.mark.parametrize('n', range(1, 9))
@pytest.mark.parametrize('r', range(0, 4))
def test_every_candidate_has_c_units_contains_the_base_and_stays_in_its_zone(n, r):
    for c in range(1, n + 1):
        b, z0, z1, f = free_zone(n, c, r)
        sets = candidate_sets(n, c, r)
        assert len(sets) == len(set(sets)) == num_candidates(n, c, r) == math.comb(z1 - z0, f)
        for u in sets:
            assert len(u) == len(set(u)) == c
            assert set(range(b)) <= set(u)                                  # base channels always in
            assert all(b <= x < min(c + r, n) for x in u[b:])               # free units inside the zone
            assert is_candidate(u, n, c, r)
        if r == 0 or c == n:
            assert sets == [tuple(range(c))]                                # fixed pattern / full width
        elif c - r >= 0 and c + r <= n:
            assert len(sets) == math.comb(2 * r, r)                        # interior widths


def test_sampling_stays_in_the_set_and_covers_it():
    rng = np.random.default_rng(0)
    sets = set(candidate_sets(8, 4, 2))
    draws = {sample_candidate(8, 4, 2, rng) for _ in range(400)}
    assert draws == sets


def test_is_candidate_rejects():
    assert not is_candidate((0, 2, 3), 6, 3, 1)        # misses base unit 1
    assert not is_candidate((0, 1, 4), 6, 3, 1)        # 4 is outside the zone [2, 4)
    assert not is_candidate((0, 1), 6, 3, 1)           # wrong size
    assert not is_candidate((0, 1, 1), 6, 3, 1)


def test_bad_arguments():
    for args in ((6, 0, 1), (6, 7, 1), (0, 1, 1), (6, 3, -1)):
        with pytest.raises(ValueError):
            candidate_sets(*args)


def test_units_to_channels():
    assert torch.equal(units_to_channels((0, 2), 3), torch.tensor([0, 1, 2, 6, 7, 8]))
    assert torch.equal(units_to_channels([1], 1), torch.tensor([1]))
    with pytest.raises(ValueError):
        units_to_channels((), 2)
