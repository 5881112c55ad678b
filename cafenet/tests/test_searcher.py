import itertools

import numpy as np
import pytest

from models.cbm import build_cbm
from searcher import CafeNetSearcher
from supernet import CafeSupernet

N = [4] * 5


def flops(w):
    return float(sum(w))


def oracle(w, placement=None):
    """A toy accuracy: wider is better, slot 2 matters most."""
    return float(sum(w) + 3 * w[2] - 0.1 * w[0] * w[4])


def test_search_finds_the_best_in_the_flops_window():
    s = CafeNetSearcher(max_epoch=10, population_num=20, top_k_num=5, mutation_num=10, crossover_num=10,
                        flops_limit=12, flops_min_ratio=0.8, seed=0)
    r = s.search(N, oracle, flops)
    window = [w for w in itertools.product(range(1, 5), repeat=5) if 0.8 * 12 <= sum(w) <= 12]
    best = max(window, key=oracle)
    assert r['score'] == oracle(best) and 0.8 * 12 <= sum(r['best']) <= 12
    assert all(0.8 * 12 <= sum(c) <= 12 for c in s.scores)
    assert r['epochs'] == 10 and [h[0] for h in s.history] == list(range(1, 11))
    assert all(a[2] <= b[2] for a, b in zip(s.history, s.history[1:]))     # the best never gets worse


def test_score_is_the_best_placement():
    calls = []

    def placements(w, k, rng):
        return [('a',), ('b',), ('c',)][:k]

    def ev(w, p):
        calls.append(p)
        return {'a': 1.0, 'b': 5.0, 'c': 2.0}[p[0]]

    s = CafeNetSearcher(eval_placements=3)
    assert s.score((1, 2), ev, placements) == 5.0 and s.best_placement[(1, 2)] == ('b',)
    assert calls == [('a',), ('b',), ('c',)]
    s2 = CafeNetSearcher(eval_placements=1)
    assert s2.score((1, 2), ev, placements) == 1.0


def test_score_with_the_supernet_placements():
    sn = CafeSupernet(build_cbm('resnet', width_mult=0.125), [8, 8, 8, 16, 16, 16, 16], 1)
    target = ((0, 2), (0,), (0, 1, 3), (0, 1, 2, 3), (1,), (0, 1, 2, 3), (0, 1, 2, 3))
    w = [2, 1, 3, 4, 1, 4, 4]

    def ev(widths, p):
        return 1.0 if p == target else 0.0

    s = CafeNetSearcher(eval_placements=16)         # 2^4 = 16 placements: all of them are scored
    assert s.score(tuple(w), ev, sn.eval_placements) == 1.0 and s.best_placement[tuple(w)] == target
    s = CafeNetSearcher(eval_placements=4, seed=0)
    assert s.score(tuple(w), lambda widths, p: 1.0, sn.eval_placements) == 1.0


def test_resume_gives_the_same_search():
    kw = dict(max_epoch=6, population_num=10, top_k_num=4, mutation_num=5, crossover_num=5, flops_limit=14, seed=3)
    full = CafeNetSearcher(**kw).search(N, oracle, flops)
    a = CafeNetSearcher(**dict(kw, max_epoch=3))
    a.search(N, oracle, flops)
    b = CafeNetSearcher(**kw)
    b.load_state_dict(a.state_dict())
    assert b.search(N, oracle, flops) == full


def test_empty_window_gives_no_result():
    s = CafeNetSearcher(max_epoch=2, population_num=4, flops_limit=0.5, max_tries=50)
    r = s.search(N, oracle, flops)
    assert r['best'] is None and r['evaluated'] == 0
    with pytest.raises(ValueError):
        CafeNetSearcher(eval_placements=0)


def test_benchmark_oracle_search(bench_mobilenet):
    from evaluator import BenchmarkEvaluator
    sn = CafeSupernet(build_cbm('mobilenet'), [32, 192, 192, 192, 64, 384, 256], 1)
    s = CafeNetSearcher(max_epoch=8, flops_limit=100e6, seed=0)
    r = s.search(sn.num_units, BenchmarkEvaluator(bench_mobilenet), sn.flops)
    best_key, best_acc = bench_mobilenet.best(100e6, 80e6)
    assert 80e6 <= bench_mobilenet.query(r['best'])['flops'] == sn.flops(r['best']) <= 100e6
    assert r['score'] >= best_acc - 0.1 and bench_mobilenet.rank(r['best']) < 200
