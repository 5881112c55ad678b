"""The derivation rules on fixed tensors: the DARTS top-2 rule and EnTranNAS-DST's sparsification."""
import math

import pytest
import torch

from derivation import darts_derive, dst_derive, dst_edge_weights, dst_node_weights, edge_index, edge_offsets
from operations import PRIMITIVES, PRIMITIVES_NO_NONE


def test_edge_numbering():
    assert edge_offsets(4) == [0, 2, 5, 9]
    assert edge_index(0, 2) == 0 and edge_index(1, 3) == 3 and edge_index(4, 5) == 13


def _weights(spec, K=8, base=0.01):
    """[14, K] weights, ``spec`` = {(edge, k): value}."""
    w = torch.full((14, K), base)
    for (e, k), v in spec.items():
        w[e, k] = v
    return w


def test_darts_rule_max_non_none_and_top2():
    P = PRIMITIVES
    none, skip, sep3, dil5, maxp = (P.index(n) for n in ('none', 'skip_connect', 'sep_conv_3x3', 'dil_conv_5x5',
                                                          'max_pool_3x3'))
    w = _weights({
        # node 2: edge 0 dominated by `none` (0.9) but its best real op is sep3 (0.05); edge 1 skip 0.3
        (0, none): 0.9, (0, sep3): 0.05, (1, skip): 0.3,
        # node 3 (edges 2, 3, 4): edge 4 (src 2) strongest, then edge 2 (src 0); edge 3 only `none`
        (2, dil5): 0.2, (3, none): 0.99, (4, maxp): 0.4,
        # node 4 (edges 5..8): a tie between src 1 and src 3 -> stable order keeps src 1 first
        (6, sep3): 0.5, (8, sep3): 0.5, (5, skip): 0.1,
        # node 5 (edges 9..13): src 4 and src 0
        (13, dil5): 0.7, (9, skip): 0.6, (10, sep3): 0.05,
    })
    gene = darts_derive(w, P)
    assert gene == [('skip_connect', 1), ('sep_conv_3x3', 0),
                    ('max_pool_3x3', 2), ('dil_conv_5x5', 0),
                    ('sep_conv_3x3', 1), ('sep_conv_3x3', 3),
                    ('dil_conv_5x5', 4), ('skip_connect', 0)]
    assert all(op != 'none' for op, _ in gene)


def test_darts_rule_uses_probabilities_of_the_given_weights():
    # raw alpha vs softmax: an edge with a large alpha spread loses to one with a single large alpha after softmax
    alpha = torch.zeros(14, 8)
    alpha[0, 4] = 2.0                    # softmax max = e^2 / (e^2 + 7) = 0.513
    alpha[1, 4], alpha[1, 5] = 2.5, 2.5  # softmax max = e^2.5 / (2 e^2.5 + 6) = 0.401
    alpha[1, 1:4] = 2.5
    by_prob = darts_derive(torch.softmax(alpha, -1), PRIMITIVES)
    assert by_prob[0] == ('sep_conv_3x3', 0)  # the stronger edge by probability comes first
    by_alpha = darts_derive(alpha, PRIMITIVES)
    assert by_alpha[0][1] == 1                # raw alpha would rank edge 1 first: the rule must get probabilities


def test_dst_node_weights_hand_computed():
    alpha = torch.tensor([[0.0, math.log(2.0), math.log(4.0)],
                          [math.log(3.0), 0.0, 0.0]])
    beta = torch.tensor(0.0)  # t = 0.5
    p, q, q_hat = dst_node_weights(alpha, beta)
    p_ref = torch.tensor([[1 / 7, 2 / 7, 4 / 7], [3 / 5, 1 / 5, 1 / 5]])
    assert torch.allclose(p, p_ref, atol=1e-6)
    m = 3 / 5                                          # strongest pair of the node: (edge 1, op 0)
    r = p_ref / m
    q_ref = torch.clamp(r - 0.5, min=0)                # only (0,2): 20/21-1/2 and (1,0): 1-1/2 survive
    assert torch.allclose(q, q_ref, atol=1e-6)
    assert (q > 0).sum() == 2
    assert torch.allclose(q_hat, torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]), atol=1e-6)
    # a lower threshold keeps a second op on edge 0 and renormalises per edge
    _, q2, q_hat2 = dst_node_weights(alpha, torch.logit(torch.tensor(0.4)))
    r01, r02 = (2 / 7) / m, (4 / 7) / m
    assert torch.allclose(q_hat2[0], torch.tensor([0.0, (r01 - 0.4), (r02 - 0.4)]) / (r01 + r02 - 0.8), atol=1e-6)
    assert torch.allclose(q_hat2[1], torch.tensor([1.0, 0.0, 0.0]), atol=1e-6)  # 1/3 < 0.4: pruned


def test_dst_temperature_and_invariants():
    torch.manual_seed(0)
    alpha, beta = torch.randn(14, 7), torch.randn(4)
    q_hat = dst_edge_weights(alpha, beta, tau=0.5)
    sums = q_hat.sum(-1)
    assert torch.all(((sums - 1).abs() < 1e-5) | (sums == 0))      # each edge: a distribution or pruned
    for j, off in enumerate(edge_offsets()):
        assert (q_hat[off:off + j + 2] > 0).any()                  # the strongest pair always survives
    _, _, ref = dst_node_weights(alpha[0:2], beta[0], tau=0.5)
    assert torch.equal(q_hat[0:2], ref)


def test_dst_gradients_reach_alpha_and_beta():
    alpha = torch.zeros(2, 3, requires_grad=True)
    beta = torch.tensor(0.0, requires_grad=True)
    with torch.no_grad():
        alpha[0] = torch.tensor([1.0, 0.9, -3.0])
        alpha[1] = torch.tensor([0.0, 0.0, 0.0])
    _, _, q_hat = dst_node_weights(alpha, beta)
    target = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    (q_hat * target).sum().backward()
    assert beta.grad is not None and beta.grad.abs() > 0      # edge 0 keeps two ops: t_j changes their mix
    assert alpha.grad[0].abs().sum() > 0


def test_dst_derive_fixed_tensor_variable_in_degree():
    K = len(PRIMITIVES_NO_NONE)
    alpha = torch.full((14, K), -5.0)
    sep3 = PRIMITIVES_NO_NONE.index('sep_conv_3x3')
    skip = PRIMITIVES_NO_NONE.index('skip_connect')
    alpha[edge_index(0, 2), sep3] = 3.0                      # node 2: a single input
    alpha[edge_index(0, 3), sep3] = 3.0                      # node 3: three inputs
    alpha[edge_index(1, 3), skip] = 3.0
    alpha[edge_index(2, 3), sep3] = 3.0
    alpha[edge_index(1, 4), sep3] = alpha[edge_index(1, 4), skip] = 3.0   # node 4: two ops on one edge
    alpha[edge_index(4, 5), skip] = 3.0                      # node 5: one input
    beta = torch.zeros(4)
    triples = dst_derive(alpha, beta, PRIMITIVES_NO_NONE)
    assert triples == [('sep_conv_3x3', 0, 2),
                       ('sep_conv_3x3', 0, 3), ('skip_connect', 1, 3), ('sep_conv_3x3', 2, 3),
                       ('skip_connect', 1, 4), ('sep_conv_3x3', 1, 4),
                       ('skip_connect', 4, 5)]
    # thresholds stay below 1, so even a huge beta keeps each node's strongest pair(s)
    big = dst_derive(alpha, torch.full((4,), 10.0), PRIMITIVES_NO_NONE)
    assert {d for _, _, d in big} == {2, 3, 4, 5}


def test_dst_derive_depends_on_probabilities_only():
    # a per-edge shift of alpha leaves the softmax, hence the derived set, unchanged; a shape error is loud
    torch.manual_seed(1)
    alpha, beta = 2 * torch.randn(14, 7), torch.zeros(4)
    shifted = alpha + 3 * torch.randn(14, 1)
    assert dst_derive(alpha, beta, PRIMITIVES_NO_NONE) == dst_derive(shifted, beta, PRIMITIVES_NO_NONE)
    assert len(dst_derive(alpha, beta, PRIMITIVES_NO_NONE)) < 14 * 7
    with pytest.raises(IndexError):
        dst_derive(alpha[:10], beta, PRIMITIVES_NO_NONE)
