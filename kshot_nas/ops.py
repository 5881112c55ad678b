"""K-shot operations: every parametric tensor exists in K copies and a path uses their convex combination.

A path alpha with simplex code lam = (lam_1, ..., lam_K) (lam_k >= 0, sum_k lam_k = 1) uses
``theta(alpha) = sum_k lam_k * theta^(k)`` for every tensor on it (K-shot NAS, Su et al., ICML 2021).
The combination is computed inside the autograd graph, so copy k receives lam_k times the gradient of the
combined tensor, and weight decay on the stacked parameter is decay per copy.  One forward per path: the
weights are combined first and one convolution is run (never K convolutions mixed afterwards).

A module whose copy count is 1 ignores the code and uses its single copy (a shared, one-shot tensor); a
one-hot code gives exactly the network that holds that copy.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def combine(param, lam):
    """``sum_k lam[k] * param[k]`` for a stacked parameter ``[K, ...]`` (a 1-copy parameter is returned as is)."""
    if param.shape[0] == 1:
        return param[0]
    if lam.dim() != 1 or lam.shape[0] != param.shape[0]:
        raise ValueError(f'simplex code of shape {tuple(lam.shape)} does not fit {param.shape[0]} copies')
    return torch.tensordot(lam.to(param.dtype), param, dims=1)


def scaled_channels(channels, ratio):
    """Left-slice width: the first ``round(ratio * channels)`` channels (at least one)."""
    return max(1, int(round(ratio * channels)))


class HSwish(nn.Module):
    def forward(self, x):
        return x * F.relu6(x + 3.0) / 6.0


class HSigmoid(nn.Module):
    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0


def make_act(name):
    if name == 'relu':
        return nn.ReLU(inplace=True)
    if name == 'hswish':
        return HSwish()
    raise ValueError(f'unknown activation {name!r} (relu | hswish)')


class KShotConv2d(nn.Module):
    """Conv2d with ``weight: [K, out, in/groups, k, k]``; padding k//2.

    ``forward(x, lam, out_ch=None, in_ch=None)`` slices the first ``out_ch`` output / ``in_ch`` input channels
    of the combined kernel (channel search); a depthwise conv (groups == in == out) slices both together.
    """

    def __init__(self, in_ch, out_ch, kernel_size, stride=1, groups=1, bias=False, weight_num=3):
        super().__init__()
        if in_ch % groups or out_ch % groups:
            raise ValueError(f'channels {in_ch}->{out_ch} not divisible by groups={groups}')
        self.in_ch, self.out_ch, self.kernel_size = in_ch, out_ch, kernel_size
        self.stride, self.groups, self.weight_num = stride, groups, weight_num
        self.depthwise = groups > 1 and groups == in_ch == out_ch
        self.weight = nn.Parameter(torch.empty(weight_num, out_ch, in_ch // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(weight_num, out_ch)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """Kaiming-normal (fan-out), each copy drawn independently; biases 0."""
        fan_out = self.out_ch // self.groups * self.kernel_size ** 2
        with torch.no_grad():
            self.weight.normal_(0, math.sqrt(2.0 / fan_out))
            if self.bias is not None:
                self.bias.zero_()

    def combined(self, lam, out_ch=None, in_ch=None):
        """(weight, bias) of the path: combined, then sliced."""
        w = combine(self.weight, lam)
        b = combine(self.bias, lam) if self.bias is not None else None
        out_ch = out_ch or self.out_ch
        if self.depthwise:
            w = w[:out_ch]
        else:
            w = w[:out_ch, :(in_ch or self.in_ch) // self.groups]
        return w, (b[:out_ch] if b is not None else None)

    def forward(self, x, lam, out_ch=None, in_ch=None):
        w, b = self.combined(lam, out_ch, in_ch)
        groups = w.shape[0] if self.depthwise else self.groups
        return F.conv2d(x, w, b, self.stride, self.kernel_size // 2, 1, groups)

    def extra_repr(self):
        return (f'{self.in_ch}, {self.out_ch}, kernel_size={self.kernel_size}, stride={self.stride}, '
                f'groups={self.groups}, bias={self.bias is not None}, weight_num={self.weight_num}')


class KShotBatchNorm2d(nn.Module):
    """BatchNorm with K affine copies ``weight, bias: [K, C]`` and ONE running-statistics buffer.

    Only gamma/beta are combined; the running statistics are recalibrated per path before scoring.
    ``forward(x, lam, num_ch=None)`` uses the first ``num_ch`` channels (gamma, beta and statistics).
    """

    def __init__(self, num_features, weight_num=3, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.weight_num, self.eps, self.momentum = num_features, weight_num, eps, momentum
        self.weight = nn.Parameter(torch.ones(weight_num, num_features))
        self.bias = nn.Parameter(torch.zeros(weight_num, num_features))
        self.register_buffer('running_mean', torch.zeros(num_features))
        self.register_buffer('running_var', torch.ones(num_features))
        self.register_buffer('num_batches_tracked', torch.tensor(0, dtype=torch.long))

    def combined(self, lam, num_ch=None):
        c = num_ch or self.num_features
        return combine(self.weight, lam)[:c], combine(self.bias, lam)[:c]

    def forward(self, x, lam, num_ch=None):
        c = x.shape[1] if num_ch is None else num_ch
        w, b = self.combined(lam, c)
        if self.training:
            self.num_batches_tracked.add_(1)
        # slices of the buffers are views: batch_norm updates the first c running statistics in place
        return F.batch_norm(x, self.running_mean[:c], self.running_var[:c], w, b, self.training,
                            self.momentum, self.eps)

    def extra_repr(self):
        return f'{self.num_features}, weight_num={self.weight_num}'


class KShotSE(nn.Module):
    """Squeeze-excite after the depthwise conv: pool -> 1x1 conv to C//reduction (bias) -> ReLU -> 1x1 conv
    back (bias) -> h-sigmoid -> channel-wise scale; both convs K-shot."""

    def __init__(self, channels, reduction=4, weight_num=3):
        super().__init__()
        self.channels, self.reduction = channels, reduction
        self.conv_reduce = KShotConv2d(channels, channels // reduction, 1, bias=True, weight_num=weight_num)
        self.conv_expand = KShotConv2d(channels // reduction, channels, 1, bias=True, weight_num=weight_num)
        self.act = nn.ReLU(inplace=True)
        self.gate = HSigmoid()

    def forward(self, x, lam):
        c = x.shape[1]
        r = max(1, c // self.reduction)
        s = x.mean((2, 3), keepdim=True)
        s = self.act(self.conv_reduce(s, lam, out_ch=r, in_ch=c))
        s = self.conv_expand(s, lam, out_ch=c, in_ch=r)
        return x * self.gate(s)


class InvertedResidual(nn.Module):
    """MBConv: [1x1 expand, BN, act] (skipped when t = 1) -> [kxk depthwise, stride, BN, act] -> [SE] ->
    [1x1 project, BN] (+ identity shortcut when inp == oup and stride 1); every tensor K-shot.

    ``forward(x, lam, hidden_ratio=1.0)`` keeps the first round(hidden_ratio * inp * t) hidden channels.
    """

    def __init__(self, inp, oup, stride, t, k, use_se, weight_num=3, bn_weight_num=3, act='hswish'):
        super().__init__()
        self.inp, self.oup, self.stride, self.t, self.k, self.use_se = inp, oup, stride, t, k, use_se
        self.hidden = inp * t
        self.use_res = stride == 1 and inp == oup
        if t != 1:
            self.conv_pw = KShotConv2d(inp, self.hidden, 1, weight_num=weight_num)
            self.bn1 = KShotBatchNorm2d(self.hidden, bn_weight_num)
            self.act1 = make_act(act)
        self.conv_dw = KShotConv2d(self.hidden, self.hidden, k, stride, groups=self.hidden, weight_num=weight_num)
        self.bn2 = KShotBatchNorm2d(self.hidden, bn_weight_num)
        self.act2 = make_act(act)
        self.se = KShotSE(self.hidden, 4, bn_weight_num) if use_se else None
        self.conv_pwl = KShotConv2d(self.hidden, oup, 1, weight_num=weight_num)
        self.bn3 = KShotBatchNorm2d(oup, bn_weight_num)

    def forward(self, x, lam, hidden_ratio=1.0):
        mid = scaled_channels(self.hidden, hidden_ratio) if self.t != 1 else self.hidden
        out = x
        if self.t != 1:
            out = self.act1(self.bn1(self.conv_pw(out, lam, out_ch=mid), lam, mid))
        out = self.act2(self.bn2(self.conv_dw(out, lam, out_ch=mid, in_ch=mid), lam, mid))
        if self.se is not None:
            out = self.se(out, lam)
        out = self.bn3(self.conv_pwl(out, lam, in_ch=mid), lam)
        return x + out if self.use_res else out


class Identity(nn.Module):
    """The skip candidate (legal only where the layer keeps its shape)."""

    def forward(self, x, lam=None, hidden_ratio=1.0):
        return x


# names of the authors' internal framework (code remnants in xiusu/ViTAS, xiusu/BCNetV2)
DynamicConv2d_multiconv2d = KShotConv2d
DynamicBatchNorm2d_multiBN = KShotBatchNorm2d
SqueezeExcite_multiSE = KShotSE
