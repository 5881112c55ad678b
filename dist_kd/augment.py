"""Data augmentation of the official recipes.

* CIFAR: RandomCrop 32 with 4-pixel zero padding + horizontal flip, normalise.
* ImageNet B1: RandomResizedCrop 224 (scale 0.08-1, ratio 3/4-4/3, bilinear) + flip, normalise;
  validation: resize the shorter side to 256 (bilinear), centre-crop 224.
* ImageNet B2: B1 + RandAugment ``rand-m9-mstd0.5`` + RandomErasing (p = 0.2, per-pixel N(0, 1) noise) after
  normalisation.

The RandAugment here is the pool of the official code (an early timm version with four extra ops, also used
by DyRep): per image, ``n`` ops (default 2) are drawn uniformly *with replacement* from 19; each fires with
probability 0.5; its magnitude is drawn per application as ``m ~ N(M, mstd^2)`` (not clipped) and mapped to a
level ``l = m / 10``. torchvision's RandAugment is a different pool and is not used.
"""
import math
import random
import re

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torchvision import transforms as T

__all__ = ['RAND_TRANSFORMS', 'AugmentOp', 'RandAugment', 'rand_augment_transform', 'RandomErasing',
           'build_train_transform', 'build_val_transform']

_MAX_LEVEL = 10.0
_FILL = (128, 128, 128)

RAND_TRANSFORMS = [
    'Distort', 'Zoom', 'Blur', 'Skew', 'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeTpu', 'Solarize',
    'SolarizeAdd', 'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateXRel',
    'TranslateYRel',
]


def _random_sign(v):
    return -v if random.random() > 0.5 else v


# ----------------------------------------------------------------------------------------------- the ops
def shear_x(img, factor, fill, resample):
    return img.transform(img.size, Image.AFFINE, (1, factor, 0, 0, 1, 0), resample=resample, fillcolor=fill)


def shear_y(img, factor, fill, resample):
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, factor, 1, 0), resample=resample, fillcolor=fill)


def translate_x_rel(img, pct, fill, resample):
    return img.transform(img.size, Image.AFFINE, (1, 0, pct * img.size[0], 0, 1, 0), resample=resample,
                         fillcolor=fill)


def translate_y_rel(img, pct, fill, resample):
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, pct * img.size[1]), resample=resample,
                         fillcolor=fill)


def rotate(img, degrees, fill, resample):
    return img.rotate(degrees, resample=Image.BICUBIC, fillcolor=fill)      # always bicubic, as upstream


def auto_contrast(img, fill, resample):
    return ImageOps.autocontrast(img)


def equalize(img, fill, resample):
    return ImageOps.equalize(img)


def invert(img, fill, resample):
    return ImageOps.invert(img)


def solarize(img, thresh, fill, resample):
    return ImageOps.solarize(img, thresh)


def solarize_add(img, add, fill, resample, thresh=128):
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    if img.mode not in ('L', 'RGB'):
        return img
    return img.point(lut * 3 if img.mode == 'RGB' else lut)


def posterize(img, bits, fill, resample):
    if bits >= 8:
        return img
    if bits <= 0:  # 0 bits kept: all black (what PIL < 9 did; newer PIL refuses 0 bits)
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits)


def color(img, factor, fill, resample):
    return ImageEnhance.Color(img).enhance(factor)


def contrast(img, factor, fill, resample):
    return ImageEnhance.Contrast(img).enhance(factor)


def brightness(img, factor, fill, resample):
    return ImageEnhance.Brightness(img).enhance(factor)


def sharpness(img, factor, fill, resample):
    return ImageEnhance.Sharpness(img).enhance(factor)


def zoom(img, factor, fill, resample):
    """Resize by ``factor`` (0.4 l, i.e. a zoom *out*) and centre-crop back to the original size; the crop
    box exceeds the small image, so the result is the shrunken image on a black canvas."""
    w, h = img.size
    small = img.resize((max(1, int(round(w * factor))), max(1, int(round(h * factor)))), resample=Image.BICUBIC)
    zw, zh = small.size
    return small.crop((math.floor(zw / 2 - w / 2), math.floor(zh / 2 - h / 2),
                       math.floor(zw / 2 + w / 2), math.floor(zh / 2 + h / 2)))


def blur(img, radius, fill, resample):
    # upstream passes a signed radius; PIL blurs with |radius| (a negative radius gives the same image)
    return img.filter(ImageFilter.GaussianBlur(abs(radius)))


def skew(img, amount, fill, resample):
    """Perspective skew: the corners move by ``ceil(amount * max(w, h))`` pixels (signed), one per side."""
    w, h = img.size
    d = int(math.ceil(max(w, h) * amount))
    original = [(0, 0), (w, 0), (w, h), (0, h)]
    moved = [(-d, 0), (w, -d), (w + d, h), (0, h + d)]
    # coefficients (a..h) of PIL's PERSPECTIVE map: output (x, y) -> input ((ax+by+c)/(gx+hy+1), (dx+ey+f)/(...))
    rows, rhs = [], []
    for (x, y), (u, v) in zip(moved, original):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    coeffs = np.linalg.pinv(np.asarray(rows, dtype=np.float64)) @ np.asarray(rhs, dtype=np.float64)
    return img.transform(img.size, Image.PERSPECTIVE, tuple(coeffs.tolist()), resample=Image.BICUBIC)


def distort(img, v, fill, resample):
    """Mesh distortion: an ``int(0.1 v)``-square grid of tiles whose interior vertices move by (v, v) pixels.
    With the usual magnitudes (m < 10, v = 19) the grid is a single tile: an identity mesh."""
    w, h = img.size
    tiles = max(int(0.1 * v), 1)
    tw, th = w // tiles, h // tiles
    xs = [i * tw for i in range(tiles)] + [w]
    ys = [j * th for j in range(tiles)] + [h]

    def corner(i, j):       # grid vertex (i, j), moved when it is interior
        x, y = xs[i], ys[j]
        if 0 < i < tiles and 0 < j < tiles:
            x, y = x + v, y + v
        return x, y

    mesh = []
    for j in range(tiles):
        for i in range(tiles):
            box = (xs[i], ys[j], xs[i + 1], ys[j + 1])
            quad = (*corner(i, j), *corner(i, j + 1), *corner(i + 1, j + 1), *corner(i + 1, j))   # UL LL LR UR
            mesh.append((box, quad))
    return img.transform(img.size, Image.MESH, mesh, resample=Image.BICUBIC)


# level l = m / 10 -> op arguments
def _level_rotate(l):
    return _random_sign(l * 30.0)


def _level_enhance(l):
    return l * 1.8 + 0.1


def _level_shear(l):
    return _random_sign(l * 0.3)


def _level_translate_rel(l):
    return _random_sign(l * 0.45)


OPS = {  # name: (function, level -> argument or None)
    'Distort': (distort, lambda l: int(l * 10 + 10)),
    'Zoom': (zoom, lambda l: l * 0.4),
    'Blur': (blur, lambda l: _random_sign(l * 0.5)),
    'Skew': (skew, lambda l: _random_sign(l * 0.3)),
    'AutoContrast': (auto_contrast, None),
    'Equalize': (equalize, None),
    'Invert': (invert, None),
    'Rotate': (rotate, _level_rotate),
    'PosterizeTpu': (posterize, lambda l: int(l * 4)),
    'Solarize': (solarize, lambda l: int(l * 256)),
    'SolarizeAdd': (solarize_add, lambda l: int(l * 110)),
    'Color': (color, _level_enhance),
    'Contrast': (contrast, _level_enhance),
    'Brightness': (brightness, _level_enhance),
    'Sharpness': (sharpness, _level_enhance),
    'ShearX': (shear_x, _level_shear),
    'ShearY': (shear_y, _level_shear),
    'TranslateXRel': (translate_x_rel, _level_translate_rel),
    'TranslateYRel': (translate_y_rel, _level_translate_rel),
}


class AugmentOp:
    """One RandAugment op: fires with probability ``prob``, magnitude ``N(magnitude, magnitude_std^2)``."""

    def __init__(self, name, prob=0.5, magnitude=10, magnitude_std=0.0, fill=_FILL, resample=Image.BILINEAR):
        self.name = name
        self.fn, self.level_fn = OPS[name]
        self.prob, self.magnitude, self.magnitude_std = prob, magnitude, magnitude_std
        self.fill, self.resample = tuple(fill), resample

    def __call__(self, img):
        if random.random() > self.prob:
            return img
        m = self.magnitude
        if self.magnitude_std > 0:
            m = random.gauss(m, self.magnitude_std)
        args = () if self.level_fn is None else (self.level_fn(m / _MAX_LEVEL),)
        return self.fn(img, *args, fill=self.fill, resample=self.resample)

    def __repr__(self):
        return f'AugmentOp({self.name}, p={self.prob}, m={self.magnitude}, mstd={self.magnitude_std})'


class RandAugment:
    def __init__(self, ops, num_layers=2):
        self.ops, self.num_layers = ops, num_layers

    def __call__(self, img):
        for i in np.random.choice(len(self.ops), self.num_layers, replace=True):
            img = self.ops[i](img)
        return img

    def __repr__(self):
        return f'RandAugment(n={self.num_layers}, ops=[{", ".join(op.name for op in self.ops)}])'


def rand_augment_transform(config_str, fill=_FILL, resample=Image.BILINEAR):
    """Parse ``rand-m<M>-mstd<S>[-n<N>]`` (e.g. ``rand-m9-mstd0.5``) into a :class:`RandAugment`."""
    parts = config_str.split('-')
    if parts[0] != 'rand':
        raise ValueError(f"RandAugment config {config_str!r} must start with 'rand'")
    magnitude, std, num_layers = _MAX_LEVEL, 0.0, 2
    for part in parts[1:]:
        m = re.fullmatch(r'([a-z]+)(\d.*)', part)
        if m is None:
            raise ValueError(f'RandAugment config {config_str!r}: cannot parse {part!r}')
        key, val = m.groups()
        if key == 'm':
            magnitude = int(val)
        elif key == 'mstd':
            std = float(val)
        elif key == 'n':
            num_layers = int(val)
        else:
            raise ValueError(f'RandAugment config {config_str!r}: unknown section {key!r} (known: m, mstd, n)')
    ops = [AugmentOp(name, 0.5, magnitude, std, fill, resample) for name in RAND_TRANSFORMS]
    return RandAugment(ops, num_layers)


class RandomErasing:
    """Random erasing (Zhong et al.) on a normalised CHW tensor, one box, as in the official B2 recipe.

    With probability ``probability``: area ``U(min_area, max_area) * H * W``, aspect ``exp(U(log r, -log r))``
    with ``r = min_aspect``; up to 10 attempts to fit the box; its pixels become N(0, 1) noise (``pixel``),
    one N(0, 1) colour per channel (``rand``) or zeros (``const``).
    """

    def __init__(self, probability=0.5, min_area=0.02, max_area=1 / 3, min_aspect=0.3, mode='const'):
        if mode not in ('const', 'rand', 'pixel'):
            raise ValueError(f"unknown random-erasing mode {mode!r}; known: const, rand, pixel")
        self.probability, self.min_area, self.max_area = probability, min_area, max_area
        self.log_aspect = (math.log(min_aspect), math.log(1 / min_aspect))
        self.mode = mode

    def __call__(self, img):
        if random.random() > self.probability:
            return img
        c, h, w = img.shape
        for _ in range(10):
            area = random.uniform(self.min_area, self.max_area) * h * w
            aspect = math.exp(random.uniform(*self.log_aspect))
            eh, ew = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
            if ew < w and eh < h:
                top, left = random.randint(0, h - eh), random.randint(0, w - ew)
                if self.mode == 'pixel':
                    patch = torch.empty((c, eh, ew), dtype=img.dtype).normal_()
                elif self.mode == 'rand':
                    patch = torch.empty((c, 1, 1), dtype=img.dtype).normal_()
                else:
                    patch = torch.zeros((c, 1, 1), dtype=img.dtype)
                img[:, top:top + eh, left:left + ew] = patch
                break
        return img


def build_train_transform(style, image_size, mean, std, aa='', color_jitter=0.0, reprob=0.0, remode='pixel'):
    """``style``: 'cifar' (pad-4 crop + flip) or 'imagenet' (random-resized crop + flip [+ RandAugment])."""
    if style == 'cifar':
        ops = [T.RandomCrop(image_size, padding=4), T.RandomHorizontalFlip()]
    elif style == 'imagenet':
        ops = [T.RandomResizedCrop(image_size, interpolation=T.InterpolationMode.BILINEAR), T.RandomHorizontalFlip()]
    else:
        raise ValueError(f"unknown transform style {style!r}; known: cifar, imagenet")
    if aa:
        fill = tuple(int(round(255 * x)) for x in mean)
        ops.append(rand_augment_transform(aa, fill=fill, resample=Image.BILINEAR))
    elif color_jitter > 0:
        ops.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    if reprob > 0:
        ops.append(RandomErasing(reprob, mode=remode))
    return T.Compose(ops)


def build_val_transform(style, image_size, mean, std):
    if style == 'cifar':
        ops = []                 # CIFAR: normalise only
    elif style == 'imagenet':
        ops = [T.Resize(int(round(image_size / 0.875)), interpolation=T.InterpolationMode.BILINEAR),
               T.CenterCrop(image_size)]
    else:
        raise ValueError(f"unknown transform style {style!r}; known: cifar, imagenet")
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])
