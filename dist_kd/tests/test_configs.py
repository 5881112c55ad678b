"""The paper configs load, validate and hold the published hyperparameters."""
import importlib.util
import os

import pytest
import torch

import main
import scheduler as schedules
from common.config import load_config
from common.errors import ConfigError

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'configs')
HAVE_TIMM = importlib.util.find_spec('timm') is not None


def load(name):
    return load_config(os.path.join(CONFIGS, name), defaults=main.DEFAULTS)


@pytest.mark.parametrize('name', ['cifar.yaml', 'imagenet_b1.yaml', 'imagenet_b1_kd.yaml', 'imagenet_b1_mbv1.yaml'])
def test_configs_validate(name):
    cfg = load(name)
    runs = main.validate(cfg)
    assert runs[0][0] in ('dist', 'dist_t4', 'kd')


def test_b2_config_needs_timm_for_its_teacher():
    cfg = load('imagenet_b2.yaml')
    if HAVE_TIMM:
        main.validate(cfg)
    else:
        with pytest.raises(ConfigError, match='timm'):
            main.validate(cfg)


def test_published_hyperparameters():
    c = load('cifar.yaml')
    assert (c.kd, c.ori_loss_weight, c.kd_loss_weight, c.lr, c.batch_size, c.epochs) == \
        ('dist_t4', 1.0, 2.0, 0.05, 64, 240)
    assert c.sgd_no_nesterov and c.opt_no_filter and c.weight_decay == 5e-4 and c.smoothing == 0
    spe = 781                                                    # 50000 // 64
    s = schedules.build_scheduler(c.sched, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], c.lr),
                                  c.warmup_epochs * spe, c.warmup_lr, c.decay_epochs * spe, c.decay_rate,
                                  c.epochs * spe, spe)
    lrs = [s.lr_at(e * spe + spe // 2) for e in (0, 149, 150, 179, 180, 210, 239)]
    assert lrs == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005, 0.00005, 0.00005])
    b1 = load('imagenet_b1.yaml')
    assert (b1.kd, b1.kd_loss_weight, b1.batch_size, b1.lr, b1.decay_epochs, b1.weight_decay) == \
        ('dist', 2.0, 32, 0.1, 30, 1e-4)
    assert not b1.sgd_no_nesterov and not b1.opt_no_filter and b1.teacher_model == 'tv_resnet34'
    kd = load('imagenet_b1_kd.yaml')
    assert (kd.kd, kd.ori_loss_weight, kd.kd_loss_weight) == ('kd', 0.9, 1.0)
    b2 = load('imagenet_b2.yaml')
    assert (b2.opt, b2.opt_eps, b2.lr, b2.batch_size, b2.epochs, b2.warmup_epochs, b2.warmup_lr) == \
        ('rmsproptf', 1e-3, 0.048, 96, 450, 3, 1e-6)
    assert (b2.decay_epochs, b2.decay_rate, b2.smoothing, b2.aa, b2.reprob, b2.remode) == \
        (2.4, 0.97, 0.1, 'rand-m9-mstd0.5', 0.2, 'pixel')
    assert b2.model_ema and b2.model_ema_decay == 0.9999 and b2.weight_decay == 1e-5


def test_embedded_default_is_the_three_way_comparison():
    cfg = load_config(os.path.join(CONFIGS, '..', 'cfg.yaml'), defaults=main.DEFAULTS)
    runs = main.validate(cfg)
    assert [r[0] for r in runs] == ['dist_t4', 'kd', '']
    assert cfg.data.name == 'synthetic' and cfg.data.image_size == 32 and cfg.teacher_epochs > 0
    stages = main.plan_stages(cfg, runs)
    assert [s['name'] for s in stages] == ['teacher', 'student:dist_t4', 'student:kd', 'student:none']
    assert len({s['epochs'] for s in stages[1:]}) == 1          # every student gets the same steps
