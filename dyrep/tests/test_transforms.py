"""Each DBB transform against a direct computation on tiny tensors (card Sec. 3)."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import randomize
from dbb import BNAndPad
from dbb_transforms import (transI_fusebn, transII_addbranch, transIII_1x1_kxk, transIV_depthconcat, transV_avg,
                            transVI_multiscale, transIX_bn_to_1x1)



@pytest.fixture(autouse=True)
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def bn_with(gamma, beta, mean, var, eps=1e-5):
    bn = nn.BatchNorm2d(len(gamma), eps=eps).double().eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor(gamma))
        bn.bias.copy_(torch.tensor(beta))
        bn.running_mean.copy_(torch.tensor(mean))
        bn.running_var.copy_(torch.tensor(var))
    return bn


def test_transI_hand_computation():
    # one channel: gamma 2, beta 1, mu 0.5, var 3, eps 1 -> t = 2 / sqrt(4) = 1
    bn = bn_with([2.0], [1.0], [0.5], [3.0], eps=1.0)
    k = torch.full((1, 1, 1, 1), 3.0)
    w, b = transI_fusebn(k, bn, torch.tensor([1.5]))
    assert w.item() == 3.0 and b.item() == 1.0 + (1.5 - 0.5) * 1.0
    w, b = transI_fusebn(k, bn, None)
    assert b.item() == 1.0 - 0.5


def test_transI_equals_conv_then_bn():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=True)
    bn = randomize(nn.BatchNorm2d(4)).eval()
    x = torch.randn(2, 3, 6, 6)
    w, b = transI_fusebn(conv.weight, bn, conv.bias)
    assert torch.allclose(bn(conv(x)), F.conv2d(x, w, b, padding=1), atol=1e-12)


def test_transII_sums():
    k = [torch.ones(2, 1, 3, 3), 2 * torch.ones(2, 1, 3, 3)]
    w, b = transII_addbranch(k, [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])])
    assert torch.equal(w, 3 * torch.ones(2, 1, 3, 3)) and torch.equal(b, torch.tensor([4.0, 6.0]))


def test_transIII_hand_computation():
    # 1 -> 2 -> 1 channels: K1 = [a, b], b1 = [p, q]; K2 all-ones 3x3 per input channel
    k1 = torch.tensor([2.0, -1.0]).reshape(2, 1, 1, 1)
    b1 = torch.tensor([0.5, 1.0])
    k2 = torch.ones(1, 2, 3, 3)
    w, b = transIII_1x1_kxk(k1, b1, k2, torch.tensor([0.25]))
    assert torch.allclose(w, torch.full((1, 1, 3, 3), 1.0))      # sum_m K2[m] K1[m] = 2 - 1
    assert torch.allclose(b, torch.tensor([9 * 0.5 + 9 * 1.0 + 0.25]))


def test_transIII_equals_1x1_bnpad_kxk_with_groups():
    for groups, (cin, mid, cout) in [(1, (3, 5, 4)), (2, (4, 6, 2)), (4, (4, 4, 4))]:
        conv1 = nn.Conv2d(cin, mid, 1, groups=groups, bias=False)
        bnpad = BNAndPad(1, mid).double()
        randomize(bnpad)
        bnpad.eval()
        conv2 = nn.Conv2d(mid, cout, 3, stride=2, groups=groups, bias=False)
        x = torch.randn(2, cin, 7, 7)
        w1, b1 = transI_fusebn(conv1.weight, bnpad, None)
        w, b = transIII_1x1_kxk(w1, b1, conv2.weight, torch.zeros(cout), groups=groups)
        direct = conv2(bnpad(conv1(x)))
        assert torch.allclose(direct, F.conv2d(x, w, b, stride=2, padding=1, groups=groups), atol=1e-12)


def test_transIV_concat_equals_grouped_conv():
    k = [torch.randn(3, 2, 3, 3), torch.randn(3, 2, 3, 3)]
    w, b = transIV_depthconcat(k, [torch.zeros(3), torch.ones(3)])
    x = torch.randn(1, 4, 5, 5)
    y = F.conv2d(x, w, b, groups=2)
    assert torch.allclose(y[:, :3], F.conv2d(x[:, :2], k[0]))
    assert torch.allclose(y[:, 3:], F.conv2d(x[:, 2:], k[1]) + 1)


def test_transV_avg_equals_avgpool():
    for channels, groups, k in [(4, 1, 3), (4, 2, 3), (6, 6, 5), (3, 1, 2)]:
        w = transV_avg(channels, k, groups, dtype=torch.float64)
        assert w.shape == (channels, channels // groups, k, k)
        assert torch.allclose(w.sum((1, 2, 3)), torch.ones(channels))
        x = torch.randn(2, channels, 8, 8)
        assert torch.allclose(F.conv2d(x, w, stride=2, groups=groups), F.avg_pool2d(x, k, stride=2), atol=1e-12)


def test_transVI_multiscale_centres_kernel():
    for kshape, pad in [((1, 1), (0, 0)), ((1, 3), (0, 1)), ((3, 1), (1, 0)), ((3, 3), (1, 1))]:
        k = torch.randn(2, 3, *kshape)
        k5 = transVI_multiscale(k, 5)
        assert k5.shape == (2, 3, 5, 5)
        x = torch.randn(1, 3, 9, 9)
        assert torch.allclose(F.conv2d(x, k, padding=pad), F.conv2d(x, k5, padding=2), atol=1e-12)


def test_transIX_identity_bn():
    for channels, groups in [(4, 1), (4, 2), (4, 4)]:
        bn = randomize(nn.BatchNorm2d(channels)).eval()
        w, b = transIX_bn_to_1x1(bn, channels, groups)
        assert w.shape == (channels, channels // groups, 3, 3)
        x = torch.randn(2, channels, 5, 5)
        assert torch.allclose(bn(x), F.conv2d(x, w, b, padding=1, groups=groups), atol=1e-12)
        t = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        assert math.isclose(w[1, 1 % (channels // groups), 1, 1].item(), t[1].item())
