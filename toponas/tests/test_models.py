"""The search super-net (DARTS anchor, topology hook, PC-DARTS) and the evaluation networks (parameter counts and
FLOPs of the card, free in-degree cells, drop-path)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from genotypes import DARTS_V1, DARTS_V2, PRIMITIVES, Genotype, check_genotype, in_degrees, parse_genotype
from model import NetworkCIFAR, NetworkImageNet
from model_search import Cell, MixedOp, Network, channel_shuffle
from topology import cell_marginals
from utils import count_parameters, drop_path


def _weights_count(net):
    return sum(p.numel() for p in net.weights())


def test_search_supernet_has_the_darts_parameter_count():
    for topo in ('edge', 'combination', 'none'):
        net = Network(16, 10, 8, nn.CrossEntropyLoss(), topo_param=topo)
        assert _weights_count(net) == 1930618
    net = Network(16, 10, 8, nn.CrossEntropyLoss())
    assert [tuple(p.shape) for p in net.arch_parameters()] == [(14, 8), (14, 8), (14,), (14,)]
    assert sum(p.numel() for p in net.parameters()) == 1930618 + 2 * 14 * 8 + 2 * 14
    net = Network(16, 10, 8, nn.CrossEntropyLoss(), topo_param='combination')
    assert [tuple(p.shape) for p in net.arch_parameters()][2:] == [(20,), (20,)]
    # architecture variables never reach the weight optimizer
    arch = {id(p) for p in net.arch_parameters()}
    assert not any(id(p) in arch for p in net.weights())


def _reference_darts_forward(net, x):
    """DARTS super-net forward written out independently: node = plain sum of its mixed edges."""
    wn, wr = F.softmax(net.alphas_normal, -1), F.softmax(net.alphas_reduce, -1)
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        w = wr if cell.reduction else wn
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        offset = 0
        for _ in range(4):
            node = 0
            for j, h in enumerate(states):
                mixed = cell._ops[offset + j]
                node = node + sum(w[offset + j, o] * op(h) for o, op in enumerate(mixed._ops))
            offset += len(states)
            states.append(node)
        s0, s1 = s1, torch.cat(states[-4:], 1)
    return net.classifier(net.global_pooling(s1).flatten(1))


def test_topology_weights_fixed_to_one_is_exactly_the_darts_supernet():
    torch.manual_seed(0)
    topo = Network(8, 10, 5, nn.CrossEntropyLoss(), topo_param='edge')
    darts = Network(8, 10, 5, nn.CrossEntropyLoss(), topo_param='none')
    state = {k: v for k, v in topo.state_dict().items() if not k.startswith('betas')}
    darts.load_state_dict(state)
    topo.fixed_topology = True
    topo.eval(), darts.eval()  # BN without affine uses running stats (identical: fresh)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out_topo, out_darts, ref = topo(x), darts(x), _reference_darts_forward(darts, x)
        assert torch.equal(out_topo, out_darts)
        assert torch.allclose(out_darts, ref, atol=1e-6)
        topo.fixed_topology = False  # the learned marginals change the output
        assert not torch.allclose(topo(x), out_darts, atol=1e-4)


def test_hard_topology_node_equals_sum_of_the_kept_edges():
    torch.manual_seed(1)
    cell = Cell(4, 4, 12, 12, 4, False, False).eval()
    s0, s1 = torch.randn(2, 12, 8, 8), torch.randn(2, 12, 8, 8)
    weights = F.softmax(torch.randn(14, 8), -1)
    keep = {2: (0, 1), 3: (0, 2), 4: (1, 3), 5: (2, 4)}
    beta = torch.full((14,), -1e3)
    mask = torch.zeros(14)
    for (node, pair), offset in zip(keep.items(), (0, 2, 5, 9)):
        for i in pair:
            beta[offset + i], mask[offset + i] = 1e3, 1.0
    marg = cell_marginals(beta)
    assert torch.equal(marg, mask)
    with torch.no_grad():
        out = cell(s0, s1, weights, marg)
        states = [cell.preprocess0(s0), cell.preprocess1(s1)]
        offset = 0
        for node in range(2, 6):
            states.append(sum(cell._ops[offset + i](states[i], weights[offset + i]) for i in keep[node]))
            offset += node
        assert torch.allclose(out, torch.cat(states[2:], 1), atol=1e-6)


def test_node2_is_the_darts_node_whatever_beta():
    # node 2 has one topology, so its marginals are exactly (1, 1): its output is the DARTS node, not half of it
    torch.manual_seed(2)
    cell = Cell(4, 4, 8, 8, 4, False, False).eval()
    s0, s1 = torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6)
    weights = F.softmax(torch.randn(14, 8), -1)
    with torch.no_grad():
        topo = cell(s0, s1, weights, cell_marginals(5 * torch.randn(14)))
        darts = cell(s0, s1, weights)
    assert torch.equal(topo[:, :4], darts[:, :4])  # node 2 = the first C channels of the concat
    assert not torch.allclose(topo[:, 4:], darts[:, 4:])


def test_pcdarts_mixed_op_partial_channels_and_shuffle():
    torch.manual_seed(0)
    op = MixedOp(8, 1, partial=4).eval()
    assert op._ops[4].op[1].in_channels == 2  # sep_conv built with C/4 channels
    x = torch.randn(1, 8, 6, 6)
    w = torch.zeros(8)
    w[3] = 1.0  # skip_connect only: the op part is the identity, so the output is a channel permutation of x
    out = op(x, w)
    assert torch.allclose(out, channel_shuffle(x, 4))
    assert torch.equal(channel_shuffle(torch.arange(8.).view(1, 8, 1, 1), 4).flatten(),
                       torch.tensor([0., 2, 4, 6, 1, 3, 5, 7]))
    red = MixedOp(8, 2, partial=4).eval()
    assert red(x, F.softmax(torch.randn(8), 0)).shape == (1, 8, 3, 3)


def test_pcdarts_edge_normalisation_and_topology_replacement():
    net = Network(8, 10, 5, nn.CrossEntropyLoss(), topo_param='none', base='pcdarts')
    en, er = net.topology_marginals()
    for offset, n in ((0, 2), (2, 3), (5, 4), (9, 5)):
        assert en[offset:offset + n].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    topo = Network(8, 10, 5, nn.CrossEntropyLoss(), topo_param='edge', base='pcdarts')
    mn, _ = topo.topology_marginals()
    assert mn[9:14].sum().item() == pytest.approx(2.0, abs=1e-6)  # TopoNAS marginals replace the edge normalisation
    assert _weights_count(topo) == _weights_count(net)


def test_genotype_of_every_variant_is_valid():
    for kw in (dict(), dict(topo_param='combination'), dict(topo_k=0), dict(topo_param='none'),
               dict(base='pcdarts'), dict(base='pcdarts', topo_param='none')):
        g = Network(8, 10, 5, nn.CrossEntropyLoss(), **kw).genotype()
        check_genotype(g)
        deg = in_degrees(g.normal)
        assert list(deg) == [2, 3, 4, 5]
        if kw.get('topo_k', 2) == 2:
            assert set(deg.values()) == {2}


def test_new_copies_the_architecture_variables():
    net = Network(8, 10, 5, nn.CrossEntropyLoss())
    with torch.no_grad():
        net.betas_normal.add_(1.0)
    other = net.new()
    for a, b in zip(net.arch_parameters(), other.arch_parameters()):
        assert torch.equal(a, b) and a is not b


# ------------------------------------------------------------------ evaluation networks
def test_evaluation_parameter_counts_match_the_card():
    net = NetworkCIFAR(36, 10, 20, True, DARTS_V2)
    assert count_parameters(net) == 3349342
    assert sum(p.numel() for p in net.parameters()) - count_parameters(net) == 476426
    assert count_parameters(NetworkCIFAR(36, 10, 20, False, DARTS_V1)) == 3169414
    assert count_parameters(NetworkImageNet(48, 1000, 14, True, DARTS_V2)) == 4718752


def test_darts_v2_flops_at_32x32():
    from torch.utils.flop_counter import FlopCounterMode
    net = NetworkCIFAR(36, 10, 20, False, DARTS_V2).eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(torch.randn(1, 3, 32, 32))
    assert fc.get_total_flops() == 1056718080


def test_state_dict_keys_follow_darts():
    keys = set(NetworkCIFAR(36, 10, 20, True, DARTS_V2).state_dict())
    for k in ('stem.0.weight', 'cells.0.preprocess0.op.1.weight', 'cells.0._ops.0.op.1.weight',
              'cells.7.preprocess0.conv_1.weight', 'auxiliary_head.features.2.weight', 'classifier.weight'):
        assert k in keys
    search_keys = set(Network(16, 10, 8, nn.CrossEntropyLoss()).state_dict())
    for k in ('alphas_normal', 'betas_reduce', 'cells.0._ops.13._ops.7.op.1.weight',
              'cells.2._ops.0._ops.1.1.running_mean'):
        assert k in search_keys


def test_free_in_degree_genotype_builds_and_runs():
    g = Genotype(normal=[('sep_conv_3x3', 1, 2), ('skip_connect', 0, 3), ('sep_conv_5x5', 1, 3), ('dil_conv_3x3', 2, 3),
                         ('max_pool_3x3', 3, 4), ('avg_pool_3x3', 0, 5)], normal_concat=[2, 3, 4, 5],
                 reduce=[('max_pool_3x3', 0, 2), ('max_pool_3x3', 1, 2), ('skip_connect', 2, 3), ('sep_conv_3x3', 1, 4),
                         ('dil_conv_5x5', 3, 5)], reduce_concat=[2, 3, 4, 5])
    check_genotype(g)
    assert in_degrees(g.normal) == {2: 1, 3: 3, 4: 1, 5: 1}
    net = NetworkCIFAR(8, 10, 5, False, g)
    out, aux = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10) and aux is None
    assert count_parameters(net) < count_parameters(NetworkCIFAR(8, 10, 5, False, DARTS_V2))
    assert parse_genotype(repr(g)) == g


def test_parse_genotype_and_its_errors():
    assert parse_genotype('DARTS_V2') is DARTS_V2
    assert parse_genotype(repr(DARTS_V1)) == DARTS_V1
    with pytest.raises(ValueError, match='not a genotype'):
        parse_genotype('__import__("os")')
    with pytest.raises(ValueError, match='unknown operation'):
        parse_genotype(repr(DARTS_V2).replace('sep_conv_3x3', 'conv_9x9', 1))
    with pytest.raises(ValueError, match='cannot take input'):
        parse_genotype(repr(DARTS_V2._replace(normal=[('sep_conv_3x3', 2)] * 8)))


def test_drop_path_drops_whole_samples_and_skips_identity():
    torch.manual_seed(0)
    x = torch.ones(64, 2, 3, 3)
    y = drop_path(x, 0.5)
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert torch.all((per_sample == 0).all(1) | (per_sample == 2).all(1))
    assert 0 < (per_sample[:, 0] == 0).sum() < 64
    # an all-identity normal cell is never dropped
    g = Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)] * 4, normal_concat=[2, 3, 4, 5],
                 reduce=DARTS_V2.reduce, reduce_concat=[2, 3, 4, 5])
    cell = NetworkCIFAR(4, 10, 3, False, g).cells[0].train()
    s = torch.randn(4, 12, 8, 8)
    a = cell(s, s, 0.9)
    assert torch.allclose(a, cell(s, s, 0.0))
