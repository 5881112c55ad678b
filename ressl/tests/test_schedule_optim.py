"""The official learning-rate schedule and the name-substring weight-decay groups."""
import math

import pytest
import torch

import models
import optim
import schedule


def sgd(n_groups=2):
    return torch.optim.SGD([{'params': [torch.nn.Parameter(torch.zeros(1))]} for _ in range(n_groups)], lr=1.0)


def test_warm_up_starts_at_zero_and_is_linear():
    opt = sgd()
    assert schedule.adjust_learning_rate(opt, 0, 0.05, 0, 100, epochs=200) == 0.0
    assert all(g['lr'] == 0.0 for g in opt.param_groups)
    # T = 2 * 100 + 50 of W * I = 500 warm-up iterations
    assert schedule.adjust_learning_rate(opt, 2, 0.05, 50, 100, epochs=200) == pytest.approx(0.05 * 250 / 500)
    assert schedule.adjust_learning_rate(opt, 4, 0.05, 99, 100, epochs=200) == pytest.approx(0.05 * 499 / 500)


def test_half_cosine_after_warm_up_ends_at_zero():
    opt = sgd(3)
    assert schedule.adjust_learning_rate(opt, 5, 0.05, 0, 100, epochs=200) == pytest.approx(0.05)
    # halfway through the (200 - 5) * 100 cosine iterations
    mid = 5 * 100 + 195 * 100 // 2
    lr = schedule.adjust_learning_rate(opt, mid // 100, 0.05, mid % 100, 100, epochs=200)
    assert lr == pytest.approx(0.025)
    last = schedule.adjust_learning_rate(opt, 199, 0.05, 99, 100, epochs=200)
    assert last == pytest.approx(0.5 * 0.05 * (1 + math.cos(math.pi * (19499 / 19500))))
    assert 0 < last < 1e-8
    assert len({g['lr'] for g in opt.param_groups}) == 1  # the same lr in every group


def test_custom_warm_up_and_no_optimizer():
    assert schedule.adjust_learning_rate(None, 0, 1.0, 5, 10, epochs=4, warm_up=1) == pytest.approx(0.5)
    assert schedule.adjust_learning_rate(None, 0, 1.0, 0, 10, epochs=4, warm_up=0) == pytest.approx(1.0)


def test_weight_decay_groups_follow_name_substrings():
    model = models.ReSSL(models.resnet18(small_input=True, width=4), dim=8, K=16, hidden_dim=8)
    groups = optim.param_groups(model, 1e-4)
    assert [g['weight_decay'] for g in groups] == [0.0, 1e-4]
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for p in groups[0]['params']}
    decay = {names[id(p)] for p in groups[1]['params']}
    assert all('bn' in n or 'bias' in n for n in no_decay)
    assert all('bn' not in n and 'bias' not in n for n in decay)
    # the shortcut BatchNorm is named downsample.1: no 'bn' in its name, so its weight keeps weight decay
    assert 'encoder_q.net.layer2.0.downsample.1.weight' in decay
    assert 'encoder_q.net.layer2.0.downsample.1.bias' in no_decay
    assert 'encoder_q.net.bn1.weight' in no_decay and 'encoder_q.head.linear1.weight' in decay
    # every parameter, the teacher's included, as in the official scripts
    assert len(no_decay) + len(decay) == len(list(model.parameters()))
    assert any(n.startswith('encoder_k.') for n in decay)


def test_small_recipe_decays_everything():
    model = models.ProjectionHead(4, 8, 2)
    groups = optim.param_groups(model, 5e-4, no_decay_keys=())
    assert len(groups) == 1 and groups[0]['weight_decay'] == 5e-4
    assert len(groups[0]['params']) == 4
