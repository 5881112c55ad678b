"""Every shipped config parses against DEFAULTS and validates (with a teacher given), and keeps the card's values."""
import glob
import os

import pytest

import main
from common.config import load_config

FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(FOLDER, 'configs', '*.yaml'))) + [os.path.join(FOLDER, 'cfg.yaml')]


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_validates(path):
    cfg = load_config(path, ['teacher.ckpt=teacher.pth'], defaults=main.DEFAULTS)
    main.validate(cfg)
    names = [s['name'] for s in main.plan_stages(cfg)]
    assert 'tokens' in names and 'student:maskd' in names


def test_paper_settings():
    load = lambda name: load_config(os.path.join(FOLDER, 'configs', name), defaults=main.DEFAULTS)
    r, f, s = load('cfg_det_retinanet.yaml'), load('cfg_det_fasterrcnn.yaml'), load('cfg_seg_deeplabv3.yaml')
    assert (r.loss_weight, r.custom_mask_warmup, r.grad_clip, r.warmup_iters) == (7.0, 7000, 35.0, 1000)
    assert r.init_neck_head_from_teacher and r.extra_head_losses == [{'type': 'l1', 'weight': 1.0}]
    assert (f.loss_weight, f.custom_mask_warmup, f.extra_head_losses[0]['type']) == (1.0, 7330, 'smooth_l1')
    assert (r.tokens.iters, r.tokens.lr, r.tokens.weight_decay, r.num_tokens) == (2000, 0.01, 1e-3, 6)
    assert (s.num_tokens, s.tokens.iters, s.tokens.schedule, s.weight_decay, s.lr) == (8, 10000, 'poly', 5e-4, 0.02)
    assert load('cfg_det_retinanet_x101.yaml').teacher.backbone == 'resnext101_64x4d'
