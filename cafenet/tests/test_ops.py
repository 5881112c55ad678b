import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ops import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, frozen_bn_stats, to_dynamic


def test_conv_gathers_non_contiguous_channels_and_scatters_the_gradient():
    torch.manual_seed(0)
    conv = DynamicConv2d(6, 8, 3, padding=1, bias=True)
    i, o = torch.tensor([0, 2, 5]), torch.tensor([1, 4, 6, 7])
    conv.set_indices(i, o)
    x = torch.randn(2, 3, 5, 5)
    ref = F.conv2d(x, conv.weight[o][:, i], conv.bias[o], padding=1)
    y = conv(x)
    assert torch.allclose(y, ref, atol=1e-6)
    y.sum().backward()
    g = conv.weight.grad
    used = torch.zeros_like(g, dtype=torch.bool)
    used[o[:, None], i[None, :]] = True
    assert torch.count_nonzero(g[~used]) == 0 and torch.count_nonzero(g[used]) > 0
    assert conv.bias.grad[[0, 2, 3, 5]].abs().sum() == 0


def test_contiguous_sets_take_a_view_and_match():
    torch.manual_seed(0)
    conv = DynamicConv2d(6, 8, 1, bias=False)
    conv.set_indices(torch.arange(1, 4), torch.arange(2, 6))
    assert conv._in_span == (1, 3) and conv._out_span == (2, 4)
    x = torch.randn(1, 3, 2, 2)
    assert torch.allclose(conv(x), F.conv2d(x, conv.weight[2:6, 1:4]))


def test_depthwise_conv_needs_identical_sets():
    torch.manual_seed(0)
    dw = DynamicConv2d(8, 8, 3, padding=1, groups=8, bias=False)
    idx = torch.tensor([1, 3, 4])
    dw.set_indices(idx, idx)
    x = torch.randn(1, 3, 4, 4)
    assert torch.allclose(dw(x), F.conv2d(x, dw.weight[idx], None, padding=1, groups=3))
    with pytest.raises(ValueError):
        dw.set_indices(idx, torch.tensor([1, 3, 5]))


def test_bad_index_sets():
    conv = DynamicConv2d(4, 4, 1)
    for bad in ([], [0, 4], [-1], [1, 1]):
        with pytest.raises(ValueError):
            conv.set_indices(None, torch.tensor(bad, dtype=torch.long))


def test_bn_updates_only_the_active_channels_with_a_cumulative_average():
    torch.manual_seed(0)
    bn = DynamicBatchNorm2d(6)
    idx = torch.tensor([1, 4])
    bn.set_indices(idx)
    bn.momentum = None
    x1, x2 = torch.randn(4, 2, 3, 3) + 1.0, torch.randn(4, 2, 3, 3) - 2.0
    bn.reset_running_stats()
    bn(x1)
    bn(x2)
    mean = 0.5 * (x1.mean(dim=(0, 2, 3)) + x2.mean(dim=(0, 2, 3)))
    assert torch.allclose(bn.running_mean[idx], mean, atol=1e-6)
    assert torch.equal(bn.running_mean[[0, 2, 3, 5]], torch.zeros(4))
    assert torch.equal(bn.running_var[[0, 2, 3, 5]], torch.ones(4))
    bn.eval()
    ref = (x1 - bn.running_mean[idx].view(1, -1, 1, 1)) / torch.sqrt(bn.running_var[idx].view(1, -1, 1, 1) + bn.eps)
    ref = ref * bn.weight[idx].view(1, -1, 1, 1) + bn.bias[idx].view(1, -1, 1, 1)
    assert torch.allclose(bn(x1), ref, atol=1e-5)


def test_frozen_bn_stats_normalise_by_the_batch_and_keep_the_buffers():
    torch.manual_seed(0)
    net = to_dynamic(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)))
    net[1].set_indices(torch.tensor([0, 3]))
    net[0].set_indices(None, torch.tensor([0, 3]))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(8, 3, 4, 4)
    with frozen_bn_stats(net):
        y = net(x)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.allclose(y.mean(dim=(0, 2, 3)), net[1].bias[[0, 3]], atol=1e-5)   # batch statistics
    assert not net[1].freeze_stats
    net(x)
    assert int(net[1].num_batches_tracked) == 1


def test_linear_gathers_input_features_only():
    lin = DynamicLinear(10, 3)
    idx = torch.tensor([0, 4, 9])
    lin.set_indices(idx)
    x = torch.randn(2, 3)
    assert torch.allclose(lin(x), F.linear(x, lin.weight[:, idx], lin.bias))
    with pytest.raises(ValueError):
        lin.set_indices(None, torch.tensor([0]))


def test_to_dynamic_keeps_state_dict():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    to_dynamic(net)
    assert isinstance(net[0], DynamicConv2d) and isinstance(net[1], DynamicBatchNorm2d)
    assert isinstance(net[3], DynamicLinear)
    assert list(before) == list(net.state_dict())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
