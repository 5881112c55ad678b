"""Data glue: SimMatch's augmentations, the labeled (with bank index) and unlabeled (weak, strong) datasets.

Augmentations (``style``):
* ``imagenet`` (official): ``weak_aug`` = RandomResizedCrop(scale 0.2-1) + flip; the strong view is ``moco_aug``
  (MoCo v2 colour jitter, grey, blur) or, with ``randaug``, ``rand_aug`` (RRC + flip + RandAugment(2, 10));
  evaluation resizes to size*256/224 and centre-crops.
* ``cifar`` (USB): weak = RandomCrop(size, padding=size*(1-crop_ratio), reflect) + flip; strong = the same crop
  and flip + RandAugment(3, 5) with Cutout; evaluation = the plain image.
"""
import os

import torch
from torchvision import transforms as T

from common.data import DATASET_STATS, CachedDataset, MultiView, build_dataset, labeled_subset
from common.errors import ConfigError, DatasetError
from randaugment import RandAugmentImageNet, RandAugmentMC

__all__ = ['GaussianBlur', 'weak_aug', 'moco_aug', 'rand_aug', 'cifar_weak_aug', 'cifar_strong_aug', 'val_aug',
           'TwoCropsTransform', 'IndexedSubset', 'ImageNetPercent', 'read_split_file',
           'unlabeled_indices', 'build_ssl_datasets']


class GaussianBlur:
    """PIL Gaussian blur with radius ~ U(sigma[0], sigma[1]) (SimCLR / MoCo v2)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        from PIL import ImageFilter
        radius = float(torch.empty(1).uniform_(self.sigma[0], self.sigma[1]))
        return img.filter(ImageFilter.GaussianBlur(radius=radius))


def _to_tensor(mean, std):
    return [T.ToTensor(), T.Normalize(mean, std)]


def weak_aug(size=224, mean=DATASET_STATS['imagenet'][0], std=DATASET_STATS['imagenet'][1]):
    return T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip()] + _to_tensor(mean, std))


def moco_aug(size=224, mean=DATASET_STATS['imagenet'][0], std=DATASET_STATS['imagenet'][1]):
    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), T.RandomGrayscale(p=0.2),
        T.RandomApply([GaussianBlur((0.1, 2.0))], p=0.5)] + _to_tensor(mean, std))


def rand_aug(size=224, mean=DATASET_STATS['imagenet'][0], std=DATASET_STATS['imagenet'][1]):
    return T.Compose([T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
                      RandAugmentImageNet(2, 10)] + _to_tensor(mean, std))


def _cifar_crop(size, crop_ratio):
    return [T.RandomCrop(size, padding=int(size * (1 - crop_ratio)), padding_mode='reflect'),
            T.RandomHorizontalFlip()]


def cifar_weak_aug(size=32, mean=DATASET_STATS['cifar10'][0], std=DATASET_STATS['cifar10'][1], crop_ratio=0.875):
    return T.Compose(_cifar_crop(size, crop_ratio) + _to_tensor(mean, std))


def cifar_strong_aug(size=32, mean=DATASET_STATS['cifar10'][0], std=DATASET_STATS['cifar10'][1],
                     crop_ratio=0.875):
    return T.Compose(_cifar_crop(size, crop_ratio) + [RandAugmentMC(3, 5)] + _to_tensor(mean, std))


def val_aug(size, mean, std, style):
    if style == 'imagenet':
        return T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size)] + _to_tensor(mean, std))
    return T.Compose([T.Resize(size), T.CenterCrop(size)] + _to_tensor(mean, std))


class TwoCropsTransform(MultiView):
    """The (weak, strong) pair of one unlabeled image."""

    def __init__(self, transform1, transform2):
        super().__init__([transform1, transform2])


class IndexedSubset(torch.utils.data.Dataset):
    """``dataset`` restricted to ``indices`` with its own ``transform``; with ``return_index`` it yields
    ``(image, label, i)`` where ``i`` is the position in the subset, i.e. the memory-bank slot."""

    def __init__(self, dataset, indices, transform=None, return_index=False):
        self.dataset, self.indices = dataset, list(indices)
        self.transform, self.return_index = transform, return_index
        self.targets = [dataset.targets[i] for i in self.indices]
        self.classes = dataset.classes

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        img, label = self.dataset[self.indices[i]]
        if self.transform is not None:
            img = self.transform(img)
        return (img, label, i) if self.return_index else (img, label)


def read_split_file(dataset, split_file):
    """Indices of the images named in ``split_file`` (one index or file name per line)."""
    if not os.path.isfile(split_file):
        raise DatasetError(
            f"split file '{split_file}' does not exist; for ImageNet download the official list, e.g. "
            f"curl -LO https://raw.githubusercontent.com/KyleZheng1997/simmatch/main/semi_files/"
            f"{os.path.basename(split_file)} (13 or 128 image names per class), and set data.split_file")
    return labeled_subset(dataset, file_list=split_file)


def unlabeled_indices(num_images, labeled, include_labeled):
    """Every image (USB's ``include_lb_to_ulb``) or the complement of the labeled ones (ImageNet 99p/90p)."""
    if include_labeled:
        return list(range(num_images))
    chosen = set(labeled)
    return [i for i in range(num_images) if i not in chosen]


class ImageNetPercent(IndexedSubset):
    """The labeled (``labeled=True``) or unlabeled part of an ImageNet train folder given by a split file of
    image names (the official ``semi_files/split_1p_index.txt`` / ``split_10p_index.txt``).

    The unlabeled part is the complement of the labeled names (the official 99p/90p lists are not public), or the
    whole train set with ``include_labeled=True``.
    """

    def __init__(self, split_file, labeled=True, transform=None, return_index=False, root=None,
                 include_labeled=False, dataset=None):
        if dataset is None:
            dataset = build_dataset('imagefolder', root, split='train')
        lab = read_split_file(dataset, split_file)
        indices = lab if labeled else unlabeled_indices(len(dataset), lab, include_labeled)
        super().__init__(dataset, indices, transform, return_index)


def build_ssl_datasets(cfg):
    """``(labeled, unlabeled, test, num_classes)`` from ``cfg.data``: the labeled set yields
    ``(img, label, slot)``, the unlabeled set ``([weak, strong], label)``, the test set ``(img, label)``."""
    d = cfg.data
    if d.style not in ('imagenet', 'cifar'):
        raise ConfigError(f"data.style must be 'imagenet' or 'cifar', got '{d.style}'")
    name = d.name
    default_stats = DATASET_STATS.get(name, DATASET_STATS['imagenet'])
    mean, std = tuple(d.mean or default_stats[0]), tuple(d.std or default_stats[1])
    size = d.image_size
    options = {}
    if name == 'synthetic':
        options = dict(num_classes=d.num_classes, image_size=d.image_size, train_size=d.train_size,
                       test_size=d.test_size)
    train = build_dataset(name, d.root, split='train', **options)
    test = build_dataset(name, d.root, split='test', **options)
    if d.cache:
        train, test = CachedDataset(train), CachedDataset(test)

    if d.style == 'imagenet':
        t_weak = weak_aug(size, mean, std)
        t_strong = rand_aug(size, mean, std) if cfg.randaug else moco_aug(size, mean, std)
    else:
        t_weak = cifar_weak_aug(size, mean, std, d.crop_ratio)
        t_strong = cifar_strong_aug(size, mean, std, d.crop_ratio)

    num_classes = len(train.classes)
    if d.split_file:
        lab = read_split_file(train, d.split_file)
    else:
        if d.num_labels % num_classes != 0:
            raise ConfigError(f'data.num_labels={d.num_labels} must be a multiple of the number of classes '
                              f'({num_classes}): the labeled subset is class-balanced')
        lab = labeled_subset(train, num_per_class=d.num_labels // num_classes, seed=d.label_seed)
    labeled = IndexedSubset(train, lab, t_weak, return_index=True)

    ulb_base, ulb = train, unlabeled_indices(len(train), lab, d.include_lb_to_ulb)
    if d.unlabeled_split:  # STL-10: its 100k unlabeled images join the unlabeled stream
        extra = build_dataset(name, d.root, split=d.unlabeled_split)
        ulb_base = torch.utils.data.ConcatDataset([train, extra])
        ulb_base.targets = list(train.targets) + [-1] * len(extra)
        ulb_base.classes = train.classes
        ulb = ulb + list(range(len(train), len(train) + len(extra)))
    unlabeled = IndexedSubset(ulb_base, ulb, TwoCropsTransform(t_weak, t_strong))
    test = IndexedSubset(test, range(len(test)), val_aug(size, mean, std, d.style))
    return labeled, unlabeled, test, num_classes
