"""IPT data: the corruptions of pre-training (MATLAB bicubic, Gaussian noise, rain streaks), random crops of
clean images, one task per batch, and the benchmark folder layouts of the official test code.

Images are float tensors ``[3, H, W]`` (or batches ``[B, 3, H, W]``) on the [0, 255] scale.
"""
import glob
import math
import os
import re

import numpy as np
import torch
import torch.nn.functional as F

TASK_NAMES = ('sr2', 'sr3', 'sr4', 'derain', 'denoise30', 'denoise50')  # canonical pre-training order
IMG_EXT = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.JPEG', '.PNG', '.JPG')


class BenchmarkError(FileNotFoundError):
    """A benchmark or image folder is missing or not in the expected layout."""


def parse_task(name):
    """``'sr2' -> ('sr', 2, None)``, ``'denoise30' -> ('denoise', 1, 30.0)``, ``'derain' -> ('derain', 1, None)``."""
    m = re.fullmatch(r'sr([1-9]\d*)|denoise(\d+(?:\.\d+)?)|(derain)', str(name))
    if not m:
        raise ValueError(f"unknown task {name!r}: use 'sr<scale>', 'denoise<sigma>' or 'derain'")
    if m.group(1):
        return 'sr', int(m.group(1)), None
    if m.group(2):
        return 'denoise', 1, float(m.group(2))
    return 'derain', 1, None


# ------------------------------------------------------------------------------------- MATLAB imresize
def _cubic(x):
    ax = x.abs()
    ax2, ax3 = ax ** 2, ax ** 3
    return ((1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) +
            (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))).to(x.dtype)


def _resize_matrix(in_len, scale, out_len, antialias=True):
    """``[out_len, in_len]`` weights of MATLAB's ``imresize(..., 'bicubic')`` along one axis: cubic kernel
    (a = -0.5) widened to ``4 / scale`` when downsampling (antialiasing), edge pixels replicated."""
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width /= scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    p = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + torch.arange(p, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if shrink else _cubic(dist)
    w = w / w.sum(1, keepdim=True)
    idx = idx.clamp(1, in_len).long() - 1
    mat = torch.zeros(out_len, in_len, dtype=torch.float64)
    mat.scatter_add_(1, idx, w)
    return mat


def imresize_matlab(img, scale, quantize=True):
    """Bicubic resize of ``img [..., H, W]`` (0-255) by ``scale`` as MATLAB ``imresize`` does (output size
    ``ceil(H * scale)``); ``quantize`` rounds to integers in [0, 255] as writing a uint8 image does."""
    h, w = img.shape[-2:]
    oh, ow = int(math.ceil(h * scale - 1e-9)), int(math.ceil(w * scale - 1e-9))
    mh = _resize_matrix(h, scale, oh).to(img.device)
    mw = _resize_matrix(w, scale, ow).to(img.device)
    out = torch.matmul(torch.matmul(mh, img.double()), mw.t()).to(img.dtype if img.is_floating_point() else torch.float32)
    return out.clamp(0, 255).round() if quantize else out


# ------------------------------------------------------------------------------------------- corruptions
def add_gaussian_noise(img, sigma, generator=None):
    """``clamp(img + sigma * N(0, 1), 0, 255)`` (not quantised)."""
    noise = torch.randn(img.shape, generator=generator, dtype=img.dtype, device='cpu').to(img.device)
    return (img + sigma * noise).clamp(0, 255)


def add_rain(img, streak):
    """Add a grayscale rain-streak layer (``[H, W]`` or ``[1, H, W]``, 0-255) to every channel and clamp."""
    if streak.dim() == 2:
        streak = streak[None]
    return (img + streak.to(img)).clamp(0, 255)


def synth_rain_streaks(size, generator=None, density=(0.002, 0.012), length=(9, 25), angle=(-30.0, 30.0),
                       intensity=(120.0, 230.0)):
    """A grayscale streak layer ``[1, H, W]`` (0-255) in the manner of JORDER (Yang et al. 2017): sparse
    random drops, motion-blurred along one direction with a line kernel, rescaled to a random brightness.
    Used when no folder of streak images (Rain100L ``RainTrainL``) is given."""
    h, w = (size, size) if isinstance(size, int) else size
    r = lambda lo_hi: lo_hi[0] + (lo_hi[1] - lo_hi[0]) * torch.rand((), generator=generator).item()  # noqa: E731
    drops = (torch.rand(1, 1, h, w, generator=generator) < r(density)).double()
    drops = drops * (0.5 + 0.5 * torch.rand(1, 1, h, w, generator=generator, dtype=torch.float64))
    length_px = int(round(r(length))) | 1
    theta = math.radians(r(angle))
    k = torch.zeros(length_px, length_px, dtype=torch.float64)
    c = length_px // 2
    for t in torch.linspace(-c, c, 4 * length_px):
        k[int(round(c + t.item() * math.cos(theta))), int(round(c + t.item() * math.sin(theta)))] = 1.0
    k = (k / k.sum()).view(1, 1, length_px, length_px)
    layer = F.conv2d(F.pad(drops, (c, c, c, c), mode='reflect' if min(h, w) > c else 'replicate'), k)[0]
    peak = layer.max()
    if peak > 0:
        layer = layer / peak * r(intensity)
    return layer.float()


def load_image(path):
    """An image file as a float ``[3, H, W]`` tensor on the [0, 255] scale."""
    from PIL import Image
    with Image.open(path) as im:
        return pil_to_tensor(im)


def pil_to_tensor(im):
    arr = np.asarray(im.convert('RGB'), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float()


def list_images(root):
    """Every image file under ``root`` (recursively), sorted."""
    if not os.path.isdir(root):
        raise BenchmarkError(f'image folder {root!r} does not exist')
    files = sorted(p for p in glob.glob(os.path.join(root, '**', '*'), recursive=True) if p.endswith(IMG_EXT))
    if not files:
        raise BenchmarkError(f'no image files ({", ".join(IMG_EXT[:5])}) under {root!r}')
    return files


# ------------------------------------------------------------------------------------- pre-training data
def random_crop(img, size, generator=None):
    """A random ``size x size`` crop; when the image is smaller in a dimension, crop what fits there and resize
    to the square with bilinear interpolation (MindSpore ``ImgData``)."""
    _, h, w = img.shape
    ch, cw = min(h, size), min(w, size)
    top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
    crop = img[:, top:top + ch, left:left + cw]
    if (ch, cw) != (size, size):
        crop = F.interpolate(crop[None], size=(size, size), mode='bilinear', align_corners=False)[0]
    return crop


class ImageNetIPT(torch.utils.data.Dataset):
    """Clean images -> one independent random crop of ``patch_size * s`` per scale ``s`` in ``scales``.

    ``root`` is a folder of images (searched recursively; ImageNet train/val JPEGs) or any indexable dataset
    whose items are PIL images, tensors or ``(image, label)`` pairs (e.g. ``common.data`` datasets)."""

    def __init__(self, root, patch_size=48, scales=(2, 3, 4, 1)):
        self.files = list_images(root) if isinstance(root, (str, os.PathLike)) else None
        self.source = root
        self.patch_size, self.scales = patch_size, tuple(dict.fromkeys(scales))

    def __len__(self):
        return len(self.files) if self.files is not None else len(self.source)

    def image(self, i):
        if self.files is not None:
            return load_image(self.files[i])
        item = self.source[i]
        item = item[0] if isinstance(item, (tuple, list)) else item
        return item.float() if torch.is_tensor(item) else pil_to_tensor(item)

    def __getitem__(self, i):
        img = self.image(i)
        return tuple(random_crop(img, self.patch_size * s) for s in self.scales)


class TaskBatchCorruptor:
    """One task per batch: ``draw(step)`` picks a task index uniformly from ``pool`` (identically on every
    process: the generator is seeded by ``(seed, step)``), ``__call__(crops, task)`` builds ``(input, target)``.

    ``tasks`` is the model's task list (names of :func:`parse_task`, or an int ``n`` for the first ``n``
    canonical tasks); ``crop_scales`` the scales of the crops coming from :class:`ImageNetIPT`;
    ``streaks`` an optional list of grayscale streak images ``[H, W]`` (else synthetic streaks)."""

    def __init__(self, tasks=6, seed=0, pool=None, crop_scales=(2, 3, 4, 1), streaks=None, patch_size=48):
        self.tasks = list(TASK_NAMES[:tasks]) if isinstance(tasks, int) else list(tasks)
        self.specs = [parse_task(t) for t in self.tasks]
        self.pool = list(range(len(self.tasks))) if pool is None else list(pool)
        if not self.pool or any(not 0 <= t < len(self.tasks) for t in self.pool):
            raise ValueError(f'task pool {self.pool} must index the {len(self.tasks)} tasks {self.tasks}')
        self.seed, self.crop_scales = seed, list(dict.fromkeys(crop_scales))
        self.streaks, self.patch_size = streaks, patch_size
        for t in self.pool:
            if self.specs[t][1] not in self.crop_scales:
                raise ValueError(f'task {self.tasks[t]} needs crops at scale {self.specs[t][1]}')

    def generator(self, step):
        return torch.Generator().manual_seed(self.seed * 1_000_003 + step)

    def draw(self, step):
        g = self.generator(step)
        return self.pool[int(torch.randint(len(self.pool), (1,), generator=g))]

    def __call__(self, crops, task, step=0):
        kind, scale, sigma = self.specs[task]
        hr = crops[self.crop_scales.index(scale)]
        g = self.generator(step + 7_919)
        if kind == 'sr':
            return imresize_matlab(hr, 1 / scale), hr
        if kind == 'denoise':
            return add_gaussian_noise(hr, sigma, g), hr
        layers = []
        for _ in range(hr.size(0)):
            if self.streaks:
                s = self.streaks[int(torch.randint(len(self.streaks), (1,), generator=g))]
                layers.append(random_crop(s[None].float(), hr.size(-1), g))
            else:
                layers.append(synth_rain_streaks(hr.shape[-2:], g))
        return add_rain(hr, torch.stack(layers).to(hr)), hr


# --------------------------------------------------------------------------------------------- benchmarks
SR_SETS = ('Set5', 'Set14', 'B100', 'Urban100', 'Manga109', 'DIV2K')


class Benchmark(torch.utils.data.Dataset):
    """The official test layouts under ``dir_data``:

    * SR (``Set5``, ``Set14``, ``B100``, ``Urban100``): ``benchmark/<name>/HR/<img>.png`` and
      ``benchmark/<name>/LR_bicubic/X<s>/<img>x<s>.png``; the HR is cropped to ``s x`` the LR size;
    * denoising (``scale=1``; ``CBSD68`` or any SR set): the HR images only (``benchmark/<name>/HR`` or a flat
      ``<name>/`` folder); the noisy input is made by the caller;
    * ``Rain100L``: ``Rain100L/rain-<k>.png`` with ``Rain100L/norain-<k>.png``.

    Items are ``(input or None, hr, file name)``."""

    def __init__(self, name, dir_data, scale=1):
        self.name, self.scale = name, scale
        base = os.path.join(dir_data, 'benchmark', name)
        if name == 'Rain100L':
            folder = os.path.join(dir_data, name)
            rain = sorted(glob.glob(os.path.join(folder, 'rain-*.png')))
            if not rain:
                raise BenchmarkError(f"Rain100L: no 'rain-*.png' in {folder!r} (expected {folder}/rain-<k>.png with "
                                     f"norain-<k>.png beside each)")
            self.items = []
            for p in rain:
                clean = os.path.join(folder, 'no' + os.path.basename(p))
                if not os.path.isfile(clean):
                    raise BenchmarkError(f'Rain100L: {clean!r} (the clean pair of {p!r}) is missing')
                self.items.append((p, clean))
            return
        hr_dir = os.path.join(base, 'HR')
        if not os.path.isdir(hr_dir) and scale == 1 and os.path.isdir(os.path.join(dir_data, name)):
            hr_dir = os.path.join(dir_data, name)
        if not os.path.isdir(hr_dir):
            raise BenchmarkError(f"{name}: HR folder {hr_dir!r} is missing (expected "
                                 f"{dir_data}/benchmark/{name}/HR/*.png"
                                 + (f' and LR_bicubic/X{scale}/<img>x{scale}.png' if scale > 1 else '') + ')')
        hrs = sorted(p for p in glob.glob(os.path.join(hr_dir, '*')) if p.endswith(IMG_EXT))
        if not hrs:
            raise BenchmarkError(f'{name}: no images in {hr_dir!r}')
        self.items = []
        for p in hrs:
            lr = None
            if scale > 1:
                stem, ext = os.path.splitext(os.path.basename(p))
                lr = os.path.join(base, 'LR_bicubic', f'X{scale}', f'{stem}x{scale}{ext}')
                if not os.path.isfile(lr):
                    raise BenchmarkError(f'{name}: LR image {lr!r} for {p!r} is missing')
            self.items.append((lr, p))

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        inp, hr = self.items[i]
        hr_img = load_image(hr)
        inp_img = None if inp is None else load_image(inp)
        if inp_img is not None and self.scale > 1:
            h, w = inp_img.shape[-2:]
            hr_img = hr_img[:, :h * self.scale, :w * self.scale]
        return inp_img, hr_img, os.path.basename(hr)
