import numpy as np
import pytest

from sampler import BCNetSampler, bilateral_indices, complementary_pair, width_range


@pytest.mark.parametrize('C,B,c,left,right', [(62, 20, 1, (0, 4), (58, 62)), (31, 20, 1, (0, 2), (29, 31)),
                                               (47, 20, 7, (0, 17), (30, 47)), (128, 4, 3, (0, 96), (32, 128))])
def test_index_rule_card_examples(C, B, c, left, right):
    assert bilateral_indices(C, B, (0, c)) == left
    assert bilateral_indices(C, B, (B - c, B)) == right


def test_left_and_right_paths_have_the_same_size_and_never_leave_a_gap():
    for C in range(1, 70):
        for B in (3, 4, 7, 20, 26):
            for c in range(1, B + 1):
                l0, l1 = bilateral_indices(C, B, (0, c))
                r0, r1 = bilateral_indices(C, B, (B - c, B))
                assert l1 - l0 == r1 - r0 == -((-c * C) // B)
                if c < B:   # left(B - c) and right(c) together cover every channel
                    assert bilateral_indices(C, B, (0, B - c))[1] >= r0


@pytest.mark.parametrize('n,m', [(4, 1), (20, 1), (20, 6), (8, 2), (5, 5)])
def test_every_bin_has_the_same_cardinality(n, m):
    """BCNet (m=1): n + 1 paths per bin; BCNetV2 with B = n + m bins and c in [m, n]: n - m + 1."""
    B = n if m == 1 else n + m
    lo, hi = width_range(B, m)
    assert (lo, hi) == (m, n)
    use = np.zeros(B, dtype=int)
    for c in range(lo, hi + 1):
        use[:c] += 1            # left path
        use[B - c:] += 1        # right path
    assert (use == (n + 1 if m == 1 else n - m + 1)).all()


def test_unilateral_widths_are_unfair():
    """The UA principle (left path only) uses channel 0 n times and the last channel once."""
    n = 6
    use = np.zeros(n, dtype=int)
    for c in range(1, n + 1):
        use[:c] += 1
    assert use[0] == n and use[-1] == 1


def test_exact_complementary_pair_trains_every_bin_twice():
    for B in (4, 7, 20):
        for c in range(1, B):
            (l0, l1), (r0, r1) = complementary_pair(c, B, 1, 'exact')
            assert l1 - l0 == r1 - r0 == B - c
            use = np.zeros(B, dtype=int)
            for a, b in ((0, c), (B - c, B), (l0, l1), (r0, r1)):
                use[a:b] += 1
            assert (use == 2).all()
        assert complementary_pair(B, B, 1, 'exact') is None   # c = B has no complement


def test_official_v2_complement_skips_one_bin():
    B = 20
    for c in range(1, B - 1):
        (l0, l1), (r0, r1) = complementary_pair(c, B, 1, 'official_v2')
        assert (l0, l1) == (c + 1, B) and (r0, r1) == (0, B - c - 1)
        use = np.zeros(B, dtype=int)
        for a, b in ((0, c), (B - c, B), (l0, l1), (r0, r1)):
            use[a:b] += 1
        assert (use == 2).sum() == B - 2       # two bins are trained only once per pair
    assert complementary_pair(B, B, 1, 'official_v2') == ([B - 1, B], [0, 1])
    with pytest.raises(ValueError):
        complementary_pair(1, B, 1, 'bogus')


def test_width_range_rejects_bad_minimum():
    assert width_range(4, 1) == (1, 4)
    assert width_range(26, 6) == (6, 20)
    with pytest.raises(ValueError):
        width_range(10, 6)
    with pytest.raises(ValueError):
        width_range(4, 0)


def test_sampler_alternates_fresh_and_complementary_pairs():
    choices = [[6, 26]] * 5                    # BCNetV2: B = 26, m = 6, c in [6, 20]
    s = BCNetSampler(26, 6, complementary=True, rng=0)
    for _ in range(20):
        left, right = s.gen_subnet(choices)
        widths = [b - a for a, b in left]
        assert all(6 <= w <= 20 for w in widths)
        assert right == [[26 - w, 26] for w in widths]
        cl, cr = s.gen_subnet(choices)
        assert cl == [[0, 26 - w] for w in widths] and cr == [[w, 26] for w in widths]
    assert s.counts == {'fresh': 20, 'complementary': 20, 'skipped': 0}


def test_zero_complement_skip_and_redraw():
    choices = [[1, 4]] * 3
    skip = BCNetSampler(4, 1, rng=0)
    redraw = BCNetSampler(4, 1, zero_complement='redraw', rng=0)
    for s in (skip, redraw):
        for _ in range(300):
            fresh_before = s.counts['fresh']
            left, _ = s.gen_subnet(choices)
            if s.counts['fresh'] > fresh_before:          # a fresh draw: is a complement pending?
                has_full = any(b - a == 4 for a, b in left)
                assert (s._pending is None) == (has_full and s is skip)
                if s is redraw and has_full:              # the full layers get a fresh width instead
                    cl, _ = s._pending
                    assert all(1 <= b - a <= 4 for a, b in cl)
    assert skip.counts['skipped'] > 0 and redraw.counts['skipped'] == 0
    assert skip.counts['complementary'] < skip.counts['fresh'] == skip.counts['complementary'] + \
        skip.counts['skipped']


def test_sampler_is_deterministic_and_resumable():
    choices = [[1, 4]] * 7
    a, b = BCNetSampler(4, 1, rng=3), BCNetSampler(4, 1, rng=3)
    for _ in range(7):
        a.gen_subnet(choices)
    state = a.state_dict()
    expected = [a.gen_subnet(choices) for _ in range(5)]
    b.load_state_dict(state)
    assert [b.gen_subnet(choices) for _ in range(5)] == expected
    with pytest.raises(ValueError):
        BCNetSampler(4, 1, complement='half')
