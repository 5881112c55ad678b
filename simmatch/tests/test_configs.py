"""The paper's settings in configs/ validate against the schema and carry the published hyperparameters;
the FLOPs of the card."""
from pathlib import Path

import pytest

from common.config import load_config
from main import DEFAULTS, check_config

CONFIGS = sorted((Path(__file__).resolve().parents[1] / 'configs').glob('*.yaml'))


def _load(name):
    return load_config(Path(__file__).resolve().parents[1] / 'configs' / name, defaults=DEFAULTS)


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_validates(path):
    check_config(load_config(path, defaults=DEFAULTS))


def test_config_set_is_complete():
    names = {p.stem for p in CONFIGS}
    expected = {'imagenet_1p', 'imagenet_10p', 'cifar10_40', 'cifar10_250', 'cifar10_4000', 'cifar100_400',
                'cifar100_2500', 'cifar100_10000', 'svhn_40', 'svhn_250', 'svhn_1000', 'stl10_40', 'stl10_250',
                'stl10_1000'}
    assert expected <= names


@pytest.mark.parametrize('name, split', [('imagenet_1p.yaml', 'split_1p_index.txt'),
                                         ('imagenet_10p.yaml', 'split_10p_index.txt')])
def test_imagenet_official_hyperparameters(name, split):
    c = _load(name)
    assert c.data.split_file.endswith(split) and not c.data.include_lb_to_ulb
    assert (c.backbone, c.batch_size, c.mu, c.epochs, c.warmup_epoch) == ('resnet50_encoder', 8, 5, 400, 5)
    assert (c.lr, c.wd, c.nesterov, c.wd_exclude_bn_bias, c.lr_schedule) == (0.03, 1e-4, True, False, 'cos')
    assert (c.threshold, c.lambda_u, c.lambda_in, c.tt, c.st, c.c_smooth) == (0.7, 10.0, 5.0, 0.1, 0.1, 0.9)
    assert (c.DA, c.DA_len, c.ema_m, c.eman, c.use_ema_teacher, c.bank_m) == (True, 256, 0.999, False, True, None)
    assert c.eval_model == 'student' and c.aggregation == 'mix'


@pytest.mark.parametrize('name, backbone, labels, wd', [
    ('cifar10_40.yaml', 'wrn_28_2', 40, 5e-4), ('cifar100_2500.yaml', 'wrn_28_8', 2500, 1e-3),
    ('svhn_1000.yaml', 'wrn_28_2', 1000, 5e-4), ('stl10_250.yaml', 'wrn_var_37_2', 250, 5e-4)])
def test_small_image_hyperparameters(name, backbone, labels, wd):
    c = _load(name)
    assert (c.backbone, c.data.num_labels, c.wd) == (backbone, labels, wd)
    assert (c.batch_size, c.mu, c.epochs * c.iters_per_epoch) == (64, 7, 2 ** 20)
    assert (c.threshold, c.lambda_u, c.lambda_in, c.tt, c.c_smooth, c.DA_len) == (0.95, 1.0, 1.0, 0.1, 0.9, 32)
    assert c.eval_model == 'ema' and c.bank_norm_dim == 0 and c.lr_schedule == 'fixmatch_cos'
    assert c.eval_freq * c.iters_per_epoch == 5120


def test_flops_match_the_card():
    import torch

    import backbones
    from models import ResNet
    from tables import count_flops
    with torch.device('meta'):  # shapes only: nothing is initialised or computed
        wrn, r50 = ResNet(backbones.wrn_28_2, 10), ResNet(backbones.resnet50_encoder, 1000)
    assert round(count_flops(wrn, 32) / 1e9, 3) == 0.429
    assert round(count_flops(r50, 224) / 1e9, 3) == 8.187
