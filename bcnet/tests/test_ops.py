import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ops import DynamicBatchNorm2d, DynamicConv2d, DynamicLinear, to_dynamic


def test_conv_slices_weight_out_then_in():
    torch.manual_seed(0)
    conv = DynamicConv2d(6, 8, 3, padding=1, bias=True)
    x = torch.randn(2, 2, 5, 5)
    conv.set_indices((1, 3), (4, 7))
    ref = F.conv2d(x, conv.weight[4:7, 1:3], conv.bias[4:7], padding=1)
    assert torch.allclose(conv(x), ref)
    conv.set_indices(None, None)
    full = torch.randn(1, 6, 4, 4)
    assert torch.allclose(conv(full), F.conv2d(full, conv.weight, conv.bias, padding=1))


def test_depthwise_conv_uses_one_filter_per_active_channel():
    torch.manual_seed(0)
    dw = DynamicConv2d(8, 8, 3, padding=1, groups=8, bias=False)
    dw.set_indices((2, 5), (2, 5))
    x = torch.randn(1, 3, 4, 4)
    assert torch.allclose(dw(x), F.conv2d(x, dw.weight[2:5], None, padding=1, groups=3))
    with pytest.raises(ValueError):
        dw.set_indices((0, 3), (2, 5))
    with pytest.raises(ValueError):
        DynamicConv2d(8, 8, 3, groups=2)


def test_bn_updates_only_the_active_slice_and_cumulative_average():
    torch.manual_seed(0)
    bn = DynamicBatchNorm2d(6)
    bn.set_indices((2, 4))
    bn.momentum = None
    x1, x2 = torch.randn(4, 2, 3, 3) + 1.0, torch.randn(4, 2, 3, 3) - 2.0
    bn.reset_running_stats()
    bn(x1)
    bn(x2)
    mean = 0.5 * (x1.mean(dim=(0, 2, 3)) + x2.mean(dim=(0, 2, 3)))   # cumulative average of the two batches
    assert torch.allclose(bn.running_mean[2:4], mean, atol=1e-6)
    assert torch.equal(bn.running_mean[[0, 1, 4, 5]], torch.zeros(4))
    assert torch.equal(bn.running_var[[0, 1, 4, 5]], torch.ones(4))
    assert int(bn.num_batches_tracked) == 2
    bn.eval()
    y = bn(x1)
    ref = (x1 - bn.running_mean[2:4].view(1, -1, 1, 1)) / torch.sqrt(bn.running_var[2:4].view(1, -1, 1, 1) + bn.eps)
    assert torch.allclose(y, ref * bn.weight[2:4].view(1, -1, 1, 1) + bn.bias[2:4].view(1, -1, 1, 1), atol=1e-5)


def test_linear_slices_input_features_only():
    lin = DynamicLinear(10, 3)
    lin.set_indices((4, 9), None)
    x = torch.randn(2, 5)
    assert torch.allclose(lin(x), F.linear(x, lin.weight[:, 4:9], lin.bias))
    with pytest.raises(ValueError):
        lin.set_indices(None, (0, 2))
    with pytest.raises(ValueError):
        lin.set_indices((5, 5), None)


def test_to_dynamic_keeps_state_dict():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    to_dynamic(net)
    assert isinstance(net[0], DynamicConv2d) and isinstance(net[1], DynamicBatchNorm2d)
    assert isinstance(net[3], DynamicLinear)
    after = net.state_dict()
    assert list(before) == list(after)
    assert all(torch.equal(before[k], after[k]) for k in before)
