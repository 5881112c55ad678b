"""RandAugment pools used for the strong view.

* :class:`RandAugmentMC` is the FixMatch/TorchSSL/USB variant used on CIFAR-10/100, SVHN and STL-10:
  ``n`` ops drawn with replacement from 14 ops, each with a magnitude drawn uniformly from its own range,
  then always a Cutout square of side ``U(0, 0.5) * width`` (grey 127).
* :class:`RandAugmentImageNet` is the optional ``--randaug`` strong view of the ImageNet code: ``n = 2`` ops from
  a 16-op pool, each op at a level drawn uniformly from {1, ..., 9} out of ``m = 10`` (a reconstruction: the
  official ``data/randaugment.py`` is not in the public snapshot; see the README).

Inputs and outputs are PIL RGB images.
"""
import random

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

__all__ = ['RandAugmentMC', 'RandAugmentImageNet', 'cutout', 'fixmatch_pool', 'imagenet_pool']

_GREY = (127, 127, 127)


def _affine(img, matrix):
    return img.transform(img.size, Image.AFFINE, matrix)  # uncovered pixels are black, as in USB


def auto_contrast(img, _):
    return ImageOps.autocontrast(img)


def equalize(img, _):
    return ImageOps.equalize(img)


def invert(img, _):
    return ImageOps.invert(img)


def identity(img, _):
    return img


def brightness(img, v):
    return ImageEnhance.Brightness(img).enhance(v)


def color(img, v):
    return ImageEnhance.Color(img).enhance(v)


def contrast(img, v):
    return ImageEnhance.Contrast(img).enhance(v)


def sharpness(img, v):
    return ImageEnhance.Sharpness(img).enhance(v)


def posterize(img, v):
    return ImageOps.posterize(img, max(1, int(v)))


def solarize(img, v):
    return ImageOps.solarize(img, int(v))


def solarize_add(img, v, threshold=128):
    arr = np.asarray(img).astype(np.int32)
    added = np.clip(arr + int(v), 0, 255).astype(np.uint8)
    return Image.fromarray(np.where(arr < threshold, added, arr.astype(np.uint8)))


def rotate(img, v):
    return img.rotate(v)


def shear_x(img, v):
    return _affine(img, (1, v, 0, 0, 1, 0))


def shear_y(img, v):
    return _affine(img, (1, 0, 0, v, 1, 0))


def translate_x(img, v):
    """``v`` is a fraction of the width."""
    return _affine(img, (1, 0, v * img.size[0], 0, 1, 0))


def translate_y(img, v):
    return _affine(img, (1, 0, 0, 0, 1, v * img.size[1]))


def translate_x_abs(img, v):
    return _affine(img, (1, 0, v, 0, 1, 0))


def translate_y_abs(img, v):
    return _affine(img, (1, 0, 0, 0, 1, v))


def cutout_abs(img, v):
    """Grey square of side ``v`` pixels centred at a uniform random point (clipped at the border)."""
    if v <= 0:
        return img
    w, h = img.size
    x0 = int(max(0, np.random.uniform(w) - v / 2.))
    y0 = int(max(0, np.random.uniform(h) - v / 2.))
    x1, y1 = min(w, x0 + v), min(h, y0 + v)
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), _GREY)
    return img


def cutout(img, v):
    """Cutout with side ``v * width``, ``v`` in [0, 0.5]."""
    return cutout_abs(img, v * img.size[0])


def fixmatch_pool():
    """(op, min, max) of the FixMatch/USB pool; magnitudes are drawn uniformly in [min, max]."""
    return [
        (auto_contrast, 0, 1), (brightness, 0.05, 0.95), (color, 0.05, 0.95), (contrast, 0.05, 0.95),
        (equalize, 0, 1), (identity, 0, 1), (posterize, 4, 8), (rotate, -30, 30), (sharpness, 0.05, 0.95),
        (shear_x, -0.3, 0.3), (shear_y, -0.3, 0.3), (solarize, 0, 256), (translate_x, -0.3, 0.3),
        (translate_y, -0.3, 0.3),
    ]


def imagenet_pool():
    """(op, min, max, signed) of the 16-op ImageNet RandAugment pool (AutoAugment-style ranges)."""
    return [
        (auto_contrast, 0, 1, False), (equalize, 0, 1, False), (invert, 0, 1, False), (rotate, 0, 30, True),
        (posterize, 8, 4, False), (solarize, 256, 0, False), (solarize_add, 0, 110, False),
        (color, 0.1, 1.9, False), (contrast, 0.1, 1.9, False), (brightness, 0.1, 1.9, False),
        (sharpness, 0.1, 1.9, False), (shear_x, 0, 0.3, True), (shear_y, 0, 0.3, True),
        (cutout_abs, 0, 40, False), (translate_x_abs, 0, 100, True), (translate_y_abs, 0, 100, True),
    ]


class RandAugmentMC:
    """FixMatch-style RandAugment(n, m): ``m`` is kept for the signature only (magnitudes are random)."""

    def __init__(self, n=3, m=5):
        self.n, self.m = int(n), int(m)
        self.pool = fixmatch_pool()

    def __call__(self, img):
        for op, lo, hi in random.choices(self.pool, k=self.n):
            img = op(img, lo + (hi - lo) * random.random())
        return cutout(img, random.random() * 0.5)

    def __repr__(self):
        return f'{type(self).__name__}(n={self.n}, m={self.m}, cutout=U(0,0.5))'


class RandAugmentImageNet:
    """RandAugment(n=2, m=10) over the 16-op pool, each op at a level drawn uniformly from {1..m-1}."""

    def __init__(self, n=2, m=10):
        self.n, self.m = int(n), int(m)
        self.pool = imagenet_pool()

    def __call__(self, img):
        for op, lo, hi, signed in random.choices(self.pool, k=self.n):
            level = random.randint(1, self.m - 1)
            v = lo + (hi - lo) * level / self.m
            if signed and random.random() < 0.5:
                v = -v
            img = op(img, v)
        return img

    def __repr__(self):
        return f'{type(self).__name__}(n={self.n}, m={self.m})'

