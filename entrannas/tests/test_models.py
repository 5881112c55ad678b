"""Search and evaluation networks: the card's parameter counts and FLOPs, and the exact equivalences
(Transit-cell == evaluation cell of the same genotype; Engine-cell with one-hot weights == Transit-cell)."""
import pytest
import torch
import torch.nn as nn

from derivation import edge_index
from genotypes import DARTS_V1, DARTS_V2, FlexGenotype, Genotype, check_genotype, parse_genotype, to_flex
from model import AuxiliaryHeadCIFAR, Cell, NetworkCIFAR, NetworkImageNet
from model_search import EngineCell, Network, TransitCell
from operations import OPS, PRIMITIVES, FactorizedReduce, Identity
from utils import Cutout, count_parameters, drop_path

# pooling-free genotypes (search-time pooling carries an extra BN, so it is excluded from the exact check)
NO_POOL = Genotype(
    normal=[('sep_conv_3x3', 0), ('skip_connect', 1), ('dil_conv_3x3', 2), ('sep_conv_5x5', 0),
            ('sep_conv_3x3', 1), ('dil_conv_5x5', 3), ('skip_connect', 2), ('sep_conv_3x3', 4)],
    normal_concat=[2, 3, 4, 5],
    reduce=[('skip_connect', 0), ('sep_conv_5x5', 1), ('dil_conv_3x3', 0), ('sep_conv_3x3', 2),
            ('skip_connect', 3), ('dil_conv_5x5', 1), ('sep_conv_3x3', 4), ('skip_connect', 2)],
    reduce_concat=[2, 3, 4, 5])


# ------------------------------------------------------------------------------------------- counts
def test_supernet_parameter_counts():
    crit = nn.CrossEntropyLoss()
    darts = Network(16, 10, 8, crit, mode='darts', engine_cells=range(8), feature_sharing=False)
    assert count_parameters(darts) == 1_930_618
    assert all(isinstance(c, EngineCell) for c in darts.cells)
    ent = Network(16, 10, 8, crit)  # EnTranNAS: feature sharing, Engine-cells 0 and 2
    assert count_parameters(ent) == 749_050
    assert [i for i, c in enumerate(ent.cells) if isinstance(c, EngineCell)] == [0, 2]
    # the architecture tensors stay out of model.parameters()
    ids = {id(p) for p in ent.parameters()}
    assert all(id(a) not in ids for a in ent.arch_parameters())
    assert [tuple(a.shape) for a in ent.arch_parameters()] == [(14, 8), (14, 8)]
    dst = Network(16, 10, 8, crit, mode='dst')
    assert [tuple(a.shape) for a in dst.arch_parameters()] == [(14, 7), (14, 7), (4,), (4,)]
    # quark0/darts state_dict keys (per-edge op sets) with feature_sharing=False
    keys = darts.state_dict().keys()
    assert 'cells.0._ops.13._ops.4.op.1.weight' in keys and 'cells.0._ops.0._ops.1.1.running_mean' in keys


def test_evaluation_parameter_counts():
    v2 = NetworkCIFAR(36, 10, 20, True, DARTS_V2)
    assert count_parameters(v2) == 3_349_342
    assert sum(p.numel() for n, p in v2.named_parameters() if 'auxiliary' in n) == 476_426
    assert count_parameters(NetworkCIFAR(36, 10, 20, True, DARTS_V1)) == 3_169_414
    assert count_parameters(NetworkImageNet(48, 1000, 14, True, DARTS_V2)) == 4_718_752
    assert 'cells.0._ops.0.op.1.weight' in v2.state_dict()  # quark0/darts keys


def test_flops_darts_v2_cifar():
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device('meta'):  # shapes only: the counter needs no arithmetic
        net = NetworkCIFAR(36, 10, 20, False, DARTS_V2).eval()
        x = torch.randn(1, 3, 32, 32)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        net(x)
    assert fc.get_total_flops() == 1_056_718_080


# ------------------------------------------------------------------------------------------- ops
def test_ops_strides_and_none():
    x = torch.randn(2, 4, 8, 8)
    z = OPS['none'](4, 2, False)(x)
    assert z.shape == (2, 4, 4, 4) and z.abs().sum() == 0
    assert isinstance(OPS['skip_connect'](4, 2, False), FactorizedReduce)
    assert isinstance(OPS['skip_connect'](4, 1, False), Identity)
    for name in PRIMITIVES:
        assert OPS[name](4, 2, True)(x).shape == (2, 4, 4, 4)
        assert OPS[name](4, 1, True)(x).shape == (2, 4, 8, 8)
    # avg pool does not count the padding
    ones = torch.ones(1, 1, 4, 4)
    assert torch.allclose(OPS['avg_pool_3x3'](1, 1, True)(ones), ones)


# ------------------------------------------------------------------------------------------- equivalences
def _copy_transit_to_eval(transit, cell, genotype, reduction):
    """Load the Transit-cell weights into the evaluation cell (BN affine params stay at their init 1 / 0)."""
    for name in ('preprocess0', 'preprocess1'):
        missing, unexpected = getattr(cell, name).load_state_dict(getattr(transit, name).state_dict(), strict=False)
        assert not unexpected and all(k.endswith(('weight', 'bias')) for k in missing)
    triples = (to_flex(genotype).reduce if reduction else to_flex(genotype).normal)
    for n, (op, src, dst) in enumerate(triples):
        k = PRIMITIVES.index(op)
        holder = transit._ops[src] if transit.feature_sharing else transit._ops[edge_index(src, dst)]
        missing, unexpected = cell._ops[n].load_state_dict(holder._ops[k].state_dict(), strict=False)
        assert not unexpected
    return [(PRIMITIVES.index(op), src, dst) for op, src, dst in triples]


@pytest.mark.parametrize('reduction,reduction_prev,sharing', [(False, False, True), (True, False, True),
                                                              (False, True, False), (True, False, False)])
def test_transit_cell_equals_evaluation_cell(reduction, reduction_prev, sharing):
    torch.manual_seed(0)
    C_pp, C_p, C = 6, 10, 4
    transit = TransitCell(4, 4, C_pp, C_p, C, reduction, reduction_prev, PRIMITIVES, feature_sharing=sharing)
    cell = Cell(NO_POOL, C_pp, C_p, C, reduction, reduction_prev)
    active = _copy_transit_to_eval(transit, cell, NO_POOL, reduction)
    transit.train(), cell.train()
    hw = 16 if reduction_prev else 8
    s0, s1 = torch.randn(3, C_pp, hw, hw), torch.randn(3, C_p, 8, 8)
    out_t = transit(s0, s1, active)
    out_e = cell(s0, s1, 0.0)
    assert out_t.shape == out_e.shape == (3, 4 * C, 4 if reduction else 8, 4 if reduction else 8)
    assert torch.allclose(out_t, out_e, atol=1e-6)


@pytest.mark.parametrize('sharing', [True, False])
def test_engine_cell_with_one_hot_weights_equals_transit_cell(sharing):
    torch.manual_seed(1)
    genotype = DARTS_V2  # pooling included: both search cells carry the same pooling BN
    engine = EngineCell(4, 4, 6, 10, 4, True, False, PRIMITIVES, feature_sharing=sharing)
    transit = TransitCell(4, 4, 6, 10, 4, True, False, PRIMITIVES, feature_sharing=sharing)
    transit.load_state_dict(engine.state_dict())  # same module tree, same keys
    active = [(PRIMITIVES.index(op), src, dst) for op, src, dst in to_flex(genotype).reduce]
    w = torch.zeros(14, len(PRIMITIVES))
    for k, i, j in active:
        w[edge_index(i, j), k] = 1.0
    s0, s1 = torch.randn(2, 6, 8, 8), torch.randn(2, 10, 8, 8)
    assert torch.allclose(engine(s0, s1, w), transit(s0, s1, active), atol=1e-6)


def test_feature_sharing_computes_each_source_op_once_and_skips_zero_weights():
    torch.manual_seed(2)
    cell = EngineCell(4, 4, 4, 4, 4, False, False, PRIMITIVES, feature_sharing=True)
    calls = {}
    for i, holder in enumerate(cell._ops):
        for k, op in enumerate(holder._ops):
            op.register_forward_hook(lambda m, inp, out, key=(i, k): calls.__setitem__(key, calls.get(key, 0) + 1))
    w = torch.softmax(torch.randn(14, 8), -1)
    cell(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), w)
    assert len(cell._ops) == 5 and calls[(0, 4)] == 1 and calls[(1, 4)] == 1 and calls[(4, 4)] == 1
    assert len(calls) == 5 * 8  # every (source, op) once, although node 0 feeds 4 successors
    calls.clear()
    w[:, 5:] = 0.0  # pruned pairs are skipped, not multiplied by zero
    cell(torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), w)
    assert all(k < 5 for _, k in calls) and len(calls) == 5 * 5


def test_eval_cell_flex_genotype_any_in_degree_and_shared_features():
    g = FlexGenotype(normal=[('sep_conv_3x3', 0, 2), ('skip_connect', 1, 3), ('sep_conv_3x3', 0, 3),
                             ('sep_conv_3x3', 2, 3), ('dil_conv_3x3', 1, 4), ('skip_connect', 1, 4),
                             ('sep_conv_3x3', 0, 5)],
                     normal_concat=[2, 3, 4, 5], reduce=to_flex(DARTS_V2).reduce, reduce_concat=[2, 3, 4, 5])
    check_genotype(g)
    plain, shared = Cell(g, 8, 8, 4, False, False), Cell(g, 8, 8, 4, False, False, share_features=True)
    assert len(plain._ops) == 7 and len(shared._ops) == 4  # sep_conv_3x3 on node 0 (3 uses) built once
    for n_plain, (n_shared, _, _) in enumerate(shared._edges):  # same weights -> same output
        plain._ops[n_plain].load_state_dict(shared._ops[n_shared].state_dict())
    plain.preprocess0.load_state_dict(shared.preprocess0.state_dict())
    plain.preprocess1.load_state_dict(shared.preprocess1.state_dict())
    x0, x1 = torch.randn(2, 8, 8, 8), torch.randn(2, 8, 8, 8)
    out = plain(x0, x1, 0.0)
    assert out.shape == (2, 16, 8, 8) and torch.allclose(out, shared(x0, x1, 0.0), atol=1e-6)
    net = NetworkCIFAR(4, 10, 3, False, g)
    logits, aux = net(torch.randn(2, 3, 8, 8))
    assert logits.shape == (2, 10) and aux is None
    with pytest.raises(ValueError, match='node 5 has no input'):
        check_genotype(FlexGenotype(g.normal[:-1], [2, 3, 4, 5], g.reduce, [2, 3, 4, 5]))


def test_genotype_parsing_roundtrip():
    assert parse_genotype('DARTS_V2') is DARTS_V2
    assert parse_genotype(str(DARTS_V1)) == DARTS_V1
    g = to_flex(DARTS_V2)
    assert parse_genotype(str(g)) == g
    with pytest.raises(ValueError):
        parse_genotype('Genotype(normal=[("conv_9x9", 0)], normal_concat=[2], reduce=[], reduce_concat=[])')
    with pytest.raises(ValueError):
        parse_genotype('DARTS_V9')
    with pytest.raises(ValueError, match='cannot read'):
        parse_genotype('Genotype(normal=[("sep_conv_3x3", 0)')


# ------------------------------------------------------------------------------------------- eval helpers
def test_drop_path_drops_whole_samples_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(1000, 2, 3, 3)
    y = drop_path(x, 0.2)
    per_sample = y.flatten(1)
    assert torch.all((per_sample == 0).all(1) | torch.isclose(per_sample, torch.tensor(1.25)).all(1))
    assert 0.15 < (per_sample == 0).all(1).float().mean() < 0.25
    assert torch.equal(drop_path(x, 0.0), x)


def test_drop_path_skips_identity_ops():
    g = Genotype(normal=[('skip_connect', 0), ('skip_connect', 1)] * 4, normal_concat=[2, 3, 4, 5],
                 reduce=DARTS_V2.reduce, reduce_concat=[2, 3, 4, 5])
    x0, x1 = torch.randn(8, 4, 4, 4), torch.randn(8, 4, 4, 4)
    cell = Cell(g, 4, 4, 4, False, False).train()
    assert torch.allclose(cell(x0, x1, 0.9), cell(x0, x1, 0.0))  # identity edges are never dropped
    g2 = Genotype(normal=[('sep_conv_3x3', 0), ('sep_conv_3x3', 1)] * 4, normal_concat=[2, 3, 4, 5],
                  reduce=DARTS_V2.reduce, reduce_concat=[2, 3, 4, 5])
    cell2 = Cell(g2, 4, 4, 4, False, False).train()
    torch.manual_seed(0)
    assert not torch.allclose(cell2(x0, x1, 0.9), cell2(x0, x1, 0.0))  # other ops are


def test_aux_head_and_cutout():
    head = AuxiliaryHeadCIFAR(16, 10)
    assert head(torch.randn(2, 16, 8, 8)).shape == (2, 10)
    g = torch.Generator().manual_seed(0)
    img = torch.ones(3, 32, 32)
    out = Cutout(16, generator=g)(img)
    zeros = (out[0] == 0)
    assert zeros.sum() <= 256 and zeros.sum() > 0 and torch.equal(out[0] == 0, out[2] == 0)
    rows, cols = zeros.any(1).nonzero(), zeros.any(0).nonzero()
    assert rows.numel() <= 16 and cols.numel() <= 16
