"""Datasets by name, labeled subsets, multi-view transforms and (distributed) loaders.

``synthetic`` is the embedded default: images generated deterministically from (seed, split, index), so no
files are needed, with real structure: each class is an object of its own shape drawn at a random place, scale,
rotation and colour on a random textured background. ``synthetic_det`` draws several objects per image and
returns torchvision's detection targets (boxes, labels, masks). Real datasets are read from local files with
torchvision's readers and never downloaded.
"""
import math
import os

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from .dist import get_rank, get_world_size, is_distributed
from .errors import DatasetError

__all__ = ['build_dataset', 'num_classes', 'DATASET_STATS', 'SHAPES', 'SyntheticImages', 'SyntheticDetection',
           'labeled_subset', 'MultiView', 'CachedDataset', 'build_loader', 'set_epoch', 'EpochSampler']

# (mean, std) per dataset, for transforms.Normalize
DATASET_STATS = {
    'synthetic': ((0.487, 0.485, 0.482), (0.262, 0.261, 0.262)),
    'synthetic_det': ((0.487, 0.485, 0.482), (0.262, 0.261, 0.262)),
    'cifar10': ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    'cifar100': ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    'stl10': ((0.4408, 0.4279, 0.3867), (0.2682, 0.2610, 0.2686)),
    'svhn': ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    'tinyimagenet': ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    'imagefolder': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

SHAPES = ('circle', 'square', 'triangle', 'plus', 'ring', 'star', 'hexagon', 'crescent', 'arrow', 'hourglass')
_SPLIT_ID = {'train': 0, 'test': 1, 'val': 1}
_SS = 4  # supersampling factor for anti-aliased drawing


# --------------------------------------------------------------------------------------------- drawing
def _hsv(h, s, v):
    """HSV in [0, 1] to an RGB tuple of ints."""
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def _rot(points, cx, cy, angle):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in points]


def _polygon(n, cx, cy, r, phase=0.0):
    return [(cx + r * math.cos(phase + 2 * math.pi * k / n), cy + r * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _draw_shape(draw, shape, cx, cy, r, angle, fill, bg=0):
    """Draw ``shape`` of radius ``r`` centred at (cx, cy), rotated by ``angle``; ``bg`` cuts holes."""
    if shape == 'circle':
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == 'square':
        draw.polygon(_rot(_polygon(4, cx, cy, r * 1.05, math.pi / 4), cx, cy, angle), fill=fill)
    elif shape == 'triangle':
        draw.polygon(_rot(_polygon(3, cx, cy + r * 0.15, r * 1.1, -math.pi / 2), cx, cy, angle), fill=fill)
    elif shape == 'plus':
        w = r * 0.36
        pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w),
               (-w, -w)]
        draw.polygon(_rot([(cx + x, cy + y) for x, y in pts], cx, cy, angle), fill=fill)
    elif shape == 'ring':
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        ri = r * 0.55
        draw.ellipse([cx - ri, cy - ri, cx + ri, cy + ri], fill=bg)
    elif shape == 'star':
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.42
            a = -math.pi / 2 + math.pi * k / 5
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        draw.polygon(_rot(pts, cx, cy, angle), fill=fill)
    elif shape == 'hexagon':
        draw.polygon(_rot(_polygon(6, cx, cy, r), cx, cy, angle), fill=fill)
    elif shape == 'crescent':
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        dx, dy = r * 0.55 * math.cos(angle), r * 0.55 * math.sin(angle)
        draw.ellipse([cx + dx - r * 0.85, cy + dy - r * 0.85, cx + dx + r * 0.85, cy + dy + r * 0.85], fill=bg)
    elif shape == 'arrow':
        w = r * 0.3
        pts = [(-r, -w), (0.1 * r, -w), (0.1 * r, -r * 0.75), (r, 0), (0.1 * r, r * 0.75), (0.1 * r, w), (-r, w)]
        draw.polygon(_rot([(cx + x, cy + y) for x, y in pts], cx, cy, angle), fill=fill)
    elif shape == 'hourglass':
        pts = [(-r * 0.8, -r), (r * 0.8, -r), (0, 0), (r * 0.8, r), (-r * 0.8, r), (0, 0)]
        draw.polygon(_rot([(cx + x, cy + y) for x, y in pts], cx, cy, angle), fill=fill)
    else:
        raise ValueError(shape)


def _background(rng, size, kind='texture'):
    """A random background in muted colours: ``texture`` (stripes, checks, a gradient or smooth noise) or
    ``plain`` (one flat colour with light pixel noise)."""
    h0 = rng.random()
    c1 = np.array(_hsv(h0, rng.uniform(0.0, 0.5), rng.uniform(0.25, 0.9)), dtype=np.float32)
    c2 = np.array(_hsv((h0 + rng.uniform(0.2, 0.8)) % 1, rng.uniform(0.0, 0.5), rng.uniform(0.25, 0.9)),
                  dtype=np.float32)
    if kind == 'plain':
        img = np.broadcast_to(c1[None, None], (size, size, 3)).copy()
        img += rng.normal(0, 6, img.shape).astype(np.float32)
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = rng.integers(4)
    if kind == 0:  # stripes
        a = rng.uniform(0, math.pi)
        f = rng.uniform(2, 6)
        t = 0.5 + 0.5 * np.sin(2 * math.pi * f * (xx * math.cos(a) + yy * math.sin(a)) + rng.uniform(0, 6.3))
    elif kind == 1:  # checks
        f = rng.integers(2, 6)
        t = ((np.floor(xx * f) + np.floor(yy * f)) % 2).astype(np.float32)
    elif kind == 2:  # gradient
        a = rng.uniform(0, 2 * math.pi)
        t = np.clip(0.5 + (xx - 0.5) * math.cos(a) + (yy - 0.5) * math.sin(a), 0, 1)
    else:  # smooth noise
        g = rng.random((5, 5)).astype(np.float32)
        t = np.asarray(Image.fromarray((g * 255).astype(np.uint8)).resize((size, size), Image.BICUBIC),
                       dtype=np.float32) / 255
    img = c1[None, None] * (1 - t[..., None]) + c2[None, None] * t[..., None]
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _object_colour(rng, family=None, families=1):
    if family is None:
        h = rng.random()
    else:  # a colour family per block of classes (datasets with more than 10 classes)
        h = (family + rng.uniform(0.15, 0.85)) / families
    return _hsv(h % 1.0, rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))


def _draw_object(canvas, mask_canvas, rng, shape, colour, cx, cy, r):
    angle = rng.uniform(-0.35, 0.35) if shape not in ('crescent', 'arrow') else rng.uniform(0, 2 * math.pi)
    ImageDraw.Draw(canvas)  # noqa: keep PIL happy about mode
    # draw on a mask first so holes (ring, crescent) cut through to the background
    m = Image.new('L', canvas.size, 0)
    _draw_shape(ImageDraw.Draw(m), shape, cx, cy, r, angle, fill=255, bg=0)
    canvas.paste(Image.new('RGB', canvas.size, colour), (0, 0), m)
    if mask_canvas is not None:
        mask_canvas.paste(m, (0, 0), m)
    return m


class SyntheticImages(torch.utils.data.Dataset):
    """Classification images generated from (seed, split, index): one object of a class-specific shape.

    Class ``c`` is shape ``SHAPES[c % 10]``; with more than 10 classes, ``c // 10`` also fixes the object's
    colour family. Labels are balanced (``index % num_classes``). ``background`` is ``texture`` (default:
    random textures, a strong per-image nuisance cue), ``plain`` (a flat random colour) or ``gray`` (a grey
    object on a flat grey background: shape, size, place and lightness are all that tell images apart, so that
    colour cannot serve as a shortcut; for short self-supervised demos; at most 10 classes).
    """

    def __init__(self, split='train', transform=None, num_classes=10, image_size=32, train_size=5000,
                 test_size=1000, seed=0, background='texture'):
        if split not in _SPLIT_ID:
            raise DatasetError(f"synthetic dataset has splits train and test (val = test), not '{split}'")
        if not 1 <= int(num_classes) <= 100:
            raise DatasetError(f'synthetic dataset supports 1..100 classes, not {num_classes}')
        if int(image_size) < 8:
            raise DatasetError(f'synthetic images must be at least 8 pixels, not {image_size}')
        if background not in ('texture', 'plain', 'gray'):
            raise DatasetError(f"synthetic background must be 'texture', 'plain' or 'gray', not '{background}'")
        if background == 'gray' and int(num_classes) > 10:
            raise DatasetError("synthetic background 'gray' has no colour families: at most 10 classes")
        self.background = background
        self.split, self.transform = split, transform
        self.num_classes, self.image_size, self.seed = int(num_classes), int(image_size), int(seed)
        self.size = int(train_size if _SPLIT_ID[split] == 0 else test_size)
        self.targets = [i % self.num_classes for i in range(self.size)]
        self.classes = [SHAPES[c % 10] + ('' if self.num_classes <= 10 else f'_{c // 10}')
                        for c in range(self.num_classes)]

    def __len__(self):
        return self.size

    def render(self, index):
        label = self.targets[index]
        rng = np.random.default_rng([self.seed, _SPLIT_ID[self.split], index, 7919])
        S = self.image_size * _SS
        if self.background == 'gray':  # a grey object on a flat grey background, lightness apart by >= 0.3
            vb = rng.uniform(0.15, 0.85)
            vo = vb + rng.choice([-1, 1]) * rng.uniform(0.3, 0.6)
            vo = vo if 0.0 <= vo <= 1.0 else vb - (vo - vb)
            img = _background(rng, S, 'plain')
            img = Image.fromarray(np.clip(np.asarray(img.convert('L'), dtype=np.float32) - np.asarray(
                img.convert('L'), dtype=np.float32).mean() + 255 * vb, 0, 255).astype(np.uint8)).convert('RGB')
            colour = (int(255 * vo),) * 3
        else:
            img = _background(rng, S, self.background)
            families = (self.num_classes + 9) // 10
            colour = _object_colour(rng, None if families == 1 else label // 10, families)
        r = rng.uniform(0.22, 0.38) * S
        cx, cy = rng.uniform(r, S - r), rng.uniform(r, S - r)
        _draw_object(img, None, rng, SHAPES[label % 10], colour, cx, cy, r)
        img = img.resize((self.image_size, self.image_size), Image.BOX)
        if rng.random() < 0.3:
            img = img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.2, 0.6)))
        return img, label

    def __getitem__(self, index):
        img, label = self.render(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, label


class SyntheticDetection(torch.utils.data.Dataset):
    """The synthetic drawing with 1..``max_objects`` non-overlapping objects per image.

    Returns ``(image, target)`` with torchvision's detection target: ``boxes`` (float [N, 4], x1 y1 x2 y2 in
    pixels), ``labels`` (int64 [N], 1..num_classes, 0 is background), ``masks`` (uint8 [N, H, W]),
    ``image_id``. ``transform`` is applied to the image only.
    """

    def __init__(self, split='train', transform=None, num_classes=10, image_size=64, train_size=1000,
                 test_size=200, seed=0, max_objects=3, min_size=0.18, max_size=0.34):
        if split not in _SPLIT_ID:
            raise DatasetError(f"synthetic_det dataset has splits train and test (val = test), not '{split}'")
        if not 1 <= int(num_classes) <= 10:
            raise DatasetError(f'synthetic_det supports 1..10 classes, not {num_classes}')
        self.split, self.transform = split, transform
        self.num_classes, self.image_size, self.seed = int(num_classes), int(image_size), int(seed)
        self.max_objects, self.min_size, self.max_size = int(max_objects), float(min_size), float(max_size)
        self.size = int(train_size if _SPLIT_ID[split] == 0 else test_size)
        self.classes = ['background'] + list(SHAPES[:self.num_classes])

    def __len__(self):
        return self.size

    def render(self, index):
        rng = np.random.default_rng([self.seed, _SPLIT_ID[self.split], index, 104729])
        S, s = self.image_size * _SS, self.image_size
        img = _background(rng, S)
        n = int(rng.integers(1, self.max_objects + 1))
        placed, labels, masks = [], [], []
        for _ in range(n):
            for _try in range(20):
                r = rng.uniform(self.min_size, self.max_size) * S / 2 * 1.6
                cx, cy = rng.uniform(r, S - r), rng.uniform(r, S - r)
                if all(math.hypot(cx - px, cy - py) > (r + pr) * 1.05 for px, py, pr in placed):
                    break
            else:
                continue
            placed.append((cx, cy, r))
            label = int(rng.integers(self.num_classes))
            m = _draw_object(img, None, rng, SHAPES[label], _object_colour(rng), cx, cy, r)
            masks.append(np.asarray(m.resize((s, s), Image.BOX)) >= 128)
            labels.append(label + 1)
        img = img.resize((s, s), Image.BOX)
        boxes = []
        keep = []
        for k, m in enumerate(masks):
            ys, xs = np.nonzero(m)
            if len(xs) == 0:
                continue
            keep.append(k)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        target = {
            'boxes': torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            'labels': torch.tensor([labels[k] for k in keep], dtype=torch.int64),
            'masks': torch.from_numpy(np.stack([masks[k] for k in keep]).astype(np.uint8)) if keep
            else torch.zeros(0, s, s, dtype=torch.uint8),
            'image_id': int(index),
        }
        return img, target

    def __getitem__(self, index):
        img, target = self.render(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, target


# --------------------------------------------------------------------------------------------- real data
class _Wrapped(torch.utils.data.Dataset):
    """A torchvision dataset with ``targets`` and ``classes`` exposed uniformly."""

    def __init__(self, ds, targets, classes):
        self.ds, self.targets, self.classes = ds, list(map(int, targets)), list(classes)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]

    @property
    def transform(self):
        return self.ds.transform

    @transform.setter
    def transform(self, t):
        self.ds.transform = t


def _require(path, layout):
    if path is None:
        raise DatasetError(f'this dataset needs data.root; expected layout: {layout}')
    if not os.path.exists(path):
        raise DatasetError(f"dataset root '{path}' does not exist; expected layout: {layout}")


def _cifar(name, root, split, transform):
    import torchvision
    cls = torchvision.datasets.CIFAR10 if name == 'cifar10' else torchvision.datasets.CIFAR100
    folder = 'cifar-10-batches-py' if name == 'cifar10' else 'cifar-100-python'
    layout = f'<root>/{folder}/ (the python version of {name.upper()}, as extracted from its tarball)'
    _require(root, layout)
    if not os.path.isdir(os.path.join(root, folder)):
        raise DatasetError(f"dataset root '{root}' has no {folder}/ folder; expected layout: {layout}")
    try:
        ds = cls(root, train=(split == 'train'), transform=transform, download=False)
    except Exception as e:
        raise DatasetError(f"cannot read {name} from '{root}' ({' '.join(str(e).split())}); expected: {layout}") \
            from None
    return _Wrapped(ds, ds.targets, ds.classes)


def _stl10(root, split, transform):
    import torchvision
    layout = '<root>/stl10_binary/ with train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin'
    _require(root, layout)
    valid = ('train', 'test', 'unlabeled', 'train+unlabeled')
    if split == 'val':
        split = 'test'
    if split not in valid:
        raise DatasetError(f"stl10 split '{split}' is not one of {', '.join(valid)}")
    try:
        ds = torchvision.datasets.STL10(root, split=split, transform=transform, download=False)
    except Exception as e:
        raise DatasetError(f"cannot read stl10 from '{root}' ({' '.join(str(e).split())}); expected: {layout}") \
            from None
    return _Wrapped(ds, ds.labels, ds.classes)


def _svhn(root, split, transform):
    import torchvision
    layout = '<root>/train_32x32.mat and <root>/test_32x32.mat (and extra_32x32.mat for split extra)'
    _require(root, layout)
    split = 'test' if split == 'val' else split
    try:
        import scipy.io  # noqa: F401  (torchvision's SVHN reader needs it)
    except ImportError:
        raise DatasetError('the svhn dataset needs scipy to read .mat files: pip install scipy') from None
    try:
        ds = torchvision.datasets.SVHN(root, split=split, transform=transform, download=False)
    except Exception as e:
        raise DatasetError(f"cannot read svhn from '{root}' ({' '.join(str(e).split())}); expected: {layout}") \
            from None
    return _Wrapped(ds, ds.labels, [str(i) for i in range(10)])


def _safe_loader(path):
    try:
        with open(path, 'rb') as f:
            img = Image.open(f)
            return img.convert('RGB')
    except Exception as e:
        raise DatasetError(f"image '{path}' cannot be read ({type(e).__name__}: {e}); remove or replace it") \
            from None


def _imagefolder(root, split, transform):
    import torchvision
    layout = '<root>/<split>/<class>/<image> (ImageNet layout: <root>/train/n01440764/x.JPEG, <root>/val/...)'
    _require(root, layout)
    folder = os.path.join(root, split)
    if not os.path.isdir(folder) and split in ('test', 'val'):
        alt = os.path.join(root, 'val' if split == 'test' else 'test')
        folder = alt if os.path.isdir(alt) else folder
    if not os.path.isdir(folder):
        raise DatasetError(f"dataset root '{root}' has no '{split}' folder; expected layout: {layout}")
    try:
        ds = torchvision.datasets.ImageFolder(folder, transform=transform, loader=_safe_loader)
    except (FileNotFoundError, RuntimeError) as e:
        raise DatasetError(f"'{folder}' is not an image folder ({e}); expected layout: {layout}") from None
    return _Wrapped(ds, ds.targets, ds.classes)


_NAMES = ('synthetic', 'synthetic_det', 'cifar10', 'cifar100', 'stl10', 'svhn', 'imagefolder')


def build_dataset(name, root=None, split='train', transform=None, **options):
    """A dataset by name (see module docstring); ``options`` go to the synthetic generators.

    Every returned dataset has ``targets`` (except ``synthetic_det``) and ``classes``.
    """
    if name == 'synthetic':
        return SyntheticImages(split, transform, **_synthetic_options(SyntheticImages, options))
    if name == 'synthetic_det':
        return SyntheticDetection(split, transform, **_synthetic_options(SyntheticDetection, options))
    if options:
        raise DatasetError(f"dataset '{name}' takes no options, got {', '.join(sorted(options))}")
    if name in ('cifar10', 'cifar100'):
        return _cifar(name, root, split, transform)
    if name == 'stl10':
        return _stl10(root, split, transform)
    if name == 'svhn':
        return _svhn(root, split, transform)
    if name in ('imagefolder', 'imagenet', 'tinyimagenet'):
        return _imagefolder(root, split, transform)
    raise DatasetError(f"unknown dataset '{name}'; known: {', '.join(_NAMES)}")


def _synthetic_options(cls, options):
    import inspect
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ('self', 'split', 'transform')]
    bad = [k for k in options if k not in valid]
    if bad:
        raise DatasetError(f"unknown option(s) {', '.join(bad)} for {cls.__name__}; valid: {', '.join(valid)}")
    return options


def num_classes(name, **options):
    """Number of classes of a dataset by name (for ``imagefolder`` it needs ``root``)."""
    fixed = {'cifar10': 10, 'cifar100': 100, 'stl10': 10, 'svhn': 10, 'imagenet': 1000, 'tinyimagenet': 200}
    if name in fixed:
        return fixed[name]
    if name in ('synthetic', 'synthetic_det'):
        return int(options.get('num_classes', 10))
    if name == 'imagefolder':
        return len(build_dataset(name, options.get('root'), 'train').classes)
    raise DatasetError(f"unknown dataset '{name}'; known: {', '.join(_NAMES)}")


# --------------------------------------------------------------------------------------------- subsets
def labeled_subset(dataset, num_per_class=None, seed=0, file_list=None):
    """Indices of a labeled subset: ``num_per_class`` per class chosen with ``seed``, or those in ``file_list``.

    ``file_list`` holds one entry per line: an integer index, or an image file name / relative path (matched
    against ``dataset.samples`` of an image folder, as the ImageNet 1%/10% lists of SimCLR are).
    """
    if file_list is not None:
        if not os.path.isfile(file_list):
            raise DatasetError(f"labeled file list '{file_list}' does not exist")
        with open(file_list) as f:
            entries = [line.strip() for line in f if line.strip()]
        if all(e.lstrip('-').isdigit() for e in entries):
            idx = [int(e) for e in entries]
            bad = [i for i in idx if not 0 <= i < len(dataset)]
            if bad:
                raise DatasetError(f"labeled file list '{file_list}' has indices out of range, e.g. {bad[:3]}")
            return idx
        samples = getattr(getattr(dataset, 'ds', dataset), 'samples', None)
        if samples is None:
            raise DatasetError(f"labeled file list '{file_list}' names files, but the dataset has no file names")
        by_name = {}
        for i, (path, _) in enumerate(samples):
            by_name.setdefault(os.path.basename(path), i)
            by_name.setdefault(os.path.relpath(path, os.path.dirname(os.path.dirname(path))), i)
        missing = [e for e in entries if e not in by_name and os.path.basename(e) not in by_name]
        if missing:
            raise DatasetError(f"labeled file list '{file_list}' names {len(missing)} files not in the dataset, "
                               f"e.g. {missing[:3]}")
        return [by_name.get(e, by_name.get(os.path.basename(e))) for e in entries]
    if num_per_class is None:
        raise DatasetError('labeled_subset needs num_per_class or file_list')
    targets = np.asarray(dataset.targets)
    rng = np.random.default_rng(seed)
    idx = []
    for c in np.unique(targets[targets >= 0]):
        members = np.nonzero(targets == c)[0]
        if len(members) < num_per_class:
            raise DatasetError(f'class {c} has {len(members)} examples, fewer than num_per_class={num_per_class}')
        idx.extend(rng.choice(members, num_per_class, replace=False).tolist())
    return sorted(idx)


class CachedDataset(torch.utils.data.Dataset):
    """``dataset`` with each untransformed sample kept in memory once read: rendering synthetic images (or
    decoding small image files) is the slow part of a CPU epoch. ``transform`` still runs on every access, so
    random augmentations differ per epoch; ``None`` returns the stored sample. ``cache`` is the dict that holds
    the samples: pass the same one to several ``CachedDataset`` views of one dataset (different transforms) to
    read each sample once."""

    def __init__(self, dataset, transform=None, cache=None):
        self.dataset, self.transform = dataset, transform
        self.cache = {} if cache is None else cache
        self.targets = list(dataset.targets)
        self.classes = dataset.classes

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        if index not in self.cache:
            self.cache[index] = self.dataset[index]
        img, target = self.cache[index]
        return (img if self.transform is None else self.transform(img)), target


class MultiView:
    """Apply several transforms to one image and return the list of views."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        return [t(img) for t in self.transforms]

    def __repr__(self):
        inner = ',\n  '.join(repr(t).replace('\n', '\n  ') for t in self.transforms)
        return f'MultiView([\n  {inner}])'


# --------------------------------------------------------------------------------------------- loaders
class EpochSampler(torch.utils.data.Sampler):
    """Single-process sampler whose shuffle order is a function of (seed, epoch), so resumed runs match."""

    def __init__(self, dataset, shuffle=True, seed=0):
        self.n, self.shuffle, self.seed, self.epoch = len(dataset), shuffle, int(seed), 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        g = torch.Generator()
        g.manual_seed(self.seed * 1000003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self):
        return self.n


def build_loader(dataset, batch_size, shuffle=True, drop_last=True, num_workers=0, seed=0, collate_fn=None,
                 pin_memory=None):
    """A DataLoader with a per-process ``batch_size``: a DistributedSampler under torchrun, else an
    :class:`EpochSampler`. Call :func:`set_epoch` at the start of each epoch."""
    if len(dataset) == 0:
        raise DatasetError('the dataset is empty')
    if is_distributed():
        sampler = torch.utils.data.distributed.DistributedSampler(
            dataset, num_replicas=get_world_size(), rank=get_rank(), shuffle=shuffle, seed=seed,
            drop_last=drop_last)
    else:
        sampler = EpochSampler(dataset, shuffle=shuffle, seed=seed)
    if drop_last and len(sampler) < batch_size:
        raise DatasetError(f'the dataset has {len(dataset)} examples ({len(sampler)} per process), fewer than '
                           f'one batch of {batch_size} with drop_last: lower the batch size')
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last,
                                       num_workers=num_workers, collate_fn=collate_fn, pin_memory=pin_memory,
                                       persistent_workers=num_workers > 0)


def set_epoch(loader, epoch):
    """Tell the loader's sampler which epoch it is (reshuffles deterministically)."""
    sampler = getattr(loader, 'sampler', None)
    if hasattr(sampler, 'set_epoch'):
        sampler.set_epoch(epoch)
