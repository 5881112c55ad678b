"""ResNet encoders for LEWEL (official ``backbone/resnet.py`` interface).  Imports only torch / torchvision.

``resnet50_encoder(norm_layer=None, with_avgpool=True)`` is a torchvision ResNet-50 without ``fc``: with
``with_avgpool=False`` it returns the last feature map ``[b, C, H, W]`` (what the LEWEL neck consumes), else the
pooled ``[b, C]``.  ``out_channels`` is C.  Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.*``,
``downsample.1`` ...), so ``online_net.backbone.*`` of a checkpoint loads into ``torchvision.models.resnet50``.

Two options exist only for small CPU runs (never in a paper config): ``width`` (channels of the first stage,
64 in every published model) and ``small_input`` (3x3 stride-1 stem without max-pool, the CIFAR stem).
"""
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1


class ResNet(nn.Module):
    """ResNet trunk with torchvision's names; ``forward`` returns the feature map or its global average."""

    def __init__(self, block, layers, norm_layer=None, with_avgpool=True, width=64, small_input=False):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self._norm_layer = norm_layer
        self.with_avgpool = with_avgpool
        self.inplanes = width
        if small_input:
            self.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity() if small_input else nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = width * 8 * block.expansion
        for m in self.modules():  # official init: kaiming-normal (fan_out) convs, BN weight 1 / bias 0
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.SyncBatchNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes, blocks, stride=1):
        norm_layer = self._norm_layer
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                       norm_layer(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample, norm_layer=norm_layer)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, norm_layer=norm_layer) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        if self.with_avgpool:
            x = self.avgpool(x).flatten(1)
        return x


def resnet18_encoder(norm_layer=None, with_avgpool=True, **kw):
    return ResNet(BasicBlock, [2, 2, 2, 2], norm_layer, with_avgpool, **kw)


def resnet34_encoder(norm_layer=None, with_avgpool=True, **kw):
    return ResNet(BasicBlock, [3, 4, 6, 3], norm_layer, with_avgpool, **kw)


def resnet50_encoder(norm_layer=None, with_avgpool=True, **kw):
    return ResNet(Bottleneck, [3, 4, 6, 3], norm_layer, with_avgpool, **kw)


backbone_dict = {'resnet18_encoder': resnet18_encoder, 'resnet34_encoder': resnet34_encoder,
                 'resnet50_encoder': resnet50_encoder}
