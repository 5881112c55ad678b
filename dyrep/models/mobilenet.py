"""MobileNetV1 (Howard et al. 2017) for ImageNet, as in the card: a 3x3 stride-2 stem with 32 channels, 13
depthwise-separable blocks (3x3 depthwise -> BN -> ReLU -> 1x1 -> BN -> ReLU), global pool, linear classifier.
4,231,976 parameters. Init as torchvision's ResNets (Kaiming-normal fan-out convs, BN 1/0, linear N(0, 0.01)).
"""
import torch.nn as nn

# (output channels, stride) of the 13 depthwise-separable blocks
MOBILENET_V1_CFG = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                    (512, 1), (512, 1), (1024, 2), (1024, 1))


def conv_bn_relu(c_in, c_out, kernel_size, stride, groups=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DepthwiseSeparable(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.dw = conv_bn_relu(c_in, c_in, 3, stride, groups=c_in)
        self.pw = conv_bn_relu(c_in, c_out, 1, 1)

    def forward(self, x):
        return self.pw(self.dw(x))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes=1000, width=32, cfg=MOBILENET_V1_CFG):
        super().__init__()
        blocks, c_in = [conv_bn_relu(3, width, 3, 2)], width
        for c_out, stride in cfg:
            blocks.append(DepthwiseSeparable(c_in, c_out, stride))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.fc(self.avgpool(self.features(x)).flatten(1))


def mobilenet_v1(num_classes=1000):
    return MobileNetV1(num_classes)
