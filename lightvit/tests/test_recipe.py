"""The training recipe: optimizer groups, schedule, mixup/cutmix targets, loss, RandAugment, RandomErasing."""
import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import augment
import model as M
from loss import soft_target_cross_entropy
from mixup import Mixup, mixup_target, smooth_one_hot
from optim import build_optimizer, param_groups
from sched import warmup_cosine


def _small():
    return M.LightViT(img_size=32, embed_dims=[16, 32], num_layers=[1, 1], num_heads=[1, 2], mlp_ratios=[8, 4],
                      num_tokens=2, window_size=2, neck_dim=16, num_classes=3)


def test_weight_decay_groups():
    net = _small()
    no_decay, decay = param_groups(net, 0.04)
    names = {id(p): n for n, p in net.named_parameters()}
    nd = {names[id(p)] for p in no_decay['params']}
    d = {names[id(p)] for p in decay['params']}
    assert no_decay['weight_decay'] == 0. and decay['weight_decay'] == 0.04
    assert 'global_token' in nd and 'stages.0.0.attn.relative_position_bias_table' in nd
    assert 'head.bias' in nd and 'stages.0.0.norm1.weight' in nd and 'patch_embed.stem.1.weight' in nd
    assert 'head.weight' in d and 'stages.0.0.attn.qkv.weight' in d and 'patch_embed.stem.0.weight' in d
    assert all(net.get_parameter(n).ndim > 1 for n in d)
    assert len(nd) + len(d) == len(list(net.parameters()))
    opt = build_optimizer(net, 1e-3, 0.04)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults['eps'] == 1e-8
    assert opt.defaults['betas'] == (0.9, 0.999)


def test_schedule_staircase_warmup_then_cosine():
    kw = dict(steps_per_epoch=10, warmup_epochs=4, base_lr=1e-3, warmup_lr=1e-7, min_lr=1e-6, total_steps=100)
    assert warmup_cosine(0, **kw) == 1e-7
    assert warmup_cosine(9, **kw) == 1e-7  # constant inside an epoch
    assert math.isclose(warmup_cosine(10, **kw), 1e-7 + (1e-3 - 1e-7) / 4)
    assert math.isclose(warmup_cosine(39, **kw), 1e-7 + (1e-3 - 1e-7) * 3 / 4)
    assert math.isclose(warmup_cosine(40, **kw), 1e-3)
    assert math.isclose(warmup_cosine(70, **kw), 1e-6 + 0.5 * (1e-3 - 1e-6))  # half way through the cosine
    assert math.isclose(warmup_cosine(100, **kw), 1e-6)
    lrs = [warmup_cosine(s, **kw) for s in range(40, 100)]
    assert all(b < a for a, b in zip(lrs, lrs[1:]))  # per-iteration decay


def test_smoothed_and_mixed_targets_by_hand():
    y = torch.tensor([0, 2, 1])
    t = smooth_one_hot(y, 4, 0.1)
    assert torch.allclose(t[0], torch.tensor([0.925, 0.025, 0.025, 0.025]))
    m = mixup_target(y, 4, lam=0.7, smoothing=0.1)
    # row 0 mixes label 0 with the reversed batch's label 1
    assert torch.allclose(m[0], 0.7 * torch.tensor([0.925, .025, .025, .025]) +
                          0.3 * torch.tensor([.025, 0.925, .025, .025]))
    assert torch.allclose(m.sum(1), torch.ones(3))


class _FixedRng:
    def __init__(self, rand, beta, ints=(1, 1)):
        self._rand, self._beta, self._ints = list(rand), beta, list(ints)

    def rand(self):
        return self._rand.pop(0)

    def beta(self, a, b):
        return self._beta

    def randint(self, lo, hi):
        return self._ints.pop(0)


def test_mixup_mixes_with_the_reversed_batch():
    mix = Mixup(mixup_alpha=0.2, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0, num_classes=3)
    mix.rng = _FixedRng([0.0, 0.9], beta=0.75)  # apply, then 0.9 >= switch_prob -> mixup
    x = torch.randn(2, 3, 4, 4)
    y = torch.tensor([0, 1])
    xm, t = mix(x.clone(), y)
    assert torch.allclose(xm[0], 0.75 * x[0] + 0.25 * x[1])
    assert torch.allclose(t[0], torch.tensor([0.75, 0.25, 0.]))


def test_cutmix_pastes_a_box_and_corrects_lambda():
    mix = Mixup(mixup_alpha=0.2, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0, num_classes=2)
    mix.rng = _FixedRng([0.0, 0.1], beta=0.75, ints=(1, 1))  # cutmix, lam 0.75 -> 4x4 cut of 8x8 at (1, 1)
    x = torch.randn(2, 1, 8, 8)
    xm, t = mix(x.clone(), torch.tensor([0, 1]))
    # cut side int(8 * sqrt(0.25)) = 4, centre (1, 1) -> rows/cols clipped to [0, 3)
    assert torch.equal(xm[0, :, :3, :3], x[1, :, :3, :3]) and torch.equal(xm[0, :, 3:], x[0, :, 3:])
    lam = 1 - 9 / 64
    assert torch.allclose(t[0], torch.tensor([lam, 1 - lam]))


def test_no_mixing_gives_label_smoothing_only():
    mix = Mixup(mixup_alpha=0., cutmix_alpha=0., label_smoothing=0.1, num_classes=5)
    x = torch.randn(4, 3, 8, 8)
    xm, t = mix(x.clone(), torch.arange(4))
    assert torch.equal(xm, x)
    assert torch.allclose(t, smooth_one_hot(torch.arange(4), 5, 0.1))


def test_soft_target_cross_entropy_matches_torch():
    logits = torch.randn(6, 5)
    y = torch.randint(0, 5, (6,))
    assert torch.allclose(soft_target_cross_entropy(logits, F.one_hot(y, 5).float()), F.cross_entropy(logits, y))
    assert torch.allclose(soft_target_cross_entropy(logits, smooth_one_hot(y, 5, 0.1)),
                          F.cross_entropy(logits, y, label_smoothing=0.1))


def _img(size=40):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_rand_augment_parsing_and_levels():
    ra = augment.parse_rand_augment('rand-m9-mstd0.5', fill=(1, 2, 3))
    assert (ra.magnitude, ra.magnitude_std, ra.num_layers, ra.prob) == (9., 0.5, 2, 0.5)
    assert len(ra.ops) == 19 and 'Distort' in ra.ops and 'TranslateXRel' in ra.ops
    with pytest.raises(ValueError):
        augment.parse_rand_augment('rand-q3')
    with pytest.raises(ValueError):
        augment.parse_rand_augment('auto-m9')
    levels = {name: fn(9.) for name, (_, fn) in augment.OPS.items() if fn is not None}
    assert levels['PosterizeTpu'] == (3,) and levels['Solarize'] == (230,) and levels['SolarizeAdd'] == (99,)
    assert math.isclose(levels['Color'][0], 1.72) and levels['Distort'] == (19,)
    assert math.isclose(abs(levels['Rotate'][0]), 27.) and math.isclose(abs(levels['ShearX'][0]), 0.27)


def test_every_op_keeps_size_and_some_change_pixels():
    ra = augment.parse_rand_augment('rand-m9-mstd0.5')
    img = _img()
    random.seed(0)
    changed = 0
    for name in ra.ops:
        out = ra.apply_op(img, name, 9.)
        assert out.size == img.size and out.mode == 'RGB', name
        changed += not np.array_equal(np.asarray(out), np.asarray(img))
    assert changed >= 15
    # Invert and a zero translation by hand
    assert np.array_equal(np.asarray(ra.apply_op(img, 'Invert', 9.)), 255 - np.asarray(img))
    assert np.array_equal(np.asarray(augment.translate_x_rel(img, 0., (0, 0, 0), Image.BILINEAR)), np.asarray(img))


def test_random_erasing():
    x = torch.zeros(3, 32, 32)
    random.seed(0)
    torch.manual_seed(0)
    out = augment.RandomErasing(1.0, mode='pixel')(x.clone())
    erased = (out != 0).any(0)
    frac = erased.float().mean().item()
    assert 0.02 * 0.9 <= frac <= 1 / 3 + 0.05
    rows, cols = erased.nonzero(as_tuple=True)
    box = erased[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert box.all()  # one rectangular box
    assert torch.equal(augment.RandomErasing(0.0)(x.clone()), x)
    with pytest.raises(ValueError):
        augment.RandomErasing(0.5, mode='blur')


def test_train_and_test_transforms():
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    tr = augment.build_train_transform(32, mean, std)
    te = augment.build_test_transform(224, mean, std)
    assert tr(_img(48)).shape == (3, 32, 32)
    t = te(_img(300))
    assert t.shape == (3, 224, 224)
    names = [type(o).__name__ for o in te.transforms]
    assert names[:2] == ['Resize', 'CenterCrop'] and te.transforms[0].size == 256


def test_posterize_at_magnitude_zero_keeps_no_bits():
    # PosterizeTpu keeps int(m / 10 * 4) bits: 0 at m = 0, which newer PIL refuses; it must give a black image
    img = Image.fromarray((np.random.default_rng(0).random((24, 24, 3)) * 255).astype('uint8'))
    black = augment.posterize(img, 0)
    assert black.size == img.size and np.asarray(black).max() == 0
    assert np.asarray(augment.posterize(img, 4)).max() > 0
