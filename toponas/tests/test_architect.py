"""The architecture step: alpha and beta in one Adam optimizer, the regulariser in the objective, node-2 betas
without gradient, first vs second order."""
import pytest
import torch
import torch.nn as nn

from architect import Architect
from model_search import Network
from topology import PassiveAggressiveReg, cell_marginals

ARGS = {'momentum': 0.9, 'weight_decay': 3e-4, 'arch_learning_rate': 3e-4, 'arch_weight_decay': 1e-3}


def _setup(seed=0, **kw):
    torch.manual_seed(seed)
    net = Network(4, 10, 3, nn.CrossEntropyLoss(), **kw)
    with torch.no_grad():  # spread the topology variables so that every node has a clear Top-2
        for b in (net.betas_normal, net.betas_reduce):
            b.copy_(torch.randn(b.shape))
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    xv, yv = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    opt = torch.optim.SGD(net.weights(), 0.1, momentum=0.9, weight_decay=3e-4)
    return net, opt, (x, y, xv, yv)


def _first_order_grads(net, batch, pa):
    arch = Architect(net, ARGS, pa)
    arch.optimizer.zero_grad()
    arch._backward_step(batch[2], batch[3])
    return arch, [p.grad.clone() for p in net.arch_parameters()]


def test_one_optimizer_for_alpha_and_beta_with_darts_hyperparameters():
    net, _, _ = _setup()
    arch = Architect(net, ARGS, PassiveAggressiveReg())
    group = arch.optimizer.param_groups[0]
    assert [id(p) for p in group['params']] == [id(p) for p in net.arch_parameters()] and len(group['params']) == 4
    assert group['betas'] == (0.5, 0.999) and group['lr'] == 3e-4 and group['weight_decay'] == 1e-3


def test_first_order_gradient_is_val_loss_plus_regulariser():
    net, _, batch = _setup()
    pa = PassiveAggressiveReg(weight=0.5)
    _, grads = _first_order_grads(net, batch, pa)
    # recompute by hand: CE on the validation batch + 0.5 * (mass outside Top-2, both cell types)
    net.zero_grad()
    ce = net._loss(batch[2], batch[3])
    reg = 0.5 * sum(m.sum() - m.detach().new_tensor(0) - sum(
        m[o:o + n][torch.topk(m[o:o + n].detach(), 2).indices].sum() for o, n in ((0, 2), (2, 3), (5, 4), (9, 5)))
        for m in (cell_marginals(net.betas_normal), cell_marginals(net.betas_reduce)))
    hand = torch.autograd.grad(ce + reg, net.arch_parameters())
    for g, h in zip(grads, hand):
        assert torch.allclose(g, h, atol=1e-6)
    # node-2 betas: no gradient (one topology), but a zero tensor rather than None
    assert torch.all(grads[2][:2] == 0) and torch.all(grads[3][:2] == 0)
    assert grads[2][2:].abs().sum() > 0


def test_regulariser_switch_and_start_epoch():
    net, _, batch = _setup()
    _, with_pa = _first_order_grads(net, batch, PassiveAggressiveReg(weight=1.0))
    arch = Architect(net, ARGS, PassiveAggressiveReg(weight=1.0))
    arch.pa_active = False
    arch._backward_step(batch[2], batch[3])
    without = [p.grad.clone() for p in net.arch_parameters()]
    _, none_mode = _first_order_grads(net, batch, PassiveAggressiveReg(weight=1.0, mode='none'))
    assert torch.allclose(without[2], none_mode[2])
    assert not torch.allclose(with_pa[2], without[2])
    assert torch.allclose(with_pa[0], without[0])  # alpha does not enter the regulariser
    assert arch.last['pa_loss'] == 0.0


def test_step_moves_alpha_and_beta_but_not_the_weights():
    net, opt, batch = _setup()
    arch = Architect(net, ARGS, PassiveAggressiveReg())
    before_arch = [p.detach().clone() for p in net.arch_parameters()]
    before_w = [p.detach().clone() for p in net.weights()]
    arch.step(*batch[:2], *batch[2:], 0.1, opt, unrolled=False)
    after_arch = net.arch_parameters()
    assert all(not torch.equal(a, b) for a, b in zip(before_arch, after_arch))
    assert all(torch.equal(a, b) for a, b in zip(before_w, net.weights()))


def test_second_order_with_zero_lr_equals_first_order():
    # eta = 0: w' = w and the finite-difference term vanishes, so both orders give the same gradient
    net, opt, batch = _setup(seed=3)
    net.eval()  # running BN statistics: identical forward in every pass
    pa = PassiveAggressiveReg(weight=0.1)
    _, first = _first_order_grads(net, batch, pa)
    arch = Architect(net, ARGS, pa)
    arch.optimizer.zero_grad()
    arch._backward_step_unrolled(*batch[:2], *batch[2:], 0.0, opt)
    for a, b in zip(first, [p.grad for p in net.arch_parameters()]):
        assert torch.allclose(a, b, atol=1e-6)


def test_second_order_treats_beta_like_alpha():
    net, opt, batch = _setup(seed=4)
    arch = Architect(net, ARGS, PassiveAggressiveReg())
    # a first SGD step so that the momentum buffer exists
    opt.zero_grad()
    net._loss(batch[0], batch[1]).backward()
    opt.step()
    w_before = [p.detach().clone() for p in net.weights()]
    arch.optimizer.zero_grad()
    arch._backward_step_unrolled(*batch[:2], *batch[2:], 0.1, opt)
    grads = [p.grad for p in net.arch_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert grads[2][2:].abs().sum() > 0 and torch.all(grads[2][:2] == 0)
    # the finite differences restore the weights
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(w_before, net.weights()))
    # and the implicit term changes the beta gradient
    _, first = _first_order_grads(net, batch, PassiveAggressiveReg())
    assert not torch.allclose(first[2], grads[2])


@pytest.mark.parametrize('kw', [dict(topo_param='combination'), dict(topo_k=0), dict(base='pcdarts')])
def test_architect_runs_for_every_variant(kw):
    torch.manual_seed(0)
    net = Network(8, 10, 3, nn.CrossEntropyLoss(), **kw)
    opt = torch.optim.SGD(net.weights(), 0.1, momentum=0.9)
    arch = Architect(net, ARGS, PassiveAggressiveReg(k=kw.get('topo_k', 2)))
    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 10, (2,))
    before = net.betas_normal.detach().clone()
    arch.step(x, y, x, y, 0.1, opt, unrolled=False)
    assert not torch.equal(before, net.betas_normal)
