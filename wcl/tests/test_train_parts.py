import math

import pytest
import torch

from lars import LARS, param_groups
from models import WCL, ProjectionHead, resnet50
from schedule import adjust_learning_rate, base_lr_for_batch


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_card():
    m = WCL('resnet50')  # repo heads 4096/256
    assert n_params(m.net) == 23_508_032
    assert n_params(m.head1) == n_params(m.head2) == 26_239_232
    assert n_params(m) == 75_986_496
    paper = WCL('resnet50', dim_hidden=2048, dim=128)
    assert n_params(paper.head1) == 8_663_168 and n_params(paper) == 40_834_368


def test_official_state_dict_keys_and_ddp_prefix_load():
    from common.checkpoint import load_state_dict
    m = WCL('resnet18', dim_hidden=16, dim=8, small_input=True, width=8)
    keys = list(m.state_dict())
    assert keys[0] == 'net.conv1.weight' and 'net.layer4.1.bn2.running_var' in keys
    assert {k.split('.')[1] for k in keys if k.startswith('head1.')} == {'linear1', 'bn1', 'linear2', 'bn2', 'linear3'}
    assert not any(k.startswith('net.fc') for k in keys)
    ddp_style = {'module.' + k: v.clone() for k, v in m.state_dict().items()}
    m2 = WCL('resnet18', dim_hidden=16, dim=8, small_input=True, width=8)
    load_state_dict(m2, ddp_style)
    assert torch.equal(m2.head2.linear3.weight, m.head2.linear3.weight)
    import torchvision
    tv = {k for k in torchvision.models.resnet50().state_dict() if not k.startswith('fc.')}
    assert set(resnet50().state_dict()) == tv  # torchvision names, so torchvision-style weights load


def test_lr_schedule_hand_values():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    base = base_lr_for_batch(4096)
    assert math.isclose(base, 4.8)
    assert adjust_learning_rate(opt, 0, base, 0, 100, 100) == 0.0
    assert math.isclose(adjust_learning_rate(opt, 5, base, 0, 100, 100), 2.4)
    assert math.isclose(adjust_learning_rate(opt, 10, base, 0, 100, 100), 4.8)
    assert math.isclose(adjust_learning_rate(opt, 55, base, 0, 100, 100), 2.4, rel_tol=1e-9)
    last = adjust_learning_rate(opt, 99, base, 99, 100, 100)
    assert opt.param_groups[0]['lr'] == last and 0 < last < 1e-6  # ends (almost) at 0


def test_param_groups_by_name_substring():
    m = WCL('resnet18', dim_hidden=16, dim=8, small_input=True, width=8)
    decay, no_decay = param_groups(m, 1e-6)
    names = {id(p): n for n, p in m.named_parameters()}
    nd = {names[id(p)] for p in no_decay['params']}
    d = {names[id(p)] for p in decay['params']}
    assert 'net.bn1.weight' in nd and 'head1.linear1.bias' in nd and 'head1.bn1.weight' in nd
    assert 'net.layer2.0.downsample.1.weight' in d  # the shortcut BN is not excluded, as in the official run
    assert no_decay['ignore'] and no_decay['weight_decay'] == 0 and not decay['ignore']


def test_lars_steps_hand_computed():
    w = torch.tensor([3.0, 4.0], requires_grad=True)   # ||w|| = 5
    b = torch.tensor([1.0], requires_grad=True)
    sgd = torch.optim.SGD([{'params': [w], 'weight_decay': 0.1, 'ignore': False},
                           {'params': [b], 'weight_decay': 0.0, 'ignore': True}], lr=0.5, momentum=0.9)
    opt = LARS(sgd, eps=0.0, trust_coef=0.001)
    buf_w, buf_b = None, None
    wv, bv = w.detach().clone(), b.detach().clone()
    for step in range(3):
        gw, gb = torch.tensor([1.0, -2.0]) * (step + 1), torch.tensor([0.5])
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        d = gw + 0.1 * wv
        d = d * 0.001 * wv.norm() / d.norm()
        buf_w = d if buf_w is None else 0.9 * buf_w + d
        wv = wv - 0.5 * buf_w
        buf_b = gb if buf_b is None else 0.9 * buf_b + gb
        bv = bv - 0.5 * buf_b
        assert torch.allclose(w.detach(), wv, atol=1e-7) and torch.allclose(b.detach(), bv, atol=1e-7)
    assert sgd.param_groups[0]['weight_decay'] == 0.1  # restored after each step


def test_projection_head_layout():
    h = ProjectionHead(8, 4, 16)
    assert [n for n, _ in h.named_children()] == ['linear1', 'bn1', 'relu1', 'linear2', 'bn2', 'relu2', 'linear3']
    assert h(torch.randn(5, 8)).shape == (5, 4)
