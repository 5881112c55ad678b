"""RMSpropTF by hand, the weight-decay filter and the official per-iteration schedules."""
import math

import pytest
import torch

import optim
import scheduler as schedules


def test_rmsproptf_two_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    opt = optim.RMSpropTF([p], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=0.01)
    grads = [torch.tensor([0.5, 0.1], dtype=torch.float64), torch.tensor([-0.3, 0.2], dtype=torch.float64)]
    v, buf, w = torch.ones(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64), p.detach().clone()
    for g in grads:
        p.grad = g.clone()
        opt.step()
        g = g + 0.01 * w                   # L2 weight decay added to the gradient
        v = v + 0.1 * (g ** 2 - v)         # square average initialised to ones
        buf = 0.9 * buf + 0.1 * g / torch.sqrt(v + 1e-3)   # eps inside the root, lr inside the buffer
        w = w - buf
        assert torch.allclose(p.detach(), w, atol=1e-12)
    # PyTorch's RMSprop is not the same update
    q = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    ref = torch.optim.RMSprop([q], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=0.01)
    q.grad = grads[0].clone()
    ref.step()
    p2 = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    o2 = optim.RMSpropTF([p2], lr=0.1, alpha=0.9, eps=1e-3, momentum=0.9, weight_decay=0.01)
    p2.grad = grads[0].clone()
    o2.step()
    assert not torch.allclose(p2, q)


def test_weight_decay_filter():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    opt = optim.build_optimizer('sgd', model, 0.1, weight_decay=1e-4, filter_bias_and_bn=True, nesterov=True)
    no_decay, decay = opt.param_groups
    assert no_decay['weight_decay'] == 0 and decay['weight_decay'] == 1e-4
    assert {id(p) for p in decay['params']} == {id(model[0].weight), id(model[2].weight)}
    assert len(no_decay['params']) == 4 and opt.defaults['nesterov']
    opt = optim.build_optimizer('sgd', model, 0.05, weight_decay=5e-4, filter_bias_and_bn=False, nesterov=False)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]['weight_decay'] == 5e-4
    assert not opt.defaults['nesterov']
    assert isinstance(optim.build_optimizer('rmsproptf', model, 0.048, eps=1e-3), optim.RMSpropTF)
    with pytest.raises(ValueError):
        optim.build_optimizer('adam', model, 0.1)


def _sched(**kw):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], kw.pop('lr'))
    return schedules.build_scheduler(optimizer=opt, **kw)


def test_cifar_schedule_decays_at_150_180_210():
    spe = 10
    s = _sched(sched='step', lr=0.05, warmup_steps=120 * spe, warmup_lr=0.05, decay_steps=30 * spe, decay_rate=0.1,
               total_steps=240 * spe, steps_per_epoch=spe)
    assert s.lr_at(0) == pytest.approx(0.05) and s.lr_at(149 * spe + 9) == pytest.approx(0.05)
    assert s.lr_at(150 * spe) == pytest.approx(0.05)               # the official decay lands one iteration late
    assert s.lr_at(150 * spe + 1) == pytest.approx(0.005)
    assert s.lr_at(180 * spe + 1) == pytest.approx(0.0005)
    assert s.lr_at(210 * spe + 1) == pytest.approx(0.00005)
    assert s.lr_at(240 * spe - 1) == pytest.approx(0.00005)


def test_b1_step_schedule_matches_torch_steplr():
    spe = 7
    s = _sched(sched='step', lr=0.1, warmup_steps=0, warmup_lr=1e-4, decay_steps=30 * spe, decay_rate=0.1,
               total_steps=100 * spe, steps_per_epoch=spe)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], 0.1)
    ref = torch.optim.lr_scheduler.StepLR(opt, 30 * spe, 0.1)
    for it in range(100 * spe):
        assert s.lr_at(it) == pytest.approx(opt.param_groups[0]['lr'], rel=1e-9)
        opt.step()
        ref.step()
    assert s.lr_at(30 * spe) == pytest.approx(0.01) and s.lr_at(30 * spe - 1) == pytest.approx(0.1)


def test_b2_staircase_warmup_and_decay():
    spe = 10
    s = _sched(sched='step', lr=0.048, warmup_steps=3 * spe, warmup_lr=1e-6, decay_steps=2.4 * spe, decay_rate=0.97,
               total_steps=450 * spe, steps_per_epoch=spe)
    # per-epoch staircase: constant inside an epoch
    assert all(s.lr_at(i) == pytest.approx(1e-6) for i in range(spe))
    assert all(s.lr_at(spe + i) == pytest.approx(1e-6 + (0.048 - 1e-6) / 3) for i in range(spe))
    assert s.lr_at(3 * spe) == pytest.approx(0.048) and s.lr_at(3 * spe + 24) == pytest.approx(0.048)
    assert s.lr_at(3 * spe + 25) == pytest.approx(0.048 * 0.97)
    assert s.lr_at(3 * spe + 1 + 48) == pytest.approx(0.048 * 0.97 ** 2)


def test_cosine_matches_torch_closed_form_and_sets_lr():
    spe = 5
    s = _sched(sched='cosine', lr=0.1, warmup_steps=0, warmup_lr=0.0, decay_steps=1, decay_rate=1.0,
               total_steps=20 * spe, steps_per_epoch=spe, min_lr=0.001)
    for it in (0, 1, 37, 99):
        assert s.lr_at(it) == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi * it / 100)) / 2)
    assert s.step(37) == s.optimizer.param_groups[0]['lr'] == s.lr_at(37)
    with pytest.raises(ValueError):
        _sched(sched='poly', lr=0.1, warmup_steps=0, warmup_lr=0.0, decay_steps=1, decay_rate=1.0)
