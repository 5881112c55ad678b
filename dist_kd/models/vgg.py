"""VGG with batch norm for CIFAR (CRD / RepDistiller ``vgg.py``): five conv blocks ``block0..block4`` separated
by 2x2 max-pooling (the fourth pool only for 64x64 inputs), global average pooling, one linear ``classifier``."""
import math

import torch.nn as nn
import torch.nn.functional as F

__all__ = ['VGG', 'vgg8_bn', 'vgg11_bn', 'vgg13_bn', 'vgg16_bn', 'vgg19_bn']

CFGS = {
    'A': [[64], [128], [256, 256], [512, 512], [512, 512]],
    'B': [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    'D': [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    'E': [[64, 64], [128, 128], [256, 256, 256, 256], [512, 512, 512, 512], [512, 512, 512, 512]],
    'S': [[64], [128], [256], [512], [512]],
}


def _make_block(widths, batch_norm, in_channels):
    layers = []
    for v in widths:
        layers.append(nn.Conv2d(in_channels, v, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(v))
        layers.append(nn.ReLU(inplace=True))
        in_channels = v
    return nn.Sequential(*layers[:-1])     # the last ReLU is applied in forward


class VGG(nn.Module):
    def __init__(self, cfg, batch_norm=True, num_classes=100):
        super().__init__()
        self.block0 = _make_block(cfg[0], batch_norm, 3)
        self.block1 = _make_block(cfg[1], batch_norm, cfg[0][-1])
        self.block2 = _make_block(cfg[2], batch_norm, cfg[1][-1])
        self.block3 = _make_block(cfg[3], batch_norm, cfg[2][-1])
        self.block4 = _make_block(cfg[4], batch_norm, cfg[3][-1])
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                m.weight.data.normal_(0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        h = x.shape[2]
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if h == 64:
            x = self.pool3(x)
        x = F.relu(self.block4(x))
        return self.classifier(self.pool4(x).flatten(1))


def vgg8_bn(num_classes=100):
    return VGG(CFGS['S'], True, num_classes)


def vgg11_bn(num_classes=100):
    return VGG(CFGS['A'], True, num_classes)


def vgg13_bn(num_classes=100):
    return VGG(CFGS['B'], True, num_classes)


def vgg16_bn(num_classes=100):
    return VGG(CFGS['D'], True, num_classes)


def vgg19_bn(num_classes=100):
    return VGG(CFGS['E'], True, num_classes)
