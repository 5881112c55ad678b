"""The Diverse Branch Block (DBB), in the form DyRep grows it (card Sec. 2-5).

Submodule names and the constructor follow the official ``lib/models/utils/dbb/dbb_block.py`` so that official
state dicts load: ``dbb_1x1``, ``dbb_1x1_kxk.{conv1,bn1.bn,conv2,bn2}``, ``dbb_1x1_avg.{conv,bn.bn,avg,avgbn}``,
``dbb_kxk.{conv,bn}``, ``dbb_1xk``, ``dbb_kx1``, ``dbb_id``.
"""
import math

import torch
import torch.nn as nn

from dbb_transforms import (transI_fusebn, transII_addbranch, transIII_1x1_kxk, transV_avg,
                            transVI_multiscale, transIX_bn_to_1x1)

# Branch flags, in the official order: [1x1, 1x1_kxk, 1x1_avg, kxk, 1xk, kx1, id].
BRANCH_NAMES = ('dbb_1x1', 'dbb_1x1_kxk', 'dbb_1x1_avg', 'dbb_kxk', 'dbb_1xk', 'dbb_kx1', 'dbb_id')
KXK = 3


def valid_branches(branches, in_channels, out_channels, kernel_size, stride, padding):
    """Apply the card's branch constraints to a 7-flag list (returns a new list).

    ``kxk`` is always on; ``id`` needs ``C_in == C_out`` and stride 1; ``1x1``, ``1xk``, ``kx1`` and ``id`` need
    ``padding == k // 2`` (and an odd ``k``: with an even kernel a centred 1x1 does not exist).
    """
    branches = [int(bool(b)) for b in branches]
    if len(branches) != 7:
        raise ValueError(f'branches must have 7 flags [1x1, 1x1_kxk, 1x1_avg, kxk, 1xk, kx1, id], got {branches}')
    branches[KXK] = 1
    if not (in_channels == out_channels and stride == 1):
        branches[6] = 0
    if padding != kernel_size // 2 or kernel_size % 2 == 0:
        for i in (0, 4, 5, 6):
            branches[i] = 0
    return branches


class ConvBN(nn.Module):
    """Conv followed by BatchNorm (``conv``, ``bn``)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=False, bn=nn.BatchNorm2d):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                              dilation=dilation, groups=groups, bias=bias)
        self.bn = bn(num_features=out_channels, affine=True, track_running_stats=True)

    def forward(self, x):
        return self.bn(self.conv(x))


class BNAndPad(nn.Module):
    """BatchNorm, then pad ``pad_pixels`` per side with the per-channel value a zero input would get.

    The pad value ``beta + gamma * (0 - mu) / sqrt(var + eps)`` uses the running statistics and the data of
    ``gamma, beta`` in both modes (no gradient through it). It is what makes a 1x1 -> kxk chain equal to one
    kxk conv at the image borders (transform III).
    """

    def __init__(self, pad_pixels, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 last_conv_bias=None, bn=nn.BatchNorm2d):
        super().__init__()
        self.bn = bn(num_features, eps, momentum, affine, track_running_stats)
        self.pad_pixels = pad_pixels
        self.last_conv_bias = last_conv_bias

    def pad_values(self):
        with torch.no_grad():
            bias = -self.bn.running_mean
            if self.last_conv_bias is not None:
                bias = bias + self.last_conv_bias
            return self.bn.bias + self.bn.weight * bias / torch.sqrt(self.bn.running_var + self.bn.eps)

    def forward(self, x):
        out = self.bn(x)
        p = self.pad_pixels
        if p > 0:
            n, c, h, w = out.shape
            padded = self.pad_values().to(out.dtype).reshape(1, c, 1, 1).expand(n, c, h + 2 * p, w + 2 * p).clone()
            padded[:, :, p:p + h, p:p + w] = out
            out = padded
        return out

    # BN attributes, so that transI_fusebn accepts this module like a BatchNorm2d
    @property
    def weight(self):
        return self.bn.weight

    @property
    def bias(self):
        return self.bn.bias

    @property
    def running_mean(self):
        return self.bn.running_mean

    @property
    def running_var(self):
        return self.bn.running_var

    @property
    def eps(self):
        return self.bn.eps


class DiverseBranchBlock(nn.Module):
    """A kxk conv trained as up to seven parallel branches whose sum is one kxk conv (card Sec. 2)."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, groups=1,
                 branches=(1, 1, 1, 1, 1, 1, 1), internal_channels=None, nonlinear=None, ori_conv=None,
                 padding=None, bn=nn.BatchNorm2d, recal_bn_fn=None, **kwargs):
        super().__init__()
        kwargs.pop('use_bn', None)  # accepted by the official constructor, has no effect there either
        if kwargs:
            raise TypeError(f'DiverseBranchBlock got unexpected arguments: {sorted(kwargs)}')
        stride = stride[0] if isinstance(stride, (tuple, list)) else stride
        dilation = dilation[0] if isinstance(dilation, (tuple, list)) else dilation
        if isinstance(kernel_size, (tuple, list)):
            if kernel_size[0] != kernel_size[1]:
                raise ValueError(f'DiverseBranchBlock needs a square kernel, got {tuple(kernel_size)}')
            kernel_size = kernel_size[0]
        if dilation != 1:
            raise NotImplementedError('DiverseBranchBlock supports dilation 1 only (its branches are not dilated)')
        if padding is None:
            padding = kernel_size // 2
        padding = padding[0] if isinstance(padding, (tuple, list)) else padding

        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.dilation = dilation
        self.groups = groups
        self.padding = padding
        self.branches = valid_branches(branches, in_channels, out_channels, kernel_size, stride, padding)
        self.deployed = False
        self.recal_bn_fn = recal_bn_fn
        self.nonlinear = nn.Identity() if nonlinear is None else nonlinear
        k, s, p, g = kernel_size, stride, padding, groups

        if self.branches[0]:
            self.dbb_1x1 = ConvBN(in_channels, out_channels, 1, stride=s, padding=0, groups=g, bn=bn)
        if self.branches[1]:
            mid = in_channels if internal_channels is None else internal_channels
            self.dbb_1x1_kxk = nn.Sequential()
            self.dbb_1x1_kxk.add_module('conv1', nn.Conv2d(in_channels, mid, 1, stride=1, padding=0, groups=g,
                                                           bias=False))
            self.dbb_1x1_kxk.add_module('bn1', BNAndPad(pad_pixels=p, num_features=mid, bn=bn))
            self.dbb_1x1_kxk.add_module('conv2', nn.Conv2d(mid, out_channels, k, stride=s, padding=0, groups=g,
                                                           bias=False))
            self.dbb_1x1_kxk.add_module('bn2', bn(num_features=out_channels, affine=True,
                                                  track_running_stats=True))
        if self.branches[2]:
            self.dbb_1x1_avg = nn.Sequential()
            if self._avg_has_conv():
                self.dbb_1x1_avg.add_module('conv', nn.Conv2d(in_channels, out_channels, 1, stride=1, padding=0,
                                                              groups=g, bias=False))
                self.dbb_1x1_avg.add_module('bn', BNAndPad(pad_pixels=p, num_features=out_channels, bn=bn))
                self.dbb_1x1_avg.add_module('avg', nn.AvgPool2d(kernel_size=k, stride=s, padding=0))
            else:  # depthwise: average the zero-padded input directly
                self.dbb_1x1_avg.add_module('avg', nn.AvgPool2d(kernel_size=k, stride=s, padding=p))
            self.dbb_1x1_avg.add_module('avgbn', bn(num_features=out_channels, affine=True,
                                                    track_running_stats=True))
        self.dbb_kxk = ConvBN(in_channels, out_channels, k, stride=s, padding=p, dilation=dilation, groups=g,
                              bias=True, bn=bn)
        if self.branches[4]:
            self.dbb_1xk = ConvBN(in_channels, out_channels, (1, k), stride=s, padding=(0, p), groups=g, bn=bn)
        if self.branches[5]:
            self.dbb_kx1 = ConvBN(in_channels, out_channels, (k, 1), stride=s, padding=(p, 0), groups=g, bn=bn)
        if self.branches[6]:
            self.dbb_id = bn(num_features=out_channels, affine=True, track_running_stats=True)

    def _avg_has_conv(self):
        # The official rule is ``groups < out_channels``; a depthwise conv (g == C_in == C_out) has no 1x1 conv.
        return self.groups < self.out_channels or self.in_channels != self.out_channels

    def extra_repr(self):
        return (f'{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'padding={self.padding}, groups={self.groups}, branches={self.branches}, deployed={self.deployed}')

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, x):
        if self.deployed:
            return self.nonlinear(self.conv_deployed(x))
        out = self.dbb_kxk(x)
        for i, name in enumerate(BRANCH_NAMES):
            if i != KXK and self.branches[i]:
                out = out + getattr(self, name)(x)
        return self.nonlinear(out)

    # ----------------------------------------------------------------------------------------------- fusion
    def get_actual_kernel(self, ignore_kxk=False):
        """The ``(W, b)`` of the single kxk conv equal to this block in eval mode (nested blocks recursively)."""
        if self.deployed:
            return self.conv_deployed.weight, self.conv_deployed.bias
        k, g = self.kernel_size, self.groups
        ws, bs = [], []
        if not ignore_kxk:
            conv = self.dbb_kxk.conv
            w, b = conv.get_actual_kernel() if isinstance(conv, DiverseBranchBlock) else (conv.weight, conv.bias)
            if not isinstance(self.dbb_kxk.bn, nn.Identity):
                w, b = transI_fusebn(w, self.dbb_kxk.bn, b)
            ws.append(w)
            bs.append(b)
        if self.branches[0]:
            w, b = transI_fusebn(self.dbb_1x1.conv.weight, self.dbb_1x1.bn, self.dbb_1x1.conv.bias)
            ws.append(transVI_multiscale(w, k))
            bs.append(b)
        if self.branches[1]:
            seq = self.dbb_1x1_kxk
            conv2 = seq.conv2
            w2, b2 = conv2.get_actual_kernel() if isinstance(conv2, DiverseBranchBlock) else (conv2.weight,
                                                                                              conv2.bias)
            w2, b2 = transI_fusebn(w2, seq.bn2, b2)
            w1, b1 = transI_fusebn(seq.conv1.weight, seq.bn1, seq.conv1.bias)
            w, b = transIII_1x1_kxk(w1, b1, w2, b2, groups=g)
            ws.append(w)
            bs.append(b)
        if self.branches[2]:
            seq = self.dbb_1x1_avg
            w_avg = transV_avg(self.out_channels, k, g, dtype=seq.avgbn.weight.dtype, device=seq.avgbn.weight.device)
            w, b = transI_fusebn(w_avg, seq.avgbn, None)
            if hasattr(seq, 'conv'):
                w1, b1 = transI_fusebn(seq.conv.weight, seq.bn, seq.conv.bias)
                w, b = transIII_1x1_kxk(w1, b1, w, b, groups=g)
            ws.append(w)
            bs.append(b)
        for i, name in ((4, 'dbb_1xk'), (5, 'dbb_kx1')):
            if self.branches[i]:
                branch = getattr(self, name)
                w, b = transI_fusebn(branch.conv.weight, branch.bn, branch.conv.bias)
                ws.append(transVI_multiscale(w, k))
                bs.append(b)
        if self.branches[6]:
            w, b = transIX_bn_to_1x1(self.dbb_id, self.in_channels, g)
            ws.append(transVI_multiscale(w, k))
            bs.append(b)
        return transII_addbranch(ws, bs)

    def switch_to_deploy(self):
        """Replace the branches by ``conv_deployed``, one kxk conv with bias (official deploy form)."""
        if self.deployed:
            return
        with torch.no_grad():
            w, b = self.get_actual_kernel()
            conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                             padding=self.padding, dilation=self.dilation, groups=self.groups, bias=True)
            conv = conv.to(device=w.device, dtype=w.dtype)
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        for i, name in enumerate(BRANCH_NAMES):
            if i == KXK or self.branches[i]:
                delattr(self, name)
        self.conv_deployed = conv
        self.deployed = True

    # ----------------------------------------------------------------------------------------------- growth / cut
    def branch_weights(self):
        """Importance of each branch: mean |gamma| of its last BN over mean |gamma| of the kxk BN (card Sec. 5).

        ``kxk`` is 1 by definition; inactive branches are -1.
        """
        def l1(t):
            return t.detach().abs().mean().item()

        weights = [-1] * 7
        weights[KXK] = 1
        kxk = l1(self.dbb_kxk.bn.weight)
        last_bn = {0: lambda: self.dbb_1x1.bn, 1: lambda: self.dbb_1x1_kxk.bn2, 2: lambda: self.dbb_1x1_avg.avgbn,
                   4: lambda: self.dbb_1xk.bn, 5: lambda: self.dbb_kx1.bn, 6: lambda: self.dbb_id}
        for i, get in last_bn.items():
            if self.branches[i]:
                weights[i] = l1(get().weight) / kxk
        return weights

    @staticmethod
    def _init_branch(branch, set_zero=False, norm=0.01):
        """Re-initialise a branch: convs He fan-out normal (or zero), conv biases 0, every BN reset with
        gamma 1 except the branch's last BN, whose gamma is ``norm``."""
        bns = []
        for m in branch.modules():
            if isinstance(m, nn.Conv2d):
                if set_zero:
                    m.weight.data.zero_()
                else:
                    n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                    m.weight.data.normal_(0, math.sqrt(2.0 / n))
                if m.bias is not None:
                    m.bias.data.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                bns.append(m)
        for idx, m in enumerate(bns):
            m.reset_parameters()
            m.reset_running_stats()
            m.weight.data.fill_(norm if idx == len(bns) - 1 else 1.0)
            m.bias.data.zero_()

    def reset_from_kernel(self, kernel, bias, keep_branches=None, recal_bn_fn=None):
        """Make the block compute the conv ``(kernel, bias)``: card Sec. 4 (growth) and Sec. 5 (after a cut).

        Branches not flagged in ``keep_branches`` are re-initialised (last-BN gamma 0.01); the kxk branch is
        always reset (BN gamma 1, beta 0, stats 0/1) and its conv set to the residual ``W - W_others``,
        ``b - b_others``. With ``recal_bn_fn`` (growth only, nothing kept) the block's BN statistics are first
        re-estimated on data with ``(W, b)`` in the kxk conv, then the kxk BN statistics are reset.
        A nested block in the kxk position keeps its own trained branches and is reset recursively.
        """
        keep = [0] * 7 if keep_branches is None else [int(bool(v)) for v in keep_branches]
        kernel = kernel.detach().clone()
        bias = None if bias is None else bias.detach().clone()
        kxk_conv = self.dbb_kxk.conv
        nested = isinstance(kxk_conv, DiverseBranchBlock)
        with torch.no_grad():
            if nested:
                self._init_branch(self.dbb_kxk.bn, set_zero=True, norm=1.0)
            else:
                self._init_branch(self.dbb_kxk, set_zero=True, norm=1.0)
            for i, name in enumerate(BRANCH_NAMES):
                if i != KXK and self.branches[i] and not keep[i]:
                    self._init_branch(getattr(self, name))
        if recal_bn_fn is not None and sum(keep) == 0 and not nested:
            with torch.no_grad():
                kxk_conv.weight.copy_(kernel)
                if bias is not None:
                    kxk_conv.bias.copy_(bias)
            recal_bn_fn(self)
            self.dbb_kxk.bn.reset_running_stats()
        with torch.no_grad():
            w_o, b_o = self.get_actual_kernel(ignore_kxk=True)
            new_w = kernel.to(w_o) - w_o
            new_b = -b_o if bias is None else bias.to(b_o) - b_o
            self.dbb_kxk.bn.weight.fill_(1.0)
            self.dbb_kxk.bn.bias.zero_()
            if nested:
                kxk_conv.reset_from_kernel(new_w, new_b, keep_branches=kxk_conv.branches)
            else:
                kxk_conv.weight.copy_(new_w)
                kxk_conv.bias.copy_(new_b)

    def _reset_dbb(self, kernel, bias, no_init_branches=(0, 0, 0, 0, 0, 0, 0)):
        """Official name of :meth:`reset_from_kernel` (recalibrates when given the original conv's Parameter)."""
        recal = self.recal_bn_fn if isinstance(kernel, nn.Parameter) and sum(no_init_branches) == 0 else None
        keep = None if sum(no_init_branches) == 0 else list(no_init_branches)[:7]
        self.reset_from_kernel(kernel, bias, keep_branches=keep, recal_bn_fn=recal)

    def cut_branch(self, branches):
        """Remove the branches flagged 0 in ``branches``; the fused kernel is unchanged (card Sec. 5)."""
        keep = [int(bool(v)) for v in branches]
        keep[KXK] = 1
        with torch.no_grad():
            w, b = self.get_actual_kernel()
            w, b = w.detach().clone(), b.detach().clone()
        for i, name in enumerate(BRANCH_NAMES):
            if not keep[i] and self.branches[i]:
                self.branches[i] = 0
                delattr(self, name)
        self.reset_from_kernel(w, b, keep_branches=keep)
