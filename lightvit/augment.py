"""The official ImageNet augmentation of LightViT (torch / torchvision / PIL / numpy only).

* ``RandAugment``: ``rand-m9-mstd0.5`` with the op set of the official ``lib/dataset/augment_ops.py``
  (a timm-style RandAugment that also holds Distort, Zoom, Blur and Skew): two ops drawn with
  replacement, each applied with probability 0.5 at a magnitude drawn from N(m, mstd) (not clipped).
* ``RandomErasing``: one box, probability ``p``, on the normalised tensor; mode ``pixel`` fills it with
  per-pixel N(0, 1) noise.
* ``build_train_transform`` / ``build_test_transform``: RandomResizedCrop (bicubic) + flip + RandAugment +
  normalise + RandomErasing; resize to ``size / crop_ratio`` (bicubic) + center crop for evaluation.
"""
import math
import random
import re

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torchvision import transforms as T

MAX_LEVEL = 10.


def _negate_half(v):
    return -v if random.random() > 0.5 else v


# ---------------------------------------------------------------- image ops (PIL in, PIL out)
def _affine(img, matrix, fill, resample):
    return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=fill)


def shear_x(img, f, fill, resample):
    return _affine(img, (1, f, 0, 0, 1, 0), fill, resample)


def shear_y(img, f, fill, resample):
    return _affine(img, (1, 0, 0, f, 1, 0), fill, resample)


def translate_x_rel(img, pct, fill, resample):
    return _affine(img, (1, 0, pct * img.size[0], 0, 1, 0), fill, resample)


def translate_y_rel(img, pct, fill, resample):
    return _affine(img, (1, 0, 0, 0, 1, pct * img.size[1]), fill, resample)


def rotate(img, degrees, fill, resample):
    return img.rotate(degrees, resample=Image.BICUBIC, fillcolor=fill)


def solarize_add(img, add, fill=None, resample=None, thresh=128):
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def posterize(img, bits, fill=None, resample=None):
    if bits <= 0:  # 0 bits kept: all black (what PIL < 9 did; newer PIL refuses 0 bits)
        return Image.new(img.mode, img.size)
    return img if bits >= 8 else ImageOps.posterize(img, bits)


def distort(img, v, fill=None, resample=None):
    """Mesh distortion: the interior vertices of a ``int(v/10)`` x ``int(v/10)`` tile grid move by (v, v)."""
    w, h = img.size
    tiles = int(0.1 * v)
    if tiles < 1:
        return img
    tw, th = w // tiles, h // tiles
    xs = [i * tw for i in range(tiles)] + [w]
    ys = [j * th for j in range(tiles)] + [h]

    def vertex(i, j):  # source position of grid vertex (column i, row j)
        interior = 0 < i < tiles and 0 < j < tiles
        return (xs[i] + v, ys[j] + v) if interior else (xs[i], ys[j])

    mesh = []
    for j in range(tiles):
        for i in range(tiles):
            quad = vertex(i, j) + vertex(i, j + 1) + vertex(i + 1, j + 1) + vertex(i + 1, j)  # TL, BL, BR, TR
            mesh.append(((xs[i], ys[j], xs[i + 1], ys[j + 1]), quad))
    return img.transform(img.size, Image.MESH, mesh, resample=Image.BICUBIC)


def zoom(img, v, fill=None, resample=None):
    """Resize by ``v`` (bicubic) and take the centred window of the original size (zero outside)."""
    w, h = img.size
    z = img.resize((int(round(w * v)), int(round(h * v))), resample=Image.BICUBIC)
    zw, zh = z.size
    left, top = math.floor(zw / 2 - w / 2), math.floor(zh / 2 - h / 2)
    return z.crop((left, top, left + w, top + h))


def skew(img, v, fill=None, resample=None):
    """Perspective skew: each corner slides by ``ceil(max(w, h) * v)`` pixels along one side."""
    w, h = img.size
    s = int(math.ceil(max(w, h) * v))
    src = [(0, 0), (w, 0), (w, h), (0, h)]
    dst = [(-s, 0), (w, -s), (w + s, h), (0, h + s)]
    rows, rhs = [], []
    for (x, y), (u, t) in zip(dst, src):  # output point (x, y) samples input point (u, t)
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -t * x, -t * y])
        rhs += [u, t]
    coeffs = np.linalg.lstsq(np.asarray(rows, dtype=np.float64), np.asarray(rhs, dtype=np.float64), rcond=None)[0]
    return img.transform(img.size, Image.PERSPECTIVE, tuple(coeffs.tolist()), resample=Image.BICUBIC)


def blur(img, v, fill=None, resample=None):
    return img.filter(ImageFilter.GaussianBlur(v))


def _enhance(cls):
    return lambda img, f, fill=None, resample=None: cls(img).enhance(f)


def _no_arg(fn):
    return lambda img, fill=None, resample=None: fn(img)


# name -> (op, level -> args). Level ranges as in the official op table.
OPS = {
    'Distort': (distort, lambda m: (int(m / MAX_LEVEL * 10 + 10),)),
    'Zoom': (zoom, lambda m: (m / MAX_LEVEL * 0.4,)),
    'Blur': (blur, lambda m: (_negate_half(m / MAX_LEVEL * 0.5),)),
    'Skew': (skew, lambda m: (_negate_half(m / MAX_LEVEL * 0.3),)),
    'AutoContrast': (_no_arg(ImageOps.autocontrast), None),
    'Equalize': (_no_arg(ImageOps.equalize), None),
    'Invert': (_no_arg(ImageOps.invert), None),
    'Rotate': (rotate, lambda m: (_negate_half(m / MAX_LEVEL * 30.),)),
    'PosterizeTpu': (posterize, lambda m: (int(m / MAX_LEVEL * 4),)),
    'Solarize': (lambda img, t, fill=None, resample=None: ImageOps.solarize(img, t),
                 lambda m: (int(m / MAX_LEVEL * 256),)),
    'SolarizeAdd': (solarize_add, lambda m: (int(m / MAX_LEVEL * 110),)),
    'Color': (_enhance(ImageEnhance.Color), lambda m: (m / MAX_LEVEL * 1.8 + 0.1,)),
    'Contrast': (_enhance(ImageEnhance.Contrast), lambda m: (m / MAX_LEVEL * 1.8 + 0.1,)),
    'Brightness': (_enhance(ImageEnhance.Brightness), lambda m: (m / MAX_LEVEL * 1.8 + 0.1,)),
    'Sharpness': (_enhance(ImageEnhance.Sharpness), lambda m: (m / MAX_LEVEL * 1.8 + 0.1,)),
    'ShearX': (shear_x, lambda m: (_negate_half(m / MAX_LEVEL * 0.3),)),
    'ShearY': (shear_y, lambda m: (_negate_half(m / MAX_LEVEL * 0.3),)),
    'TranslateXRel': (translate_x_rel, lambda m: (_negate_half(m / MAX_LEVEL * 0.45),)),
    'TranslateYRel': (translate_y_rel, lambda m: (_negate_half(m / MAX_LEVEL * 0.45),)),
}


class RandAugment:
    """``num_layers`` ops drawn uniformly with replacement; each fires with ``prob`` at magnitude N(m, mstd)."""

    def __init__(self, magnitude=9., magnitude_std=0.5, num_layers=2, prob=0.5, fill=(128, 128, 128),
                 resample=Image.BILINEAR, ops=tuple(OPS)):
        unknown = [o for o in ops if o not in OPS]
        if unknown:
            raise ValueError(f'unknown RandAugment ops {unknown}; valid: {sorted(OPS)}')
        self.magnitude, self.magnitude_std = float(magnitude), float(magnitude_std)
        self.num_layers, self.prob = num_layers, prob
        self.fill, self.resample, self.ops = tuple(fill), resample, list(ops)

    def apply_op(self, img, name, magnitude):
        fn, level_fn = OPS[name]
        args = level_fn(magnitude) if level_fn is not None else ()
        return fn(img, *args, fill=self.fill, resample=self.resample)

    def __call__(self, img):
        for name in random.choices(self.ops, k=self.num_layers):
            if random.random() > self.prob:
                continue
            m = random.gauss(self.magnitude, self.magnitude_std) if self.magnitude_std > 0 else self.magnitude
            img = self.apply_op(img, name, m)
        return img

    def __repr__(self):
        return f'RandAugment(m={self.magnitude}, mstd={self.magnitude_std}, n={self.num_layers}, p={self.prob})'


def parse_rand_augment(config_str, fill=(128, 128, 128)):
    """``'rand-m9-mstd0.5'`` (keys m, n, mstd) -> :class:`RandAugment`."""
    parts = config_str.split('-')
    if parts[0] != 'rand':
        raise ValueError(f'RandAugment string must start with "rand", got {config_str!r}')
    kw = dict(magnitude=MAX_LEVEL, magnitude_std=0., num_layers=2)
    for part in parts[1:]:
        match = re.fullmatch(r'([a-z]+)(\d.*)', part)
        key = match.group(1) if match else part
        if key not in ('m', 'n', 'mstd'):
            raise ValueError(f'unknown RandAugment section {part!r} in {config_str!r} (valid: m, n, mstd)')
        val = float(match.group(2))
        kw[{'m': 'magnitude', 'n': 'num_layers', 'mstd': 'magnitude_std'}[key]] = int(val) if key == 'n' else val
    return RandAugment(fill=fill, **kw)


class RandomErasing:
    """Erase one random box (area in [min_area, max_area], log-uniform aspect) of a normalised [C, H, W] tensor."""

    def __init__(self, probability=0.25, mode='pixel', min_area=0.02, max_area=1 / 3, min_aspect=0.3):
        if mode not in ('pixel', 'rand', 'const'):
            raise ValueError(f'RandomErasing mode must be pixel, rand or const, got {mode!r}')
        self.probability, self.mode = probability, mode
        self.min_area, self.max_area = min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))

    def __call__(self, img):
        if random.random() > self.probability:
            return img
        C, H, W = img.shape
        for _ in range(10):
            area = random.uniform(self.min_area, self.max_area) * H * W
            aspect = math.exp(random.uniform(*self.log_aspect))
            h, w = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if w < W and h < H:
                top, left = random.randint(0, H - h), random.randint(0, W - w)
                if self.mode == 'pixel':
                    fill = torch.randn(C, h, w, dtype=img.dtype)
                elif self.mode == 'rand':
                    fill = torch.randn(C, 1, 1, dtype=img.dtype)
                else:
                    fill = torch.zeros(C, 1, 1, dtype=img.dtype)
                img[:, top:top + h, left:left + w] = fill
                break
        return img


_INTERP = {'bicubic': T.InterpolationMode.BICUBIC, 'bilinear': T.InterpolationMode.BILINEAR}


def build_train_transform(size, mean, std, scale=(0.08, 1.0), hflip=0.5, aa='rand-m9-mstd0.5',
                          color_jitter=0.0, reprob=0.25, remode='pixel', interpolation='bicubic'):
    """RandomResizedCrop -> flip -> RandAugment (or ColorJitter when RandAugment is off) -> tensor ->
    normalise -> RandomErasing. RandAugment fills with the mean pixel."""
    ops = [T.RandomResizedCrop(size, scale=tuple(scale), interpolation=_INTERP[interpolation])]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if aa:
        ops.append(parse_rand_augment(aa, fill=tuple(int(round(255 * m)) for m in mean)))
    elif color_jitter:
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    if reprob > 0:
        ops.append(RandomErasing(reprob, mode=remode))
    return T.Compose(ops)


def build_test_transform(size, mean, std, crop_ratio=0.875, interpolation='bicubic'):
    """Resize the shorter side to ``int(size / crop_ratio)`` (256 for 224), centre crop ``size``, normalise."""
    return T.Compose([T.Resize(int(size / crop_ratio), interpolation=_INTERP[interpolation]),
                      T.CenterCrop(size), T.ToTensor(), T.Normalize(mean, std)])
