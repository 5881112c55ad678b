"""Batch-mode Mixup / CutMix with label smoothing inside the mixed targets (torch only).

With probability ``prob`` a batch is mixed with its reverse (``x.flip(0)``): CutMix (Beta(cutmix_alpha))
with probability ``switch_prob``, else Mixup (Beta(mixup_alpha)). For CutMix, lambda is corrected to the
area actually kept. Targets: ``lam * smooth(y) + (1 - lam) * smooth(y.flip(0))`` where ``smooth`` puts
``1 - eps + eps/K`` on the label and ``eps/K`` elsewhere.
"""
import numpy as np
import torch


def smooth_one_hot(target, num_classes, smoothing=0.0):
    off = smoothing / num_classes
    out = torch.full((target.shape[0], num_classes), off, device=target.device)
    return out.scatter_(1, target.view(-1, 1), 1. - smoothing + off)


def mixup_target(target, num_classes, lam=1.0, smoothing=0.0):
    y1 = smooth_one_hot(target, num_classes, smoothing)
    y2 = smooth_one_hot(target.flip(0), num_classes, smoothing)
    return y1 * lam + y2 * (1. - lam)


def rand_bbox(img_shape, lam, rng=np.random):
    """CutMix box (y0, y1, x0, x1) of area ~ (1 - lam) centred uniformly, clipped to the image."""
    H, W = img_shape[-2:]
    cut = np.sqrt(1. - lam)
    ch, cw = int(H * cut), int(W * cut)
    cy, cx = rng.randint(0, H), rng.randint(0, W)
    return (int(np.clip(cy - ch // 2, 0, H)), int(np.clip(cy + ch // 2, 0, H)),
            int(np.clip(cx - cw // 2, 0, W)), int(np.clip(cx + cw // 2, 0, W)))


class Mixup:
    def __init__(self, mixup_alpha=0.2, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch',
                 label_smoothing=0.1, num_classes=1000):
        if mode != 'batch':
            raise ValueError(f"only mixup mode 'batch' (the official setting) is implemented, got {mode!r}")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob = prob, switch_prob
        self.label_smoothing, self.num_classes = label_smoothing, num_classes
        self.rng = np.random

    def _params(self):
        """(lam, use_cutmix) for one batch."""
        if self.rng.rand() >= self.prob or (self.mixup_alpha <= 0 and self.cutmix_alpha <= 0):
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = self.rng.rand() < self.switch_prob
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(self.rng.beta(alpha, alpha)), use_cutmix

    def __call__(self, x, target):
        """Mixes ``x`` in place; returns (x, soft targets [B, num_classes])."""
        lam, use_cutmix = self._params()
        if lam < 1.0:
            if use_cutmix:
                y0, y1, x0, x1 = rand_bbox(x.shape, lam, self.rng)
                x[:, :, y0:y1, x0:x1] = x.flip(0)[:, :, y0:y1, x0:x1]
                lam = 1. - (y1 - y0) * (x1 - x0) / float(x.shape[-2] * x.shape[-1])
            else:
                other = x.flip(0).mul_(1. - lam)  # a copy, taken before x changes
                x.mul_(lam).add_(other)
        return x, mixup_target(target, self.num_classes, lam, self.label_smoothing)
