"""The Monte-Carlo tree: reward, UCT, softmax policy, updates, node communication, removal, hierarchical
selection, and the oracle behaviour on NAS-Bench-Macro stated in the spec card."""
import math
import random

import pytest

from mct import MCNode, MCTree, draw, reward_update, softmax, uct


def test_reward_update_hand_computed():
    tl, q = reward_update(0.0, 2.0, 0.9)
    assert tl == pytest.approx(0.2) and q == pytest.approx(0.1)
    tl, q = reward_update(tl, 1.0, 0.9)  # 0.9 * 0.2 + 0.1 * 1
    assert tl == pytest.approx(0.28) and q == pytest.approx(0.28)


def test_uct_formula_and_edge_cases():
    # R/n + C1 sqrt(ln N / (n + 0.1)) + C2 G
    assert uct(3.0, 2, 10, 0.5, 0.2, 0.7) == pytest.approx(1.5 + 0.5 * math.sqrt(math.log(10) / 2.1) + 0.14)
    assert uct(5.0, 0, 10, 1.0) == pytest.approx(math.sqrt(math.log(10) / 0.1))  # n = 0: no exploitation
    assert uct(5.0, 2, 0, 1.0) == pytest.approx(2.5)  # N = 0: no exploration
    assert uct(5.0, 2, 1, 1.0) == pytest.approx(2.5)  # ln 1 = 0


def test_softmax_is_stable_at_small_tau():
    p = softmax([1.0, 1.01, 0.5], 0.0025)
    assert sum(p) == pytest.approx(1.0) and all(math.isfinite(x) for x in p)
    assert p[1] == pytest.approx(1 / (1 + math.exp(-4)), rel=1e-9)  # exp(-0.01 / 0.0025) = e^-4
    assert softmax([0.0, math.log(3) * 0.5], 0.5) == pytest.approx([0.25, 0.75])


def test_draw_inverse_cdf():
    probs = [0.2, 0.5, 0.3]
    assert [draw(probs, u) for u in (0.0, 0.19, 0.2, 0.69, 0.7, 0.999999)] == [0, 0, 1, 1, 2, 2]
    assert draw([0.0, 1.0, 0.0], 0.0) == 1


def test_update_backpropagates_and_communicates():
    tree = MCTree([2, 3], gamma=0.5)
    tree.update([1, 2], 0.8)
    tree.update([1, 0], 0.4)
    assert tree.root.visits == 2 and tree.root.reward == pytest.approx(1.2)
    a = tree.node([1])
    assert (a.visits, a.reward) == (2, pytest.approx(1.2))
    assert tree.node([0]) is None and tree.node([1, 1]) is None
    assert tree.node([1, 2]).visits == 1 and tree.node([1, 2]).reward == pytest.approx(0.8)
    # G[l][o] <- gamma G + (1 - gamma) Q, shared by all nodes of a layer
    assert tree.G[0] == [0.0, pytest.approx(0.5 * (0.5 * 0.8) + 0.5 * 0.4)]
    assert tree.G[1] == [pytest.approx(0.2), 0.0, pytest.approx(0.4)]
    assert tree.size == 2


def test_child_probs_hand_computed():
    tree = MCTree([3, 2], gamma=0.5)
    tree.update([0, 0], 1.0)
    tree.update([0, 1], 0.5)
    tree.update([2, 0], 2.0)
    C1, C2, tau = 0.3, 0.4, 0.7
    N = 3
    scores = [0.75 + C1 * math.sqrt(math.log(N) / 2.1) + C2 * tree.G[0][0],
              0.0 + C1 * math.sqrt(math.log(N) / 0.1) + 0.0,
              2.0 + C1 * math.sqrt(math.log(N) / 1.1) + C2 * tree.G[0][2]]
    e = [math.exp(s / tau) for s in scores]
    assert tree.child_probs([], C1, C2, tau) == pytest.approx([x / sum(e) for x in e])
    p = tree.child_probs([], C1, C2, tau, ignore_none=True)
    assert p[1] == 0.0 and sum(p) == pytest.approx(1.0)
    e2 = [e[0], e[2]]
    assert p[0] == pytest.approx(e2[0] / sum(e2))


def test_sample_creates_nodes_without_counting_them():
    tree = MCTree([3, 3, 3], C1=1.0, tau=1.0, rng=random.Random(0))
    path = tree.sample()
    assert tree.node(path) is not None and tree.node(path).visits == 0
    assert tree.size == 0  # zero-stat leaves are not visited leaves


def test_remove_leaf_node_prunes_empty_ancestors_not_root():
    tree = MCTree([2, 2, 2])
    tree.update([0, 0, 0], 1.0)
    tree.update([0, 0, 1], 1.0)
    tree.update([1, 1, 1], 1.0)
    tree.remove_leaf_node([0, 0, 0])
    assert tree.node([0, 0, 0]) is None and tree.node([0, 0, 1]) is not None
    tree.remove_leaf_node([0, 0, 1])
    assert tree.node([0, 0]) is None and tree.node([0]) is None  # emptied ancestors go too
    assert tree.node([1, 1, 1]) is not None
    tree.remove_leaf_node([1, 1, 1])
    assert tree.root is not None and tree.root.existing() == []


def _built_tree(choices, loss, n=400, seed=0):
    tree = MCTree(choices, gamma=0.9, C1=0.1, C2=0.2, tau=0.0025, rng=random.Random(seed))
    rng = random.Random(seed + 1)
    tl = 0.0
    for _ in range(n):
        a = [rng.randrange(c) for c in choices]
        tl, q = reward_update(tl, loss(a), 0.9)
        tree.update(a, q)
    return tree, tl


def test_hierarchical_sample_reevaluates_then_selects():
    choices = [3, 3, 3]
    loss = lambda a: 1.0 + 0.1 * sum(a)  # noqa: E731 -- path 000 is the best
    tree, tl = _built_tree(choices, loss, n=30)
    calls = []

    def eval_fn(a):
        calls.append(list(a))
        return loss(a)

    path = tree.hierarchical_sample(n_thrd=6, eval_fn=eval_fn, tilde_L=tl)
    assert len(path) == 3 and calls  # 30 visits < 6 * 3 at depth >= 1: re-evaluations happened
    for d in range(3):  # every node on the path was brought to n / O >= n_thrd before its child was picked
        assert tree.node(path[:d]).visits / choices[d] >= 6
    # with enough (unbiased) statistics the greedy selection follows the lowest loss
    tree, tl = _built_tree(choices, loss, n=600)
    assert tree.hierarchical_sample(n_thrd=6, eval_fn=loss, tilde_L=tl) == [0, 0, 0]


def test_hierarchical_sample_flops_window_and_exhaustion():
    choices = [2, 2]
    tree, tl = _built_tree(choices, lambda a: 1.0, n=40)
    flops = lambda a: a[0] * 2 + a[1]  # noqa: E731 -- 0, 1, 2, 3
    evaluated, proposed = [], []

    def eval_fn(a):
        evaluated.append(list(a))
        return 1.0

    while True:
        p = tree.hierarchical_sample(30, eval_fn, flops_limit=(1, 2), tilde_L=tl, flops_fn=flops)
        if p is None:  # every leaf was proposed (and removed) or left the window
            break
        proposed.append(p)
        tree.remove_leaf_node(p)
    assert evaluated and all(1 <= flops(a) <= 2 for a in evaluated)  # re-evaluations stay in the window
    # the re-evaluations met and removed the two leaves outside the window, so only the others are proposed
    assert sorted(map(tuple, proposed)) == [(0, 1), (1, 0)]


def test_hierarchical_sample_needs_a_trained_tree():
    with pytest.raises(ValueError):
        MCTree([2, 2]).hierarchical_sample(2, lambda a: 1.0)


def test_state_dict_round_trip():
    tree, _ = _built_tree([3, 3, 3], lambda a: 1.0 + a[0], n=50)
    copy = MCTree([3, 3, 3], gamma=0.9, C1=0.1, C2=0.2, tau=0.0025, rng=random.Random(5))
    copy.load_state_dict(tree.state_dict())
    assert copy.G == tree.G and copy.size == tree.size
    assert [copy.sample() for _ in range(5)] == [tree.sample() for _ in range(5)]
    with pytest.raises(ValueError):
        MCTree([2, 2]).load_state_dict(tree.state_dict())


def test_node_and_bad_subnet():
    tree = MCTree([2, 2])
    with pytest.raises(ValueError):
        tree.update([2, 0], 1.0)
    with pytest.raises(ValueError):
        MCTree([0, 2])
    assert isinstance(tree.root, MCNode) and tree.node([]) is tree.root


def _oracle_run(bench, mct_start, total=20000, noise=0.02, seed=0):
    from sampler import MCTSampler
    rng = random.Random(seed)
    s = MCTSampler(warmup_iters=0, mct_start_iter=mct_start, beta=0.96, gamma=0.96, C1=0.1, C2=0.2, tau=0.0025,
                   rng=random.Random(seed))
    last = []
    for it in range(total):
        a = s.gen_subnet([3] * 8)
        s.update_reward(a, (100 - bench.acc(a)) / 10 + rng.gauss(0, noise))
        if it >= total - 5000:
            last.append(''.join(map(str, a)))
    return last, s.tree.size


def test_oracle_mode_concentrates_on_top_architectures(bench):
    """Card: 1000 uniform tree-building iterations then 19000 tree samples; >= 50% of the last 5000 samples
    fall in the top-100 keys (uniform sampling: 1.5%)."""
    top100 = set(sorted(bench.keys(), key=lambda k: -bench.acc(k))[:100])
    last, _ = _oracle_run(bench, 1000)
    assert sum(k in top100 for k in last) / len(last) >= 0.5


def test_oracle_mode_collapses_without_uniform_phase(bench):
    _, leaves = _oracle_run(bench, 0, total=3000)
    assert leaves < 30
