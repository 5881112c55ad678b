import itertools

import numpy as np
import pytest
import torch

from searcher import BCNetSearcher, loss_records_to_E, prior_objective, prior_probs


def test_loss_records_to_E_hand_computed():
    recs = [(1.0, ([[0, 2], [0, 1]], [[2, 4], [3, 4]])),
            (3.0, ([[0, 2], [0, 4]], [[2, 4], [0, 4]])),
            (0.5, ([[1, 4], [0, 1]], [[0, 3], [3, 4]]))]   # a complementary record: width 3 in layer 0
    E = loss_records_to_E(recs, 2, 4)
    assert E[0, 1] == pytest.approx(2.0, rel=1e-4)         # width 2: (1 + 3) / 2
    assert E[0, 2] == pytest.approx(0.5, rel=1e-4)         # width 3
    assert E[1, 0] == pytest.approx(0.75, rel=1e-4)
    assert E[0, 0] == pytest.approx(10.0) and E[1, 2] == pytest.approx(10.0)   # unseen: 1e-4 / 1e-5
    # BCNetV2 indexing: column j <-> width min + j
    E2 = loss_records_to_E(recs, 2, 3, min_bins=2)
    assert E2[0, 0] == pytest.approx(2.0, rel=1e-4) and E2[1, 2] == pytest.approx(3.0, rel=1e-4)


def test_prior_gradient_matches_autograd():
    rng = np.random.default_rng(0)
    L, W = 5, 4
    P, E, F = rng.normal(size=(L, W)), rng.random((L, W)), rng.random((L, W, W)) * 1e6
    J, grad = prior_objective(P, E, F, 2e6, 1000.)
    Pt = torch.tensor(P, requires_grad=True)
    prob = torch.softmax(Pt, 1)
    nxt = torch.cat([prob[1:], torch.full((1, W), 1.0 / W, dtype=torch.float64)])
    Fe = (torch.tensor(F) * prob[:, :, None] * nxt[:, None, :]).sum()
    Jt = (prob * torch.tensor(E)).sum(1).mean() + 1000 * (1 - Fe / 2e6) ** 2
    Jt.backward()
    assert J == pytest.approx(Jt.item(), rel=1e-12)
    assert np.allclose(grad, Pt.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_prior_matches_the_flops_target_and_prefers_low_loss():
    L, W, B = 4, 4, 4
    E = torch.full((L, W), 1.0)
    E[:, 2] = 0.1                                  # width 3 has the lowest recorded loss everywhere
    flops = [1e6] * L
    P0 = np.zeros((L, W))
    prob = prior_probs(E, flops, 1.5e6, B, P_init=P0, steps=3000, lr=0.01, target_factor=1.0).numpy()
    assert np.allclose(prob.sum(1), 1.0)
    widths = np.arange(1, W + 1)
    nxt = np.vstack([prob[1:], np.full((1, W), 1 / W)])
    F_e = sum(flops[l] * (prob[l] @ np.outer(widths, widths) @ nxt[l]) / B ** 2 for l in range(L))
    assert F_e == pytest.approx(1.5e6, rel=0.02)
    # with the constraint met, the lowest-loss width gets more mass than the start (uniform)
    assert (prob[:, 2] > 0.25).all()


def _toy_problem():
    """7 slots, 4 widths; score = a fixed random function; FLOPs = quadratic chain like the CBM nets."""
    rng = np.random.default_rng(5)
    target = np.array([3, 2, 4, 1, 3, 2, 4])
    table = {a: -float(((np.array(a) - target) ** 2).sum()) + 0.3 * float(rng.normal())
             for a in itertools.product(range(1, 5), repeat=7)}
    calls = []

    def evaluator(c):
        calls.append(tuple(c))
        return table[tuple(c)]

    def flops(c):
        c = list(c) + [2]
        return sum(c[i] * c[i + 1] for i in range(7)) * 1e6
    return table, evaluator, flops, calls


def test_search_respects_the_window_and_never_reevaluates():
    table, evaluator, flops, calls = _toy_problem()
    s = BCNetSearcher(4, 1, prior_init=False, max_epoch=6, population_num=20, top_k_num=5, mutation_num=10,
                      crossover_num=10, flops_limit=50e6, seed=0)
    r = s.search([[1, 4]] * 7, evaluator, flops)
    assert len(calls) == len(set(calls)) == r['evaluated'] <= 6 * 20
    assert all(40e6 <= flops(c) <= 50e6 for c in calls)
    best_in_window = max((v, k) for k, v in table.items() if 40e6 <= flops(k) <= 50e6)
    assert r['score'] == max(table[c] for c in calls) <= best_in_window[0]
    assert [c for c, _ in r['top_k']] == sorted((list(c) for c in set(calls)), key=lambda c: -table[tuple(c)])[:5]


def test_search_beats_random_sampling_on_average():
    table, _, flops, _ = _toy_problem()
    window = [k for k in table if 40e6 <= flops(k) <= 50e6]
    found, rand = [], []
    for seed in range(6):
        s = BCNetSearcher(4, 1, prior_init=False, max_epoch=5, population_num=20, top_k_num=5, mutation_num=10,
                          crossover_num=10, flops_limit=50e6, seed=seed)
        r = s.search([[1, 4]] * 7, lambda c: table[tuple(c)], flops)
        found.append(r['score'])
        rng = np.random.default_rng(seed)
        pick = rng.choice(len(window), size=r['evaluated'], replace=False)
        rand.append(max(table[window[i]] for i in pick))
    assert np.mean(found) > np.mean(rand)


def test_prior_population_for_min_bins_1_and_v2_ranges():
    table, evaluator, flops, _ = _toy_problem()
    recs = [(0.1, ([[0, 3]] * 7, [[1, 4]] * 7))] * 5
    s = BCNetSearcher(4, 1, prior_init=True, max_epoch=2, population_num=10, top_k_num=3, mutation_num=5,
                      crossover_num=5, flops_limit=50e6, seed=1, prior_steps=200)
    r = s.search([[1, 4]] * 7, evaluator, flops, layer_flops=[1e7] * 7, loss_rec=recs)
    assert s.prob.shape == (7, 4) and np.allclose(s.prob.sum(1), 1)
    assert r['best'] is not None and len(s.initial_population) > 0
    # BCNetV2: B = 26, m = 6 -> widths 6..20, 15 columns
    s2 = BCNetSearcher(26, 6, prior_init=True, max_epoch=1, population_num=5, top_k_num=2, mutation_num=2,
                       crossover_num=2, flops_limit=1e9, seed=0, prior_steps=50)
    r2 = s2.search([[6, 26]] * 3, lambda c: -sum(c), lambda c: 1e9, layer_flops=[1e9] * 3,
                   loss_rec=[(0.5, ([[0, 10]] * 3, [[16, 26]] * 3))])
    assert s2.prob.shape == (3, 15)
    assert all(6 <= w <= 20 for c, _ in r2['top_k'] for w in c)


def test_resume_gives_the_same_search():
    table, evaluator, flops, _ = _toy_problem()
    kw = dict(prior_init=False, max_epoch=4, population_num=12, top_k_num=4, mutation_num=6, crossover_num=6,
              flops_limit=50e6, seed=7)
    full = BCNetSearcher(4, 1, **kw).search([[1, 4]] * 7, evaluator, flops)
    states = []
    part = BCNetSearcher(4, 1, **dict(kw, max_epoch=2))
    part.search([[1, 4]] * 7, evaluator, flops, callback=lambda s: states.append(s.state_dict()))
    resumed = BCNetSearcher(4, 1, **kw)
    resumed.load_state_dict(states[-1])
    assert resumed.search([[1, 4]] * 7, evaluator, flops) == full


def test_empty_window_returns_no_candidate():
    _, evaluator, flops, _ = _toy_problem()
    s = BCNetSearcher(4, 1, prior_init=False, max_epoch=2, population_num=5, flops_limit=1.0, seed=0,
                      max_tries=200)
    assert s.search([[1, 4]] * 7, evaluator, flops)['best'] is None
    with pytest.raises(ValueError):
        BCNetSearcher(4, 1, prior_init=True, flops_limit=None).search([[1, 4]] * 7, evaluator, flops)
