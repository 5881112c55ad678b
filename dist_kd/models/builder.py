"""``build_model(name, num_classes, pretrained=False, ckpt='')`` with the official name prefixes:

* ``cifar_<name>``: the CIFAR zoo of :mod:`models.cifar` (``cifar_wrn_40_2``, ``cifar_MobileNetV2``, ...);
* ``tv_<name>``: a torchvision constructor (``tv_resnet34``, ``tv_mobilenet_v2``); ``pretrained`` asks
  torchvision for its original ImageNet weights (``IMAGENET1K_V1``, what ``pretrained=True`` gave the official
  code; downloaded by torchvision);
* ``timm_<name>``: a timm model (``timm_resnet50``, ``timm_tf_efficientnet_b0``); timm is optional and
  imported only here;
* ``mobilenet_v1`` and ``resnet18 ... resnet152`` (the torchvision architectures, as in the official builder).

``ckpt`` loads a checkpoint file: a plain state dict (torchvision / timm) or the official formats
``{'model': state_dict, ...}`` / ``{'state_dict': ...}``, with a ``module.`` prefix stripped, strictly.
The training script uses :func:`extract_state_dict` with its own error reporting instead.
"""
import torch
import torchvision

from .cifar import model_dict as cifar_models
from .mobilenet_v1 import MobileNetV1

__all__ = ['build_model', 'extract_state_dict', 'list_models']

_TV_RESNETS = ('resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet152')


def list_models():
    """Names accepted without an external package (timm names are open-ended)."""
    names = ['cifar_' + k for k in cifar_models] + ['mobilenet_v1'] + list(_TV_RESNETS)
    return names + ['tv_<torchvision model>', 'timm_<timm model>']


def _torchvision(name, num_classes, pretrained):
    fn = getattr(torchvision.models, name, None)
    if fn is None or not callable(fn) or name.startswith('_') or name[0].isupper():
        raise ValueError(f'torchvision has no model constructor {name!r}')
    if pretrained:
        if num_classes != 1000:
            raise ValueError(f'pretrained torchvision weights have 1000 classes, not {num_classes}')
        # the official code called fn(pretrained=True): the original ImageNet weights (ResNet-50 76.13, not the
        # 80.86 of torchvision's newer default)
        names = {w.name for w in torchvision.models.get_model_weights(fn)}
        return fn(weights='IMAGENET1K_V1' if 'IMAGENET1K_V1' in names else 'DEFAULT')
    return fn(weights=None, num_classes=num_classes)


def build_model(name, num_classes, pretrained=False, ckpt=''):
    if name.startswith('cifar_'):
        key = name[len('cifar_'):]
        if key not in cifar_models:
            raise ValueError(f'unknown CIFAR model {name!r}; known: {", ".join("cifar_" + k for k in cifar_models)}')
        if pretrained:
            raise ValueError(f'{name}: CIFAR models have no downloadable weights; pass a checkpoint path instead')
        model = cifar_models[key](num_classes=num_classes)
    elif name.startswith('tv_'):
        model = _torchvision(name[3:], num_classes, pretrained)
    elif name.startswith('timm_'):
        try:
            import timm
        except ImportError as e:
            raise ImportError(f'model {name!r} needs the optional package timm (pip install timm)') from e
        model = timm.create_model(name[5:], pretrained=pretrained, num_classes=num_classes)
    elif name == 'mobilenet_v1':
        if pretrained:
            raise ValueError('mobilenet_v1 has no downloadable weights; pass a checkpoint path instead')
        model = MobileNetV1(num_classes=num_classes)
    elif name in _TV_RESNETS:
        model = _torchvision(name, num_classes, pretrained)
    else:
        raise ValueError(f'unknown model {name!r}; known: {", ".join(list_models())}')
    if ckpt:
        state = torch.load(ckpt, map_location='cpu', weights_only=False)
        model.load_state_dict(extract_state_dict(state), strict=True)
    return model


def extract_state_dict(obj):
    """The model state dict inside a checkpoint object (plain, ``{'model': ...}`` or ``{'state_dict': ...}``)."""
    if not isinstance(obj, dict):
        raise ValueError(f'a checkpoint must be a dict, got {type(obj).__name__}')
    for key in ('state_dict', 'model'):
        if key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError('no model state dict found (expected tensors, or a "model" / "state_dict" entry)')
    if all(k.startswith('module.') for k in obj):
        obj = {k[len('module.'):]: v for k, v in obj.items()}
    return obj
