"""Training pieces of ViTAS: augmentations, CutMix/Mixup with label smoothing, the soft-target
loss, one epoch of supernet training (BCNet / AutoSlim / cyclic), one epoch of retraining, and
evaluation.  Pure torch / torchvision / numpy (no ``common``), so the file can be copied alone.
"""
import math
import random

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ============================================================================ augmentation
class RandAugment:
    """timm-style RandAugment ``rand-m{M}-n{N}-mstd{S}-inc1``: ``num_layers`` ops drawn with
    replacement from the "increasing" op set, each applied with probability 0.5 at magnitude
    ~ N(M, S) clipped to [0, 10]; random bilinear/bicubic resampling, fill = the image mean."""

    OPS = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing',
           'SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing', 'ContrastIncreasing',
           'BrightnessIncreasing', 'SharpnessIncreasing', 'ShearX', 'ShearY', 'TranslateXRel',
           'TranslateYRel')

    def __init__(self, magnitude=9, num_layers=2, magnitude_std=0.5, prob=0.5,
                 img_mean=(124, 116, 104), translate_pct=0.45):
        self.m, self.n, self.std, self.prob = magnitude, num_layers, magnitude_std, prob
        self.fill, self.translate_pct = tuple(img_mean), translate_pct

    @classmethod
    def from_string(cls, config, **kw):
        """Parse ``'rand-m9-mstd0.5-inc1'`` (keys m, n, mstd; only the increasing set)."""
        parts = config.split('-')
        if parts[0] != 'rand':
            raise ValueError(f"RandAugment config must start with 'rand', got {config!r}")
        for p in parts[1:]:
            if p.startswith('mstd'):
                kw['magnitude_std'] = float(p[4:])
            elif p.startswith('inc'):
                if p != 'inc1':
                    raise ValueError('only the increasing op set (inc1) is implemented')
            elif p.startswith('m'):
                kw['magnitude'] = int(p[1:])
            elif p.startswith('n'):
                kw['num_layers'] = int(p[1:])
            else:
                raise ValueError(f'unknown RandAugment field {p!r}')
        return cls(**kw)

    @staticmethod
    def _neg(v):
        return -v if random.random() > 0.5 else v

    def _affine(self, img, matrix):
        resample = random.choice((Image.BILINEAR, Image.BICUBIC))
        return img.transform(img.size, Image.AFFINE, matrix, resample=resample, fillcolor=self.fill)

    def _apply(self, img, name, level):
        f = level / 10.
        if name == 'AutoContrast':
            return ImageOps.autocontrast(img)
        if name == 'Equalize':
            return ImageOps.equalize(img)
        if name == 'Invert':
            return ImageOps.invert(img)
        if name == 'Rotate':
            return img.rotate(self._neg(30. * f), resample=random.choice(
                (Image.BILINEAR, Image.BICUBIC)), fillcolor=self.fill)
        if name == 'PosterizeIncreasing':
            bits = 4 - int(4 * f)
            if bits <= 0:  # 0 bits kept: every pixel becomes 0 (what PIL < 9 did; newer PIL refuses 0 bits)
                return Image.new(img.mode, img.size)
            return img if bits >= 8 else ImageOps.posterize(img, bits)
        if name == 'SolarizeIncreasing':
            return ImageOps.solarize(img, 256 - int(256 * f))
        if name == 'SolarizeAdd':
            add = int(110 * f)
            lut = [min(255, i + add) if i < 128 else i for i in range(256)]
            return img.point(lut * len(img.getbands()))
        if name.endswith('Increasing'):
            factor = 1.0 + self._neg(0.9 * f)
            enh = {'Color': ImageEnhance.Color, 'Contrast': ImageEnhance.Contrast,
                   'Brightness': ImageEnhance.Brightness,
                   'Sharpness': ImageEnhance.Sharpness}[name[:-len('Increasing')]]
            return enh(img).enhance(factor)
        if name == 'ShearX':
            return self._affine(img, (1, self._neg(0.3 * f), 0, 0, 1, 0))
        if name == 'ShearY':
            return self._affine(img, (1, 0, 0, self._neg(0.3 * f), 1, 0))
        if name == 'TranslateXRel':
            return self._affine(img, (1, 0, self._neg(self.translate_pct * f) * img.size[0], 0, 1, 0))
        if name == 'TranslateYRel':
            return self._affine(img, (1, 0, 0, 0, 1, self._neg(self.translate_pct * f) * img.size[1]))
        raise ValueError(name)

    def __call__(self, img):
        for name in random.choices(self.OPS, k=self.n):
            if self.prob < 1.0 and random.random() > self.prob:
                continue
            level = random.gauss(self.m, self.std) if self.std > 0 else self.m
            img = self._apply(img, name, min(10., max(0., level)))
        return img


def build_supernet_aug(weak=True, img_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Supernet training aug.  ``weak`` (official ``deit_xaa_xcj``): RandomResizedCrop (bicubic)
    + HFlip + ToTensor + Normalize + RandomErasing(0.25, per-pixel normal values, 1 box)."""
    if not weak:
        return build_deit_aug(img_size, mean, std)
    return T.Compose([T.RandomResizedCrop(img_size, interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std),
                      T.RandomErasing(p=0.25, value='random')])


def build_deit_aug(img_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Retrain aug (official ``deit``): RandomResizedCrop (bicubic) + HFlip +
    RandAugment rand-m9-mstd0.5-inc1 (fill = mean) + ColorJitter(0.4, 0.4, 0.4) + ToTensor +
    Normalize + RandomErasing(0.25, pixel mode)."""
    fill = tuple(min(255, round(255 * m)) for m in mean)
    return T.Compose([T.RandomResizedCrop(img_size, interpolation=T.InterpolationMode.BICUBIC),
                      T.RandomHorizontalFlip(),
                      RandAugment.from_string('rand-m9-mstd0.5-inc1', img_mean=fill),
                      T.ColorJitter(0.4, 0.4, 0.4), T.ToTensor(), T.Normalize(mean, std),
                      T.RandomErasing(p=0.25, value='random')])


def build_test_aug(img_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """Resize(img * 256/224) (bilinear) + CenterCrop(img): Resize 256 / CenterCrop 224 on ImageNet."""
    return T.Compose([T.Resize(int(round(img_size * 256 / 224))), T.CenterCrop(img_size),
                      T.ToTensor(), T.Normalize(mean, std)])


# ============================================================================ targets
def one_hot_smooth(target, num_classes, smoothing=0.1):
    """timm smoothing: ``smoothing / C`` everywhere, ``1 - smoothing + smoothing / C`` on target."""
    off = smoothing / num_classes
    y = torch.full((target.shape[0], num_classes), off, device=target.device)
    return y.scatter_(1, target.long().view(-1, 1), 1 - smoothing + off)


def label_smoothing(targets, smoothing=0.1, num_classes=1000):
    """Official retrain smoothing: ``1 - smoothing`` on the target, ``smoothing / (C - 1)`` else."""
    y = torch.full((targets.shape[0], num_classes), smoothing / (num_classes - 1),
                   device=targets.device)
    return y.scatter_(1, targets.long().view(-1, 1), 1 - smoothing)


class Mixup:
    """timm ``Mixup`` in batch mode: with probability ``prob`` mix the batch with its flip, by
    CutMix (box area ratio ``1 - lam``, lam corrected to the clipped box) or Mixup, chosen with
    ``switch_prob``; targets are smoothed one-hots mixed with the same lam."""

    def __init__(self, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5,
                 mode='batch', label_smoothing=0.1, num_classes=1000):
        if mode != 'batch':
            raise ValueError("only mode='batch' is implemented (the one ViTAS uses)")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.smoothing, self.num_classes = label_smoothing, num_classes

    def _lam(self):
        if np.random.rand() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cut = np.random.rand() < self.switch_prob
        else:
            cut = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if cut else self.mixup_alpha
        if alpha <= 0:
            return 1.0, False
        return float(np.random.beta(alpha, alpha)), cut

    @staticmethod
    def _box(h, w, lam):
        ratio = math.sqrt(1 - lam)
        ch, cw = int(h * ratio), int(w * ratio)
        cy, cx = np.random.randint(0, h), np.random.randint(0, w)
        y0, y1 = np.clip(cy - ch // 2, 0, h), np.clip(cy + ch // 2, 0, h)
        x0, x1 = np.clip(cx - cw // 2, 0, w), np.clip(cx + cw // 2, 0, w)
        return int(y0), int(y1), int(x0), int(x1)

    def __call__(self, x, target):
        lam, cut = self._lam()
        if lam < 1.0:
            if cut:
                y0, y1, x0, x1 = self._box(x.shape[-2], x.shape[-1], lam)
                x = x.clone()
                x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
                lam = 1 - (y1 - y0) * (x1 - x0) / float(x.shape[-2] * x.shape[-1])
            else:
                x = x * lam + x.flip(0) * (1 - lam)
        y1 = one_hot_smooth(target, self.num_classes, self.smoothing)
        y2 = one_hot_smooth(target.flip(0), self.num_classes, self.smoothing)
        return x, y1 * lam + y2 * (1 - lam)


def build_mixup(mixup_stg, num_classes, smoothing=0.1):
    """Official trainer choice: 'cutmix' (supernet), 'mixup', or 'all' (Mixup .8 / CutMix 1.0,
    switch 0.5)."""
    if mixup_stg == 'cutmix':
        return Mixup(0., 1.0, 1.0, 0., 'batch', smoothing, num_classes)
    if mixup_stg == 'mixup':
        return Mixup(0.8, 0., 1.0, 0., 'batch', smoothing, num_classes)
    if mixup_stg == 'all':
        return Mixup(0.8, 1.0, 1.0, 0.5, 'batch', smoothing, num_classes)
    raise ValueError(f"mixup_stg must be 'cutmix', 'mixup' or 'all', got {mixup_stg!r}")


def soft_cross_entropy(logits, targets):
    """``mean_b sum_c -t_bc log_softmax(logits)_bc``."""
    return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()


# ============================================================================ optimisation
def param_groups(model, weight_decay):
    """AdamW groups: no decay on 1-D parameters and biases (cls token / pos table are 3-D and
    therefore decayed, as in the official code)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith('.bias') else decay).append(p)
    return [{'params': decay, 'weight_decay': weight_decay},
            {'params': no_decay, 'weight_decay': 0.}]


class SuperNetTrainStep(nn.Module):
    """One module whose forward is ``supernet.forward_train`` (so DDP sees a single forward even
    though BCNet runs the left and the right slices)."""

    def __init__(self, supernet):
        super().__init__()
        self.supernet = supernet

    def forward(self, x, subnet):
        return self.supernet.forward_train(x, subnet)


def _soft_targets(cfg, mixup, x, y, num_classes):
    if mixup is not None:
        return mixup(x, y)
    if cfg.get('smoothing', 0.) > 0:
        return x, label_smoothing(y, cfg['smoothing'], num_classes)
    return x, F.one_hot(y, num_classes).float()


def _run_epoch(cfg, module, forward, loader, optimizer, lr_fn, start_step, device, mixup, wrap,
               max_steps, on_step):
    module.train()
    total, n, step = 0., 0, start_step
    it = wrap(loader) if wrap else loader
    for i, (x, y) in enumerate(it):
        if max_steps is not None and i >= max_steps:
            break
        lr = lr_fn(step)
        for g in optimizer.param_groups:
            g['lr'] = lr
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        x, t = _soft_targets(cfg, mixup, x, y, cfg['num_classes'])
        loss = soft_cross_entropy(forward(x), t)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total, n, step = total + loss.item(), n + 1, step + 1
        if on_step is not None:
            on_step(it, loss.item(), lr)
    return {'loss': total / max(n, 1), 'steps': n}


def train_supernet(cfg, step_module, loader, optimizer, sample_subnet, lr_fn, start_step, device,
                   mixup=None, wrap=None, max_steps=None, on_step=None):
    """One epoch of supernet training (official order): sample a subnet; mix; logits =
    left + right (BCNet) / left (AutoSlim) / cyclic; soft-target CE; ``zero_grad(set_to_none)``
    (off-path parameters must not move, Pitfall 10); backward; AdamW step.

    ``step_module`` is a (possibly DDP-wrapped) :class:`SuperNetTrainStep`; ``sample_subnet()``
    returns the next subnet (same on every rank); ``lr_fn(step)`` the learning rate;
    ``cfg`` holds ``num_classes`` and ``smoothing`` (used when ``mixup`` is None).
    Returns ``{'loss': mean loss, 'steps': steps done}``.
    """
    return _run_epoch(cfg, step_module, lambda x: step_module(x, sample_subnet()), loader,
                      optimizer, lr_fn, start_step, device, mixup, wrap, max_steps, on_step)


def retrain(cfg, model, loader, optimizer, lr_fn, start_step, device, mixup=None, wrap=None,
            max_steps=None, on_step=None):
    """One epoch of stand-alone training of the searched net (same loss / optimiser / order)."""
    return _run_epoch(cfg, model, model, loader, optimizer, lr_fn, start_step, device, mixup,
                      wrap, max_steps, on_step)


@torch.no_grad()
def evaluate(model, loader, subnet=None, side=None, device='cpu', train_mode=False,
             max_batches=None):
    """Top-1 / top-5 accuracy (%) of ``model`` (a ViTASNet, or the supernet with ``subnet`` and
    ``side``).  ``train_mode=True`` keeps the model in train mode (official search evaluation;
    harmless without BN / dropout).  Counts are summed over ranks when torch.distributed runs."""
    was = model.training
    model.train(train_mode)
    correct1 = correct5 = count = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        x, y = x.to(device), y.to(device)
        logits = model(x) if subnet is None else model(x, subnet, side)
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        hit = top.eq(y.view(-1, 1))
        correct1 += hit[:, 0].sum().item()
        correct5 += hit.any(dim=1).sum().item()
        count += y.numel()
    model.train(was)
    stats = torch.tensor([correct1, correct5, count], dtype=torch.float64, device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats)
    c1, c5, n = stats.tolist()
    return 100. * c1 / max(n, 1), 100. * c5 / max(n, 1)
