"""Datasets and transforms of the DARTS protocol, on top of ``common.data`` (glue: imports common)."""
import torch
from torchvision import transforms as T

from common.data import DATASET_STATS, build_dataset
from utils import Cutout

CIFAR_MEAN = [0.49139968, 0.48215827, 0.44653124]
CIFAR_STD = [0.24703233, 0.24348505, 0.26158768]
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def imagenet_like(cfg):
    return cfg.data.name in ('imagefolder', 'imagenet')


def stats(cfg):
    if cfg.data.name in ('cifar10', 'cifar100'):
        return CIFAR_MEAN, CIFAR_STD
    if imagenet_like(cfg):
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(map(list, DATASET_STATS.get(cfg.data.name, DATASET_STATS['synthetic'])))


def cifar_transform(cfg, train, cutout=False, cutout_length=16):
    """RandomCrop(size, padding=size/8) + flip + normalise (+ cutout after normalisation) / normalise."""
    mean, std = stats(cfg)
    size = cfg.data.image_size
    ops = [T.RandomCrop(size, padding=size // 8), T.RandomHorizontalFlip()] if train else []
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    if train and cutout:
        ops.append(Cutout(cutout_length))
    return T.Compose(ops)


def imagenet_transform(cfg, train):
    """RandomResizedCrop + flip + ColorJitter(0.4, 0.4, 0.4, 0.2) / Resize(size/0.875) + CenterCrop."""
    size = cfg.data.image_size
    if train:
        ops = [T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ColorJitter(0.4, 0.4, 0.4, 0.2)]
    else:
        ops = [T.Resize(int(round(size / 0.875))), T.CenterCrop(size)]
    return T.Compose(ops + [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def make_dataset(cfg, split, transform):
    options = {}
    if cfg.data.name == 'synthetic':
        options = dict(num_classes=cfg.data.num_classes, image_size=cfg.data.image_size,
                       train_size=cfg.data.train_size, test_size=cfg.data.test_size, seed=cfg.data.seed)
    return build_dataset(cfg.data.name, cfg.data.root, split=split, transform=transform, **options)


def num_classes(ds):
    while isinstance(ds, torch.utils.data.Subset):
        ds = ds.dataset
    return len(ds.classes)


def search_split(cfg):
    """DARTS search data: the first ``train_portion`` of the training set trains the weights, the rest the
    architecture (both with the training augmentation, as in ``train_search.py``). ``data.subset`` > 0 keeps
    only the first that many training images."""
    full = make_dataset(cfg, 'train', cifar_transform(cfg, True))
    n = len(full) if cfg.data.subset <= 0 else min(cfg.data.subset, len(full))
    split = int(cfg.train_portion * n)
    return (torch.utils.data.Subset(full, list(range(split))), torch.utils.data.Subset(full, list(range(split, n))),
            num_classes(full))
