"""Base networks of the paper. ``build_model(name, num_classes)``; ``MODELS`` lists the names."""
from .mobilenet import mobilenet_v1
from .repvgg import repvgg_a2, repvgg_b2g4, repvgg_b3
from .resnet import resnet18, resnet20, resnet50
from .vgg import vgg16_cifar

MODELS = {
    'resnet18': resnet18, 'resnet50': resnet50, 'mobilenet_v1': mobilenet_v1, 'vgg16_cifar': vgg16_cifar,
    'repvgg_a2': repvgg_a2, 'repvgg_b2g4': repvgg_b2g4, 'repvgg_b3': repvgg_b3, 'resnet20': resnet20,
}


def build_model(name, num_classes):
    if name not in MODELS:
        raise KeyError(f'unknown model {name!r}; choose from {sorted(MODELS)}')
    return MODELS[name](num_classes=num_classes)
