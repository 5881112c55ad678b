"""The CIFAR-100 model zoo under the official registry names (built as ``cifar_<name>`` by the builder).

``MobileNetV2`` is the RepDistiller ``mobile_half`` (width 0.5); ``mobile_half`` is accepted as an alias
because the official README lists that name although its registry only knows ``MobileNetV2``.
"""
from .mobilenetv2_cifar import mobile_half
from .resnet_cifar import (ResNet50, resnet8, resnet8x4, resnet14, resnet20, resnet32, resnet32x4, resnet44,
                           resnet56, resnet110)
from .shufflenet import ShuffleV1, ShuffleV2
from .vgg import vgg8_bn, vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn
from .wrn import wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2

model_dict = {
    'resnet8': resnet8,
    'resnet14': resnet14,
    'resnet20': resnet20,
    'resnet32': resnet32,
    'resnet44': resnet44,
    'resnet56': resnet56,
    'resnet110': resnet110,
    'resnet8x4': resnet8x4,
    'resnet32x4': resnet32x4,
    'ResNet50': ResNet50,
    'wrn_16_1': wrn_16_1,
    'wrn_16_2': wrn_16_2,
    'wrn_40_1': wrn_40_1,
    'wrn_40_2': wrn_40_2,
    'vgg8': vgg8_bn,
    'vgg11': vgg11_bn,
    'vgg13': vgg13_bn,
    'vgg16': vgg16_bn,
    'vgg19': vgg19_bn,
    'MobileNetV2': mobile_half,
    'mobile_half': mobile_half,
    'ShuffleV1': ShuffleV1,
    'ShuffleV2': ShuffleV2,
}
