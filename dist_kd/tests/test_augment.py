"""The RandAugment pool of the official B2 recipe and random erasing."""
import random

import numpy as np
import pytest
import torch
from PIL import Image

import augment


def _image(size=48, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype('uint8'))


def test_pool_and_parsing():
    assert len(augment.RAND_TRANSFORMS) == 19 and len(set(augment.RAND_TRANSFORMS)) == 19
    assert {'Distort', 'Zoom', 'Blur', 'Skew', 'PosterizeTpu', 'SolarizeAdd'} <= set(augment.RAND_TRANSFORMS)
    ra = augment.rand_augment_transform('rand-m9-mstd0.5')
    assert ra.num_layers == 2 and len(ra.ops) == 19
    assert all(op.prob == 0.5 and op.magnitude == 9 and op.magnitude_std == 0.5 for op in ra.ops)
    assert augment.rand_augment_transform('rand-m7-n3').num_layers == 3
    for bad in ('auto-m9', 'rand-x9', 'rand-m'):
        with pytest.raises(ValueError):
            augment.rand_augment_transform(bad)


def test_every_op_keeps_size_and_mode():
    img = _image()
    random.seed(0)
    for name in augment.RAND_TRANSFORMS:
        out = augment.AugmentOp(name, prob=1.0, magnitude=9, magnitude_std=0.5, fill=(124, 116, 104))(img)
        assert out.size == img.size and out.mode == 'RGB', name


def test_op_arguments():
    img = _image()
    a = np.asarray(img).astype(int)
    # Zoom is a zoom-out onto a black canvas: the corners become 0
    z = np.asarray(augment.AugmentOp('Zoom', 1.0, 9)(img))
    assert z[0, 0].sum() == 0 and z[-1, -1].sum() == 0
    # Distort is the identity below magnitude 10 (one tile) and a real distortion from 10 on
    assert np.array_equal(np.asarray(augment.AugmentOp('Distort', 1.0, 9)(img)), a)
    assert np.abs(np.asarray(augment.AugmentOp('Distort', 1.0, 10)(img)).astype(int) - a).mean() > 5
    # Invert and Solarize(256 l) by definition
    assert np.array_equal(np.asarray(augment.AugmentOp('Invert', 1.0, 9)(img)), 255 - a)
    sol = np.asarray(augment.AugmentOp('Solarize', 1.0, 5)(img)).astype(int)   # threshold int(0.5 * 256) = 128
    assert np.array_equal(sol, np.where(a >= 128, 255 - a, a))
    add = np.asarray(augment.AugmentOp('SolarizeAdd', 1.0, 10)(img)).astype(int)   # + 110 below 128
    assert np.array_equal(add, np.where(a < 128, np.minimum(a + 110, 255), a))
    post = np.asarray(augment.AugmentOp('PosterizeTpu', 1.0, 5)(img)).astype(int)   # keep int(0.5 * 4) = 2 bits
    assert np.array_equal(post, a & 0b11000000)
    # probability 0: untouched
    assert augment.AugmentOp('Rotate', 0.0, 9)(img) is img


def test_ops_drawn_with_replacement():
    np.random.seed(0)
    calls = []

    class Rec:
        def __init__(self, i):
            self.i, self.name = i, str(i)

        def __call__(self, img):
            calls.append(self.i)
            return img

    ra = augment.RandAugment([Rec(i) for i in range(3)], num_layers=2)
    pairs = []
    for _ in range(200):
        calls.clear()
        ra(None)
        pairs.append(tuple(calls))
    assert all(len(p) == 2 for p in pairs)
    assert any(p[0] == p[1] for p in pairs)          # the same op may be drawn twice


def test_random_erasing_pixel_mode():
    random.seed(1)
    torch.manual_seed(1)
    x = torch.zeros(3, 32, 32)
    out = augment.RandomErasing(probability=1.0, mode='pixel')(x.clone())
    changed = (out != 0).any(0)
    area = changed.sum().item()
    assert 0.02 * 1024 * 0.5 < area <= 1024 / 3 * 1.2
    rows, cols = changed.nonzero(as_tuple=True)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert box.item() == area                          # one rectangle
    assert torch.equal(augment.RandomErasing(probability=0.0, mode='pixel')(x.clone()), x)
    with pytest.raises(ValueError):
        augment.RandomErasing(mode='noise')


def test_pipelines():
    img = _image(64)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    t = augment.build_train_transform('imagenet', 32, mean, std, aa='rand-m9-mstd0.5', reprob=0.2)
    assert t(img).shape == (3, 32, 32)
    v = augment.build_val_transform('imagenet', 32, mean, std)
    assert v(img).shape == (3, 32, 32)
    c = augment.build_train_transform('cifar', 64, mean, std)
    assert c(img).shape == (3, 64, 64)
    with pytest.raises(ValueError):
        augment.build_train_transform('voc', 32, mean, std)


def test_posterize_at_magnitude_zero_keeps_no_bits():
    # PosterizeTpu keeps int(m / 10 * 4) bits: 0 at m = 0, which newer PIL refuses; it must give a black image
    img = _image()
    black = augment.posterize(img, 0, None, None)
    assert black.size == img.size and np.asarray(black).max() == 0
    assert np.asarray(augment.posterize(img, 4, None, None)).max() > 0
