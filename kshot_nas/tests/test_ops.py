"""K-shot ops: the convex combination against hand computations, one-hot codes, gradient scaling, BN, SE."""
import torch
import torch.nn.functional as F

from ops import (DynamicBatchNorm2d_multiBN, DynamicConv2d_multiconv2d, InvertedResidual, KShotBatchNorm2d,
                 KShotConv2d, KShotSE, SqueezeExcite_multiSE, combine, scaled_channels)


def test_combine_by_hand():
    p = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    lam = torch.tensor([0.2, 0.3, 0.5])
    assert torch.allclose(combine(p, lam), torch.tensor([0.2 + 0.9 + 2.5, 0.4 + 1.2 + 3.0]))
    assert torch.equal(combine(p[:1], lam), p[0])  # a single copy ignores the code


def test_conv_is_the_weighted_sum_of_the_copies():
    torch.manual_seed(0)
    conv = KShotConv2d(3, 5, 3, stride=2, bias=True, weight_num=3)
    x, lam = torch.randn(2, 3, 7, 7), torch.tensor([0.1, 0.6, 0.3])
    out = conv(x, lam)
    ref = F.conv2d(x, (lam[:, None, None, None, None] * conv.weight).sum(0), (lam[:, None] * conv.bias).sum(0), 2, 1)
    per_copy = sum(lam[k] * F.conv2d(x, conv.weight[k], conv.bias[k], 2, 1) for k in range(3))
    assert torch.allclose(out, ref, atol=1e-6) and torch.allclose(out, per_copy, atol=1e-5)
    onehot = torch.tensor([0.0, 1.0, 0.0])  # a one-hot code is exactly the network of that copy
    assert torch.equal(conv(x, onehot), F.conv2d(x, conv.weight[1], conv.bias[1], 2, 1))


def test_copies_are_initialised_independently():
    conv = KShotConv2d(8, 8, 3, weight_num=4)
    flat = conv.weight.detach().flatten(1)
    assert torch.linalg.matrix_rank(flat) == 4
    std = (2.0 / (8 * 9)) ** 0.5  # Kaiming normal, fan-out
    assert abs(flat.std().item() - std) < 0.2 * std


def test_each_copy_gradient_is_scaled_by_its_code():
    torch.manual_seed(1)
    conv = KShotConv2d(4, 6, 3, weight_num=3)
    x, g = torch.randn(2, 4, 5, 5), torch.randn(2, 6, 5, 5)
    lam = torch.tensor([0.5, 0.2, 0.3])
    (conv(x, lam) * g).sum().backward()
    w = (lam[:, None, None, None, None] * conv.weight.detach()).sum(0).requires_grad_(True)
    (F.conv2d(x, w, None, 1, 1) * g).sum().backward()
    for k in range(3):
        assert torch.allclose(conv.weight.grad[k], lam[k] * w.grad, atol=1e-6)


def test_channel_slicing_takes_the_first_channels():
    torch.manual_seed(2)
    conv = KShotConv2d(6, 8, 1, weight_num=2)
    lam = torch.tensor([0.25, 0.75])
    x = torch.randn(1, 4, 3, 3)
    w = combine(conv.weight, lam)[:5, :4]
    assert torch.allclose(conv(x, lam, out_ch=5, in_ch=4), F.conv2d(x, w), atol=1e-6)
    dw = KShotConv2d(6, 6, 3, groups=6, weight_num=2)
    out = dw(x, lam, out_ch=4, in_ch=4)
    assert out.shape == (1, 4, 3, 3)
    assert torch.allclose(out, F.conv2d(x, combine(dw.weight, lam)[:4], None, 1, 1, 1, 4), atol=1e-6)
    assert scaled_channels(18, 0.2) == 4 and scaled_channels(3, 0.2) == 1


def test_bn_combines_affine_only_and_keeps_one_running_buffer():
    torch.manual_seed(3)
    bn = KShotBatchNorm2d(4, weight_num=2)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.normal_()
    assert bn.weight.shape == (2, 4) and bn.running_mean.shape == (4,)
    x, lam = torch.randn(8, 3, 5, 5) * 2 + 1, torch.tensor([0.3, 0.7])
    out = bn(x, lam, num_ch=3)
    mu, var = x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=False)
    gamma, beta = (lam[:, None] * bn.weight).sum(0)[:3], (lam[:, None] * bn.bias).sum(0)[:3]
    ref = (x - mu[:, None, None]) / torch.sqrt(var[:, None, None] + 1e-5) * gamma[:, None, None] + beta[:, None, None]
    assert torch.allclose(out, ref, atol=1e-5)
    # the first three running statistics moved (momentum 0.1), the fourth did not
    assert torch.allclose(bn.running_mean[:3], 0.1 * mu, atol=1e-6) and bn.running_mean[3] == 0
    assert bn.num_batches_tracked == 1


def test_se_by_hand():
    torch.manual_seed(4)
    se = KShotSE(8, 4, weight_num=2)
    x, lam = torch.randn(2, 8, 3, 3), torch.tensor([0.6, 0.4])
    wr, br = se.conv_reduce.combined(lam)
    we, be = se.conv_expand.combined(lam)
    s = F.relu(F.conv2d(x.mean((2, 3), keepdim=True), wr, br))
    gate = F.relu6(F.conv2d(s, we, be) + 3) / 6
    assert torch.allclose(se(x, lam), x * gate, atol=1e-6)


def test_inverted_residual_shapes_and_shortcut():
    block = InvertedResidual(8, 8, 1, 6, 5, True, weight_num=2, bn_weight_num=2)
    assert block.use_res and block.hidden == 48
    x, lam = torch.randn(2, 8, 6, 6), torch.tensor([0.5, 0.5])
    assert block(x, lam).shape == x.shape and block(x, lam, hidden_ratio=0.2).shape == x.shape
    down = InvertedResidual(8, 12, 2, 3, 3, False, weight_num=2, bn_weight_num=2)
    assert not down.use_res and down(x, lam).shape == (2, 12, 3, 3)


def test_bn_with_a_single_copy_ignores_the_code():
    bn = KShotBatchNorm2d(4, weight_num=1)
    x = torch.randn(4, 4, 2, 2)
    assert torch.allclose(bn(x, torch.tensor([0.2, 0.8])), bn(x, torch.tensor([0.9, 0.1])))


def test_authors_names_are_aliases():
    assert DynamicConv2d_multiconv2d is KShotConv2d and DynamicBatchNorm2d_multiBN is KShotBatchNorm2d
    assert SqueezeExcite_multiSE is KShotSE
