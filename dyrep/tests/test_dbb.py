"""The Diverse Branch Block: exact fusion for every branch type, stride, groups, padding, kernel size and
nesting; constraints; official state_dict names; branch weights; reset and cut (card Sec. 2-5)."""
import itertools

import pytest
import torch
import torch.nn as nn

from conftest import randomize
from convert import fuse_block
from dbb import BRANCH_NAMES, BNAndPad, DiverseBranchBlock, valid_branches

ONLY = [[1 if j in (i, 3) else 0 for j in range(7)] for i in range(7)]  # each branch alone (+ kxk)


def fused_error(block, x):
    block.eval()
    with torch.no_grad():
        return (block(x) - fuse_block(block)(x)).abs().max().item(), block(x).abs().max().item()


@pytest.mark.parametrize('branch', range(7), ids=lambda i: BRANCH_NAMES[i])
@pytest.mark.parametrize('cin,cout,k,stride,groups', [
    (4, 4, 3, 1, 1), (4, 6, 3, 2, 1), (4, 4, 3, 2, 2), (6, 6, 3, 1, 6), (6, 6, 3, 2, 6), (4, 4, 5, 1, 1),
    (4, 8, 5, 2, 4),
])
def test_each_branch_fuses_exactly(branch, cin, cout, k, stride, groups):
    block = DiverseBranchBlock(cin, cout, k, stride=stride, groups=groups, branches=ONLY[branch]).double()
    randomize(block, seed=branch)
    x = torch.randn(2, cin, 9, 9, dtype=torch.float64)
    err, scale = fused_error(block, x)
    assert err < 1e-11 * max(scale, 1.0)


@pytest.mark.parametrize('padding', [0, 1, 2])
@pytest.mark.parametrize('groups', [1, 2])
def test_padding_other_than_half_kernel(padding, groups):
    block = DiverseBranchBlock(4, 4, 3, groups=groups, padding=padding).double()
    if padding != 1:
        assert block.branches == [0, 1, 1, 1, 0, 0, 0]
    randomize(block)
    err, scale = fused_error(block, torch.randn(2, 4, 8, 8, dtype=torch.float64))
    assert err < 1e-11 * scale


def test_all_branches_float32_within_1e5():
    for cin, cout, k, s, g in [(8, 8, 3, 1, 1), (8, 16, 3, 2, 2), (16, 16, 3, 1, 16), (8, 8, 5, 1, 1)]:
        block = randomize(DiverseBranchBlock(cin, cout, k, stride=s, groups=g))
        err, scale = fused_error(block, torch.randn(4, cin, 12, 12))
        assert err <= 1e-5 * max(scale, 1.0), (cin, cout, k, s, g, err)


def test_nested_blocks_fuse_recursively():
    outer = DiverseBranchBlock(4, 4, 3).double()
    # grow the kxk conv and the kxk conv of the 1x1-kxk branch (one level of nesting, as DyRep allows)
    outer.dbb_kxk.conv = DiverseBranchBlock(4, 4, 3, padding=1).double()
    outer.dbb_1x1_kxk.conv2 = DiverseBranchBlock(4, 4, 3, padding=0).double()
    assert outer.dbb_1x1_kxk.conv2.branches == [0, 1, 1, 1, 0, 0, 0]
    randomize(outer)
    err, scale = fused_error(outer, torch.randn(2, 4, 7, 7, dtype=torch.float64))
    assert err < 1e-11 * scale
    outer.eval()
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    ref = outer(x)
    outer.switch_to_deploy()
    assert outer.deployed and not hasattr(outer, 'dbb_kxk')
    assert torch.allclose(outer(x), ref, atol=1e-11)


def test_constraints_and_official_names():
    assert valid_branches([1] * 7, 4, 8, 3, 1, 1)[6] == 0          # C_in != C_out: no identity
    assert valid_branches([1] * 7, 4, 4, 3, 2, 1)[6] == 0          # stride 2: no identity
    assert valid_branches([1] * 7, 4, 4, 3, 1, 0) == [0, 1, 1, 1, 0, 0, 0]
    assert valid_branches([0] * 7, 4, 4, 3, 1, 1)[3] == 1          # kxk always on
    keys = set(DiverseBranchBlock(4, 4, 3).state_dict())
    for k in ['dbb_1x1.conv.weight', 'dbb_1x1.bn.weight', 'dbb_1x1_kxk.conv1.weight', 'dbb_1x1_kxk.bn1.bn.weight',
              'dbb_1x1_kxk.conv2.weight', 'dbb_1x1_kxk.bn2.running_var', 'dbb_1x1_avg.conv.weight',
              'dbb_1x1_avg.bn.bn.weight', 'dbb_1x1_avg.avgbn.weight', 'dbb_kxk.conv.weight', 'dbb_kxk.conv.bias',
              'dbb_kxk.bn.weight', 'dbb_1xk.conv.weight', 'dbb_kx1.bn.weight', 'dbb_id.weight']:
        assert k in keys, k
    assert 'dbb_1x1.conv.bias' not in keys                            # only the kxk conv has a bias
    dw = DiverseBranchBlock(6, 6, 3, groups=6)
    assert not hasattr(dw.dbb_1x1_avg, 'conv') and dw.dbb_1x1_avg.avg.padding == 1
    with pytest.raises(NotImplementedError):
        DiverseBranchBlock(4, 4, 3, dilation=2)
    branches = [1] * 7
    DiverseBranchBlock(4, 8, 3, branches=branches)
    assert branches == [1] * 7                                       # the caller's list is not mutated


def test_bn_and_pad_uses_running_stats_in_train_mode():
    m = BNAndPad(2, 3)
    randomize(m)
    m.train()
    x = torch.randn(2, 3, 4, 4)
    out = m(x)
    bn = m.bn
    expected = bn.bias - bn.weight * bn.running_mean / torch.sqrt(bn.running_var + bn.eps)
    # the border holds the eval-mode value of a zero input even in train mode (stats updated by forward)
    assert out.shape == (2, 3, 8, 8)
    assert torch.allclose(out[0, :, 0, 0], expected.detach(), atol=1e-6)
    assert torch.allclose(out[1, :, -1, 3], expected.detach(), atol=1e-6)


def test_branch_weights_hand_computation():
    block = DiverseBranchBlock(4, 4, 3, branches=[1, 1, 0, 1, 0, 0, 1])
    with torch.no_grad():
        block.dbb_kxk.bn.weight.copy_(torch.tensor([2.0, -2.0, 2.0, 2.0]))
        block.dbb_1x1.bn.weight.fill_(0.5)
        block.dbb_1x1_kxk.bn2.weight.copy_(torch.tensor([-1.0, 1.0, 0.0, 0.0]))
        block.dbb_id.weight.fill_(0.1)
    w = block.branch_weights()
    assert w == pytest.approx([0.25, 0.25, -1, 1, -1, -1, 0.05])


@pytest.mark.parametrize('cin,cout,stride,groups', [(4, 4, 1, 1), (4, 8, 2, 2), (6, 6, 1, 6)])
def test_reset_from_kernel_preserves_the_conv(cin, cout, stride, groups):
    conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=stride == 1)
    block = DiverseBranchBlock(cin, cout, 3, stride=stride, groups=groups).eval()
    block.reset_from_kernel(conv.weight, conv.bias)
    # last BN of each new branch has gamma 0.01, the kxk BN is reset, the kxk conv holds the residual
    for i, name in [(0, 'dbb_1x1.bn'), (1, 'dbb_1x1_kxk.bn2'), (2, 'dbb_1x1_avg.avgbn'), (4, 'dbb_1xk.bn'),
                    (6, 'dbb_id')]:
        if block.branches[i]:
            assert torch.all(block.get_submodule(name).weight == 0.01)
    if block.branches[1]:
        assert torch.all(block.dbb_1x1_kxk.bn1.weight == 1.0)
    kxk_bn = block.dbb_kxk.bn
    assert torch.all(kxk_bn.weight == 1) and torch.all(kxk_bn.running_mean == 0) and torch.all(kxk_bn.running_var == 1)
    x = torch.randn(2, cin, 8, 8)
    with torch.no_grad():
        # equal up to the 1/sqrt(1 + eps) factor of the reset kxk BN (card Sec. 4, step 4)
        assert torch.allclose(block(x), conv(x), rtol=2e-5, atol=2e-5 * conv(x).abs().max().item())


def test_cut_branch_keeps_the_fused_kernel_and_removes_modules():
    block = randomize(DiverseBranchBlock(4, 4, 3)).eval()
    w0, b0 = (t.detach().clone() for t in block.get_actual_kernel())
    trained_1x1 = block.dbb_1x1.conv.weight.detach().clone()
    block.cut_branch([1, 0, 1, 1, 0, 1, 0])
    assert block.branches == [1, 0, 1, 1, 0, 1, 0]
    for name in ('dbb_1x1_kxk', 'dbb_1xk', 'dbb_id'):
        assert not hasattr(block, name)
    assert torch.equal(block.dbb_1x1.conv.weight, trained_1x1)       # kept branches keep their weights
    w1, b1 = block.get_actual_kernel()
    scale = 1 / (1 + block.dbb_kxk.bn.eps) ** 0.5   # the kxk part goes through a reset BN
    assert torch.allclose(w1, w0, atol=1e-4) and torch.allclose(b1, b0, atol=1e-4)
    kxk_part = w0 - block.get_actual_kernel(ignore_kxk=True)[0]
    assert torch.allclose(w1, w0 - kxk_part * (1 - scale), atol=1e-5)


@pytest.mark.parametrize('keep', [list(v) for v in itertools.product([0, 1], repeat=3)])
def test_cut_any_subset_fuses_exactly(keep):
    mask = [keep[0], 1, keep[1], 1, 1, keep[2], 1]
    block = randomize(DiverseBranchBlock(4, 4, 3).double())
    block.cut_branch(mask)
    randomize(block, seed=3)
    err, scale = fused_error(block, torch.randn(2, 4, 6, 6, dtype=torch.float64))
    assert err < 1e-11 * scale
