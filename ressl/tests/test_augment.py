"""Augmentation pipelines: the exact op order of the card, output sizes and normalisation."""
import random

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

import augment


def pil(size=40, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def op_types(compose):
    out = []
    for t in compose.transforms:
        if isinstance(t, T.RandomApply):
            out.append(('apply', type(t.transforms[0]).__name__, t.p))
        else:
            out.append(type(t).__name__)
    return out


def test_small_dataset_contrastive_order():
    t = augment.get_contrastive_augment('cifar10')
    assert op_types(t) == ['RandomResizedCrop', 'RandomHorizontalFlip', ('apply', 'ColorJitter', 0.8),
                           'RandomGrayscale', ('apply', 'GaussianBlur', 0.5), 'ToTensor', 'Normalize']
    assert t.transforms[0].size == (32, 32) and t.transforms[0].scale == (0.2, 1.0)
    jitter = t.transforms[2].transforms[0]
    assert (jitter.brightness, jitter.hue) == ((0.6, 1.4), (-0.1, 0.1))
    assert t.transforms[-1].mean == (0.4914, 0.4822, 0.4465)


def test_imagenet_contrastive_is_moco_aug_without_solarize():
    assert op_types(augment.moco_aug) == ['RandomResizedCrop', ('apply', 'ColorJitter', 0.8), 'RandomGrayscale',
                                          ('apply', 'GaussianBlur', 0.5), 'RandomHorizontalFlip', 'ToTensor',
                                          'Normalize']
    assert op_types(augment.get_contrastive_augment('imagenet')) == op_types(augment.moco_aug)


def test_weak_view_is_crop_and_flip_only():
    for t in (augment.target_aug, augment.get_weak_augment('stl10')):
        assert op_types(t) == ['RandomResizedCrop', 'RandomHorizontalFlip', 'ToTensor', 'Normalize']
    assert augment.get_weak_augment('stl10').transforms[0].size == (64, 64)


def test_output_shapes_and_normalisation():
    img = pil(96)
    assert augment.get_contrastive_augment('tinyimagenet')(img).shape == (3, 64, 64)
    assert augment.eval_aug(pil(300)).shape == (3, 224, 224)
    # STL-10: 96 px test images are resized to the 64 px training resolution by default (a flag)
    assert augment.get_test_augment('stl10')(img).shape == (3, 64, 64)
    assert augment.get_test_augment('stl10', resize=False)(img).shape == (3, 96, 96)
    assert augment.get_test_augment('cifar10')(pil(32)).shape == (3, 32, 32)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x = augment.get_test_augment('custom', size=8, mean=mean, std=std)(Image.new('RGB', (8, 8), (255, 0, 128)))
    assert torch.allclose(x[:, 0, 0], torch.tensor([2.0, -2.0, (128 / 255 - 0.5) / 0.25]), atol=1e-5)
    with pytest.raises(ValueError, match='unknown dataset'):
        augment.get_weak_augment('mnist')


def test_gaussian_blur_draws_sigma_in_range():
    random.seed(0)
    blur = augment.GaussianBlur((0.1, 2.0))
    img = pil(16)
    out = blur(img)
    assert out.size == img.size and np.asarray(out).std() < np.asarray(img).std()


def test_multi_crop_returns_weak_then_five_crops():
    mt = augment.Multi_Transform()
    views = mt(pil(256))
    assert len(mt) == 6 and [v.shape[-1] for v in views] == [224, 224, 192, 160, 128, 96]
    assert op_types(mt.trans[0]) == ['RandomResizedCrop', 'RandomHorizontalFlip', 'ToTensor', 'Normalize']
    scales = [t.transforms[0].scale for t in mt.trans[1:]]
    assert scales == [(0.2, 1.0), (0.172, 0.86), (0.143, 0.715), (0.114, 0.571), (0.086, 0.429)]
    two = augment.Multi_Transform(size_crops=[16, 8], nmb_crops=[1, 2], min_scale_crops=[0.2, 0.1],
                                  max_scale_crops=[1.0, 0.5], init_size=16)
    assert [v.shape[-1] for v in two(pil(32))] == [16, 16, 8, 8]
    strong = augment.Multi_Transform(size_crops=[16], nmb_crops=[1], min_scale_crops=[0.2], max_scale_crops=[1.0],
                                     init_size=16, strong=True)
    assert strong.trans[1].transforms[0].scale == (0.08, 1.0)
    assert any(isinstance(t, T.RandAugment) for t in strong.trans[1].transforms)
    with pytest.raises(ValueError, match='one entry each'):
        augment.Multi_Transform(size_crops=[1, 2], nmb_crops=[1])
