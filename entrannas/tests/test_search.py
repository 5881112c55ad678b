"""The search algorithm: gradients reach alpha only through Engine-cells, unused ops are left alone by SGD,
S_j is re-derived after every architecture step, and the first/second-order architecture gradients."""
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn

from architect import Architect
from derivation import darts_derive, dst_derive
from genotypes import FlexGenotype, Genotype
from model_search import EngineCell, Network, TransitCell
from operations import PRIMITIVES

ARGS = SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4, arch_weight_decay=1e-3)


def tiny(mode='entrannas', engine_cells=None, sharing=True, seed=0):
    torch.manual_seed(seed)
    return Network(4, 3, 3, nn.CrossEntropyLoss(), mode=mode, engine_cells=engine_cells, feature_sharing=sharing)


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_cell_types_and_default_engine_placement():
    net = tiny()
    assert net.engine_cells == [0, 1]  # first normal cell and first reduction cell (layers // 3 = 1)
    assert isinstance(net.cells[0], EngineCell) and isinstance(net.cells[1], EngineCell)
    assert isinstance(net.cells[2], TransitCell) and net.cells[2].reduction  # reduction cell at 2 * 3 // 3
    assert isinstance(tiny('darts').cells[2], EngineCell)


def test_transit_cells_run_the_derived_set_and_leak_no_alpha_gradient():
    x, y = batch()
    net = tiny(engine_cells=[])  # only Transit-cells: alpha cannot receive gradient
    grads = torch.autograd.grad(net._loss(x, y), net.arch_parameters(), allow_unused=True)
    assert all(g is None for g in grads)
    net = tiny()
    grads = torch.autograd.grad(net._loss(x, y), net.arch_parameters(), allow_unused=True)
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    # the Transit-cells' active set is the DARTS top-2 genotype of the current alphas
    pairs = darts_derive(torch.softmax(net.alphas_normal, -1), PRIMITIVES)
    assert net._active_normal == [(PRIMITIVES.index(op), src, 2 + n // 2) for n, (op, src) in enumerate(pairs)]
    assert isinstance(net.genotype(), Genotype)


def test_weight_step_leaves_ops_outside_S_j_untouched():
    x, y = batch()
    net = tiny()
    opt = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9, weight_decay=3e-4)
    transit = net.cells[2]
    used = {(i, k) for k, i, _ in net._active_reduce}
    unused = [(i, k) for i in range(5) for k in range(8) if (i, k) not in used
              and any(True for _ in transit._ops[i]._ops[k].parameters())]
    assert unused
    before = {key: [p.clone() for p in transit._ops[key[0]]._ops[key[1]].parameters()] for key in unused}
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        net._loss(x, y).backward()
        opt.step()
    for (i, k), ps in before.items():
        for p0, p in zip(ps, transit._ops[i]._ops[k].parameters()):
            assert torch.equal(p0, p) and p.grad is None  # no weight decay, no momentum
    used_with_weights = [(i, k) for i, k in used if any(True for _ in transit._ops[i]._ops[k].parameters())]
    assert used_with_weights
    for i, k in used_with_weights:  # the ops of S_j are trained
        assert all(p.grad is not None for p in transit._ops[i]._ops[k].parameters())


def test_architect_step_rederives_after_every_update():
    x, y = batch()
    xv, yv = batch(seed=1)
    net = tiny()
    opt = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9)
    arch = Architect(net, SimpleNamespace(**{**vars(ARGS), 'arch_learning_rate': 0.5}))
    a0 = net.alphas_normal.detach().clone()
    for _ in range(3):
        arch.step(x, y, xv, yv, 0.1, opt, unrolled=False)
        expected = darts_derive(torch.softmax(net.alphas_normal.detach(), -1), PRIMITIVES)
        assert net._active_normal == [(PRIMITIVES.index(op), s, 2 + n // 2) for n, (op, s) in enumerate(expected)]
    assert not torch.equal(a0, net.alphas_normal)
    assert all(a.grad is None for a in net.arch_parameters())


def test_dst_mode_variable_in_degree_and_beta_updates():
    x, y = batch()
    xv, yv = batch(seed=1)
    net = tiny('dst')
    with torch.no_grad():  # make node 2 sparse: one strong pair
        net.alphas_normal[0, 3] = 4.0
    net.derive()
    assert sum(1 for _, _, d in net._active_normal if d == 2) == 1
    assert sum(1 for _, _, d in net._active_normal if d == 5) == 5 * 7  # alpha ~ 0: every pair above t = 0.5
    assert net._derived_normal == dst_derive(net.alphas_normal, net.betas_normal, net.primitives)
    g = net.genotype()
    assert isinstance(g, FlexGenotype) and all(len(t) == 3 for t in g.normal)
    opt = torch.optim.SGD(net.parameters(), 0.1)
    arch = Architect(net, ARGS)
    with torch.no_grad():  # two surviving ops on edge (1 -> 2) so that the threshold matters
        net.alphas_normal[1, 4] = 3.9
        net.alphas_normal[1, 5] = 3.5
    b0 = net.betas_normal.detach().clone()
    arch.step(x, y, xv, yv, 0.1, opt, unrolled=False)
    assert not torch.equal(b0, net.betas_normal)


def test_second_order_with_zero_lr_is_first_order():
    x, y = batch()
    xv, yv = batch(seed=1)
    net = tiny()
    opt = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9)
    arch = Architect(net, ARGS)
    first = torch.autograd.grad(net._loss(xv, yv), net.arch_parameters())
    _, second = arch._backward_step_unrolled(x, y, xv, yv, 0.0, opt)
    for a, b in zip(first, second):
        assert torch.allclose(a, b, atol=1e-6)


class SmoothBilevel(nn.Module):
    """A smooth stand-in with the super-net's interface (weights, alpha, _loss): the finite-difference
    Hessian-vector product is checked against double backward where no ReLU kink can interfere."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(5, 4, dtype=torch.float64))
        self.w2 = nn.Parameter(torch.randn(3, 5, dtype=torch.float64))
        self.alpha = torch.randn(3, dtype=torch.float64, requires_grad=True)

    def arch_parameters(self):
        return [self.alpha]

    def _loss(self, x, y):
        h = torch.tanh(x @ self.w1.t()) * torch.softmax(self.alpha, 0).repeat(2)[:5]
        return nn.functional.cross_entropy(h @ self.w2.t(), y)


def test_hessian_vector_product_matches_double_backward():
    torch.manual_seed(0)
    net = SmoothBilevel()
    x, y = torch.randn(6, 4, dtype=torch.float64), torch.randint(0, 3, (6,))
    params, arch = list(net.parameters()), net.arch_parameters()
    v = [torch.randn_like(p) for p in params]
    before = [p.detach().clone() for p in params]
    gw = torch.autograd.grad(net._loss(x, y), params, create_graph=True)
    exact = torch.autograd.grad(sum((g * u).sum() for g, u in zip(gw, v)), arch)
    approx = Architect(net, ARGS)._hessian_vector_product(v, x, y)
    assert torch.allclose(exact[0], approx[0], rtol=1e-4, atol=1e-8)
    assert all(torch.allclose(p, q, atol=1e-12) for p, q in zip(before, net.parameters()))  # w restored


def test_unrolled_step_uses_momentum_and_skips_unused_weights():
    x, y = batch()
    net = tiny()
    opt = torch.optim.SGD(net.parameters(), 0.1, momentum=0.9)
    opt.zero_grad()
    net._loss(x, y).backward()
    opt.step()  # creates momentum buffers for the used weights
    arch = Architect(net, ARGS)
    unrolled = arch._compute_unrolled_model(x, y, 0.05, opt)
    changed = same = 0
    for p, q in zip(net.parameters(), unrolled.parameters()):
        if torch.equal(p, q):
            same += 1
        else:
            changed += 1
    assert changed > 0 and same > 0  # Transit-cell ops outside S_j stay as they are
    assert unrolled._active_normal == net._active_normal


def test_network_new_and_arch_state_roundtrip():
    net = tiny('dst')
    with torch.no_grad():
        net.alphas_reduce[3, 2] = 5.0
        net.betas_reduce[1] = 1.0
    other = tiny('dst', seed=5)
    other.load_arch_state_dict(net.arch_state_dict())
    assert other._active_reduce == net.derive()[1]
    copy = net.new()
    assert all(torch.equal(a, b) for a, b in zip(copy.arch_parameters(), net.arch_parameters()))
    with pytest.raises(ValueError):
        tiny('entrannas').load_arch_state_dict({'alphas_normal': torch.zeros(3, 3), 'alphas_reduce': torch.zeros(3)})
    with pytest.raises(ValueError, match='mode'):
        Network(4, 3, 3, nn.CrossEntropyLoss(), mode='pcdarts')
