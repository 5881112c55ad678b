"""LARS update, parameter groups and the learning-rate schedule against hand computations."""
import math

import pytest
import torch
import torch.nn as nn

import optim
from test_model import tiny_model


def test_lars_step_by_hand_with_momentum_and_weight_decay():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))                  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))                       # excluded: plain lr * g
    opt = optim.LARS([{'params': [b], 'weight_decay': 0.0, 'lars_exclude': True}, {'params': [w]}],
                     lr=2.0, momentum=0.9, weight_decay=0.1, eta=0.001)
    g1 = torch.tensor([0.0, 1.0])                               # ||g|| = 1
    w.grad, b.grad = g1.clone(), torch.tensor([0.5])
    opt.step()
    local = 0.001 * 5 / (1 + 0.1 * 5)
    d1 = 2.0 * local * (g1 + 0.1 * torch.tensor([3.0, 4.0]))
    w1 = torch.tensor([3.0, 4.0]) - d1
    assert torch.allclose(w.data, w1, atol=1e-7)
    assert torch.allclose(b.data, torch.tensor([1.0 - 2.0 * 0.5]))
    # second step: momentum accumulates the already-scaled update
    g2 = torch.tensor([2.0, 0.0])
    w.grad, b.grad = g2.clone(), torch.tensor([0.5])
    opt.step()
    local2 = 0.001 * w1.norm().item() / (2.0 + 0.1 * w1.norm().item())
    d2 = 2.0 * local2 * (g2 + 0.1 * w1)
    assert torch.allclose(w.data, w1 - (0.9 * d1 + d2), atol=1e-7)
    assert torch.allclose(b.data, torch.tensor([0.0 - (0.9 * 1.0 + 1.0)]))


def test_lars_zero_norms_and_bad_arguments():
    w = nn.Parameter(torch.zeros(3))
    w.grad = torch.zeros(3)
    optim.LARS([w], lr=1.0).step()                              # 0/0: no NaN
    assert torch.equal(w.data, torch.zeros(3))
    with pytest.raises(ValueError):
        optim.LARS([w], lr=-1.0)


@pytest.mark.parametrize('sync_bn', [True, False])
def test_collect_params_exclusions(sync_bn):
    model = tiny_model()
    excluded, regular = optim.collect_params(model, sync_bn=sync_bn)
    assert excluded['lars_exclude'] and excluded['weight_decay'] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    ex = {names[id(p)] for p in excluded['params']}
    reg = {names[id(p)] for p in regular['params']}
    assert not any(n.startswith('target_net.') for n in ex | reg)   # the target never gets a gradient
    assert ex | reg == {n for n, p in model.named_parameters() if p.requires_grad}
    assert 'online_net.backbone.bn1.weight' in ex and 'online_net.backbone.layer2.0.downsample.1.weight' in ex
    assert 'online_net.backbone.layer2.0.downsample.0.weight' in reg and 'predictor.mlp.0.weight' in reg
    assert ('online_net.neck.proj.mlp.1.weight' in ex) == sync_bn   # EMAN runs also exclude the MLP BN weight
    assert ('predictor_obj.mlp.1.weight' in ex) == sync_bn
    assert 'predictor.mlp.1.bias' in ex
    everything = optim.collect_params(model, exclude_bias_and_bn=False)
    assert not everything[0]['params'] and len(everything[1]['params']) == len(ex | reg)


def test_learning_rate_warmup_per_step_then_cosine_per_epoch():
    lr = lambda e, i: optim.learning_rate(3.6, e, i, 10, 100, warmup_epochs=10)
    assert lr(0, 0) == pytest.approx(3.6 * 1 / 100)             # (epoch * iters + i + 1) / (warmup * iters)
    assert lr(4, 9) == pytest.approx(3.6 * 50 / 100)
    assert lr(9, 9) == pytest.approx(3.6)
    assert lr(10, 0) == lr(10, 7) == pytest.approx(3.6)         # constant within an epoch
    assert lr(55, 3) == pytest.approx(3.6 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert lr(99, 0) == pytest.approx(3.6 * 0.5 * (1 + math.cos(math.pi * 89 / 90)))
    assert optim.learning_rate(1.0, 130, 0, 10, 200, cos=False, schedule=(120, 160)) == pytest.approx(0.1)
