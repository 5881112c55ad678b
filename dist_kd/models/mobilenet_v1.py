"""MobileNetV1 for ImageNet, as in the official ``lib/models/mobilenet_v1.py`` (the B1 student of
ResNet-50 -> MobileNet): a 3x3 stride-2 stem with 32 channels, 13 depth-wise separable blocks, each conv
followed by BN + ReLU, global average pooling and ``fc``. 4,231,976 parameters for 1000 classes."""
import math

import torch.nn as nn

__all__ = ['MobileNetV1']

# (output channels, stride) of the 13 depth-wise separable blocks
_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def conv_bn(inp, oup, stride):
    return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


def conv_dw(inp, oup, stride):
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False), nn.BatchNorm2d(inp), nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup), nn.ReLU(inplace=True))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes=1000):
        super().__init__()
        layers, inp = [conv_bn(3, 32, 2)], 32
        for oup, stride in _BLOCKS:
            layers.append(conv_dw(inp, oup, stride))
            inp = oup
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():    # TF / MnasNet-style initialisation of the official code
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init_range = 1.0 / math.sqrt(m.weight.size(0))
                m.weight.data.uniform_(-init_range, init_range)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.model(x).flatten(1))
