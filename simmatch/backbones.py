"""Encoders without a classifier: each returns the globally pooled feature ``v`` and has ``out_channels``.

* ``resnet18/34/50/101_encoder``: torchvision's ResNet (v1.5, stride in the 3x3 conv) with the fc removed, as in
  the official ImageNet code. State-dict keys are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1``, ...).
* ``wrn_28_2`` / ``wrn_28_8`` / ``wrn_var_37_2``: the FixMatch/TorchSSL/USB wide ResNets (leaky-ReLU 0.1, BN
  momentum 0.001, pre-activation blocks) used for CIFAR-10/100, SVHN and STL-10, also without their classifier.
* ``wrn(depth, widen_factor)``: the same family at any size; ``wrn_22_1_s2`` is the embedded default's network.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import resnet as tv_resnet

__all__ = ['ResNetEncoder', 'resnet18_encoder', 'resnet34_encoder', 'resnet50_encoder', 'resnet101_encoder',
           'WideResNetEncoder', 'wrn', 'wrn_28_2', 'wrn_28_8', 'wrn_var_37_2', 'wrn_22_1_s2', 'BACKBONES']


class ResNetEncoder(tv_resnet.ResNet):
    """torchvision ResNet without ``fc``: ``forward`` returns the pooled ``[N, 512 * expansion]`` feature.

    Convs are kaiming-normal (fan_out), BN weight 1 / bias 0, no zero-init of residual branches (torchvision's
    defaults, which are the official backbone's).
    """

    def __init__(self, block, layers, norm_layer=None):
        super().__init__(block, layers, norm_layer=norm_layer)
        self.out_channels = 512 * block.expansion
        del self.fc

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet18_encoder(norm_layer=None):
    return ResNetEncoder(tv_resnet.BasicBlock, [2, 2, 2, 2], norm_layer)


def resnet34_encoder(norm_layer=None):
    return ResNetEncoder(tv_resnet.BasicBlock, [3, 4, 6, 3], norm_layer)


def resnet50_encoder(norm_layer=None):
    return ResNetEncoder(tv_resnet.Bottleneck, [3, 4, 6, 3], norm_layer)


def resnet101_encoder(norm_layer=None):
    return ResNetEncoder(tv_resnet.Bottleneck, [3, 4, 23, 3], norm_layer)


# ------------------------------------------------------------------------------------------- wide ResNets
class WRNBlock(nn.Module):
    """Pre-activation wide-ResNet block of FixMatch/TorchSSL/USB.

    When the width changes, the block either activates its input before both branches
    (``activate_before_residual``, first group only) or feeds the *raw* input to ``conv1`` and the 1x1 shortcut
    (the other groups); this asymmetry is the reference implementation's and is kept.
    """

    def __init__(self, in_planes, out_planes, stride, activate_before_residual=False, bn_momentum=0.001):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=bn_momentum)
        self.relu1 = nn.LeakyReLU(0.1, inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes, momentum=bn_momentum)
        self.relu2 = nn.LeakyReLU(0.1, inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, 1, 1, bias=False)
        self.equalInOut = in_planes == out_planes and stride == 1  # else a 1x1 projection shortcut
        self.convShortcut = None if self.equalInOut else nn.Conv2d(in_planes, out_planes, 1, stride, 0, bias=False)
        self.activate_before_residual = activate_before_residual

    def forward(self, x):
        if self.equalInOut:
            out = self.conv1(self.relu1(self.bn1(x)))
            shortcut = x
        else:
            if self.activate_before_residual:
                x = self.relu1(self.bn1(x))
            out = self.conv1(x)
            shortcut = self.convShortcut(x)
        out = self.conv2(self.relu2(self.bn2(out)))
        return shortcut + out


class WRNGroup(nn.Module):
    def __init__(self, n, in_planes, out_planes, stride, activate_before_residual=False, bn_momentum=0.001):
        super().__init__()
        self.layer = nn.Sequential(*[
            WRNBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1,
                     activate_before_residual, bn_momentum) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class WideResNetEncoder(nn.Module):
    """Wide ResNet without the classifier: a 3x3 stem conv (with bias), groups ``block1..blockG`` of ``n`` blocks
    (``n = (depth - 4) // 6``), a final BN (eps 1e-3) + leaky-ReLU and global average pooling.

    ``widths`` are the group widths (``16k, 32k, 64k`` for WRN-depth-k); ``first_stride`` is the first group's
    stride (2 for the STL-10 variant at 96 px).
    """

    def __init__(self, depth=28, widths=(32, 64, 128), first_stride=1, norm_layer=None, bn_momentum=0.001):
        super().__init__()
        if norm_layer not in (None, nn.BatchNorm2d):
            raise ValueError('the wide ResNets use BatchNorm only')
        if (depth - 4) % 6 != 0:
            raise ValueError(f'WRN depth must be 6n+4, got {depth}')
        n = (depth - 4) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=True)
        in_planes = 16
        for g, width in enumerate(widths):
            stride = first_stride if g == 0 else 2
            setattr(self, f'block{g + 1}', WRNGroup(n, in_planes, width, stride, g == 0, bn_momentum))
            in_planes = width
        self.num_groups = len(widths)
        self.bn1 = nn.BatchNorm2d(in_planes, momentum=bn_momentum, eps=0.001)
        self.relu = nn.LeakyReLU(0.1, inplace=False)
        self.out_channels = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='leaky_relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.conv1(x)
        for g in range(self.num_groups):
            x = getattr(self, f'block{g + 1}')(x)
        x = self.relu(self.bn1(x))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def wrn(depth=28, widen_factor=2, norm_layer=None, first_stride=1, bn_momentum=0.001):
    """WRN-depth-k of FixMatch/USB: group widths 16k, 32k, 64k."""
    k = widen_factor
    return WideResNetEncoder(depth, (16 * k, 32 * k, 64 * k), first_stride, norm_layer, bn_momentum)


def wrn_28_2(norm_layer=None):
    return wrn(28, 2, norm_layer)


def wrn_28_8(norm_layer=None):
    return wrn(28, 8, norm_layer)


def wrn_var_37_2(norm_layer=None):
    """USB's STL-10 network: four groups of four blocks, widths 32/64/128/256, first group at stride 2."""
    return WideResNetEncoder(28, (32, 64, 128, 256), first_stride=2, norm_layer=norm_layer)


def wrn_22_1_s2(norm_layer=None):
    """The CPU demo network: a narrow WRN-22-1 (three blocks per group, widths 16/32/64) whose first group has
    stride 2, as USB's STL-10 network has, so that 32 px images cost about as much as a WRN-10-1; PyTorch's
    default BN momentum 0.1, since at 0.001 the running statistics would barely move in a few hundred steps."""
    return wrn(22, 1, norm_layer, first_stride=2, bn_momentum=0.1)


BACKBONES = {
    'resnet18_encoder': resnet18_encoder, 'resnet34_encoder': resnet34_encoder,
    'resnet50_encoder': resnet50_encoder, 'resnet101_encoder': resnet101_encoder,
    'wrn_28_2': wrn_28_2, 'wrn_28_8': wrn_28_8, 'wrn_var_37_2': wrn_var_37_2, 'wrn_22_1_s2': wrn_22_1_s2,
}
