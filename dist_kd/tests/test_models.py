"""The model zoo against the spec's parameter / FLOP table, the builder and checkpoint formats."""
import pytest
import torch

import models
import tables
from models.cifar import model_dict

CIFAR_PARAMS = {  # official constructors, 100 classes (spec table)
    'resnet20': 278_324, 'resnet56': 861_620, 'resnet8x4': 1_233_540, 'resnet32x4': 7_433_860,
    'wrn_40_1': 569_780, 'wrn_40_2': 2_255_156, 'MobileNetV2': 812_836, 'ShuffleV1': 949_258,
    'ShuffleV2': 1_355_528, 'ResNet50': 23_705_252,
}


def _params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize('name', sorted(CIFAR_PARAMS))
def test_cifar_param_counts(name):
    with torch.device('meta'):
        assert _params(model_dict[name](num_classes=100)) == CIFAR_PARAMS[name]


def test_imagenet_param_counts():
    with torch.device('meta'):
        assert _params(models.build_model('mobilenet_v1', 1000)) == 4_231_976
        assert _params(models.build_model('tv_resnet18', 1000)) == 11_689_512
        assert _params(models.build_model('resnet34', 1000)) == 21_797_672
        assert _params(models.build_model('tv_mobilenet_v2', 1000)) == 3_504_872


@pytest.mark.parametrize('name,classes,size,flops', [
    ('cifar_resnet20', 100, 32, 81.6e6), ('cifar_wrn_40_2', 100, 32, 655.2e6), ('cifar_MobileNetV2', 100, 32, 13.0e6),
    ('cifar_ShuffleV1', 100, 32, 77.4e6), ('cifar_ShuffleV2', 100, 32, 89.0e6), ('cifar_ResNet50', 100, 32, 2.596e9),
    ('mobilenet_v1', 1000, 224, 1.14e9), ('tv_resnet18', 1000, 224, 3.63e9)])
def test_flops_match_spec(name, classes, size, flops):
    _, ours = tables.count(name, classes, size)
    assert ours == pytest.approx(flops, rel=0.005)


def test_forward_shapes_and_alias():
    x = torch.randn(2, 3, 32, 32)
    for name in ('resnet8', 'wrn_16_1', 'vgg8', 'MobileNetV2', 'ShuffleV1', 'ShuffleV2'):
        m = model_dict[name](num_classes=7).eval()
        assert m(x).shape == (2, 7)
    assert model_dict['mobile_half'] is model_dict['MobileNetV2']
    a, b = models.build_model('cifar_mobile_half', 100), models.build_model('cifar_MobileNetV2', 100)
    assert list(a.state_dict()) == list(b.state_dict())


def test_official_state_dict_keys():
    sd = models.build_model('cifar_wrn_40_2', 100).state_dict()
    assert 'block1.layer.0.convShortcut.weight' in sd and 'block1.layer.1.convShortcut.weight' not in sd
    assert {'conv1.weight', 'bn1.running_mean', 'fc.weight'} <= set(sd)
    sd = models.build_model('cifar_resnet8x4', 100).state_dict()
    assert {'layer1.0.downsample.0.weight', 'layer3.0.downsample.1.running_var', 'fc.bias'} <= set(sd)
    sd = models.build_model('cifar_ResNet50', 100).state_dict()
    assert {'layer4.0.shortcut.0.weight', 'linear.weight'} <= set(sd)
    sd = models.build_model('mobilenet_v1', 10).state_dict()
    assert {'model.0.0.weight', 'model.13.3.weight', 'fc.weight'} <= set(sd)


def test_builder_errors():
    for bad in ('cifar_resnet9', 'tv_not_a_model', 'foo', 'tv__api'):
        with pytest.raises(ValueError):
            models.build_model(bad, 10)
    with pytest.raises(ValueError):
        models.build_model('cifar_resnet8', 10, pretrained=True)


@pytest.mark.parametrize('fmt', ['plain', 'model', 'state_dict_ddp'])
def test_checkpoint_formats(tmp_path, fmt):
    src = models.build_model('cifar_resnet8', 10)
    sd = src.state_dict()
    obj = {'plain': sd, 'model': {'model': sd, 'epoch': 3, 'optimizer': None},
           'state_dict_ddp': {'state_dict': {'module.' + k: v for k, v in sd.items()}}}[fmt]
    path = tmp_path / 'ckpt.pth'
    torch.save(obj, path)
    dst = models.build_model('cifar_resnet8', 10, ckpt=str(path))
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k])
    with pytest.raises(ValueError):
        models.extract_state_dict({'epoch': 3})
