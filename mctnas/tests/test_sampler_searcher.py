"""MCTSampler phases and FLOPs window, MCTSearcher, baselines and the benchmark study."""
import random

import pytest

from baselines import evolution_search, random_search
from sampler import MCTSampler
from searcher import MCTSearcher


def test_sampler_three_phases():
    s = MCTSampler(warmup_iters=3, mct_start_iter=6, beta=0.5, gamma=0.5, C1=0.0, C2=0.0, tau=0.01,
                   rng=random.Random(0))
    choices = [3, 3]
    for _ in range(3):  # uniform, no bookkeeping
        assert s.phase == 'uniform'
        s.update_reward(s.gen_subnet(choices), 2.0)
    assert s.tilde_L == 0.0 and s.tree.root.visits == 0
    losses = []
    for _ in range(3):  # tree building: uniform paths, rewards recorded
        assert s.phase == 'build'
        a = s.gen_subnet(choices)
        loss = 1.0 + a[0] + a[1]
        s.update_reward(a, loss)
        losses.append(loss)
    assert s.tree.root.visits == 3
    expected = 0.0
    for loss in losses:
        expected = 0.5 * expected + 0.5 * loss
    assert s.tilde_L == pytest.approx(expected)
    assert s.phase == 'mct'


def test_sampler_follows_the_tree_after_mct_start():
    s = MCTSampler(warmup_iters=0, mct_start_iter=0, C1=0.0, C2=0.0, tau=0.001, rng=random.Random(0))
    tree = s.init_tree([3, 3])
    for _ in range(5):
        tree.update([2, 1], 1.0)
    for a in ([0, 0], [1, 1], [0, 2], [1, 0], [2, 0], [2, 2]):
        tree.update(a, 0.5)
    # every child of the root and of node [2] exists; [2, 1] has the highest mean reward
    assert all(s.gen_subnet([3, 3]) == [2, 1] for _ in range(20))


def test_sampler_flops_window():
    flops = lambda a: sum(a)  # noqa: E731
    s = MCTSampler(flops_min=3, flops_max=4, max_times=100, rng=random.Random(0))
    for _ in range(50):
        assert 3 <= flops(s.gen_subnet([3, 3, 3], flops)) <= 4
    impossible = MCTSampler(flops_min=100, max_times=5, rng=random.Random(0))
    assert len(impossible.gen_subnet([3, 3], flops)) == 2  # the last draw is used anyway


def test_sampler_validation_and_state():
    with pytest.raises(ValueError):
        MCTSampler(warmup_iters=10, mct_start_iter=5)
    with pytest.raises(ValueError):
        MCTSampler(beta=1.0)
    s = MCTSampler(mct_start_iter=5, C1=0.1, C2=0.2, tau=0.0025, rng=random.Random(3))
    for i in range(20):
        a = s.gen_subnet([3] * 4)
        s.update_reward(a, 1.0 + 0.1 * sum(a))
    t = MCTSampler(mct_start_iter=5, C1=0.1, C2=0.2, tau=0.0025, rng=random.Random(99))
    t.load_state_dict(s.state_dict())
    assert (t.iter, t.tilde_L) == (s.iter, s.tilde_L)
    assert [t.gen_subnet([3] * 4) for _ in range(5)] == [s.gen_subnet([3] * 4) for _ in range(5)]
    with pytest.raises(ValueError):
        s.update_reward([0] * 4, float('nan'))


def _trained(choices, loss, iters=600, seed=0):
    s = MCTSampler(warmup_iters=0, mct_start_iter=iters // 2, beta=0.9, gamma=0.9, C1=0.1, C2=0.2, tau=0.0025,
                   rng=random.Random(seed))
    rng = random.Random(seed + 7)
    for _ in range(iters):
        a = s.gen_subnet(choices)
        s.update_reward(a, loss(a) + rng.gauss(0, 0.01))
    return s


def test_searcher_scores_distinct_paths_and_finds_optimum():
    choices = [3] * 4
    loss = lambda a: 1.0 + 0.1 * sum(a)  # noqa: E731 -- optimum 0000
    acc = lambda m, a: 100.0 - sum(a)  # noqa: E731
    s = _trained(choices, loss)
    searcher = MCTSearcher(n_thrd=20, tau=0.0025, search_num=8, C2=0.2)
    scored = []
    top = searcher.search(None, lambda m, a: loss(a), acc, tree=s.tree, tilde_L=s.tilde_L, top_k=5,
                          callback=lambda a, v: scored.append(a))
    assert len(scored) == 8 and len({tuple(a) for a in scored}) == 8
    assert len(top) == 5 and [v for _, v in top] == sorted((v for _, v in top), reverse=True)
    assert top[0][0] == [0, 0, 0, 0]
    for a in scored:  # scored leaves were removed from the tree
        assert s.tree.node(a) is None
    assert searcher.n_loss_evals > 0


def test_searcher_flops_limit_and_exhaustion():
    choices = [2, 2]
    s = _trained(choices, lambda a: 1.0, iters=100)
    searcher = MCTSearcher(n_thrd=2, flops_min=1, flops_limit=1, search_num=10)
    top = searcher.search(None, lambda m, a: 1.0, lambda m, a: float(sum(a)), flops_fn=lambda a: sum(a),
                          tree=s.tree, tilde_L=s.tilde_L)
    assert sorted(a for a, _ in top) == [[0, 1], [1, 0]]  # the only paths with 1 "MAC"; then the tree is empty
    with pytest.raises(ValueError):
        MCTSearcher(search_num=0)
    with pytest.raises(ValueError):
        MCTSearcher().search(None, None, None)


def test_baselines_distinct_and_budget():
    choices = [3] * 5
    score = lambda a: -sum((x - 2) ** 2 for x in a)  # noqa: E731 -- optimum 22222
    for fn in (random_search, evolution_search):
        h = fn(choices, 40, score, random.Random(1))
        assert len(h) == 40 and len({tuple(a) for a, _ in h}) == 40
    assert len(random_search([2, 2], 10, score, random.Random(0))) == 4  # capped at the space size
    evo = [max(v for _, v in evolution_search(choices, 60, score, random.Random(s))) for s in range(5)]
    rnd = [max(v for _, v in random_search(choices, 60, score, random.Random(s))) for s in range(5)]
    assert sum(evo) >= sum(rnd)


def test_expected_random_search_matches_card(bench):
    from study import expected_random_search
    accs = [bench.acc(k) for k in bench.keys()]
    card = {10: (92.43, 597), 20: (92.61, 312), 50: (92.77, 129), 100: (92.87, 65), 1000: (93.07, 6.6)}
    for n, (acc, pos) in card.items():
        e_acc, e_rank, e_pos = expected_random_search(accs, n)
        assert round(e_acc, 2) == acc
        assert round(e_pos, 1 if n == 1000 else None) == pytest.approx(pos, abs=1)
        assert e_rank <= e_pos


def test_study_small_run(bench):
    from study import format_results, run_study
    res = run_study(bench, seeds=3, budgets=(10, 20), bias=0.0, log=lambda *a: None)
    for protocol in ('oneshot', 'blackbox'):
        for m in ('random', 'evolution', 'mct'):
            for k in (10, 20):
                s = res[protocol][m][k]
                assert 45 < s['acc_mean'] <= 93.13 and 1 <= s['rank_mean'] <= 6561
    # the simulated one-shot pipeline: MCT's tree, trained for free, beats random search at 10 scored archs
    assert res['oneshot']['mct'][10]['rank_mean'] < res['oneshot']['random'][10]['rank_mean']
    assert 'random search' in format_results(res, bench, budgets=(10, 20))


def test_benchmark_table(bench):
    assert len(bench) == 6561
    assert bench.best()[0] in ('22212220', '22212202') and bench.best()[1] == pytest.approx(93.127, abs=1e-3)
    assert bench.rank('22212220') == bench.rank('22212202') == 1
    assert bench.rank('22222221') == 3 and bench.rank('22222200') == bench.rank('22211222') == 4
    assert bench.rank('00000000') == 6561 and bench.acc('00000000') == pytest.approx(45.36, abs=0.01)
    assert sum(bench.acc(k) for k in bench.keys()) / 6561 == pytest.approx(90.25, abs=0.01)
    for k in bench.keys():  # every key equals its canonical (real) architecture's entry
        assert bench.query(k) == bench.query(bench.real_arch(k))


def test_all_benchmark_params_and_flops(bench):
    from tables import check_benchmark
    n_mod, n_closed, _ = check_benchmark(bench, log=lambda *a: None)
    assert n_mod == n_closed == 6561


def test_benchmark_errors(tmp_path):
    from benchmark import NASBenchMacro
    with pytest.raises(FileNotFoundError):
        NASBenchMacro(tmp_path / 'missing.json')
    bad = tmp_path / 'bad.json'
    bad.write_text('{"00000000": {}}')
    with pytest.raises(ValueError):
        NASBenchMacro(bad)
