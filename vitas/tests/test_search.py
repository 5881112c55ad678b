"""Identity-probability walk and the NSGA-II evolutionary sampler."""
import random

import numpy as np
import pytest

from conftest import CP4, tiny_supernet
from flops import count_flops, expected_flops
from search import (EvolutionSampler, _rank_and_crowding, _survive, int_polynomial_mutation,
                    prop_search, two_point_crossover)

TINY = dict(patch_sizes=(8, 16), embed_dim=32, depth=4, heads=(1, 2, 4), at_temp=96, mlp_dim=64,
            num_classes=5, id_op=True, img_size=32)


def test_prop_search_walks_into_the_window():
    e5 = expected_flops(0.5, TINY, CP4)
    lo, hi = 0.6 * e5, 0.7 * e5                      # below the start: the walk must go up
    p = prop_search(TINY, lo, hi, ps_num=400, rng=random.Random(0), channel_percent=CP4)
    assert p > 0.5
    assert lo * 0.9 <= expected_flops(p, TINY, CP4) <= hi * 1.1
    with pytest.raises(RuntimeError, match=r'left \(0, 1\)'):
        prop_search(TINY, 1e3, 2e3, ps_num=50, step=0.1, rng=random.Random(0),
                    channel_percent=CP4)


def test_crossover_swaps_one_segment():
    rs = np.random.RandomState(0)
    a, b = np.zeros(10, dtype=int), np.ones(10, dtype=int)
    o1, o2 = two_point_crossover(a, b, rs, prob=1.0)
    seg = np.flatnonzero(o1)
    assert len(seg) and (np.diff(seg) == 1).all() and seg[0] >= 1
    assert (o1 + o2 == 1).all()
    assert (two_point_crossover(a, b, rs, prob=0.0)[0] == a).all()


def test_integer_mutation_stays_in_bounds_and_keeps_fixed_genes():
    rs = np.random.RandomState(0)
    xl, xu = np.zeros(6, dtype=int), np.array([2, 4, 4, 0, 0, 9])
    x = np.array([1, 2, 4, 0, 0, 9])
    outs = np.stack([int_polynomial_mutation(x, xl, xu, rs, eta=3, prob=1.0) for _ in range(300)])
    assert (outs >= xl).all() and (outs <= xu).all()
    assert (outs[:, 3:5] == 0).all()
    assert (outs != x).any(axis=0)[[0, 1, 2, 5]].all()


def test_rank_crowding_and_survival_single_objective():
    F = np.array([3., 1., 1., 2., 1.])
    ranks, crowd = _rank_and_crowding(F)
    assert ranks.tolist() == [2, 0, 0, 1, 0]
    assert crowd[[1, 2, 4]].tolist() == [0., 0., 0.] and np.isinf(crowd[[0, 3]]).all()
    keep = _survive(F, 4, np.random.RandomState(0))
    assert sorted(keep.tolist()) == [1, 2, 3, 4]


def make_sampler(n_gens=4, seed=0, calls=None):
    sn = tiny_supernet()
    e = expected_flops(0.3, TINY, CP4)

    def evaluator(sub, side):                        # a known landscape: wider MLPs score higher
        if calls is not None:
            calls.append(side)
        return 10. * sum(b[2] for b in sub.blocks if b is not None) + sub.embed_ratio

    return EvolutionSampler(sn, evaluator, pop_size=6, n_gens=n_gens, flops_constraint=1.2 * e,
                            flops_min=0.5 * e, channel_percent=CP4, id_prop=0.3, seed=seed)


def test_evolution_improves_and_respects_the_budget():
    calls = []
    s = make_sampler(n_gens=5, calls=calls)
    best, history = s.sample()
    assert len(history) == 5 and history[0]['gen'] == 1
    assert history[-1]['best_score'] >= history[0]['best_score']
    assert history[-1]['best_score'] > history[0]['mean_score']
    assert s.in_budget(count_flops(best, s.space))
    assert calls.count('left') == calls.count('right') > 0       # BCNet: both sides scored
    scores = [v[0] for v in s.cache.values()]
    assert max(scores) == s.best()[1]
    for key, (score, flops) in s.cache.items():                   # penalty outside the budget
        if not s.in_budget(flops):
            assert score == pytest.approx(5 - (flops - s.flops_constraint) / s.flops_constraint)
    assert len({tuple(g) for g in s.pop}) == len(s.pop)          # duplicates eliminated


def test_sampler_resumes_from_its_state():
    straight = make_sampler(n_gens=3)
    straight.sample()
    first = make_sampler(n_gens=3)
    first.step(), first.step()
    resumed = make_sampler(n_gens=3, seed=123)
    resumed.load_state_dict(first.state_dict())
    resumed.sample()
    assert resumed.history == straight.history
    assert (resumed.pop == straight.pop).all()
