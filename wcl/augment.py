"""Augmentations of WCL: SimCLR's recipe, the weaker MoCo-v2 recipe of the warm-up epochs, eval, multi-crop."""
import random

from PIL import ImageFilter
import torchvision.transforms as T

__all__ = ['GaussianBlur', 'moco_aug', 'simclr_aug', 'eval_aug', 'get_augment', 'MultiCrop', 'IMAGENET_STATS']

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class GaussianBlur:
    """PIL Gaussian blur with ``radius = sigma ~ U(sigma_min, sigma_max)``."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x):
        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def simclr_aug(size=224, stats=IMAGENET_STATS, min_scale=0.08):
    """Both views after the warm-up: crop (0.08-1), flip, strong colour jitter, grey, blur."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=(min_scale, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([GaussianBlur()], p=0.5),
        T.ToTensor(), T.Normalize(*stats)])


def moco_aug(size=224, stats=IMAGENET_STATS):
    """The weaker MoCo-v2 recipe of the first ``warm_up`` epochs (note: flip after the colour ops)."""
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([GaussianBlur()], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(), T.Normalize(*stats)])


def eval_aug(size=224, stats=IMAGENET_STATS, resize=None):
    """``Resize(256) -> CenterCrop(224)`` at ImageNet size; small images (``resize=0``) only normalised."""
    if resize is None:
        resize = int(round(size * 256 / 224)) if size >= 128 else 0
    ops = [T.Resize(resize), T.CenterCrop(size)] if resize else [T.Resize(size)]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(*stats)])


def linear_aug(size=224, stats=IMAGENET_STATS):
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(*stats)])


def get_augment(kind, size=224, stats=IMAGENET_STATS, min_scale=0.08):
    """``kind`` in ``simclr``, ``moco``, ``eval``, ``linear``; ``min_scale`` is the SimCLR crop's lower bound."""
    table = {'simclr': simclr_aug, 'moco': moco_aug, 'eval': eval_aug, 'linear': linear_aug}
    if kind not in table:
        raise ValueError(f"augmentation '{kind}' is not one of {', '.join(table)}")
    if kind == 'simclr':
        return simclr_aug(size, stats, min_scale)
    return table[kind](size, stats)


class MultiCrop:
    """Two global views of ``global_aug`` plus ``n_small`` low-resolution crops (multi-crop option).

    Returns ``[g1, g2, s1, ..., s_n]``; the small crops use the global recipe's colour ops at ``size`` with
    ``scale``.
    """

    def __init__(self, global_aug, n_small=6, size=96, scale=(0.05, 0.14), stats=IMAGENET_STATS):
        self.global_aug = global_aug
        self.n_small = n_small
        self.small_aug = T.Compose([
            T.RandomResizedCrop(size, scale=tuple(scale)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.RandomApply([GaussianBlur()], p=0.5),
            T.ToTensor(), T.Normalize(*stats)])

    def __call__(self, x):
        return [self.global_aug(x), self.global_aug(x)] + [self.small_aug(x) for _ in range(self.n_small)]
