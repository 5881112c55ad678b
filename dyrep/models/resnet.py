"""ResNets: torchvision's ResNet-18/50 (identical definitions, init and state_dict keys) and a CIFAR ResNet-20.

ResNet-20 (He et al. 2016, Sec. 4.2: 3 stages of 3 basic blocks, 16/32/64 channels) is the small model of
the embedded default run; its shortcuts are 1x1 conv + BN projections (option B) where the shape changes.
"""
import torch.nn as nn
from torchvision.models import resnet as tv_resnet


def resnet18(num_classes=1000):
    """ResNet-18, torchvision definition (Kaiming-normal fan-out convs, BN 1/0, no zero-init): 11,689,512."""
    return tv_resnet.resnet18(weights=None, num_classes=num_classes)


def resnet50(num_classes=1000):
    """ResNet-50, torchvision definition: 25,557,032 parameters."""
    return tv_resnet.resnet50(weights=None, num_classes=num_classes)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs: 3x3 stem, three stages of basic blocks, global pool, linear classifier."""

    def __init__(self, depth=20, num_classes=10, width=16):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f'CIFAR ResNet depth must be 6n + 2, got {depth}')
        n = (depth - 2) // 6
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._make_layer(width, n, 1)
        self.layer2 = self._make_layer(width * 2, n, 2)
        self.layer3 = self._make_layer(width * 4, n, 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width * 4, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes, blocks, stride):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(tv_resnet.conv1x1(self.inplanes, planes, stride), nn.BatchNorm2d(planes))
        layers = [tv_resnet.BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [tv_resnet.BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def resnet20(num_classes=10, width=16):
    return CifarResNet(20, num_classes, width)
