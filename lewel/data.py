"""LEWEL data pipelines (official ``data/transforms.py`` and ``data/base_dataset.py``).  PIL in, tensors out.

Imports only torchvision, numpy and the standard library.  Dataset *reading* lives in ``common.data`` (ImageNet
is ``imagefolder`` with ``root/{train,val}/<class>/*``); this module holds the augmentations, the two-view
wrapper, and the per-class percentage subsets of the kNN monitor.
"""
import random

import numpy as np
from PIL import ImageFilter
from torchvision import transforms

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class GaussianBlur:
    """PIL ``GaussianBlur(radius=sigma)`` with sigma ~ U(sigma[0], sigma[1])."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = tuple(sigma)

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self):
        return f'{type(self).__name__}(sigma={self.sigma})'


def _byol_view(size, mean, std, blur_p, solarize_p, crop_scale, blur_sigma):
    ops = [transforms.RandomResizedCrop(size, scale=tuple(crop_scale)),
           transforms.RandomHorizontalFlip(),
           transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
           transforms.RandomGrayscale(p=0.2)]
    if blur_p > 0:
        ops.append(transforms.RandomApply([GaussianBlur(blur_sigma)], p=blur_p))
    if solarize_p > 0:
        ops.append(transforms.RandomSolarize(threshold=128, p=solarize_p))
    return transforms.Compose(ops + [transforms.ToTensor(), transforms.Normalize(mean, std)])


def get_byol_tranforms(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_scale=(0.2, 1.0),
                       blur_sigma=(0.1, 2.0)):
    """(view-1, view-2) pipelines of LEWEL_B (name spelled as in the official code).

    Both: RandomResizedCrop(size, scale 0.2-1) -> flip -> ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8 -> grayscale
    p 0.2.  View 1: blur p 1.0, no solarize.  View 2: blur p 0.1, Solarize(128) p 0.2.
    """
    return (_byol_view(size, mean, std, 1.0, 0.0, crop_scale, blur_sigma),
            _byol_view(size, mean, std, 0.1, 0.2, crop_scale, blur_sigma))


def moco_v2_transform(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_scale=(0.2, 1.0),
                      blur_sigma=(0.1, 2.0)):
    """MoCo v2 augmentation (LEWEL_M): RRC(0.2-1), ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, grayscale p 0.2,
    blur p 0.5, flip.  The same pipeline for both views."""
    return transforms.Compose([
        transforms.RandomResizedCrop(size, scale=tuple(crop_scale)),
        transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        transforms.RandomGrayscale(p=0.2),
        transforms.RandomApply([GaussianBlur(blur_sigma)], p=0.5),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(mean, std)])


class TwoCropsTransform:
    """``[t1(x), t2(x)]``: the two views of one image."""

    def __init__(self, transform1, transform2=None):
        self.transform1, self.transform2 = transform1, transform2 or transform1

    def __call__(self, x):
        return [self.transform1(x), self.transform2(x)]


def eval_transform(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize=256):
    """Validation: Resize(resize) -> CenterCrop(size) (ImageNet: 256 / 224); ``resize=None`` skips both."""
    ops = [] if resize is None else [transforms.Resize(resize), transforms.CenterCrop(size)]
    return transforms.Compose(ops + [transforms.ToTensor(), transforms.Normalize(mean, std)])


def linear_train_transform(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Linear / semi-supervised training: RandomResizedCrop(size) (scale 0.08-1) and flip."""
    return transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                               transforms.ToTensor(), transforms.Normalize(mean, std)])


def keep_index(labels, percent, num_classes=None):
    """Official ``get_keep_index``: for every class, its first ``min(max(1, round(percent * n_c)), n_c)``
    indices (dataset order), classes in increasing order.  ``percent = 1`` keeps everything (in dataset order)."""
    if not 0.0 <= percent <= 1.0:
        raise ValueError(f'percent must be in [0, 1], got {percent}')
    labels = np.asarray(labels)
    if percent >= 1.0:
        return list(range(len(labels)))
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    keep = []
    for c in range(num_classes):
        idx = np.where(labels == c)[0]
        keep.extend(idx[:min(max(1, round(percent * len(idx))), len(idx))].tolist())
    return keep
