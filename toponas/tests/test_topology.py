"""The combinatorial distribution, its edge marginals, the passive-aggressive regulariser and the derivations,
against hand computations on small tensors."""
import math

import pytest
import torch

from genotypes import PRIMITIVES
from topology import (PassiveAggressiveReg, cell_distributions, cell_marginals, darts_derive, derive_genotype,
                      derive_topology, node_combinations, num_topology_variables, topology_distribution)

LN2, LN3 = math.log(2.0), math.log(3.0)
# node 2: anything (one topology); node 3: exp-weights of the pairs (0,1),(0,2),(1,2) = 2, 3, 6;
# node 4: pairs (0,1)..(2,3) = 1, 2, 2, 2, 2, 4; node 5: all zero (uniform over 10 pairs)
BETA = torch.tensor([0.3, -0.7, 0.0, LN2, LN3, 0.0, 0.0, LN2, LN2, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=torch.float64)
M_HAND = [1, 1, 5 / 11, 8 / 11, 9 / 11, 5 / 13, 5 / 13, 8 / 13, 8 / 13, .4, .4, .4, .4, .4]
PA_HAND = 5 / 11 + 10 / 13 + 3 * 0.4  # node 3: m_0; node 4: m_0 + m_1; node 5: three of the tied 0.4


def test_node_combinations_lexicographic():
    assert node_combinations(2) == [(0, 1)]
    assert node_combinations(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert [len(node_combinations(n)) for n in (2, 3, 4, 5)] == [1, 3, 6, 10]
    assert node_combinations(3, 0) == [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
    assert [len(node_combinations(n, 0)) for n in (2, 3, 4, 5)] == [3, 7, 15, 31]
    assert num_topology_variables(4, 'edge') == 14
    assert num_topology_variables(4, 'combination') == 20
    assert num_topology_variables(4, 'combination', k=0) == 56


def test_hand_computed_distribution_of_one_node():
    combos, prob, marg = topology_distribution(BETA[2:5])
    assert combos == [(0, 1), (0, 2), (1, 2)]
    assert torch.allclose(prob, torch.tensor([2 / 11, 3 / 11, 6 / 11], dtype=torch.float64))
    assert torch.allclose(marg, torch.tensor([5 / 11, 8 / 11, 9 / 11], dtype=torch.float64))


def test_hand_computed_cell_marginals_sum_to_two():
    m = cell_marginals(BETA)
    assert torch.allclose(m, torch.tensor(M_HAND, dtype=torch.float64))
    for lo, hi in ((0, 2), (2, 5), (5, 9), (9, 14)):
        assert m[lo:hi].sum().item() == pytest.approx(2.0, abs=1e-12)
        assert (m[lo:hi] >= 0).all() and (m[lo:hi] <= 1).all()


def test_random_marginals_sum_to_two_and_node2_is_fixed():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        beta = torch.randn(14, generator=g, dtype=torch.float64) * 3
        m = cell_marginals(beta)
        assert torch.allclose(m[:2], torch.ones(2, dtype=torch.float64))
        for lo, hi in ((0, 2), (2, 5), (5, 9), (9, 14)):
            assert m[lo:hi].sum().item() == pytest.approx(2.0, abs=1e-9)


def test_node2_betas_get_no_gradient():
    beta = BETA.clone().requires_grad_()
    (cell_marginals(beta) * torch.arange(14.0, dtype=torch.float64)).sum().backward()
    assert torch.all(beta.grad[:2] == 0) and beta.grad[2:].abs().sum() > 0


def test_combination_form_equals_edge_form_on_matching_logits():
    # the combination logits of node j set to sum_{i in S} beta_i give the same distribution
    logits = []
    for lo, hi in ((0, 2), (2, 5), (5, 9), (9, 14)):
        combos = node_combinations(hi - lo)
        logits += [float(sum(BETA[lo + i] for i in s)) for s in combos]
    gamma = torch.tensor(logits, dtype=torch.float64)
    assert gamma.numel() == 20
    assert torch.allclose(cell_marginals(gamma, param='combination'), cell_marginals(BETA))
    assert derive_topology(gamma, param='combination') == derive_topology(BETA)


def test_free_in_degree_hand_example():
    combos, prob, marg = topology_distribution(torch.tensor([0.0, LN2], dtype=torch.float64), k=0)
    assert combos == [(0,), (1,), (0, 1)]
    assert torch.allclose(prob, torch.tensor([1 / 5, 2 / 5, 2 / 5], dtype=torch.float64))
    assert torch.allclose(marg, torch.tensor([3 / 5, 4 / 5], dtype=torch.float64))
    # argmax ties between {1} and {0, 1}: the first in T_j order, {1}
    beta = torch.tensor([0.0, LN2] + [2.0, 1.0, -3.0] + [1.0, 1.0, 1.0, -1.0] + [-1.0] * 4 + [0.5])
    assert derive_topology(beta, k=0) == [[1], [0, 1], [0, 1, 2], [4]]
    reg = PassiveAggressiveReg(weight=1.0, k=0)
    dists = cell_distributions(beta, k=0)
    m = torch.cat([d[2] for d in dists])
    expected = float(dists[0][2][0] + dists[1][2][2] + dists[2][2][3] + dists[3][2][:4].sum())
    assert reg([m], [[d[1] for d in dists]]).item() == pytest.approx(expected, rel=1e-6)


def test_passive_aggressive_regulariser_hand_value():
    m = cell_marginals(BETA)
    reg = PassiveAggressiveReg(weight=1.0)
    assert reg([m]).item() == pytest.approx(PA_HAND, rel=1e-12)
    reg = PassiveAggressiveReg(weight=0.1)
    assert reg([m, m]).item() == pytest.approx(0.2 * PA_HAND, rel=1e-12)
    assert PassiveAggressiveReg(weight=0.1, mode='none')([m]).item() == 0.0


def test_regulariser_is_passive_on_the_kept_pair():
    beta = BETA.clone().requires_grad_()
    PassiveAggressiveReg(weight=1.0)([cell_marginals(beta)]).backward()
    g = beta.grad
    # node 3 keeps inputs 1, 2: minimising L_PA raises their betas and lowers beta_0
    assert g[2] > 0 and g[3] < 0 and g[4] < 0
    # at a hard topology the regulariser vanishes
    hard = torch.tensor([0, 0, -30, 30, 30, 30, -30, 30, -30, -30, 30, 30, -30, -30.], dtype=torch.float64)
    assert PassiveAggressiveReg(weight=1.0)([cell_marginals(hard)]).item() < 1e-12


def test_entropy_mode_hand_value():
    dists = cell_distributions(BETA)
    p3 = torch.tensor([2 / 11, 3 / 11, 6 / 11], dtype=torch.float64)
    h = -(p3 * p3.log()).sum() + math.log(10) + -sum(p * math.log(p) for p in [1 / 13, 2 / 13, 2 / 13, 2 / 13,
                                                                              2 / 13, 4 / 13])
    reg = PassiveAggressiveReg(weight=1.0, mode='entropy')
    assert reg([cell_marginals(BETA)], [[d[1] for d in dists]]).item() == pytest.approx(float(h), rel=1e-9)
    with pytest.raises(ValueError, match='entropy'):
        reg([cell_marginals(BETA)])


def _alpha():
    """Fixed alphas: edge row e prefers op (e % 7) + 1 with logit 1 + 0.1 e; on row 3 'none' is the largest
    and sep_conv_5x5 the next."""
    a = torch.zeros(14, 8)
    for e in range(14):
        a[e, e % 7 + 1] = 1.0 + 0.1 * e
    a[3] = torch.tensor([5.0, 0, 0, 0, 0, 2.0, 0, 0])
    return a


def test_topology_aware_derivation_on_fixed_tensors():
    genotype = derive_genotype(_alpha(), BETA, PRIMITIVES)
    # topology from beta only: node 2 {0, 1} (tied marginals: lower source first), node 3 {2, 1} (m = 9/11, 8/11),
    # node 4 {2, 3} (tied 8/13), node 5 {0, 1} (all tied); ops from alpha only, 'none' excluded on row 3
    assert genotype == [('max_pool_3x3', 0), ('avg_pool_3x3', 1),
                        ('sep_conv_5x5', 2), ('sep_conv_5x5', 1),
                        ('max_pool_3x3', 2), ('avg_pool_3x3', 3),
                        ('skip_connect', 0), ('sep_conv_3x3', 1)]
    # free in-degree: triples (op, src, node)
    g0 = derive_genotype(_alpha(), torch.tensor([1.0, -1.0, 1, 1, -1, 1, -1, -1, -1, 1, 1, 1, 1, 1]), PRIMITIVES, k=0)
    assert g0 == [('max_pool_3x3', 0, 2), ('skip_connect', 0, 3), ('sep_conv_5x5', 1, 3), ('dil_conv_3x3', 0, 4),
                  ('skip_connect', 0, 5), ('sep_conv_3x3', 1, 5), ('sep_conv_5x5', 2, 5), ('dil_conv_3x3', 3, 5),
                  ('dil_conv_5x5', 4, 5)]


def test_darts_rule_on_the_same_alphas():
    # strength of an edge = its max non-none softmax weight, growing with the row here except row 3 (0.046);
    # the DARTS rule keeps the two strongest edges per node, strongest first, and ignores beta
    assert darts_derive(_alpha(), PRIMITIVES) == [
        ('avg_pool_3x3', 1), ('max_pool_3x3', 0),
        ('sep_conv_5x5', 2), ('skip_connect', 0),
        ('avg_pool_3x3', 3), ('max_pool_3x3', 2),
        ('dil_conv_5x5', 4), ('dil_conv_3x3', 3)]
    # PC-DARTS edge normalisation multiplies the rows first: damping rows 13 and 12 changes node 5's choice
    ew = torch.ones(14)
    ew[12:14] = 0.01
    assert darts_derive(_alpha(), PRIMITIVES, edge_weights=ew)[6:] == [('sep_conv_5x5', 2), ('sep_conv_3x3', 1)]
