"""DyRep: growth metric, growth, cut rule, optimizer rebuild, DBB graph save/load, BN recalibration
(card Sec. 1, 4-7)."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import randomize
from dbb import DiverseBranchBlock
from dyrep import DyRep, is_growable, param_groups
from recal_bn import recal_bn


class TwoPaths(nn.Module):
    """out = conv_a(x) - 3 * conv_b(x): a tiny model whose SynFlow scores are known in closed form.

    The loss is linear in each kernel, so sum(grad * W) of a conv equals its own (signed) share of the loss:
    conv_a scores +sum(conv_a(x)), conv_b scores -3 sum(conv_b(x)).
    """

    def __init__(self):
        super().__init__()
        self.conv_a = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.conv_b = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.point = nn.Conv2d(1, 1, 1, bias=False)     # 1x1: never growable
        with torch.no_grad():
            self.conv_a.weight.fill_(0.1)
            self.conv_b.weight.fill_(0.2)
            self.point.weight.fill_(1.0)

    def forward(self, x):
        return self.point(self.conv_a(x) - 3 * self.conv_b(x))


def test_synflow_picks_the_known_conv_and_keeps_the_sign():
    model = TwoPaths()
    x = torch.ones(1, 1, 4, 4)
    dy = DyRep(model, None)
    model(x).sum().backward()
    dy.record_metrics()
    a = model.conv_a(x).sum().item()
    b = -3 * model.conv_b(x).sum().item()
    avg = dy.metric_averages()
    assert set(avg) == {'conv_a', 'conv_b'}                          # the 1x1 conv is not a candidate
    assert avg['conv_a'] == pytest.approx(a) and avg['conv_b'] == pytest.approx(b)
    assert abs(b) > abs(a) and b < 0       # |score| would pick conv_b; the signed score picks conv_a
    report = dy.adjust_model()
    assert report['grown'] == ['conv_a'] and isinstance(model.conv_a, DiverseBranchBlock)
    assert isinstance(model.conv_b, nn.Conv2d)

    snip = DyRep(TwoPaths(), None, grow_metric='snip')
    m2 = snip.model
    m2(x).sum().backward()
    snip.record_metrics()
    assert snip.adjust_model()['grown'] == ['conv_b']


def test_metric_is_the_mean_over_iterations_since_the_last_adjustment():
    model = TwoPaths()
    dy = DyRep(model, None, grow_topk=0)
    x = torch.ones(1, 1, 4, 4)
    values = []
    for scale in (1.0, 3.0):
        model.zero_grad()
        (scale * model(x).sum()).backward()
        dy.record_metrics()
        values.append(scale * model.conv_a(x).sum().item())
    assert dy.metric_averages()['conv_a'] == pytest.approx(sum(values) / 2)
    dy.adjust_model()
    assert dy.metric_averages() == {}


def test_other_metrics_hand_computed():
    model = TwoPaths()
    x = torch.ones(1, 1, 4, 4)
    model(x).sum().backward()
    g = model.conv_b.weight.grad
    for metric, expected in [('grad_norm', g.norm().item()),
                             ('snip', (g * model.conv_b.weight).abs().sum().item())]:
        dy = DyRep(model, None, grow_metric=metric)
        dy.record_metrics()
        assert dy.metric_averages()['conv_b'] == pytest.approx(expected)
    with pytest.raises(ValueError):
        DyRep(model, None, grow_metric='abs_synflow')


def test_growable_rule():
    conv3 = nn.Conv2d(2, 2, 3, padding=1)
    assert is_growable('layer.conv', conv3)
    assert is_growable('x.dbb_kxk.conv', conv3)                        # one 'dbb': one level of nesting
    assert is_growable('x.dbb_1x1_kxk.conv2', conv3)
    assert not is_growable('x.dbb_kxk.conv.dbb_kxk.conv', conv3)       # two 'dbb': not again
    assert not is_growable('a', nn.Conv2d(2, 2, 1))
    assert not is_growable('a', nn.Conv2d(2, 2, (1, 3), padding=(0, 1)))
    assert not is_growable('a', nn.Conv2d(2, 2, 3, padding=2, dilation=2))
    assert not is_growable('a', nn.Linear(2, 2))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.relu(self.bn2(self.dw(x)))
        x = F.relu(self.bn3(self.conv(x)))
        return self.fc(x.mean((2, 3)))


def test_growth_preserves_the_eval_function_and_the_mode():
    torch.manual_seed(0)
    model = randomize(Tiny()).eval()
    x = torch.randn(2, 3, 16, 16)
    ref = model(x).detach()
    dy = DyRep(model, None)
    for name in ('stem', 'dw', 'conv', 'conv.dbb_kxk.conv', 'conv.dbb_1x1_kxk.conv2'):
        block = dy.grow(name)
        assert not block.training                               # takes the parent's (eval) mode
        assert torch.allclose(model(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    assert not dy.growable_convs() or all(n.count('dbb') < 2 for n, _ in dy.growable_convs())
    with pytest.raises(ValueError):
        dy.grow('fc')


def test_recalibrated_growth_is_exact_up_to_the_kxk_bn_eps():
    torch.manual_seed(0)
    model = randomize(Tiny()).eval()
    data = [(torch.randn(4, 3, 16, 16), 0) for _ in range(3)]
    x = torch.randn(2, 3, 16, 16)
    ref = model(x).detach()
    calls = []

    def recal(block):
        calls.append(block)
        recal_bn(model, data, 3, block)

    dy = DyRep(model, None, recal_bn_fn=recal)
    block = dy.grow('conv')
    assert calls == [block]
    assert torch.all(block.dbb_kxk.bn.running_mean == 0) and torch.all(block.dbb_kxk.bn.running_var == 1)
    assert not torch.all(block.dbb_1x1.bn.running_var == 1)            # recalibrated on data
    assert torch.allclose(model(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize('weights,expected', [
    ([0.01, 0.01, 0.01, 1, 0.01, 0.01, 0.01], None),                  # freshly grown: std 0
    ([0.5, -1, -1, 1, -1, -1, -1], None),                             # a single extra branch: std NaN
    ([0.30, 0.05, 0.20, 1, 0.08, 0.25, -1], [1, 0, 1, 1, 0, 1, 0]),   # < mean and < 0.1 (-1: inactive)
    ([0.30, 0.12, 0.35, 1, 0.40, 0.11, 0.5], None),                   # below the mean but >= 0.1
    ([0.05, 0.05, 0.06, 1, 0.05, 0.06, 0.05], None),                  # nearly equal: std <= 0.02
    ([0.3, 1, 0.02, 1, 0.3, 0.3, 0.3], [1, 1, 0, 1, 1, 1, 1]),        # a value of exactly 1 is left out of V
])
def test_cut_rule_cases(weights, expected):
    assert DyRep(nn.Conv2d(1, 1, 1), None).cut_decision(weights) == expected


def test_adjust_cuts_weak_branches_and_keeps_the_function():
    torch.manual_seed(0)
    model = randomize(Tiny()).eval()
    dy = DyRep(model, None, grow_topk=0)
    block = dy.grow('conv')
    randomize(block, seed=5)
    with torch.no_grad():
        block.dbb_kxk.bn.weight.fill_(1.0)
        for name, g in [('dbb_1x1.bn', 0.5), ('dbb_1x1_kxk.bn2', 0.02), ('dbb_1x1_avg.avgbn', 0.4),
                        ('dbb_1xk.bn', 0.03), ('dbb_kx1.bn', 0.6), ('dbb_id', 0.7)]:
            block.get_submodule(name).weight.fill_(g)
    x = torch.randn(2, 3, 16, 16)
    ref = model(x).detach()
    report = dy.adjust_model()
    assert [(n, k) for n, _, k in report['cut']] == [('conv', [1, 0, 1, 1, 0, 1, 1])]
    assert model.conv.branches == [1, 0, 1, 1, 0, 1, 1]
    assert torch.allclose(model(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_optimizer_is_rebuilt_after_growth_and_cut():
    torch.manual_seed(0)
    model = Tiny()
    groups = param_groups(model, filter_bias_and_bn=True)
    opt = torch.optim.SGD([{'params': groups[0], 'weight_decay': 0.0}, {'params': groups[1]}], lr=0.1,
                          momentum=0.9, weight_decay=1e-4)
    dy = DyRep(model, opt, filter_bias_and_bn=True, grow_topk=0)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    old_conv_weight = model.conv.weight
    fc_state = opt.state[model.fc.weight]['momentum_buffer'].clone()
    dy.grow('conv')
    dy._reset_optimizer()
    params = {id(p) for g in opt.param_groups for p in g['params']}
    assert all(id(p) in params for p in model.parameters())          # new parameters are optimised
    assert old_conv_weight not in opt.state                           # state of removed ones dropped
    assert torch.equal(opt.state[model.fc.weight]['momentum_buffer'], fc_state)
    assert len(opt.param_groups) == 2 and opt.param_groups[0]['weight_decay'] == 0.0
    assert all(p.ndim <= 1 for p in opt.param_groups[0]['params'])
    assert any(p is model.conv.dbb_kxk.conv.bias for p in opt.param_groups[0]['params'])
    assert len(opt.state) == sum(1 for p in model.parameters() if p in opt.state)


def test_dbb_graph_round_trip_with_top_level_and_nested_blocks():
    torch.manual_seed(0)
    model = randomize(Tiny()).eval()
    dy = DyRep(model, None)
    for name in ('stem', 'conv', 'conv.dbb_kxk.conv'):                # 'stem' sits at the top level
        dy.grow(name)
    model.conv.cut_branch([1, 0, 1, 1, 1, 1, 1])
    randomize(model, seed=9)
    state = {'dyrep': dy.state_dict(), 'model': copy.deepcopy(model.state_dict())}
    assert [p for p, _ in state['dyrep']['dbb_graph']] == ['stem', 'conv', 'conv.dbb_kxk.conv']
    fresh = Tiny().eval()
    DyRep(fresh, None).load_state_dict(state['dyrep'])
    fresh.load_state_dict(state['model'], strict=True)
    assert fresh.conv.branches == [1, 0, 1, 1, 1, 1, 1]
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(fresh(x), model(x))
    with pytest.raises(ValueError):
        DyRep(fresh, None).load_dbb_graph(state['dyrep']['dbb_graph'])   # needs a clean model


def test_recal_bn_estimates_batch_statistics_of_the_module_only():
    torch.manual_seed(0)
    model = randomize(Tiny()).train()
    data = [(torch.randn(8, 3, 8, 8), 0)]
    other = model.bn.running_mean.clone()
    recal_bn(model, data, 1, module=model.bn3)
    with torch.no_grad():
        model.eval()
        h = F.relu(model.bn2(model.dw(F.relu(model.bn(model.stem(data[0][0]))))))
        pre = model.conv(h)
    assert torch.allclose(model.bn3.running_mean, pre.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(model.bn3.running_var, pre.var((0, 2, 3), unbiased=True), atol=1e-4)
    assert torch.equal(model.bn.running_mean, other)
    assert model.bn3.momentum == 0.1
    model.train()
    recal_bn(model, data, 1)
    assert model.training and all(m.training for m in model.modules())


def test_block_grown_in_a_branch_cut_in_the_same_adjustment():
    torch.manual_seed(0)
    model = randomize(Tiny()).eval()
    dy = DyRep(model, None)
    block = dy.grow('conv')
    with torch.no_grad():
        for name, g in [('dbb_1x1.bn', 0.5), ('dbb_1x1_kxk.bn2', 0.02), ('dbb_1x1_avg.avgbn', 0.4),
                        ('dbb_1xk.bn', 0.6), ('dbb_kx1.bn', 0.6), ('dbb_id', 0.7)]:
            block.get_submodule(name).weight.fill_(g)
    x = torch.randn(2, 3, 16, 16)
    ref = model(x).detach()
    dy._metric_sums, dy._metric_counts = {'conv.dbb_1x1_kxk.conv2': 1.0, 'stem': 0.5}, {'conv.dbb_1x1_kxk.conv2': 1,
                                                                                         'stem': 1}
    report = dy.adjust_model()
    assert report['grown'] == ['conv.dbb_1x1_kxk.conv2'] and report['removed'] == ['conv.dbb_1x1_kxk.conv2']
    assert report['grown_branches']['conv.dbb_1x1_kxk.conv2'] == [0, 1, 1, 1, 0, 0, 0]
    assert not hasattr(model.conv, 'dbb_1x1_kxk')
    assert [p for p, _ in dy.dbb_graph()] == ['conv']
    assert torch.allclose(model(x), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
