"""MobileNetV2 for CIFAR as used by CRD / RepDistiller (``mobile_half``: expansion 6, width 0.5).

Differences from the ImageNet MobileNetV2: a stride-2 3x3 stem on the 32x32 input, the stride-1 second
stage ``[t, 24, 2, 1]``, a point-wise expansion conv even where t = 1, a 1280-channel last conv for width
<= 1, and a linear ``classifier`` without dropout.
"""
import math

import torch.nn as nn

__all__ = ['MobileNetV2', 'mobilenetv2_T_w', 'mobile_half']


def conv_bn(inp, oup, stride):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def conv_1x1_bn(inp, oup):
    return nn.Sequential(nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, expand_ratio):
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        self.conv = nn.Sequential(
            nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),   # pw
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),                                                                         # dw
            nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup))                             # pw-linear

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, T, feature_dim, input_size=32, width_mult=1.0):
        super().__init__()
        setting = [  # t, c, n, s
            [1, 16, 1, 1], [T, 24, 2, 1], [T, 32, 3, 2], [T, 64, 4, 2],
            [T, 96, 3, 1], [T, 160, 3, 2], [T, 320, 1, 1]]
        input_channel = int(32 * width_mult)
        self.conv1 = conv_bn(3, input_channel, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in setting:
            output_channel = int(c * width_mult)
            layers = []
            for stride in [s] + [1] * (n - 1):
                layers.append(InvertedResidual(input_channel, output_channel, stride, t))
                input_channel = output_channel
            self.blocks.append(nn.Sequential(*layers))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = conv_1x1_bn(input_channel, self.last_channel)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, feature_dim))
        self.avgpool = nn.AdaptiveAvgPool2d(1)    # = AvgPool2d(input_size // 16, ceil_mode=True) at 32x32
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        out = self.conv1(x)
        for block in self.blocks:
            out = block(out)
        out = self.conv2(out)
        return self.classifier(self.avgpool(out).flatten(1))


def mobilenetv2_T_w(T, W, feature_dim=100):
    return MobileNetV2(T=T, feature_dim=feature_dim, width_mult=W)


def mobile_half(num_classes=100):
    return mobilenetv2_T_w(6, 0.5, num_classes)
