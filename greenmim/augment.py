"""Data pipelines: the GreenMIM pre-training crop, and the SimMIM fine-tuning recipe (RandAugment,
RandomErasing, batch-mode Mixup/CutMix with label smoothing, soft-target cross-entropy).

Imports only torch, torchvision and numpy.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision import transforms as T

INTERP = {'bicubic': T.InterpolationMode.BICUBIC, 'bilinear': T.InterpolationMode.BILINEAR}


def pretrain_transform(size, mean, std, scale=(0.2, 1.0), interpolation='bicubic'):
    """RandomResizedCrop(scale 0.2-1, bicubic) + horizontal flip + normalisation (official)."""
    return T.Compose([T.RandomResizedCrop(size, scale=tuple(scale), interpolation=INTERP[interpolation]),
                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])


def finetune_transform(size, mean, std, scale=(0.08, 1.0), hflip=0.5, randaug=True, ra_ops=2, ra_magnitude=9,
                       reprob=0.25, interpolation='bicubic'):
    """SimMIM training pipeline. RandAugment is torchvision's (2 ops, magnitude 9; timm's ``mstd0.5`` /
    ``inc1`` variants are not reproduced); RandomErasing in per-pixel mode (normal noise)."""
    ops = [T.RandomResizedCrop(size, scale=tuple(scale), interpolation=INTERP[interpolation])]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if randaug:
        ops.append(T.RandAugment(num_ops=ra_ops, magnitude=ra_magnitude, interpolation=INTERP[interpolation]))
    ops += [T.ToTensor(), T.Normalize(mean, std)]
    if reprob > 0:
        ops.append(T.RandomErasing(p=reprob, value='random'))
    return T.Compose(ops)


def test_transform(size, mean, std, crop_ratio=224 / 256, interpolation='bicubic'):
    """Resize to ``size / crop_ratio`` then centre-crop ``size`` (SimMIM: 256 -> 224)."""
    ops = []
    if crop_ratio < 1:
        ops += [T.Resize(int(math.floor(size / crop_ratio)), interpolation=INTERP[interpolation]),
                T.CenterCrop(size)]
    else:
        ops.append(T.Resize((size, size), interpolation=INTERP[interpolation]))
    return T.Compose(ops + [T.ToTensor(), T.Normalize(mean, std)])


def one_hot(y, num_classes, on=1., off=0.):
    return torch.full((y.shape[0], num_classes), off, device=y.device).scatter_(1, y.view(-1, 1), on)


class Mixup:
    """Batch-mode Mixup/CutMix (timm semantics): with probability ``prob`` mix the batch with its flip,
    CutMix with probability ``switch_prob`` when both are on; targets are label-smoothed one-hots mixed
    with the (box-corrected) lambda. With both alphas 0 it only smooths the labels."""

    def __init__(self, mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, smoothing=0.1,
                 num_classes=1000):
        self.mixup_alpha, self.cutmix_alpha, self.prob = mixup_alpha, cutmix_alpha, prob
        self.switch_prob, self.smoothing, self.num_classes = switch_prob, smoothing, num_classes

    def _lam(self):
        if (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0) or np.random.rand() >= self.prob:
            return 1., False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            cut = np.random.rand() < self.switch_prob
        else:
            cut = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if cut else self.mixup_alpha
        return float(np.random.beta(alpha, alpha)), cut

    def __call__(self, x, y):
        lam, cut = self._lam()
        if lam < 1.:
            if cut:
                H, W = x.shape[-2:]
                r = math.sqrt(1 - lam)
                ch, cw = int(H * r), int(W * r)
                cy, cx = np.random.randint(H), np.random.randint(W)
                y0, y1 = np.clip(cy - ch // 2, 0, H), np.clip(cy + ch // 2, 0, H)
                x0, x1 = np.clip(cx - cw // 2, 0, W), np.clip(cx + cw // 2, 0, W)
                x = x.clone()
                x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
                lam = 1. - (y1 - y0) * (x1 - x0) / float(H * W)
            else:
                x = x * lam + x.flip(0) * (1. - lam)
        off = self.smoothing / self.num_classes
        on = 1. - self.smoothing + off
        y1h = one_hot(y, self.num_classes, on, off)
        return x, y1h * lam + y1h.flip(0) * (1. - lam)


def soft_target_cross_entropy(logits, target):
    return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
