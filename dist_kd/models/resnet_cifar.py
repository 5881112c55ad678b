"""CIFAR ResNets of the CRD / RepDistiller zoo (32x32 input).

* ``ResNet(depth, num_filters)``: 3x3 stem, three stages of ``(depth - 2) / 6`` basic blocks with widths
  ``num_filters[1:]`` (strides 1, 2, 2), global average pooling, linear head ``fc``
  (resnet8 ... resnet110 with ``[16, 16, 32, 64]``; resnet8x4 / resnet32x4 with ``[32, 64, 128, 256]``).
* ``ResNet50``: the CIFAR bottleneck ResNet-50 of RepDistiller's ``resnetv2.py`` (3x3 stride-1 stem, no
  max-pool, four stages of [3, 4, 6, 3] bottlenecks, head ``linear``).

Module names match the official checkpoints (``conv1, bn1, layer1.0.conv1, downsample, fc`` / ``shortcut,
linear``), so their state dicts load with strict=True.
"""
import torch.nn as nn
import torch.nn.functional as F

__all__ = ['ResNet', 'ResNetV2', 'resnet8', 'resnet14', 'resnet20', 'resnet32', 'resnet44', 'resnet56',
           'resnet110', 'resnet8x4', 'resnet32x4', 'ResNet50']


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return F.relu(out + residual)


class ResNet(nn.Module):
    def __init__(self, depth, num_filters, num_classes=100):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f'depth must be 6n + 2, got {depth}')
        n = (depth - 2) // 6
        self.inplanes = num_filters[0]
        self.conv1 = nn.Conv2d(3, num_filters[0], kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(num_filters[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(num_filters[1], n)
        self.layer2 = self._make_layer(num_filters[2], n, stride=2)
        self.layer3 = self._make_layer(num_filters[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)   # = AvgPool2d(8) of the official code at 32x32
        self.fc = nn.Linear(num_filters[3] * BasicBlock.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, self.expansion * planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(self.expansion * planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != self.expansion * planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, self.expansion * planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(self.expansion * planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNetV2(nn.Module):
    """Bottleneck ResNet for 32x32 inputs (RepDistiller ``resnetv2.ResNet``)."""

    def __init__(self, num_blocks, num_classes=100, zero_init_residual=False):
        super().__init__()
        self.in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._make_layer(64, num_blocks[0], stride=1)
        self.layer2 = self._make_layer(128, num_blocks[1], stride=2)
        self.layer3 = self._make_layer(256, num_blocks[2], stride=2)
        self.layer4 = self._make_layer(512, num_blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512 * Bottleneck.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)

    def _make_layer(self, planes, num_blocks, stride):
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(Bottleneck(self.in_planes, planes, s))
            self.in_planes = planes * Bottleneck.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(self.avgpool(out).flatten(1))


def resnet8(num_classes=100):
    return ResNet(8, [16, 16, 32, 64], num_classes)


def resnet14(num_classes=100):
    return ResNet(14, [16, 16, 32, 64], num_classes)


def resnet20(num_classes=100):
    return ResNet(20, [16, 16, 32, 64], num_classes)


def resnet32(num_classes=100):
    return ResNet(32, [16, 16, 32, 64], num_classes)


def resnet44(num_classes=100):
    return ResNet(44, [16, 16, 32, 64], num_classes)


def resnet56(num_classes=100):
    return ResNet(56, [16, 16, 32, 64], num_classes)


def resnet110(num_classes=100):
    return ResNet(110, [16, 16, 32, 64], num_classes)


def resnet8x4(num_classes=100):
    return ResNet(8, [32, 64, 128, 256], num_classes)


def resnet32x4(num_classes=100):
    return ResNet(32, [32, 64, 128, 256], num_classes)


def ResNet50(num_classes=100):
    return ResNetV2([3, 4, 6, 3], num_classes)
