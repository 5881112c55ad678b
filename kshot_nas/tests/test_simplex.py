"""Simplex-net: encodings, the forward pass by hand, the simplex constraint, the channel regulariser."""
import pytest
import torch
import torch.nn.functional as F

from simplex import SimplexNet, Structure_blocks, code_distinction_reg, encode_arch, encode_widths


def test_encodings():
    e = encode_arch([2, 0, 1], 3)
    assert e.tolist() == [0, 0, 1, 1, 0, 0, 0, 1, 0]
    assert encode_arch([[0, 1], [1, 1]], 2).shape == (2, 4)
    assert encode_arch([12] * 21, 13).shape == (273,)
    assert encode_widths([0.4, 1.0], (0.2, 0.4, 0.6, 0.8, 1.0)).tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    with pytest.raises(ValueError):
        encode_arch([3], 3)
    with pytest.raises(ValueError):
        encode_widths([0.3], (0.2, 0.4))


def test_forward_by_hand_and_on_the_simplex():
    torch.manual_seed(0)
    net = SimplexNet(num_layers=21, num_ops=13, K=3)
    assert net.fc1.out_features == 68 and net.fc2.out_features == 3  # hidden 273 // 4
    assert Structure_blocks is SimplexNet
    e = encode_arch([[i % 12 for i in range(21)], [0] * 21], 13)
    lam = net(e)
    ref = F.softmax(F.relu(e @ net.fc1.weight.T + net.fc1.bias) @ net.fc2.weight.T + net.fc2.bias, -1)
    assert torch.allclose(lam, ref, atol=1e-6)
    assert lam.shape == (2, 3) and (lam >= 0).all() and torch.allclose(lam.sum(1), torch.ones(2))
    assert torch.allclose(net(e[0]), lam[0], atol=1e-6)


def test_width_branch_is_fused_before_the_relu():
    torch.manual_seed(1)
    net = SimplexNet(num_layers=2, num_ops=3, K=4, reduction=2, num_widths=5)
    eo, ec = encode_arch([1, 2], 3), encode_widths([0.2, 1.0], (0.2, 0.4, 0.6, 0.8, 1.0))
    z = F.relu(net.fc1(eo) + net.fc1_ch(ec))
    assert torch.allclose(net(eo, ec), F.softmax(net.fc2(z), -1), atol=1e-6)
    with pytest.raises(ValueError, match='width'):
        net(eo)


def test_per_layer_codes():
    net = SimplexNet(num_layers=4, num_ops=3, K=2, per_layer=True)
    lam = net(encode_arch([[0, 1, 2, 0]], 3))
    assert lam.shape == (1, 5, 2) and torch.allclose(lam.sum(-1), torch.ones(1, 5))


def test_code_distinction_regulariser_by_hand():
    lams = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], requires_grad=True)
    widths = [(1.0, 0.2), (1.0, 0.2), (0.6, 0.2)]
    # pairs with different widths: (0, 2) -> 2.0, (1, 2) -> 0.5
    r = code_distinction_reg(lams, widths)
    assert r.item() == pytest.approx(-(2.0 + 0.5) / 2)
    r.backward()
    assert lams.grad.abs().sum() > 0
    assert code_distinction_reg(lams, [(1.0,)] * 3).item() == 0.0
