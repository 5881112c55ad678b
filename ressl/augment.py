"""ReSSL data augmentations (PIL input).  Imports only torchvision and the standard library.

Two pipelines per image: the *contrastive* (strong) view for the student and the *weak* view for the teacher.
ImageNet: ``moco_aug`` / ``target_aug`` / ``eval_aug`` and the 5-crop ``Multi_Transform`` of the official
repository.  Small/medium datasets: ``get_contrastive_augment`` / ``get_weak_augment`` / ``get_test_augment``
(the author's recipe, issue #5 of the official repository).
"""
import random

from PIL import ImageFilter
from torchvision import transforms

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# dataset -> (training crop size, mean, std)
DATASETS = {
    'cifar10': (32, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    'cifar100': (32, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    'stl10': (64, (0.4408, 0.4279, 0.3867), (0.2682, 0.2610, 0.2686)),
    'tinyimagenet': (64, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    'imagenet': (224, IMAGENET_MEAN, IMAGENET_STD),
}


class GaussianBlur:
    """Gaussian blur with a radius drawn from U(sigma[0], sigma[1]) (PIL ``ImageFilter.GaussianBlur``)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self):
        return f'{type(self).__name__}(sigma={tuple(self.sigma)})'


def _color(strength=(0.4, 0.4, 0.4, 0.1)):
    return [transforms.RandomApply([transforms.ColorJitter(*strength)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
            transforms.RandomApply([GaussianBlur((0.1, 2.0))], p=0.5)]


def _finish(mean, std):
    return [transforms.ToTensor(), transforms.Normalize(mean, std)]


def _stats(dataset, size, mean, std):
    if dataset not in DATASETS and None in (size, mean, std):
        raise ValueError(f'unknown dataset {dataset!r} for augmentation: choose from {sorted(DATASETS)} '
                         'or give size, mean and std')
    d_size, d_mean, d_std = DATASETS.get(dataset, (None, None, None))
    return size or d_size, mean or d_mean, std or d_std


def imagenet_contrastive(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Official ``moco_aug``: crop -> jitter -> grayscale -> blur -> flip (no solarize)."""
    return transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.2, 1.0)), *_color(),
                               transforms.RandomHorizontalFlip(), *_finish(mean, std)])


def imagenet_weak(size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Official ``target_aug``: random resized crop and flip only."""
    return transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.2, 1.0)),
                               transforms.RandomHorizontalFlip(), *_finish(mean, std)])


moco_aug = imagenet_contrastive()
target_aug = imagenet_weak()
eval_aug = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224),
                               *_finish(IMAGENET_MEAN, IMAGENET_STD)])


def get_contrastive_augment(dataset, size=None, mean=None, std=None):
    """Strong view.  ImageNet: ``moco_aug``; other datasets: crop -> flip -> jitter -> grayscale -> blur."""
    size, mean, std = _stats(dataset, size, mean, std)
    if dataset == 'imagenet':
        return imagenet_contrastive(size, mean, std)
    return transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.2, 1.0)),
                               transforms.RandomHorizontalFlip(), *_color(), *_finish(mean, std)])


def get_weak_augment(dataset, size=None, mean=None, std=None):
    """Weak view (teacher): random resized crop (scale 0.2-1) and horizontal flip."""
    size, mean, std = _stats(dataset, size, mean, std)
    return imagenet_weak(size, mean, std)


def get_test_augment(dataset, size=None, mean=None, std=None, resize=None):
    """Evaluation transform.  ImageNet: resize 256 (scaled with ``size``) + centre crop; others: ToTensor +
    Normalize, with a resize to the training size first when ``resize`` (default: on for STL-10, whose 96 px test
    images would otherwise be seen at another resolution than the 64 px training crops)."""
    size, mean, std = _stats(dataset, size, mean, std)
    if dataset == 'imagenet':
        return transforms.Compose([transforms.Resize(round(size * 256 / 224)), transforms.CenterCrop(size),
                                   *_finish(mean, std)])
    if resize is None:
        resize = dataset == 'stl10'
    head = [transforms.Resize(size), transforms.CenterCrop(size)] if resize else []
    return transforms.Compose([*head, *_finish(mean, std)])


def get_linear_augment(dataset, size=None, mean=None, std=None):
    """Linear-probe training transform: ``RandomResizedCrop(size)`` (default scale 0.08-1) + flip."""
    size, mean, std = _stats(dataset, size, mean, std)
    return transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip(),
                               *_finish(mean, std)])


class Multi_Transform:
    """Official multi-crop transform: returns ``[weak, crop_1, ..., crop_n]``.

    The first element is the teacher's weak ``init_size`` crop; then ``nmb_crops[i]`` contrastive crops of size
    ``size_crops[i]`` and scale ``(min_scale_crops[i], max_scale_crops[i])``, each with the ImageNet colour/blur/
    flip recipe.  ``strong=True`` (off in every official script) uses scale min 0.08, jitter (0.8, 0.8, 0.8, 0.2)
    and RandAugment(5, 10) — torchvision's RandAugment here, the official repository ships FixMatch's.
    """

    def __init__(self, size_crops=(224, 192, 160, 128, 96), nmb_crops=(1, 1, 1, 1, 1),
                 min_scale_crops=(0.2, 0.172, 0.143, 0.114, 0.086), max_scale_crops=(1.0, 0.86, 0.715, 0.571, 0.429),
                 init_size=224, strong=False, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        if not len(size_crops) == len(nmb_crops) == len(min_scale_crops) == len(max_scale_crops):
            raise ValueError('size_crops, nmb_crops, min_scale_crops and max_scale_crops must have one entry each')
        self.strong = strong
        jitter = (0.8, 0.8, 0.8, 0.2) if strong else (0.4, 0.4, 0.4, 0.1)
        if strong:
            min_scale_crops = [0.08] * len(size_crops)
        self.trans = [imagenet_weak(init_size, mean, std)]
        for size, n, lo, hi in zip(size_crops, nmb_crops, min_scale_crops, max_scale_crops):
            ops = [transforms.RandomResizedCrop(size, scale=(lo, hi)), *_color(jitter),
                   transforms.RandomHorizontalFlip()]
            if strong:
                ops.append(transforms.RandAugment(num_ops=5, magnitude=10))
            self.trans += [transforms.Compose(ops + _finish(mean, std))] * n

    def __call__(self, img):
        return [t(img) for t in self.trans]

    def __len__(self):
        return len(self.trans)
